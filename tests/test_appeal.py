"""Appeals, disputes, the audit trail and recalibration on the embedded store, on a graph small
enough to follow by hand (tests/conftest.py: f1 is confirmed fraud and shares device DEV-1 with
a, and an IP with b, c and g; g is known good)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from graph.store import EmbeddedStore
from loaders import NotFoundError, ParameterError
from socialrisk import workflow
from socialrisk.cli import app
from socialrisk.settings import Settings
from tests.test_flag import KEY, _exact_exposure, _write


@pytest.fixture()
def ws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SOCIALRISK_PSEUDONYM_KEY", KEY)
    monkeypatch.setenv("SOCIALRISK_ACTOR", "analyst-7")
    with EmbeddedStore(tmp_path / "ws") as store:
        workflow.load_into(store, _write(tmp_path / "data"), Settings(), tmp_path / "ws")
        workflow.score(store, Settings(), workspace=tmp_path / "ws")
    return tmp_path / "ws"


def _device(store: EmbeddedStore) -> str:
    keys = [str(k) for k in store.projection().ident_keys]
    return next(k for k in keys if k.startswith("device:"))


def test_scores_carry_their_model_version_config_and_snapshot(ws: Path) -> None:
    with EmbeddedStore(ws) as store:
        scores, meta = store.read_result("scores")
        version = store.current_model()
        assert version and set(scores["model_version"]) == {version} and meta["model_version"] == version
        assert set(scores["config_hash"]) == {Settings().config_hash()}
        assert set(scores["snapshot"]) == {store.metadata()["snapshot"]}
        # a second scoring uses the same version: nothing is refitted behind the analyst's back
        again = workflow.score(store, Settings(), workspace=ws)
        assert again.meta["model_version"] == version and len(store.list_models()) == 1
        # the load that brought the flags is in the audit log too
        (load_entry,) = workflow.audit_trail(store)
        assert load_entry.action == "load" and load_entry.after["added"]["flags"] == 2 and load_entry.after["snapshot"] == 1


def test_what_if_names_the_link_and_the_score_without_it(ws: Path) -> None:
    with EmbeddedStore(ws) as store:
        view = workflow.appeal_view(store, Settings(), ws, "a")
        assert view.explanation.contributions[0].seed == "f1"
        device = _device(store)
        (first,) = [w for w in view.what_if if w.other == device]
        assert first.target == "identifier" and first.link.startswith("device d-")
        # without its only path to the fraud, a's graph risk is gone: the score can only rise
        assert first.credit_score >= int(view.score["credit_score"])
        assert first.risk <= float(view.score["risk"]) + 1e-12
        stored = store.read_result("scores")[0]
        assert stored.loc[stored["user_id"] == "a", "risk"].item() == view.score["risk"]  # a what-if writes nothing
        assert store.disputes().empty


def test_a_dispute_marks_the_link_and_down_weights_it_incrementally(ws: Path) -> None:
    settings = Settings()
    with EmbeddedStore(ws) as store:
        workflow.flag(store, settings, ws, "c", "fraud")  # a kept exposure state
        device = _device(store)
        before_edges = store.read_tables().links
        out = workflow.appeal(store, settings, ws, "a", "dispute", other=device, reason="family_member", note="f1 is a's brother")
        assert out.moved > 0 and out.error_bound is not None
        # the link is still stored; the dispute is in force and weighs it by a quarter
        assert len(store.read_tables().links) == len(before_edges)
        disputes = store.disputes()
        assert disputes[["user_id", "other", "reason", "actor"]].values.tolist() == [["a", device, "family_member", "analyst-7"]]
        p = store.projection()
        a, j = int(p.index_of(["a"])[0]), int(np.flatnonzero(p.ident_keys == device)[0])
        assert p.incidence[a, j] == pytest.approx(0.25)
        # the kept exposure is the exposure of the disputed graph, within its bound
        exact, ids = _exact_exposure(store)
        state = np.load(ws / "state" / "push.npz")
        assert np.abs(state["p"][: len(ids)] / state["seeds"].sum() - exact).sum() <= out.error_bound + 1e-9
        assert float(out.after["risk"]) <= float(out.before["risk"]) + 1e-12
        # every step is in the audit trail, who and what, before and after
        trail = workflow.audit_trail(store, "a")
        assert [e.action for e in trail] == ["dispute_link", "appeal_decision"]
        assert trail[-1].actor == "analyst-7" and trail[-1].before["risk"] == pytest.approx(float(out.before["risk"]))
        # withdrawn, the link counts whole again
        workflow.appeal(store, settings, ws, "a", "withdraw", other=device)
        assert store.disputes().empty and store.projection().incidence[a, j] == pytest.approx(1.0)


def test_clearing_a_flag_and_counter_evidence_are_audited(ws: Path) -> None:
    settings = Settings()
    with EmbeddedStore(ws) as store:
        out = workflow.appeal(store, settings, ws, "f1", "overturn_flag", note="identity theft victim, police report 2026-118")
        assert out.before["flag"] == "fraud" and out.after["flag"] == "benign"
        assert float(out.after["risk"]) < float(out.before["risk"])
        workflow.appeal(store, settings, ws, "b", "counter_evidence", note="24 months of verified utility payments")
        actions = [(e.action, e.user_id) for e in workflow.audit_trail(store)]
        assert ("overturn_flag", "f1") in actions and ("counter_evidence", "b") in actions
        flags = store.read_tables().flags
        assert "verified utility payments" in flags["source"].iloc[-1]


def test_appeal_errors_are_clear(ws: Path) -> None:
    settings = Settings()
    with EmbeddedStore(ws) as store:
        with pytest.raises(ParameterError, match="dispute reason"):
            workflow.appeal(store, settings, ws, "a", "dispute", other=_device(store), reason="my cat did it")
        with pytest.raises(NotFoundError, match="no link"):
            workflow.appeal(store, settings, ws, "b", "dispute", other=_device(store), reason="other")
        with pytest.raises(NotFoundError, match="no dispute"):
            workflow.appeal(store, settings, ws, "a", "withdraw", other=_device(store))
        with pytest.raises(ParameterError, match="appeal action"):
            workflow.appeal(store, settings, ws, "a", "forgive")
        assert [e.action for e in workflow.audit_trail(store)] == ["load"]  # nothing refused was written


def test_calibrate_writes_a_new_version_and_reports_the_drift(ws: Path) -> None:
    settings = Settings()
    with EmbeddedStore(ws) as store:
        first = store.current_model()
        workflow.flag(store, settings, ws, "c", "fraud")
        cal = workflow.calibrate(store, settings, workspace=ws)
        assert cal.previous == first and cal.current != first and store.current_model() == cal.current
        assert cal.psi is not None and cal.psi >= 0 and "credit_score" in cal.shift["dimension"].tolist()
        assert abs(sum(cal.approval["after"].values()) - 1) < 1e-9
        # the previous version stays usable for comparison
        old = workflow.score(store, settings, workspace=ws, model=first)
        assert set(old.scores["model_version"]) == {first}
        assert {m["version"] for m in store.list_models()} == {first, cal.current}
        assert workflow.audit_trail(store)[-1].action == "calibrate"


def test_a_model_signed_with_another_key_is_not_loaded(ws: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from loaders import ConfigError

    with EmbeddedStore(ws) as store:
        version = store.current_model()
        payload, meta = store.read_model(version)
        monkeypatch.setenv("SOCIALRISK_PSEUDONYM_KEY", "another-key-0123456789abcdef")
        with pytest.raises(ConfigError, match="not signed"):
            workflow.load_model(store, Settings(), ws, version)


def test_cli_appeal_audit_calibrate(ws: Path) -> None:
    runner = CliRunner()
    view = runner.invoke(app, ["appeal", "a", "--workspace", str(ws)], catch_exceptions=False)
    assert view.exit_code == 0, view.output
    assert "without its link to device d-" in view.output and "would be" in view.output
    with EmbeddedStore(ws) as store:
        device = _device(store)
    done = runner.invoke(
        app, ["appeal", "a", "--dispute", device, "--reason", "stolen_device", "--note", "reported stolen", "--workspace", str(ws)],
        catch_exceptions=False,
    )
    assert done.exit_code == 0, done.output
    assert "disputed" in done.output and "credit score" in done.output
    trail = runner.invoke(app, ["audit", "a", "--workspace", str(ws), "--json"], catch_exceptions=False)
    entries = json.loads(trail.output)
    assert [e["action"] for e in entries] == ["dispute_link", "appeal_decision"] and entries[0]["actor"] == "analyst-7"
    cal = runner.invoke(app, ["calibrate", "--workspace", str(ws)], catch_exceptions=False)
    assert cal.exit_code == 0, cal.output
    assert "population stability index" in cal.output and "approval" in cal.output
    models = runner.invoke(app, ["models", "--workspace", str(ws)], catch_exceptions=False)
    assert models.exit_code == 0 and models.output.count("m-") >= 1 and "*" in models.output


@pytest.mark.neo4j
def test_appeal_audit_and_calibrate_on_neo4j(neo4j_store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    from loaders import load
    from tests.conftest import KEY as STORE_KEY
    from tests.conftest import tiny_frames

    monkeypatch.setenv("SOCIALRISK_PSEUDONYM_KEY", STORE_KEY.decode())
    monkeypatch.setenv("SOCIALRISK_ACTOR", "analyst-7")
    settings = Settings()
    load(tiny_frames(), neo4j_store, key=STORE_KEY)
    first = workflow.score(neo4j_store, settings, workspace=tmp_path)
    version = first.meta["model_version"]
    assert neo4j_store.current_model() == version
    rec = neo4j_store._driver.execute_query("MATCH (u:User {id: 'a'}) RETURN u.model_version AS v, u.config_hash AS h", database_="neo4j").records[0]
    assert rec["v"] == version and rec["h"] == settings.config_hash()
    view = workflow.appeal_view(neo4j_store, settings, tmp_path, "a")
    device = next(w.other for w in view.what_if if w.target == "identifier" and w.other.startswith("device:"))
    out = workflow.appeal(neo4j_store, settings, tmp_path, "a", "dispute", other=device, reason="public_terminal")
    assert float(out.after["risk"]) <= float(out.before["risk"]) + 1e-12
    # the link stays in the graph, marked; the projection ignores it
    marked = neo4j_store._driver.execute_query(
        "MATCH (:User {id: 'a'})-[r:USES]->(i:Identifier {key: $key}) RETURN r.disputed AS d", key=device, database_="neo4j"
    ).records
    assert [r["d"] for r in marked] == ["public_terminal"]
    p = neo4j_store.projection(settings.graph)
    assert p.incidence[int(p.index_of(["a"])[0]), int(np.flatnonzero(p.ident_keys == device)[0])] == 0.0
    assert [e.action for e in workflow.audit_trail(neo4j_store, "a")] == ["dispute_link", "appeal_decision"]
    # the embedded store answers the same for the same steps
    embedded = EmbeddedStore(tmp_path / "ws")
    load(tiny_frames(), embedded, key=STORE_KEY)
    workflow.score(embedded, settings, workspace=tmp_path / "ws")
    twin = workflow.appeal(embedded, settings, tmp_path / "ws", "a", "dispute", other=device, reason="public_terminal")
    assert float(twin.after["risk"]) == pytest.approx(float(out.after["risk"]), abs=1e-9)
    cal = workflow.calibrate(neo4j_store, settings, workspace=tmp_path)
    assert cal.previous == version and neo4j_store.current_model() == cal.current
    assert workflow.audit_trail(neo4j_store)[-1].action == "calibrate"


def test_forget_erases_personal_data_and_stops_serving_scores(ws: Path) -> None:
    settings = Settings()
    with EmbeddedStore(ws) as store:
        before = store.read_tables()
        removed = workflow.forget(store, settings, "a", note="erasure request 2026-77")
        # a's phone is its own (removed); its device is shared with f1 (kept, evidence for f1)
        assert removed == {"feature_values": 3, "links": 1, "scores": 1}  # repayments total, late, chargebacks
        after = store.read_tables()
        assert after.users.set_index("user_id").loc["a"].isna().all()
        mine = after.links.loc[after.links["user_id"] == "a"]
        assert len(mine) == 1 and mine["kind"].tolist() == ["device"]
        assert len(after.relations) == len(before.relations) and len(after.flags) == len(before.flags)
        scores, _ = store.read_result("scores")
        assert "a" not in scores["user_id"].tolist()
        again = workflow.score(store, settings, workspace=ws)
        assert "a" not in again.scores["user_id"].tolist()  # later scoring leaves it out
        (entry,) = [e for e in workflow.audit_trail(store, "a") if e.action == "forget"]
        assert entry.after["removed"]["links"] == 1 and entry.detail["note"] == "erasure request 2026-77"
        with pytest.raises(NotFoundError, match="ghost"):
            workflow.forget(store, settings, "ghost")


@pytest.mark.neo4j
def test_forget_on_neo4j(neo4j_store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    from loaders import load
    from tests.conftest import KEY as STORE_KEY
    from tests.conftest import tiny_frames

    monkeypatch.setenv("SOCIALRISK_PSEUDONYM_KEY", STORE_KEY.decode())
    load(tiny_frames(), neo4j_store, key=STORE_KEY)
    workflow.score(neo4j_store, Settings(), workspace=tmp_path)
    removed = workflow.forget(neo4j_store, Settings(), "a")
    assert removed["links"] == 1 and removed["scores"] == 1
    q = neo4j_store._driver.execute_query
    rec = q("MATCH (u:User {id: 'a'}) RETURN u.risk AS risk, [(u)-[:USES]->(i) | i.kind] AS kinds", database_="neo4j").records[0]
    assert rec["risk"] is None and rec["kinds"] == ["device"]
    assert "a" not in neo4j_store.read_result("scores")[0]["user_id"].tolist()
    assert [e.action for e in workflow.audit_trail(neo4j_store, "a")][-1] == "forget"


def test_a_failed_write_back_leaves_the_previous_model_version_current(ws: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from loaders import StoreError

    settings = Settings()
    with EmbeddedStore(ws) as store:
        first = store.current_model()
        scores_before = store.read_result("scores")[0]
        workflow.flag(store, settings, ws, "c", "fraud")

        def refuse(self, name, frame, *, meta):  # type: ignore[no-untyped-def]
            raise StoreError("disk full (test)")

        monkeypatch.setattr(EmbeddedStore, "write_result", refuse)
        with pytest.raises(StoreError, match="disk full"):
            workflow.calibrate(store, settings, workspace=ws)
        monkeypatch.undo()
        assert store.current_model() == first  # the new version is registered, not current
        pd_equal = store.read_result("scores")[0]
        assert pd_equal["risk"].tolist() == scores_before["risk"].tolist()
        assert not [e for e in workflow.audit_trail(store) if e.action == "calibrate"]
