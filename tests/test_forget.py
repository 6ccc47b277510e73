"""``forget`` holds when the source files are loaded again: the store keeps a tombstone of the
erased user, and every later load sets aside the rows that name it (counted as rejected, reason
"erased user", in either on_error mode), on both stores (tests/conftest.py: a shares device
DEV-1 with f1 and has a private phone P-A; b and c have relations to a)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from graph.store import EmbeddedStore, GraphStore
from loaders import NotFoundError
from loaders.load import ERASED_USER
from socialrisk import workflow
from socialrisk.settings import Settings
from tests.conftest import KEY, WorkspaceCli, tiny_frames, write_dir
from tests.test_privacy import _leaks, _raw_values, _text_of

#: Rows of the tiny data set that name user a, per table: its users row, its two links, and the
#: relations b -> a and c -> a.
A_ROWS = {"users": 1, "links": 2, "relations": 2, "flags": 0}


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOCIALRISK_PSEUDONYM_KEY", KEY.decode())


def _links_of(store: GraphStore, user: str) -> list[str]:
    links = store.read_table("links")
    return sorted(links.loc[links["user_id"] == user, "kind"].astype(str))


def _features_of(store: GraphStore, user: str) -> pd.Series:
    users = store.read_table("users").set_index("user_id")
    return users.loc[user].drop(labels=[c for c in users.columns if c.startswith("_")], errors="ignore")


@pytest.mark.parametrize("on_error", ["fail", "quarantine"])
def test_reloading_after_forget_brings_nothing_back(store: GraphStore, tmp_path: Path, on_error: str) -> None:
    settings, ws = Settings(), tmp_path / "ws"
    data = write_dir(tiny_frames(), tmp_path / "data")
    workflow.load_into(store, data, settings, ws)
    workflow.score(store, settings, workspace=ws)
    assert _links_of(store, "a") == ["device", "phone"] and _features_of(store, "a").notna().all()

    removed = workflow.forget(store, settings, "a", note="erasure request 77")
    # (Neo4j keeps results on the user nodes too, and counts them as values removed)
    assert removed["links"] == 1 and removed["scores"] == 1 and removed["feature_values"] >= 3
    assert store.erased_user_ids() == frozenset({"a"})

    rejects = tmp_path / "rejects.csv"
    report = workflow.load_into(store, data, settings, ws, on_error=on_error, rejects_path=rejects)
    # the rows naming a are counted, not lost and not loaded; the others are already present
    assert report.rejected == A_ROWS
    assert report.read == {"users": 6, "links": 7, "relations": 3, "flags": 2}
    for name in report.read:
        assert report.read[name] == report.loaded(name) + report.rejected[name]
        assert report.added[name] == 0
    assert set(report.rejects["expected"]) == {ERASED_USER} and set(report.rejects["value"]) == {"a"}
    written = pd.read_csv(rejects, keep_default_na=False)
    assert sorted(written.loc[written["table"] == "relations", "row"]) == [1, 2]  # b -> a, c -> a
    assert "a" not in report.user_ids

    # a's features and its private phone are not back; what forget kept (the shared device
    # link, the relations, the node) is still there
    assert _features_of(store, "a").isna().all()
    assert _links_of(store, "a") == ["device"]
    relations = store.read_table("relations")
    assert len(relations) == 3 and int((relations["dst"] == "a").sum()) == 2
    assert "a" not in store.read_result("scores")[0]["user_id"].astype(str).tolist()
    rescored = workflow.score(store, settings, workspace=ws)
    assert "a" not in rescored.scores["user_id"].astype(str).tolist() and len(rescored.scores) == 5
    assert "a" not in store.read_result("scores")[0]["user_id"].astype(str).tolist()

    entries = workflow.audit_trail(store)
    (forget,) = [e for e in entries if e.action == "forget"]
    assert forget.user_id == "a" and forget.after["tombstone"] is True and forget.detail["note"] == "erasure request 77"
    reload = [e for e in entries if e.action == "load"][-1]
    assert reload.detail["erased_user_rows"] == sum(A_ROWS.values()) and reload.detail["rejected"] == A_ROWS


def test_new_rows_about_an_erased_user_are_set_aside_and_the_rest_loads(store: GraphStore, tmp_path: Path) -> None:
    settings, ws = Settings(), tmp_path / "ws"
    workflow.load_into(store, write_dir(tiny_frames(), tmp_path / "data"), settings, ws)
    workflow.forget(store, settings, "a")
    more = {
        "users": pd.DataFrame({"user_id": ["a", "n1"], "repayments_total": [9, 1]}),
        "links": pd.DataFrame({"user_id": ["a", "n1"], "kind": ["email", "email"], "value": ["a@example.org", "n1@example.org"]}),
        "relations": pd.DataFrame({"src": ["n1", "a", "n1"], "dst": ["a", "n1", "b"], "kind": ["transfer"] * 3}),
        "flags": pd.DataFrame({"user_id": ["a", "n1"], "label": ["fraud", "benign"]}),
    }
    report = workflow.load_into(store, write_dir(more, tmp_path / "more"), settings, ws)
    assert report.rejected == {"users": 1, "links": 1, "relations": 2, "flags": 1}
    assert report.added == {"users": 1, "links": 1, "relations": 1, "flags": 1}
    assert _links_of(store, "a") == ["device"] and _features_of(store, "a").isna().all()
    flags = store.read_table("flags")
    assert flags.loc[flags["user_id"] == "a"].empty and not flags.loc[flags["user_id"] == "n1"].empty
    # the flag command refuses the erased user instead of auditing a flag no load would store
    with pytest.raises(NotFoundError, match="'a' was erased"):
        workflow.record_flags(store, settings, ws, [{"user_id": "a", "label": "fraud", "canonical": "fraud", "severity": 1.0,
                                                     "ts": pd.Timestamp.now(tz="UTC"), "source": "test"}])
    assert not [e for e in workflow.audit_trail(store, "a") if e.action == "flag"]


def test_the_embedded_tombstone_is_written_first_and_survives_a_failed_erasure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from loaders import StoreError

    settings, ws = Settings(), tmp_path / "ws"
    data = write_dir(tiny_frames(), tmp_path / "data")
    with EmbeddedStore(ws) as store:
        workflow.load_into(store, data, settings, ws)

        def crash(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            raise StoreError("disk full (test)")

        with monkeypatch.context() as patch, pytest.raises(StoreError, match="disk full"):
            patch.setattr(EmbeddedStore, "_write_version", crash)
            workflow.forget(store, settings, "a")
        # the erasure did not happen, but the tombstone is there: a reload cannot bring more of
        # a back meanwhile, and running forget again finishes the erasure
        assert json.loads((ws / "erased.json").read_text()) == {"user_ids": ["a"]}
        assert workflow.load_into(store, data, settings, ws).rejected == A_ROWS
        assert workflow.forget(store, settings, "a")["links"] == 1
        assert EmbeddedStore(ws).erased_user_ids() == frozenset({"a"})


def test_erasure_and_reload_through_the_cli_keep_the_privacy_scan_clean(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The privacy scan of tests/test_privacy.py over the workspace, the rejects file and every
    command's output after forget and a reload, on generated data with phones and cards."""
    ws, outdir, data = tmp_path / "ws", tmp_path / "out", tmp_path / "data"
    outdir.mkdir()
    run = WorkspaceCli(ws)
    run("generate", "--users", "300", "--seed", "3", "--out", str(data))
    run("score", str(data), "--out", str(outdir / "scores.csv"))
    links = pd.read_parquet(data / "links.parquet")
    user = str(links["user_id"].value_counts().index[0])  # the user with the most links
    said = run("forget", user, "--note", "request 12")
    assert f"erased {user}" in said and "set aside" in said
    said = run("load", str(data), "--rejects", str(outdir / "rejects.csv"))
    assert ERASED_USER in said
    rejects = pd.read_csv(outdir / "rejects.csv", keep_default_na=False)
    assert set(rejects["expected"]) == {ERASED_USER} and (rejects.loc[rejects["table"] == "links", "value"] == user).all()
    assert int((rejects["table"] == "links").sum()) == int((links["user_id"] == user).sum())
    run("score", "--out", str(outdir / "again.csv"))
    assert user not in pd.read_csv(outdir / "again.csv", dtype=str)["user_id"].tolist()
    with EmbeddedStore(ws) as store:
        assert store.erased_user_ids() == frozenset({user})
        kept = store.read_table("links")
        mine = kept.loc[kept["user_id"] == user, "ident"]
        # only links to identifiers other users share are kept; none of the erased user's own came back
        assert all((kept.loc[kept["ident"] == i, "user_id"] != user).any() for i in mine)
    texts = {str(p): _text_of(p) for p in list(ws.rglob("*")) + list(outdir.rglob("*")) if p.is_file()}
    texts.update({f"output of socialrisk {k}": v for k, v in run.logs.items()})
    assert any(p.endswith("erased.json") for p in texts) and any(p.endswith("rejects.csv") for p in texts)
    values = _raw_values(data)
    assert _leaks({"the input itself": _text_of(data / "links.parquet")}, values)  # the scan finds what is there
    assert _leaks(texts, values) == []


