"""The service against a real Neo4j: neighbourhoods from the store, flags written to it, and
the service riding out the server being stopped and started again."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from graph.store import EmbeddedStore
from loaders.errors import SocialRiskError, TransientStoreError
from socialrisk import workflow
from socialrisk.settings import Settings
from tests.conftest import _neo4j_unavailable
from tests.service.conftest import AUTH, CLI, PSEUDONYM_KEY, make_client, serve, wait_for

pytestmark = pytest.mark.neo4j


@pytest.fixture(scope="module")
def neo4j_ws(population: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The population loaded into Neo4j and scored there; the workspace holds the service's files."""
    if not os.environ.get("SOCIALRISK_NEO4J_PASSWORD"):
        _neo4j_unavailable("SOCIALRISK_NEO4J_PASSWORD is not set; start a server with 'socialrisk neo4j start'")
    old = os.environ.get("SOCIALRISK_PSEUDONYM_KEY")
    os.environ["SOCIALRISK_PSEUDONYM_KEY"] = PSEUDONYM_KEY
    ws = tmp_path_factory.mktemp("neo4j") / "ws"
    try:
        try:
            store = workflow.open_neo4j()
        except SocialRiskError as exc:
            _neo4j_unavailable(str(exc))
        with store:
            store.clear()  # type: ignore[attr-defined]
            workflow.load_into(store, population, Settings(), ws)
            workflow.score(store, Settings(), workspace=ws)
        yield ws
        with workflow.open_neo4j() as store:
            store.clear()  # type: ignore[attr-defined]
    finally:
        if old is None:
            os.environ.pop("SOCIALRISK_PSEUDONYM_KEY", None)
        else:
            os.environ["SOCIALRISK_PSEUDONYM_KEY"] = old


def _stored_scores() -> pd.DataFrame:
    with workflow.open_neo4j() as store:
        return store.read_result("scores")[0]


def test_neighbourhood_comes_from_neo4j(neo4j_ws: Path, scored: Path, scores: pd.DataFrame) -> None:
    with EmbeddedStore(scored) as store:
        projection = store.projection(Settings().graph)
    uid = scores.loc[scores["ring_id"] != "", "user_id"].iloc[0]
    u = int(projection.index_of([uid])[0])
    shared = {str(projection.ident_keys[j]) for j in projection.incidence[u].indices}
    for client in make_client(neo4j_ws, store="neo4j"):
        body = client.get(f"/v1/users/{uid}/neighbourhood?hops=1&limit=100", headers=AUTH).json()
        assert body["store"] == "neo4j" and body["nodes"][0]["id"] == uid
        hop1 = {n["id"] for n in body["nodes"] if n["hop"] == 1}
        # Neo4j also keeps identifiers only this user has (the projection drops them)
        assert shared <= hop1
        stored = _stored_scores().set_index("user_id")
        for n in body["nodes"]:
            if n["type"] == "user":
                assert n["credit_score"] == stored.loc[n["id"], "credit_score"]
        two = client.get(f"/v1/users/{uid}/neighbourhood?hops=2&limit=3", headers=AUTH).json()
        assert max(n["hop"] for n in two["nodes"]) <= 2 and sum(n["hop"] == 1 for n in two["nodes"]) <= 3
        assert client.get("/v1/users/nobody/neighbourhood", headers=AUTH).status_code == 404


def test_uvicorn_serves_neo4j_and_writes_flags_to_it(neo4j_ws: Path, scores: pd.DataFrame, tmp_path: Path) -> None:
    server = serve(["--store", "neo4j", "-w", str(neo4j_ws)], tmp_path)
    try:
        ready = server.wait_ready()
        assert ready["store"] == {"kind": "neo4j", "reachable": True, "error": None}
        stored = _stored_scores().set_index("user_id")
        uid = scores.loc[scores["flag"] == "", "user_id"].iloc[7]
        body = server.http.post("/v1/enrich", json={"user_id": uid}).json()
        assert body["credit_score"] == stored.loc[uid, "credit_score"] and not body["stale"]
        accepted = server.http.post("/v1/flags", json={"user_id": uid, "label": "fraud"}).json()
        wait_for(lambda: server.http.get(accepted["status_url"]).json()["persisted"], what="the flag to reach Neo4j")
        with workflow.open_neo4j() as store:
            flags = store.read_table("flags")
            assert flags["source"].astype(str).str.contains(accepted["flag_id"]).sum() == 1
            assert store.read_audit(uid)[-1].detail["flag_id"] == accepted["flag_id"]
        # a local copy of the scores is kept, to answer from if Neo4j is down when the service starts
        assert (neo4j_ws / "service" / "cache" / "scores.parquet").exists()
    finally:
        assert server.stop() in (0, -15), server.log.read_text()[-2000:]  # uvicorn re-raises SIGTERM after a clean shutdown


