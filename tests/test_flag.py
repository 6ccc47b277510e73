"""Incremental flags: `socialrisk flag` and workflow.flag against full recomputes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from graph.projection import walk_matrix
from graph.propagation import personalized_pagerank
from graph.store import EmbeddedStore
from loaders import NotFoundError, ParameterError
from scoring.features import flag_vectors
from socialrisk import workflow
from socialrisk.cli import app
from socialrisk.settings import Settings
from tests.conftest import tiny_frames

KEY = "flag-test-key-0123456789"


@pytest.fixture()
def ws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SOCIALRISK_PSEUDONYM_KEY", KEY)
    with EmbeddedStore(tmp_path / "ws") as store:
        workflow.load_into(store, _write(tmp_path / "data"), Settings(), tmp_path / "ws")
    return tmp_path / "ws"


def _write(path: Path) -> Path:
    path.mkdir(parents=True)
    for name, frame in tiny_frames().items():
        frame.to_csv(path / f"{name}.csv", index=False)
    return path


def _exact_exposure(store: EmbeddedStore) -> tuple[np.ndarray, np.ndarray]:
    tables = store.read_tables()
    projection = store.projection()
    fraud = flag_vectors(tables.flags, projection).fraud
    A = walk_matrix(projection)
    seeds = np.zeros(A.shape[0])
    seeds[: projection.n_users] = fraud
    exact = personalized_pagerank(A, seeds, tol=1e-14, max_iter=5000, dangling="self").scores
    return exact[: projection.n_users], projection.user_ids


def test_a_new_flag_moves_its_neighbours_and_matches_a_full_recompute(ws: Path) -> None:
    settings = Settings()
    with EmbeddedStore(ws) as store:
        first = workflow.flag(store, settings, ws, "c", "fraud")
        assert first.rebuilt and (ws / "state" / "push.npz").exists()
        moved = first.moved.set_index("user_id")
        assert moved.loc["c", "change"] > 0  # the flagged user itself gains exposure
        assert moved["change"].iloc[0] == moved["change"].abs().max()
        # the flag is in the store, and the kept state is still the store's
        latest = store.read_tables().flags
        assert latest["user_id"].tolist()[-1] == "c" and latest["label"].tolist()[-1] == "fraud"
        second = workflow.flag(store, settings, ws, "b", "fraud", severity=0.5)
        assert not second.rebuilt
        exact, ids = _exact_exposure(store)
    state = np.load(ws / "state" / "push.npz")
    kept = state["p"][: len(ids)] / state["seeds"].sum()
    assert np.abs(kept - exact).sum() <= second.error_bound + 1e-9


def test_clearing_a_flag_removes_its_seed(ws: Path) -> None:
    settings = Settings()
    with EmbeddedStore(ws) as store:
        workflow.flag(store, settings, ws, "c", "fraud")
        cleared = workflow.flag(store, settings, ws, "c", "good")
        assert cleared.label == "benign"
        assert cleared.moved.set_index("user_id").loc["c", "change"] < 0
        exact, ids = _exact_exposure(store)  # c's latest flag is benign: not a seed any more
    state = np.load(ws / "state" / "push.npz")
    assert state["seeds"][list(ids).index("c")] == 0.0
    assert np.abs(state["p"][: len(ids)] / state["seeds"].sum() - exact).sum() <= cleared.error_bound + 1e-9


def test_errors(ws: Path) -> None:
    settings = Settings()
    with EmbeddedStore(ws) as store:
        with pytest.raises(NotFoundError, match="ghost"):
            workflow.flag(store, settings, ws, "ghost", "fraud")
        with pytest.raises(ParameterError, match="unknown flag label"):
            workflow.flag(store, settings, ws, "c", "suspicious")
        with pytest.raises(ParameterError, match="severity"):
            workflow.flag(store, settings, ws, "c", "fraud", severity=0.0)


def test_cli_reports_the_moved_users(ws: Path) -> None:
    result = CliRunner().invoke(app, ["flag", "c", "--workspace", str(ws), "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output)
    assert payload["label"] == "fraud" and payload["moved"][0]["user_id"] in {"c", "a", "b", "g"}
    assert payload["error_bound"] >= 0
    text = CliRunner().invoke(app, ["flag", "c", "--label", "benign", "--workspace", str(ws)], catch_exceptions=False)
    assert text.exit_code == 0 and "flagged c as benign" in text.output
