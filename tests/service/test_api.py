"""Every route of the service through FastAPI's TestClient, on the embedded store."""

from __future__ import annotations

import hmac
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from graph.store import EmbeddedStore
from loaders.errors import ConfigError, StoreError
from scoring.credit import credit_score
from socialrisk import workflow
from socialrisk.service import ApiKeys, ServiceRuntime, api_keys, create_app
from socialrisk.service import writer as writer_module
from socialrisk.settings import ServiceConfig, Settings
from tests.service.conftest import API_KEY, AUTH, make_client, service_settings, wait_for

ROOT = Path(__file__).resolve().parents[2]


def _score_row(scores: pd.DataFrame, user_id: str) -> pd.Series:
    return scores.loc[scores["user_id"] == user_id].iloc[-1]


def _unflagged_with_neighbours(client: TestClient, scores: pd.DataFrame) -> tuple[str, list[str]]:
    """A user not flagged, in a ring, with users around it that are not flagged fraud either."""
    for uid in scores.loc[(scores["flag"] == "") & (scores["ring_id"] != ""), "user_id"]:
        nodes = client.get(f"/v1/users/{uid}/neighbourhood?hops=2&limit=20", headers=AUTH).json()["nodes"]
        users = [n["id"] for n in nodes if n["type"] == "user" and n["id"] != uid and not n["fraud_flag"]]
        if len(users) >= 2:
            return uid, users
    pytest.fail("no unflagged user with unflagged neighbours in the generated population")


# -- authentication ----------------------------------------------------------------------------


def test_every_v1_route_needs_a_valid_key(client: TestClient) -> None:
    routes = [(path, method.upper()) for path, ops in client.get("/openapi.json").json()["paths"].items() if path.startswith("/v1")
              for method in ops]
    assert len(routes) >= 9
    for template, method in routes:
        path = template.replace("{user_id}", "u0000001").replace("{flag_id}", "f").replace("{appeal_id}", "a")
        if True:
            for headers in ({}, {"Authorization": "Bearer not-the-key-0123456789"}, {"Authorization": f"Basic {API_KEY}"}):
                r = client.request(method, path, headers=headers, json={})
                assert r.status_code == 401, (method, path, headers, r.text)
                assert r.headers["www-authenticate"] == "Bearer"
                assert "API key" in r.json()["detail"]


