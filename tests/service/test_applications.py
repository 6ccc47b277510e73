"""Applicants scored at application time, and account events, through the HTTP API."""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
import pytest
from fastapi.testclient import TestClient

from graph.store import EmbeddedStore
from tests.service.conftest import AUTH, wait_for


def _fraud_device(population: Path) -> tuple[str, str]:
    """A device value of a user flagged fraud, and that user."""
    links = pd.read_parquet(population / "links.parquet")
    flags = pd.read_parquet(population / "flags.parquet")
    fraud = set(flags.loc[flags["label"] == "fraud", "user_id"].astype(str))
    rows = links[(links["kind"] == "device") & links["user_id"].astype(str).isin(fraud)]
    row = rows.iloc[0]
    return str(row["value"]), str(row["user_id"])


def _post(client: TestClient, body: dict, **headers: str) -> dict:
    r = client.post("/v1/applications", json=body, headers={**AUTH, **headers})
    assert r.status_code == 200, r.text
    return r.json()


def test_a_what_if_scores_a_new_user_and_changes_nothing(client: TestClient, population: Path) -> None:
    device, fraudster = _fraud_device(population)
    plain = _post(client, {"user_id": "applicant-1", "features": {"tenure_days": 30}})
    linked = _post(client, {"user_id": "applicant-1", "features": {"tenure_days": 30}, "links": [{"kind": "device", "value": device}]})
    assert plain["new"] and not plain["committed"] and plain["event_id"] is None
    # sharing a device with an account confirmed as fraud raises the risk, and says so
    assert linked["graph_risk"] > plain["graph_risk"] and linked["risk"] > plain["risk"]
    assert "LINKED_FRAUD_DEVICE" in linked["reason_codes"], linked
    assert any(c["seed"] == fraudster for c in linked["explanation"]), linked["explanation"]
    # the value is never echoed; nothing was kept: the same what-if again gives the same answer
    r = client.post("/v1/applications", json={"user_id": "applicant-1", "links": [{"kind": "device", "value": device}]}, headers=AUTH)
    assert device not in r.text
    again = _post(client, {"user_id": "applicant-1", "features": {"tenure_days": 30}, "links": [{"kind": "device", "value": device}]})
    assert again["risk"] == linked["risk"]
    assert client.post("/v1/enrich", json={"user_id": "applicant-1"}, headers=AUTH).status_code == 404
    assert linked["model_version"] and linked["pending_events"] == 0 and linked["stale"] is False


def test_a_committed_applicant_is_served_at_once_and_reaches_the_store(client: TestClient, population: Path, ws: Path) -> None:
    device, _ = _fraud_device(population)
    body = {"user_id": "applicant-2", "features": {"tenure_days": 10}, "links": [{"kind": "device", "value": device}], "commit": True}
    probe = {"user_id": "applicant-3", "links": [{"kind": "device", "value": device}]}
    before = _post(client, probe)
    first = _post(client, body, **{"Idempotency-Key": "app-2"})
    assert first["committed"] and first["event_id"] and first["new"]
    served = client.post("/v1/enrich", json={"user_id": "applicant-2"}, headers=AUTH).json()
    assert served["risk"] == pytest.approx(first["risk"]) and served["decision"] == first["decision"]
    # the same key again: the first answer, nothing added
    assert _post(client, body, **{"Idempotency-Key": "app-2"})["event_id"] == first["event_id"]
    wait_for(lambda: client.get("/readyz").json()["events_pending"] == 0, timeout=20, what="the application to reach the store")
    with EmbeddedStore(ws) as store:
        tables = store.read_tables()
    assert (tables.links["user_id"] == "applicant-2").sum() == 1
    assert device not in set(tables.links["ident"].astype(str))
    # a later applicant sharing the same device sees the committed one as a co-user
    # (one more user on the device: its hub damping and the fraud exposure it passes on change)
    after = _post(client, probe)
    assert after["graph_risk"] != before["graph_risk"]