@pytest.mark.neo4j
def test_erasure_and_reload_on_neo4j_keep_the_database_clean(neo4j_store, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The Neo4j half of the privacy scan after forget and a reload: no raw identifier value in
    any node or relationship, and none of the erased user's own identifiers back."""
    from loaders.synthetic import generate, write_tables

    settings, ws, data = Settings(), tmp_path / "ws", tmp_path / "data"
    write_tables(generate(n_users=300, seed=3), data, fmt="parquet")
    workflow.load_into(neo4j_store, data, settings, ws)
    links = pd.read_parquet(data / "links.parquet")
    user = str(links["user_id"].value_counts().index[0])
    workflow.forget(neo4j_store, settings, user)
    report = workflow.load_into(neo4j_store, data, settings, ws)
    assert report.rejected["links"] == int((links["user_id"] == user).sum()) and sum(report.added.values()) == 0
    run = neo4j_store._driver.execute_query
    own = run("MATCH (u:User {id: $id})-[:USES]->(i) WHERE COUNT { (i)<-[:USES]-() } = 1 RETURN count(i) AS n", id=user,
              database_="neo4j").records[0]["n"]
    assert own == 0
    assert run("MATCH (t:Tombstone) RETURN collect(t.id) AS ids", database_="neo4j").records[0]["ids"] == [user]
    nodes = run("MATCH (n) RETURN properties(n) AS p", database_="neo4j").records
    rels = run("MATCH ()-[r]->() RETURN properties(r) AS p", database_="neo4j").records
    export = "\n".join(json.dumps(r["p"], default=str) for r in [*nodes, *rels])
    assert _leaks({"neo4j export": export}, _raw_values(data)) == []