def test_health_routes_need_no_key(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["ready"] and ready.json()["model"]["loaded"]
    assert client.get("/metrics").status_code == 200


def test_keys_are_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    keys = api_keys(ServiceConfig(), {"SOCIALRISK_API_KEYS": f"{API_KEY}, second-key-0123456789abc"})
    calls = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((len(a), len(b)))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    assert keys.check(API_KEY) is not None and keys.check("second-key-0123456789abc") is not None
    assert keys.check("wrong") is None and keys.check("") is None
    # every configured key is compared every time (no early exit), always digests of equal length
    assert len(calls) == 8 and set(calls) == {(32, 32)}


def test_the_service_refuses_to_start_without_a_good_key(ws: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SOCIALRISK_API_KEYS")
    with pytest.raises(ConfigError, match="no API key is configured"):
        create_app(Settings(), "embedded", ws)
    with pytest.raises(ConfigError, match="at least 16") as info:
        api_keys(ServiceConfig(api_keys=("short-key",)))
    assert "short-key" not in str(info.value)  # keys never appear in messages
    assert isinstance(api_keys(ServiceConfig(api_keys=(API_KEY,))), ApiKeys)


def test_one_service_per_workspace(ws: Path) -> None:
    first = ServiceRuntime(service_settings(), "embedded", ws)
    first.start()
    try:
        with pytest.raises(ConfigError, match="another 'socialrisk serve'"):
            ServiceRuntime(service_settings(), "embedded", ws).start()
    finally:
        first.stop()


# -- enrich ------------------------------------------------------------------------------------


def test_enrich_serves_the_stored_score(client: TestClient, scores: pd.DataFrame) -> None:
    for uid in (scores.loc[scores["flag"] == "fraud", "user_id"].iloc[0], scores.loc[scores["graph_risk"] > 0.1, "user_id"].iloc[0], "u0000001"):
        row = _score_row(scores, uid)
        body = client.post("/v1/enrich", json={"user_id": uid}, headers=AUTH).json()
        assert body["risk"] == pytest.approx(row["risk"]) and body["graph_risk"] == pytest.approx(row["graph_risk"])
        assert body["credit_score"] == row["credit_score"] and body["decision"] == row["decision"]
        assert body["reasons"] == [r for r in row["reasons"].split(";") if r]
        assert body["reason_codes"] == [r for r in row["reason_codes"].split(";") if r]
        assert body["flag"] == (row["flag"] or None) and body["ring_id"] == (row["ring_id"] or None)
        assert body["model_version"] == row["model_version"] and body["snapshot"] == row["snapshot"]
        dims = {c[4:]: (None if pd.isna(row[c]) else pytest.approx(row[c])) for c in row.index if c.startswith("dim_")}
        assert body["dimensions"] == dims
        assert (body["stale"], body["updated"], body["neutral"]) == (False, False, False)


def test_unknown_user_is_404_or_neutral(ws: Path) -> None:
    for client in make_client(ws):
        r = client.post("/v1/enrich", json={"user_id": "nobody"}, headers=AUTH)
        assert r.status_code == 404 and "unknown user 'nobody'" in r.json()["detail"]
        batch = client.post("/v1/enrich/batch", json={"user_ids": ["u0000001", "nobody"]}, headers=AUTH).json()
        assert [s["user_id"] for s in batch["results"]] == ["u0000001"] and batch["unknown"] == ["nobody"]
    for client in make_client(ws, service_settings(unknown_user="neutral")):
        body = client.post("/v1/enrich", json={"user_id": "nobody"}, headers=AUTH).json()
        assert body["neutral"] and body["risk"] == 0.05 and body["credit_score"] == int(credit_score(np.array([0.05]))[0])
        assert body["reasons"] == [] and set(body["dimensions"].values()) == {None}
        batch = client.post("/v1/enrich/batch", json={"user_ids": ["nobody", "u0000001"]}, headers=AUTH).json()
        assert [s["neutral"] for s in batch["results"]] == [True, False] and batch["unknown"] == []


def test_batch_keeps_the_order_and_stops_at_1000(client: TestClient, scores: pd.DataFrame) -> None:
    ids = scores["user_id"].tolist()[:1000][::-1]
    body = client.post("/v1/enrich/batch", json={"user_ids": ids}, headers=AUTH).json()
    assert [s["user_id"] for s in body["results"]] == ids
    r = client.post("/v1/enrich/batch", json={"user_ids": ids + ["u0000001"]}, headers=AUTH)
    assert r.status_code == 422 and "user_ids" in r.json()["detail"] and "1000" in r.json()["detail"]


@pytest.mark.parametrize(
    ("method", "path", "body", "words"),
    [
        ("POST", "/v1/enrich", {}, ["user_id", "Field required"]),
        ("POST", "/v1/enrich", {"user_id": ""}, ["user_id", "at least 1 character"]),
        ("POST", "/v1/enrich", {"user_id": 5}, ["user_id", "valid string"]),
        ("POST", "/v1/enrich", {"user_id": "u1", "extra": 1}, ["extra", "not permitted"]),
        ("POST", "/v1/enrich", "{not json", ["JSON"]),
        ("POST", "/v1/enrich", [1, 2], ["valid dictionary"]),
        ("POST", "/v1/enrich/batch", {"user_ids": []}, ["user_ids", "at least 1"]),
        ("POST", "/v1/flags", {"user_id": "u0000001", "label": "fraud", "severity": 2}, ["severity", "less than or equal to 1"]),
        ("POST", "/v1/flags", {"user_id": "u0000001", "label": "suspicious"}, ["unknown flag label 'suspicious'", "fraud"]),
        ("POST", "/v1/appeals", {"user_id": "u0000001", "action": "dispute"}, ["needs 'other'"]),
        ("POST", "/v1/appeals", {"user_id": "u0000001", "action": "forgive"}, ["action", "dispute"]),
        ("GET", "/v1/users/u0000001/neighbourhood?hops=9", None, ["hops", "less than or equal to 3"]),
        ("GET", "/v1/users/u0000001/neighbourhood?hops=3&limit=100", None, ["limit ** hops", "1,000,000"]),
        ("GET", "/v1/users/u0000001/explanation?top=zero", None, ["top", "valid integer"]),
    ],
)
def test_malformed_input_is_422_with_a_clear_message(client: TestClient, method: str, path: str, body: object, words: list[str]) -> None:
    kwargs = {"content": body} if isinstance(body, str) else {"json": body}
    r = client.request(method, path, headers={**AUTH, "Content-Type": "application/json"}, **kwargs)
    assert r.status_code == 422, r.text
    payload = r.json()
    for word in words:
        assert word in payload["detail"], payload
    assert payload["errors"] and all({"loc", "msg", "type"} <= set(e) for e in payload["errors"])


# -- flags -------------------------------------------------------------------------------------


def _persisted(client: TestClient, flag_id: str) -> dict[str, object] | None:
    status = client.get(f"/v1/flags/{flag_id}", headers=AUTH).json()
    return status if status["persisted"] else None


def test_a_flag_moves_served_scores_within_a_second_and_reaches_the_store(client: TestClient, ws: Path, scores: pd.DataFrame) -> None:
    uid, around = _unflagged_with_neighbours(client, scores)
    before = {u: client.post("/v1/enrich", json={"user_id": u}, headers=AUTH).json() for u in around}
    t0 = time.perf_counter()
    r = client.post("/v1/flags", json={"user_id": uid, "label": "fraud", "severity": 0.9, "note": "chargeback ring"}, headers=AUTH)
    after = {u: client.post("/v1/enrich", json={"user_id": u}, headers=AUTH).json() for u in around}
    elapsed = time.perf_counter() - t0
    assert r.status_code == 202, r.text
    accepted = r.json()
    assert accepted["label"] == "fraud" and accepted["users_moved"] >= len(around) and not accepted["persisted"]
    assert elapsed < 1.0
    # the flagged user: confirmed fraud dominates; its neighbours: risk only goes up, and moved ones say so
    own = client.post("/v1/enrich", json={"user_id": uid}, headers=AUTH).json()
    assert own["flag"] == "fraud" and own["risk"] >= 0.9 and own["reason_codes"][0] == "CONFIRMED_FRAUD" and own["updated"]
    rose = [u for u in around if after[u]["risk"] > before[u]["risk"]]
    assert rose, "a new fraud flag raised no neighbour's risk"
    for u in around:
        assert after[u]["risk"] >= before[u]["risk"] - 1e-12 and after[u]["graph_risk"] >= before[u]["graph_risk"] - 1e-12
        assert after[u]["credit_score"] <= before[u]["credit_score"]
        assert after[u]["updated"] == (u in {c["user_id"] for c in accepted["scores_changed"]} or after[u]["risk"] != before[u]["risk"])
    changed = {c["user_id"]: c for c in accepted["scores_changed"]}
    for u in rose:
        if u in changed:
            assert changed[u]["risk_after"] == pytest.approx(after[u]["risk"])
    # journaled, then written to the store and the audit log by the writer
    status = wait_for(lambda: _persisted(client, accepted["flag_id"]), timeout=20, what="the flag to reach the store")
    assert status["failed"] is None and status["snapshot"] > int(scores["snapshot"].iloc[0])
    with EmbeddedStore(ws) as store:
        flags = store.read_table("flags")
        last = flags.iloc[-1]
        assert (last["user_id"], last["label"], last["severity"]) == (uid, "fraud", 0.9) and accepted["flag_id"] in last["source"]
        entry = store.read_audit(uid)[-1]
        assert entry.action == "flag" and entry.detail["flag_id"] == accepted["flag_id"] and entry.actor.startswith("key-")
        assert entry.detail["note"] == "chargeback ring" and entry.after == {"label": "fraud", "severity": 0.9}
    # the queue drops a batch just after marking it persisted: pending reaches 0 right after
    wait_for(lambda: client.get("/readyz").json()["flags_pending"] == 0, timeout=5, what="no flag pending")


def test_clearing_the_flag_restores_the_scores(client: TestClient, scores: pd.DataFrame) -> None:
    uid, around = _unflagged_with_neighbours(client, scores)
    before = {u: client.post("/v1/enrich", json={"user_id": u}, headers=AUTH).json() for u in [uid, *around]}
    assert client.post("/v1/flags", json={"user_id": uid, "label": "fraud"}, headers=AUTH).status_code == 202
    cleared = client.post("/v1/flags", json={"user_id": uid, "label": "good", "actor": "analyst-7"}, headers=AUTH)
    assert cleared.status_code == 202 and cleared.json()["label"] == "benign"
    for u in [uid, *around]:
        now = client.post("/v1/enrich", json={"user_id": u}, headers=AUTH).json()
        assert now["risk"] == pytest.approx(before[u]["risk"], abs=1e-3)
        assert "LINKED_NEW_FRAUD" not in now["reason_codes"] and "CONFIRMED_FRAUD" not in now["reason_codes"]
    assert client.post("/v1/enrich", json={"user_id": uid}, headers=AUTH).json()["flag"] == "benign"


def test_clearing_a_flag_from_the_scoring_lowers_the_risk(client: TestClient, scores: pd.DataFrame) -> None:
    uid = scores.loc[scores["flag"] == "fraud", "user_id"].iloc[0]
    before = client.post("/v1/enrich", json={"user_id": uid}, headers=AUTH).json()
    r = client.post("/v1/flags", json={"user_id": uid, "label": "benign"}, headers=AUTH)
    assert r.status_code == 202
    after = client.post("/v1/enrich", json={"user_id": uid}, headers=AUTH).json()
    assert after["flag"] == "benign" and after["risk"] < before["risk"] and after["updated"]
    assert "CONFIRMED_FRAUD" not in after["reason_codes"]


def test_flag_errors(client: TestClient) -> None:
    r = client.post("/v1/flags", json={"user_id": "nobody", "label": "fraud"}, headers=AUTH)
    assert r.status_code == 404 and "nobody" in r.json()["detail"]
    assert client.get("/v1/flags/unknown", headers=AUTH).status_code == 404


def test_accepted_flags_survive_a_store_outage_and_a_restart(ws: Path, scores: pd.DataFrame, monkeypatch: pytest.MonkeyPatch) -> None:
    uid = scores.loc[scores["flag"] == "", "user_id"].iloc[3]

    def down(*args: object, **kwargs: object) -> None:
        raise StoreError("the disk is full (simulated)")

    monkeypatch.setattr(writer_module, "write_flags", down)
    for client in make_client(ws):
        r = client.post("/v1/flags", json={"user_id": uid, "label": "fraud"}, headers=AUTH)
        assert r.status_code == 202
        time.sleep(0.5)
        assert not client.get(r.json()["status_url"], headers=AUTH).json()["persisted"]
        assert client.get("/readyz").json()["flags_pending"] == 1
    # the service stopped with the flag only in its journal; the next start writes it
    monkeypatch.undo()
    monkeypatch.setenv("SOCIALRISK_PSEUDONYM_KEY", "service-test-key-0123456789")
    monkeypatch.setenv("SOCIALRISK_API_KEYS", API_KEY)
    for client in make_client(ws):
        flag_id = r.json()["flag_id"]
        wait_for(lambda: _persisted(client, flag_id), timeout=20, what="the journaled flag to reach the store")
    with EmbeddedStore(ws) as store:
        flags = store.read_table("flags")
        assert flags["source"].str.contains(flag_id).sum() == 1
        assert [e.detail.get("flag_id") for e in store.read_audit(uid)].count(flag_id) == 1


# -- reloads -----------------------------------------------------------------------------------


def test_a_new_scoring_is_picked_up_with_the_flags_it_includes(client: TestClient, ws: Path, scores: pd.DataFrame) -> None:
    uid = scores.loc[scores["flag"] == "", "user_id"].iloc[5]
    flag_id = client.post("/v1/flags", json={"user_id": uid, "label": "fraud"}, headers=AUTH).json()["flag_id"]
    wait_for(lambda: _persisted(client, flag_id), what="the flag to reach the store")
    written_before = client.get("/readyz").json()["scores"]["written_at"]
    time.sleep(1.1)  # written_at has a one-second resolution
    with EmbeddedStore(ws) as store:
        workflow.score(store, Settings(), workspace=ws)
    state = client.post("/v1/scores/reload", headers=AUTH).json()
    assert state["scores"]["written_at"] != written_before and state["ready"]
    body = client.post("/v1/enrich", json={"user_id": uid}, headers=AUTH).json()
    assert body["flag"] == "fraud" and not body["updated"]  # in the new scoring itself


# -- appeals -----------------------------------------------------------------------------------


def test_an_appeal_clears_a_flag_and_rescores(client: TestClient, scores: pd.DataFrame) -> None:
    uid = scores.loc[scores["flag"] == "fraud", "user_id"].iloc[1]
    r = client.post("/v1/appeals", json={"user_id": uid, "action": "clear_flag", "note": "identity theft confirmed"}, headers=AUTH)
    assert r.status_code == 202 and r.json()["status"] in ("queued", "running")
    done = wait_for(lambda: (s := client.get(r.json()["status_url"], headers=AUTH).json())["status"] in ("done", "failed") and s,
                    timeout=60, every=0.2, what="the appeal to finish")
    assert done["status"] == "done", done
    assert done["before"]["flag"] == "fraud" and done["after"]["flag"] == "benign"
    assert "CONFIRMED_FRAUD" not in (done["after"]["reason_codes"] or "")
    body = wait_for(lambda: (b := client.post("/v1/enrich", json={"user_id": uid}, headers=AUTH).json())["flag"] == "benign" and b,
                    what="the rescored user to be served")
    assert body["credit_score"] == done["after"]["credit_score"]


def test_appeal_errors(client: TestClient) -> None:
    assert client.post("/v1/appeals", json={"user_id": "nobody", "action": "clear_flag"}, headers=AUTH).status_code == 404
    assert client.get("/v1/appeals/nothing", headers=AUTH).status_code == 404
    r = client.post("/v1/appeals", json={"user_id": "u0000001", "action": "dispute", "other": "device:x", "reason": "aliens"}, headers=AUTH)
    assert r.status_code == 422 and "aliens" in r.json()["detail"]


# -- explanation and neighbourhood -------------------------------------------------------------


def test_explanation_names_the_flagged_accounts(client: TestClient, scores: pd.DataFrame) -> None:
    uid = scores.loc[(scores["flag"] == "") & (scores["graph_risk"] > 0.2), "user_id"].iloc[0]
    body = client.get(f"/v1/users/{uid}/explanation?top=3", headers=AUTH).json()
    assert body["user_id"] == uid and body["credit_score"] == _score_row(scores, uid)["credit_score"]
    assert 1 <= len(body["contributions"]) <= 3
    flagged = set(scores.loc[scores["flag"] == "fraud", "user_id"])
    for c in body["contributions"]:
        assert c["seed"] in flagged and 0 < c["share"] <= 1 and c["seed"] in c["sentence"]
        if c["path"]:
            assert c["path"][0]["source"] == c["seed"] and c["path"][-1]["target"] == uid
    assert client.get("/v1/users/nobody/explanation", headers=AUTH).status_code == 404


def test_neighbourhood_is_the_projection_around_the_user(client: TestClient, ws: Path, scores: pd.DataFrame) -> None:
    with EmbeddedStore(ws) as store:
        projection = store.projection(Settings().graph)
    uid = scores.loc[scores["ring_id"] != "", "user_id"].iloc[0]
    u = int(projection.index_of([uid])[0])
    idents = {str(projection.ident_keys[j]) for j in projection.incidence[u].indices}
    related = set(projection.related[u].indices) | set(projection.related.T.tocsr()[u].indices)
    expected = idents | {str(projection.user_ids[v]) for v in related}
    body = client.get(f"/v1/users/{uid}/neighbourhood?hops=1&limit=100", headers=AUTH).json()
    assert {n["id"] for n in body["nodes"] if n["hop"] == 1} == expected
    assert body["nodes"][0] == {**body["nodes"][0], "id": uid, "hop": 0}
    served = scores.set_index("user_id")
    for n in body["nodes"]:
        if n["type"] == "user":
            assert n["risk"] == pytest.approx(served.loc[n["id"], "risk"]) and n["fraud_flag"] == (served.loc[n["id"], "flag"] == "fraud")
        else:
            assert n["risk"] is None and n["ident_kind"] == n["id"].split(":")[0]
    # bounded: at most `limit` neighbours expanded per node, riskiest users first
    small = client.get(f"/v1/users/{uid}/neighbourhood?hops=2&limit=2", headers=AUTH).json()
    assert sum(1 for n in small["nodes"] if n["hop"] == 1) <= 2 and max(n["hop"] for n in small["nodes"]) <= 2
    assert client.get("/v1/users/nobody/neighbourhood", headers=AUTH).status_code == 404


# -- metrics and schema ------------------------------------------------------------------------


def test_metrics_are_prometheus_text(client: TestClient) -> None:
    client.post("/v1/enrich", json={"user_id": "u0000001"}, headers=AUTH)
    client.post("/v1/enrich", json={"user_id": "nobody"}, headers=AUTH)
    client.get("/v1/users/u0000001/explanation", headers=AUTH)
    r = client.get("/metrics")
    assert r.headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(r.text)}
    requests = {(s.labels["route"], s.labels["status"]): s.value for s in families["socialrisk_http_requests"].samples
                if s.name.endswith("_total")}
    assert requests[("/v1/enrich", "200")] >= 1 and requests[("/v1/enrich", "404")] >= 1
    assert ("/v1/users/{user_id}/explanation", "200") in requests  # route templates, never raw paths
    latency = families["socialrisk_http_request_duration_seconds"]
    assert latency.type == "histogram" and any(s.name.endswith("_bucket") and s.labels["le"] == "0.002" for s in latency.samples)
    for name in ("socialrisk_store_errors", "socialrisk_store_up", "socialrisk_scores_stale", "socialrisk_flags_pending"):
        assert name in families
    assert families["socialrisk_store_up"].samples[0].value == 1


def test_the_served_schema_is_the_committed_one(client: TestClient) -> None:
    committed = json.loads((ROOT / "docs" / "openapi.json").read_text())
    assert client.get("/openapi.json").json() == committed, "regenerate it: .venv/bin/python -m socialrisk.service.openapi"


def test_every_answer_carries_a_request_id_that_reaches_the_journal_and_the_audit(client: TestClient, ws: Path, scores: pd.DataFrame) -> None:
    import logging

    from socialrisk.service.requests import REQUEST_ID, RequestIdFilter

    fresh = client.get("/healthz").headers["x-request-id"]
    assert len(fresh) == 32 and fresh != client.get("/healthz").headers["x-request-id"]
    assert client.get("/healthz", headers={"X-Request-Id": "trace-7"}).headers["x-request-id"] == "trace-7"
    for bad in ("has space", "x" * 129):  # not echoed: replaced by an id of ours
        assert client.get("/healthz", headers={"X-Request-Id": bad}).headers["x-request-id"] not in (bad, "")
    uid = str(scores["user_id"].iloc[3])
    r = client.post("/v1/flags", json={"user_id": uid, "label": "fraud", "severity": 0.5}, headers={**AUTH, "X-Request-Id": "trace-flag-1"})
    assert r.status_code == 202 and r.headers["x-request-id"] == "trace-flag-1"
    journal = (ws / "service" / "flags.jsonl").read_text()
    assert '"request_id": "trace-flag-1"' in journal or '"request_id":"trace-flag-1"' in journal
    wait_for(lambda: _persisted(client, r.json()["flag_id"]), timeout=20, what="the flag to reach the store")
    with EmbeddedStore(ws) as store:
        assert store.read_audit(uid)[-1].detail["request_id"] == "trace-flag-1"
    # log lines written while a request runs name it ("-" outside requests)
    record = logging.LogRecord("socialrisk.service", logging.WARNING, __file__, 1, "x", None, None)
    token = REQUEST_ID.set("trace-log")
    try:
        RequestIdFilter().filter(record)
    finally:
        REQUEST_ID.reset(token)
    assert record.request_id == "trace-log"
    outside = logging.LogRecord("socialrisk.service", logging.WARNING, __file__, 1, "x", None, None)
    RequestIdFilter().filter(outside)
    assert outside.request_id == "-"
