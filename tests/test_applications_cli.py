"""score-application and apply-events on a workspace, and the applicant path against a full
scoring of the same data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from graph.store import EmbeddedStore
from tests.conftest import WorkspaceCli


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> WorkspaceCli:
    monkeypatch.setenv("SOCIALRISK_PSEUDONYM_KEY", "cli-applications-key-0123456789")
    run = WorkspaceCli(tmp_path / "ws")
    run("generate", "--users", "1200", "--seed", "3", "--out", str(tmp_path / "data"))
    run("load", str(tmp_path / "data"))
    run("score")
    return run


def _fraud_device(data: Path) -> tuple[str, str]:
    links = pd.read_parquet(data / "links.parquet")
    flags = pd.read_parquet(data / "flags.parquet")
    fraud = set(flags.loc[flags["label"] == "fraud", "user_id"].astype(str))
    row = links[(links["kind"] == "device") & links["user_id"].astype(str).isin(fraud)].iloc[0]
    return str(row["value"]), str(row["user_id"])


def test_score_application_prints_the_score_reasons_and_paths(cli: WorkspaceCli, tmp_path: Path) -> None:
    device, fraudster = _fraud_device(tmp_path / "data")
    app = tmp_path / "app.json"
    app.write_text(json.dumps({"user_id": "new-applicant", "features": {"tenure_days": 5}, "links": [{"kind": "device", "value": device}]}))
    text = cli("score-application", str(app))
    assert "new-applicant (new): credit score" in text and "shares a device" in text and fraudster in text
    assert device not in text  # never echoed
    payload = json.loads(cli("score-application", str(app), "--json"))
    assert payload["new"] and "LINKED_FRAUD_DEVICE" in payload["reason_codes"] and payload["written"] is None
    with EmbeddedStore(cli.workspace) as store:
        assert "new-applicant" not in set(store.read_tables().links["user_id"])  # a what-if writes nothing
    written = json.loads(cli("score-application", str(app), "--commit", "--json"))
    assert written["written"]["links"] == 1
    with EmbeddedStore(cli.workspace) as store:
        assert (store.read_tables().links["user_id"] == "new-applicant").sum() == 1


def test_apply_events_loads_the_rows_once(cli: WorkspaceCli, tmp_path: Path) -> None:
    device, fraudster = _fraud_device(tmp_path / "data")
    events = tmp_path / "events.json"
    events.write_text(json.dumps({
        "users": [{"user_id": "ev-9", "features": {"tenure_days": 100}}],
        "links": [{"user_id": "ev-9", "kind": "device", "value": device, "first_seen": "2026-11-30T10:00:00Z"}],
        "relations": [{"src": "ev-9", "dst": fraudster, "kind": "transfer", "weight": 50, "ts": "2026-11-30T10:05:00Z"}],
    }))
    first = cli("apply-events", str(events))
    assert "links" in first
    cli("apply-events", str(events))  # the same rows again add nothing
    with EmbeddedStore(cli.workspace) as store:
        t = store.read_tables()
    assert (t.links["user_id"] == "ev-9").sum() == 1 and ((t.relations["src"] == "ev-9").sum() == 1)


def test_the_applicant_path_gives_what_a_full_scoring_gives(tmp_path: Path) -> None:
    """Hold users out, score them as applicants with their real rows; a full scoring of all the
    data with the same model version gives them the same risk."""
    from graph.config import GraphConfig
    from graph.live import LiveGraph
    from graph.projection import project
    from loaders.load import read_tables
    from loaders.synthetic import generate
    from scoring.application import Application, ApplicantScorer, canonical_frames
    from scoring.config import ScoringConfig
    from scoring.features import flag_vectors, user_columns
    from scoring.pipeline import Scorer

    key = b"parity-key-0123456789abcdef"
    raw = {k: v for k, v in generate(n_users=2000, seed=5).items() if k != "truth"}
    rng = np.random.default_rng(0)
    held = set(rng.choice(raw["users"]["user_id"].astype(str).to_numpy(), 12, replace=False).tolist())
    raw["flags"] = raw["flags"][~raw["flags"]["user_id"].astype(str).isin(held)]
    rel = raw["relations"]
    part = {"users": raw["users"][~raw["users"]["user_id"].astype(str).isin(held)],
            "links": raw["links"][~raw["links"]["user_id"].astype(str).isin(held)],
            "relations": rel[~(rel["src"].astype(str).isin(held) | rel["dst"].astype(str).isin(held))], "flags": raw["flags"]}
    gc, sc = GraphConfig(), ScoringConfig()
    pt = read_tables(part, key=key)
    pp = project(pt, gc)
    scorer = Scorer(pt, pp, graph_config=gc, config=sc)
    combination = scorer.score(scorer.flags_from(pt.flags)).fitted
    ft = read_tables(raw, key=key)
    full = Scorer(ft, project(ft, gc), graph_config=gc, config=sc)
    expected = full.score(full.flags_from(ft.flags), combination=combination).scores.set_index("user_id")
    fv = flag_vectors(pt.flags, pp)
    live = LiveGraph(pt, pp, config=gc, fraud=fv.fraud, benign=fv.benign, alpha=sc.alpha, tol=sc.tol, eps=1e-7)
    applicants = ApplicantScorer(live, user_columns(pt, pp), combination=combination, config=sc)
    users = raw["users"].set_index(raw["users"]["user_id"].astype(str))
    checked = 0
    for u in sorted(held):
        # users whose relations reach another held-out user cannot send them: skip those
        mine = rel[(rel["src"].astype(str) == u) | (rel["dst"].astype(str) == u)]
        if set(mine["src"].astype(str)).union(mine["dst"].astype(str)) - {u} & held:
            continue
        links = [{"kind": r["kind"], "value": r["value"], "first_seen": None if pd.isna(r["first_seen"]) else str(r["first_seen"]),
                  "last_seen": None if pd.isna(r["last_seen"]) else str(r["last_seen"]), "weight": r.get("weight")}
                 for r in raw["links"][raw["links"]["user_id"].astype(str) == u].to_dict("records")]
        rels = [{"user_id": str(r["dst"]) if str(r["src"]) == u else str(r["src"]), "kind": r["kind"],
                 "direction": "out" if str(r["src"]) == u else "in", "weight": r["weight"], "ts": None if pd.isna(r["ts"]) else str(r["ts"])}
                for r in mine.to_dict("records")]
        features = {c: (None if pd.isna(v) else float(v)) for c, v in users.loc[u].items() if c != "user_id" and isinstance(v, (int, float, np.number))}
        app = Application(user_id=u, features=features, links=links, relations=rels)
        lf, rf = canonical_frames(app, key=key)
        got = applicants.score(app, links=lf, relations=rf).row
        assert got["risk"] == pytest.approx(expected.loc[u, "risk"], abs=2e-3), u
        assert got["decision"] == expected.loc[u, "decision"], u
        checked += 1
    assert checked >= 6