def test_events_add_users_links_and_relations(client: TestClient, population: Path) -> None:
    device, fraudster = _fraud_device(population)
    r = client.post("/v1/events", headers=AUTH, json={
        "users": [{"user_id": "ev-1", "features": {"tenure_days": 400}}],
        "links": [{"user_id": "ev-1", "kind": "device", "value": device}],
        "relations": [{"src": "ev-1", "dst": fraudster, "kind": "transfer", "weight": 120.0}],
    })
    assert r.status_code == 202, r.text
    # one event places the new user, one its link and relation
    assert r.json()["users"] == 1 and len(r.json()["event_ids"]) == 2
    served = client.post("/v1/enrich", json={"user_id": "ev-1"}, headers=AUTH)
    assert served.status_code == 200 and served.json()["graph_risk"] > 0


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"user_id": "a", "links": [{"kind": "Device!", "value": "x"}]}, ["kind"]),
        ({"user_id": "a", "links": [{"kind": "device", "value": ""}]}, ["value"]),
        ({"user_id": "a", "links": [{"kind": "device", "value": "x" * 300}]}, ["value", "256"]),
        ({"user_id": "a", "links": [{"kind": "device", "value": str(i)} for i in range(1001)]}, ["links", "1000"]),
        ({"user_id": "a", "relations": [{"user_id": "nobody-1", "kind": "transfer"}, {"user_id": "nobody-2", "kind": "transfer"}]},
         ["nobody-1", "nobody-2", "create_missing"]),
        ({"user_id": "a", "links": [{"kind": "device", "value": "x", "first_seen": "yesterday-ish"}]}, ["first_seen"]),
        ({"user_id": "a", "features": {"tenure_days": "long"}}, ["tenure_days"]),
    ],
)
def test_bad_applications_are_one_sentence_422s(client: TestClient, body: dict, words: list[str]) -> None:
    r = client.post("/v1/applications", json=body, headers=AUTH)
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    for w in words:
        assert w.lower() in detail.lower(), detail


def _app_body(i: int, device: str) -> dict:
    return {"user_id": f"stream-{i:04d}", "features": {"tenure_days": i}, "commit": True,
            "links": [{"kind": "device", "value": device}, {"kind": "phone", "value": f"+44 20 7946 0{i % 1000:03d}"},
                      {"kind": "email", "value": f"stream{i}@example.com"}]}


def test_committed_applications_survive_sigkill_exactly_once(ws: Path, population: Path, tmp_path: Path) -> None:
    import signal
    import threading

    import httpx

    from tests.service.conftest import serve

    device, _ = _fraud_device(population)
    server = serve(["-w", str(ws)], tmp_path)
    acknowledged: list[int] = []
    sent: list[int] = []
    stop = threading.Event()
    try:
        server.wait_ready()

        def stream() -> None:
            with httpx.Client(base_url=server.url, headers=AUTH, timeout=10.0) as http:
                for i in range(10_000):
                    if stop.is_set():
                        return
                    sent.append(i)
                    try:
                        r = http.post("/v1/applications", json=_app_body(i, device))
                    except httpx.TransportError:
                        return
                    if r.status_code == 200:
                        acknowledged.append(i)

        t = threading.Thread(target=stream)
        t.start()
        wait_for(lambda: len(acknowledged) >= 10, timeout=180, what="10 committed applications")
        server.proc.send_signal(signal.SIGKILL)
        server.proc.wait()
        stop.set()
        t.join(timeout=20)
    finally:
        server.stop()
    assert acknowledged
    again = serve(["-w", str(ws)], tmp_path)
    try:
        again.wait_ready()
        wait_for(lambda: again.http.get("/readyz").json()["events_pending"] == 0, timeout=60, what="the journal to reach the store")
        for i in acknowledged[-3:]:  # served again after the restart
            assert again.http.post("/v1/enrich", json={"user_id": f"stream-{i:04d}"}).status_code == 200
    finally:
        again.stop()
    with EmbeddedStore(ws) as store:
        links = store.read_tables().links
    per_user = links[links["user_id"].str.startswith("stream-")].groupby("user_id").size()
    for i in acknowledged:  # every acknowledged application is there, once, whole
        assert per_user.get(f"stream-{i:04d}") == 3, i
    assert set(per_user.unique()) <= {3}  # none is half there (an unacknowledged one may be whole)
    assert len(per_user) <= len(sent)


