"""The live graph: applicants placed by local push, taken out again, and solved again."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from graph.config import GraphConfig
from graph.live import LiveGraph
from graph.projection import project
from loaders.load import read_tables
from loaders.synthetic import generate
from scoring.application import Application, ApplicantScorer, canonical_frames
from scoring.config import ScoringConfig
from scoring.features import flag_vectors, user_columns
from scoring.pipeline import Scorer

KEY = b"live-graph-test-key-0123456789"


@pytest.fixture(scope="module")
def world() -> tuple[dict, ApplicantScorer]:
    raw = {k: v for k, v in generate(n_users=1500, seed=11).items() if k != "truth"}
    tables = read_tables(raw, key=KEY)
    projection = project(tables, GraphConfig())
    scorer = Scorer(tables, projection)
    combination = scorer.score(scorer.flags_from(tables.flags)).fitted
    flags = flag_vectors(tables.flags, projection)
    live = LiveGraph(tables, projection, config=GraphConfig(), fraud=flags.fraud, benign=flags.benign, alpha=0.85, tol=1e-8)
    return raw, ApplicantScorer(live, user_columns(tables, projection), combination=combination, config=ScoringConfig())


def _applicant(raw: dict, i: int) -> Application:
    links = raw["links"]
    picks = links.iloc[[7 * i + 1, 7 * i + 3]]
    return Application(user_id=f"live-{i}", features={"tenure_days": 40 + i},
                       links=[{"kind": k, "value": v} for k, v in zip(picks["kind"], picks["value"])],
                       relations=[{"user_id": str(raw["users"]["user_id"].iloc[5 * i]), "kind": "transfer", "direction": "both", "weight": 30.0}])


def test_a_trial_leaves_every_state_as_it_was(world: tuple[dict, ApplicantScorer]) -> None:
    raw, scorer = world
    live = scorer.live
    before = {k: (s.p.copy(), s.r.copy(), s.size, dict(s.extra)) for k, s in live.states.items()}
    belief = {k: v.copy() for k, v in live.belief.items()}
    app = _applicant(raw, 1)
    lf, rf = canonical_frames(app, key=KEY)
    scorer.score(app, links=lf, relations=rf)
    for k, s in live.states.items():
        p, r, size, extra = before[k]
        assert s.size == size and np.array_equal(s.p, p) and np.array_equal(s.r, r) and s.extra.keys() == extra.keys(), k
    for k, v in live.belief.items():  # (its buffer may have grown: room for nodes, zeros)
        assert np.array_equal(v[: len(belief[k])], belief[k]) and not v[len(belief[k]):].any(), k
    assert not live.knows("live-1")


def test_committed_applicants_stay_and_a_resolve_keeps_their_scores(world: tuple[dict, ApplicantScorer]) -> None:
    raw, scorer = world
    live = scorer.live
    rows = {}
    for i in range(2, 6):
        app = _applicant(raw, i)
        lf, rf = canonical_frames(app, key=KEY)
        rows[app.user_id] = scorer.score(app, links=lf, relations=rf, commit=True).row
    assert all(live.knows(u) for u in rows)
    # scored again as known users (nothing new), before and after the states are solved again
    again = {}
    for u in rows:
        app = Application(user_id=u)
        lf, rf = canonical_frames(app, key=KEY)
        again[u] = scorer.score(app, links=lf, relations=rf).row["risk"]
    live.resolve()
    assert live.error_bound < 1e-6
    for u in rows:
        app = Application(user_id=u)
        lf, rf = canonical_frames(app, key=KEY)
        assert scorer.score(app, links=lf, relations=rf).row["risk"] == pytest.approx(again[u], abs=1e-3), u
    assert pd.Series(again).equals(pd.Series(again))


def test_the_applicants_structure_reaches_its_co_users_own_identifiers(world: tuple[dict, ApplicantScorer]) -> None:
    """The co-users' own identifier sharing is two identifiers away: the local subgraph carries
    them, and a known user's structure row is the whole graph's."""
    from scoring.application import _structure
    from scoring.features import structural_features

    raw, _ = world
    tables = read_tables(raw, key=KEY)
    projection = project(tables, GraphConfig())
    flags = flag_vectors(tables.flags, projection)
    # a graph of its own: the other tests commit applicants into the shared one
    live = LiveGraph(tables, projection, config=GraphConfig(), fraud=flags.fraud, benign=flags.benign, alpha=0.85, tol=1e-8)
    full = structural_features(tables, projection)
    via = [c for c in full.columns if c.startswith("lnk_via_")]
    assert via
    checked = 0
    for u in raw["links"]["user_id"].astype(str).drop_duplicates().iloc[:200].tolist():
        lf, rf = canonical_frames(Application(user_id=u, features={}, links=[], relations=[]), key=KEY)
        local = live.local(u, lf, rf)
        # a column the subgraph does not make (a kind none of them shares) is read as 0
        got = _structure(local, live.config).iloc[0].reindex(via, fill_value=0.0).to_numpy(dtype=float)
        want = full.loc[int(projection.index_of([u])[0]), via].to_numpy(dtype=float)
        assert np.allclose(got, want), u
        checked += int((want > 0).any())
    assert checked >= 10
