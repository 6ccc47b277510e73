"""``socialrisk serve`` as a real uvicorn process on a loopback port, on the embedded store."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from graph.store import EmbeddedStore
from tests.service.conftest import serve, wait_for


def test_serve_answers_over_http_and_stops_cleanly(ws: Path, scores: pd.DataFrame, tmp_path: Path) -> None:
    server = serve(["-w", str(ws)], tmp_path)
    try:
        ready = server.wait_ready()
        assert ready["ready"] and ready["scores"]["users"] == len(scores)
        uid = scores.loc[scores["flag"] == "", "user_id"].iloc[9]
        row = scores.set_index("user_id").loc[uid]
        body = server.http.post("/v1/enrich", json={"user_id": uid}).json()
        assert body["credit_score"] == row["credit_score"] and body["decision"] == row["decision"]
        assert server.http.post("/v1/enrich", json={"user_id": uid}, headers={"Authorization": "Bearer nope"}).status_code == 401
        accepted = server.http.post("/v1/flags", json={"user_id": uid, "label": "fraud"})
        assert accepted.status_code == 202
        wait_for(lambda: server.http.get(accepted.json()["status_url"]).json()["persisted"], what="the flag to reach the store")
        assert "socialrisk_http_requests_total" in server.http.get("/metrics").text
    finally:
        code = server.stop()
    assert code in (0, -15), server.log.read_text()[-2000:]  # uvicorn re-raises SIGTERM after a clean shutdown
    log = server.log.read_text()
    assert "Application shutdown complete" in log and "test-api-key" not in log  # keys are never logged
    with EmbeddedStore(ws) as store:
        assert store.read_table("flags")["source"].str.contains(accepted.json()["flag_id"]).sum() == 1


def test_serve_binds_loopback_by_default(ws: Path, tmp_path: Path) -> None:
    server = serve(["-w", str(ws)], tmp_path)
    try:
        server.wait_ready(graph=False)
        assert f"http://127.0.0.1:{server.port}" in server.log.read_text()
    finally:
        server.stop()