def _neo4j(command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CLI, "neo4j", command], env=dict(os.environ), capture_output=True, text=True, timeout=240)


def test_the_service_rides_out_neo4j_going_down_and_coming_back(neo4j_ws: Path, scores: pd.DataFrame, tmp_path: Path) -> None:
    config = tmp_path / "service.toml"
    config.write_text("[service]\nhealth_seconds = 0.5\nrefresh_seconds = 1\nstore_timeout = 1.5\n")
    server = serve(["--store", "neo4j", "-w", str(neo4j_ws), "--config", str(config)], tmp_path)
    stopped = False
    try:
        server.wait_ready()
        uid = scores.loc[scores["ring_id"] != "", "user_id"].iloc[2]
        fresh = server.http.post("/v1/enrich", json={"user_id": uid}).json()
        assert not fresh["stale"]
        assert server.http.get(f"/v1/users/{uid}/neighbourhood?hops=2&limit=50").status_code == 200
        own = workflow.open_neo4j()  # a connection made before the server goes

        done = _neo4j("stop")
        stopped = True
        assert done.returncode == 0, done.stderr
        # with a deadline, a call on the dead server gives up about then, not after the driver's
        # 30 s of retries (the service's store calls would hold their slots that long)
        t0 = time.perf_counter()
        with pytest.raises(TransientStoreError):
            own.neighbourhood(uid, hops=2, limit=50, timeout=1.0)
        assert time.perf_counter() - t0 < 5
        own.close()
        wait_for(lambda: server.http.get("/readyz").status_code == 503, timeout=10, what="/readyz to report the store down")
        ready = server.http.get("/readyz").json()
        assert not ready["ready"] and not ready["store"]["reachable"] and ready["store"]["error"]
        stale = server.http.post("/v1/enrich", json={"user_id": uid})
        assert stale.status_code == 200 and stale.json()["stale"] is True
        assert {k: v for k, v in stale.json().items() if k != "stale"} == {k: v for k, v in fresh.items() if k != "stale"}
        t0 = time.perf_counter()
        hood = server.http.get(f"/v1/users/{uid}/neighbourhood?hops=2&limit=50")
        elapsed = time.perf_counter() - t0
        assert hood.status_code == 503 and int(hood.headers["Retry-After"]) >= 1 and elapsed <= 1.5 + 0.5
        assert "unavailable" in hood.json()["detail"] or "did not answer" in hood.json()["detail"]
        # a flag accepted while the store is down is applied at once and written when it is back
        other = scores.loc[scores["flag"] == "", "user_id"].iloc[11]
        accepted = server.http.post("/v1/flags", json={"user_id": other, "label": "fraud"})
        assert accepted.status_code == 202
        assert server.http.post("/v1/enrich", json={"user_id": other}).json()["flag"] == "fraud"
        # applicants: what-ifs go on from memory, marked stale; a commit is journaled, served at
        # once, and written when the store is back
        app = {"user_id": "neo4j-applicant", "features": {"tenure_days": 12}, "links": [{"kind": "device", "value": "neo4j-applicant-device"}]}
        what_if = server.http.post("/v1/applications", json=app)
        assert what_if.status_code == 200 and what_if.json()["stale"] is True, what_if.text
        committed = server.http.post("/v1/applications", json={**app, "commit": True})
        assert committed.status_code == 200 and committed.json()["committed"], committed.text
        assert server.http.post("/v1/enrich", json={"user_id": "neo4j-applicant"}).status_code == 200
        metrics = server.http.get("/metrics").text
        assert "socialrisk_store_up 0.0" in metrics and "socialrisk_scores_stale 1.0" in metrics

        done = _neo4j("start")
        assert done.returncode == 0, done.stderr
        stopped = False
        # recovered without restarting the service
        wait_for(lambda: server.http.get("/readyz").status_code == 200, timeout=60, every=0.2, what="/readyz after Neo4j came back")
        assert server.http.post("/v1/enrich", json={"user_id": uid}).json()["stale"] is False
        hood = server.http.get(f"/v1/users/{uid}/neighbourhood?hops=2&limit=50")
        assert hood.status_code == 200, hood.text
        wait_for(lambda: server.http.get(accepted.json()["status_url"]).json()["persisted"], timeout=60, every=0.2,
                 what="the flag accepted during the outage to reach Neo4j")
        wait_for(lambda: server.http.get("/readyz").json()["events_pending"] == 0, timeout=60, every=0.2,
                 what="the application committed during the outage to reach Neo4j")
        with workflow.open_neo4j() as store:
            assert (store.read_tables().links["user_id"] == "neo4j-applicant").sum() == 1
        assert server.proc.poll() is None
    finally:
        if stopped:
            _neo4j("start")  # the other Neo4j tests need the server
        assert server.stop() in (0, -15), server.log.read_text()[-2000:]  # uvicorn re-raises SIGTERM after a clean shutdown
