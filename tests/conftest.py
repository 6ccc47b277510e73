"""Shared fixtures: a tiny graph whose answers can be worked out by hand."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

KEY = b"test-key-0123456789abcdef"
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def tiny_frames() -> dict[str, pd.DataFrame]:
    """Six users.

    - f1 is confirmed fraud; f1 and a share device DEV-1; a also uses private phone P-A.
    - b sends a transfer to a; c rates a negatively; g is benign and isolated but for a contact with c.
    - hub IP 10.0.0.1 is shared by f1, b, c and g.
    """
    users = pd.DataFrame(
        {
            "user_id": ["f1", "a", "b", "c", "g", "z"],
            "repayments_total": [5, 5, 4, 0, 6, 2],
            "repayments_late": [4, 3, 0, 0, 0, 1],
            "chargebacks_90d": [3, 0, 0, 1, 0, 0],
        }
    )
    links = pd.DataFrame(
        {
            "user_id": ["f1", "a", "a", "f1", "b", "c", "g"],
            "kind": ["device", "device", "phone", "ip", "ip", "ip", "ip"],
            "value": ["DEV-1", "DEV-1", "+1 555 010 0001", "10.0.0.1", "10.0.0.1", "10.0.0.1", "10.0.0.1"],
            "first_seen": ["2026-01-01", "2026-02-01", "2026-01-05", "2026-01-01", "2026-01-01", "2026-01-01", "2026-01-01"],
            "last_seen": ["2026-03-01", "2026-03-01", "2026-03-05", "2026-03-01", "2026-03-01", "2026-03-01", "2026-03-01"],
        }
    )
    relations = pd.DataFrame(
        {
            "src": ["b", "c", "g"],
            "dst": ["a", "a", "c"],
            "kind": ["transfer", "rating", "contact"],
            "weight": [120.0, -5.0, 1.0],
            "ts": ["2026-02-10T10:00:00Z", "2026-02-11T10:00:00Z", "2026-02-12T10:00:00Z"],
        }
    )
    flags = pd.DataFrame(
        {"user_id": ["f1", "g"], "label": ["fraud", "benign"], "severity": [1.0, 1.0], "ts": ["2026-03-01", "2026-03-02"]}
    )
    return {"users": users, "links": links, "relations": relations, "flags": flags}


def identifier(kind: str, token: str) -> str:
    """A value of ``kind`` that its normalisation rule accepts, the same for the same token and
    distinct for distinct tokens: lets a test name identifiers ``P1``, ``CAFE`` or ``C1``."""
    import zlib

    n = zlib.crc32(token.encode()) % 10_000
    if kind == "phone":
        return f"+1 202 555 {n:04d}"
    if kind == "ip":
        return f"10.{n // 100}.{n % 100}.{1 + zlib.crc32(token.encode()[::-1]) % 250}"
    if kind == "email":
        return f"{token.lower()}@example.org"
    if kind == "card":
        body = f"4000{n:04d}{zlib.crc32(token.encode()) % 10**7:07d}"
        from loaders.normalise import luhn_valid

        return next(body + d for d in "0123456789" if luhn_valid(body + d))
    return token


def write_dir(frames: dict[str, pd.DataFrame], path: Path, fmt: str = "csv") -> Path:
    path.mkdir(parents=True, exist_ok=True)
    for name, frame in frames.items():
        if fmt == "parquet":
            frame.to_parquet(path / f"{name}.parquet", index=False)
        elif fmt == "csv.gz":
            frame.to_csv(path / f"{name}.csv.gz", index=False, compression="gzip")
        else:
            frame.to_csv(path / f"{name}.csv", index=False)
    return path


@pytest.fixture
def key() -> bytes:
    return KEY


@pytest.fixture
def tiny() -> dict[str, pd.DataFrame]:
    return tiny_frames()


@pytest.fixture
def tiny_dir(tmp_path: Path) -> Path:
    return write_dir(tiny_frames(), tmp_path / "tiny")


def _neo4j_unavailable(reason: str) -> None:
    """Outside CI a missing server skips the Neo4j tests; in CI it fails them (.ci/run starts one)."""
    import os

    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"Neo4j tests must run in CI: {reason}")
    pytest.skip(reason)


@pytest.fixture
def neo4j_store():  # type: ignore[no-untyped-def]
    """An empty Neo4j store on the server named by SOCIALRISK_NEO4J_* (started by .ci/run)."""
    import os

    from loaders.errors import SocialRiskError

    if not os.environ.get("SOCIALRISK_NEO4J_PASSWORD"):
        _neo4j_unavailable("SOCIALRISK_NEO4J_PASSWORD is not set; start a server with 'socialrisk neo4j start'")
    from socialrisk.workflow import open_neo4j

    try:
        store = open_neo4j()
    except SocialRiskError as exc:
        _neo4j_unavailable(str(exc))
    store.clear()
    yield store
    store.clear()
    store.close()


@pytest.fixture(params=["embedded", pytest.param("neo4j", marks=pytest.mark.neo4j)])
def store(request: pytest.FixtureRequest, tmp_path: Path):  # type: ignore[no-untyped-def]
    """An empty store of each kind: an embedded workspace, and the Neo4j of :func:`neo4j_store`
    (tests marked ``neo4j``)."""
    if request.param == "embedded":
        from graph.store import EmbeddedStore

        with EmbeddedStore(tmp_path / "ws") as embedded:
            yield embedded
    else:
        yield request.getfixturevalue("neo4j_store")


class WorkspaceCli:
    """Runs ``socialrisk`` commands on one workspace (``generate`` takes none) in process,
    asserting that each succeeds and keeping its output in :attr:`logs` (command -> text), for
    the scans of everything the commands print."""

    def __init__(self, workspace: Path) -> None:
        from typer.testing import CliRunner

        self.workspace = workspace
        self.logs: dict[str, str] = {}
        self._runner = CliRunner()

    def __call__(self, *args: str) -> str:
        from socialrisk.cli import app

        argv = list(args) if args[0] == "generate" else [*args, "--workspace", str(self.workspace)]
        result = self._runner.invoke(app, argv, catch_exceptions=False)
        assert result.exit_code == 0, result.output
        self.logs[" ".join(args)] = result.output
        return result.output


def shared_sample(name: str, dest: Path, *, users: int, seed: int = 0) -> Path:
    """A connected part of a shared dataset: breadth-first over its relations (either direction)
    from 40 fraud and 40 benign flagged users drawn with ``seed``, until ``users`` users; every
    table restricted to them. Ids, weights, signs and times are the dataset's own; ``users``
    0 gives the whole dataset."""
    src = SHARED_DATA / name
    assert src.is_dir(), f"{src} is missing: the shared data sits beside the repository"
    if users <= 0:
        return src
    tables = {f.stem: pd.read_csv(f, dtype=str, keep_default_na=False) for f in sorted(src.glob("*.csv"))}
    rel, flags = tables["relations"], tables["flags"]
    rng = np.random.default_rng(seed)
    starts = []
    for label in ("fraud", "benign"):
        ids = flags.loc[flags["label"] == label, "user_id"].to_numpy()
        starts += list(rng.choice(ids, size=min(40, len(ids)), replace=False))
    codes, ids = pd.factorize(pd.concat([rel["src"], rel["dst"], pd.Series(starts)], ignore_index=True))
    n, m = len(ids), len(rel)
    a, b = codes[:m], codes[m : 2 * m]
    adjacency = sp.csr_matrix((np.ones(2 * m), (np.concatenate([a, b]), np.concatenate([b, a]))), shape=(n, n))
    seen = np.zeros(n, dtype=bool)
    order = list(dict.fromkeys(codes[2 * m :].tolist()))
    seen[order] = True
    frontier = np.array(order)
    while len(frontier) and len(order) < users:
        reached = adjacency[frontier].indices  # row by row, in frontier order
        new = pd.unique(reached[~seen[reached]])[: users - len(order)]
        seen[new] = True
        order += new.tolist()
        frontier = new
    kept = dict.fromkeys(ids[order])
    keep = set(kept)
    dest.mkdir(parents=True)
    for table, frame in tables.items():
        if table == "relations":
            frame = frame[frame["src"].isin(keep) & frame["dst"].isin(keep)]
        elif "user_id" in frame.columns:
            frame = frame[frame["user_id"].isin(keep)]
        frame.to_csv(dest / f"{table}.csv", index=False)
    sample_flags = flags[flags["user_id"].isin(keep)]["label"].value_counts()
    assert sample_flags.get("fraud", 0) >= 20 and sample_flags.get("benign", 0) >= 20, sample_flags
    return dest