def test_a_store_outage_keeps_what_ifs_and_journals_commits(ws: Path, population: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from loaders.errors import TransientStoreError
    from tests.service.conftest import make_client

    device, _ = _fraud_device(population)
    real_metadata = EmbeddedStore.metadata
    down = {"on": False}

    def metadata(self: EmbeddedStore) -> dict:
        if down["on"]:
            raise TransientStoreError("the store is down (simulated)")
        return real_metadata(self)

    monkeypatch.setattr(EmbeddedStore, "metadata", metadata)
    for client in make_client(ws):
        down["on"] = True
        wait_for(lambda: client.get("/readyz").status_code == 503, timeout=10, what="the outage to be seen")
        what_if = _post(client, {"user_id": "outage-1", "links": [{"kind": "device", "value": device}]})
        assert what_if["stale"] is True and what_if["risk"] > 0
        committed = _post(client, {**_app_body(1, device), "user_id": "outage-2"})
        assert committed["committed"] and committed["stale"] is True
        time.sleep(1.0)
        assert client.get("/readyz").json()["events_pending"] == 1  # journaled, not written
        down["on"] = False
        wait_for(lambda: client.get("/readyz").json()["events_pending"] == 0, timeout=30, what="the commit to be written once the store is back")
    with EmbeddedStore(ws) as store:
        assert (store.read_tables().links["user_id"] == "outage-2").sum() == 3


def _refused_and_approved(ws: Path) -> tuple[str, str]:
    """A refused (review or reject) user with no flag of its own, and an approved one."""
    with EmbeddedStore(ws) as store:
        scores, _ = store.read_result("scores")
        flagged = set(store.read_tables().flags["user_id"].astype(str))
    scores = scores[~scores["user_id"].astype(str).isin(flagged)]
    refused = scores[scores["decision"] != "approve"].sort_values("credit_score")
    approved = scores[scores["decision"] == "approve"]
    assert len(refused) and len(approved)
    return str(refused["user_id"].iloc[len(refused) // 2]), str(approved["user_id"].iloc[0])


def test_a_refused_users_recourse_is_what_explain_finds(client: TestClient, ws: Path) -> None:
    from scoring.recourse import ACTIONS
    from socialrisk import workflow
    from socialrisk.settings import Settings

    refused, approved = _refused_and_approved(ws)
    r = client.get(f"/v1/users/{refused}/recourse", headers=AUTH)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["user_id"] == refused and body["decision"] != "approve" and body["model_version"]
    with EmbeddedStore(ws) as store:
        batch = workflow.recourse(store, Settings(), refused, workspace=ws).to_dict()
    # the actions open to the user come from its own record and links: the same in the live graph
    named = lambda actions: [(a["code"], a.get("target") or "") for a in actions]  # noqa: E731
    assert named(body["considered"]) == named(batch["considered"]) and body["considered"]
    assert {a["code"] for a in body["considered"]} <= set(ACTIONS)
    assert abs(body["credit_score"] - batch["credit_score"]) <= 2
    for option in body["options"]:
        assert option["credit_score"] > body["credit_score"]
        assert (option["decision"] == "approve") == body["approves"] or not body["approves"]
    assert [[a["code"] for a in o["actions"]] for o in body["options"]] == [[a["code"] for a in o["actions"]] for o in batch["options"]]

    r = client.get(f"/v1/users/{approved}/recourse", headers=AUTH)
    assert r.status_code == 422 and "recourse is for refused or reviewed users" in r.json()["detail"], r.text
    assert client.get("/v1/users/nobody-at-all/recourse", headers=AUTH).status_code == 404


def test_an_application_can_ask_for_its_recourse(client: TestClient, population: Path) -> None:
    device, _ = _fraud_device(population)
    body = {"user_id": "applicant-r", "features": {"tenure_days": 5}, "links": [{"kind": "device", "value": device}]}
    plain = _post(client, body)
    assert plain["recourse"] is None  # not asked for
    asked = _post(client, {**body, "recourse": True})
    assert asked["risk"] == plain["risk"]
    if asked["decision"] == "approve":
        assert asked["recourse"] is None
    else:
        found = asked["recourse"]
        assert found["user_id"] == "applicant-r" and found["credit_score"] == asked["credit_score"]
        # the device shared with an account confirmed as fraud may be disputed
        assert any(a["code"] == "DISPUTE_LINK" and a["target"].startswith("device") for a in found["considered"]), found


def test_a_committed_applicant_can_be_flagged_before_the_next_scoring(client: TestClient, population: Path, ws: Path) -> None:
    plain = _post(client, {"user_id": "applicant-f", "features": {"tenure_days": 300}, "links": [{"kind": "phone", "value": "+44 20 7946 0999"}],
                           "commit": True})
    probe = {"user_id": "applicant-g", "links": [{"kind": "phone", "value": "+44 20 7946 0999"}]}
    before = _post(client, probe)
    r = client.post("/v1/flags", json={"user_id": "applicant-f", "label": "fraud", "severity": 1.0}, headers=AUTH)
    assert r.status_code == 202, r.text
    accepted = r.json()
    assert accepted["scores_changed"][0]["user_id"] == "applicant-f" and accepted["scores_changed"][0]["risk_before"] == pytest.approx(plain["risk"])
    served = client.post("/v1/enrich", json={"user_id": "applicant-f"}, headers=AUTH).json()
    assert served["flag"] == "fraud" and served["risk"] >= 0.99 and served["decision"] == "reject"
    # the next applicant sharing its phone meets an account confirmed as fraud
    after = _post(client, probe)
    assert after["graph_risk"] > before["graph_risk"] and "LINKED_FRAUD_PHONE" in after["reason_codes"], after
    wait_for(lambda: client.get(accepted["status_url"], headers=AUTH).json()["persisted"], timeout=20, what="the flag to reach the store")
    with EmbeddedStore(ws) as store:
        flags = store.read_tables().flags
    assert ((flags["user_id"] == "applicant-f") & (flags["label"] == "fraud")).sum() == 1
