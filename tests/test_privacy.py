"""No raw identifier value (phone, card, device, IP, bound account) is kept anywhere: the embedded
workspace, every output file, the command output, and (with Neo4j) the database itself."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from socialrisk.cli import app
from tests.conftest import WorkspaceCli

KEY = "privacy-test-key-0123456789"


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("privacy") / "data"
    result = CliRunner().invoke(app, ["generate", "--users", "400", "--seed", "5", "--out", str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return out


def _raw_values(data: Path) -> set[str]:
    links = pd.read_parquet(data / "links.parquet") if (data / "links.parquet").exists() else pd.read_csv(data / "links.csv")
    values = set(links["value"].astype(str))
    assert any(v.startswith("+") for v in values) and any(len(v) == 16 and v.isdigit() for v in values)  # phones and cards
    return values


def _text_of(path: Path) -> str:
    if path.suffix == ".parquet":
        return pd.read_parquet(path).astype(str).to_csv(index=False)
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:
            return "\n".join(" ".join(map(str, z[k].ravel().tolist())) for k in z.files if z[k].dtype.kind in "USO")
    if path.suffix == ".npy":  # kept projections and integer codes; strings are stored as UTF-32
        array = np.load(path, allow_pickle=False)
        return " ".join(map(str, array.ravel().tolist())) if array.dtype.kind in "USO" else ""
    return path.read_bytes().decode("utf-8", errors="replace")


def _leaks(texts: dict[str, str], values: set[str]) -> list[tuple[str, str]]:
    return [(name, v) for name, text in texts.items() for v in values if v in text]


def test_nothing_raw_in_the_workspace_outputs_or_logs(data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOCIALRISK_PSEUDONYM_KEY", KEY)
    ws, outdir = tmp_path / "ws", tmp_path / "out"
    outdir.mkdir()
    run = WorkspaceCli(ws)
    run("load", str(data))
    run("propagate")
    run("score", "--out", str(outdir / "scores.csv"))
    scores = pd.read_csv(outdir / "scores.csv")
    refused = scores.loc[(scores["decision"] != "approve") & (scores["flag"].isna())].sort_values("graph_risk")
    user = str(refused["user_id"].iloc[-1])
    run("explain", user)
    run("explain", user, "--json")
    run("rings", "--top", "3", "--json")
    run("flag", user, "--label", "fraud")
    run("appeal", user)
    run("audit")
    run("calibrate")
    texts = {str(p): _text_of(p) for p in list(ws.rglob("*")) + list(outdir.rglob("*")) if p.is_file()}
    texts.update({f"output of socialrisk {k}": v for k, v in run.logs.items()})
    assert any("links" in Path(p).name and p.endswith(".parquet") for p in texts) and any("audit" in p for p in texts)
    values = _raw_values(data)
    assert _leaks({"the input itself": _text_of(data / "links.parquet")}, values)  # the scan finds what is there
    assert _leaks(texts, values) == []


@pytest.mark.neo4j
def test_nothing_raw_in_neo4j(neo4j_store, data: Path) -> None:  # type: ignore[no-untyped-def]
    from loaders import load

    load(data, neo4j_store, key=KEY.encode())
    run = neo4j_store._driver.execute_query
    nodes = run("MATCH (n) RETURN properties(n) AS p", database_="neo4j").records
    rels = run("MATCH ()-[r]->() RETURN properties(r) AS p", database_="neo4j").records
    export = "\n".join(json.dumps(r["p"], default=str) for r in [*nodes, *rels])
    assert len(nodes) > 400 and _leaks({"neo4j export": export}, _raw_values(data)) == []
