"""Recourse: the smallest changes a refused user can make, scored with the model."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pandas as pd
import pytest

from graph import GraphConfig, project
from loaders import ParameterError, read_tables
from loaders.synthetic import generate
from scoring import ScoringConfig, Scorer
from scoring.pipeline import FeatureSet, ScoreResult, dimension_frame
from scoring.policy import policy_named
from scoring.recourse import ACTIONS, recourse
from tests.conftest import KEY

CFG = ScoringConfig(policy=policy_named("eu"))


@lru_cache(maxsize=None)
def _frames() -> dict[str, pd.DataFrame]:
    g = generate(n_users=4_000, seed=11, fraud_rate=0.05, flag_rate=0.6, benign_flag_rate=0.1)
    return {k: v for k, v in g.items() if k != "truth"}


def _scored(frames: dict[str, pd.DataFrame], combination=None) -> tuple[Scorer, ScoreResult, FeatureSet]:  # type: ignore[no-untyped-def]
    tables = read_tables(frames, key=KEY)
    p = project(tables, GraphConfig())
    scorer = Scorer(tables, p, config=CFG)
    flags = scorer.flags_from(tables.flags)
    result = scorer.score(flags, combination=combination)
    features = FeatureSet(
        X=result.features, dims=dimension_frame(scorer.column_dims, result.features, scorer.structure, p.n_users), flags=flags,
        projection=p, standings=scorer.standings, structure=scorer.structure, rings=scorer.rings,
    )
    return scorer, result, features


@lru_cache(maxsize=None)
def _base() -> tuple[Scorer, ScoreResult, FeatureSet]:
    return _scored(_frames())


def test_recourse_score_is_the_score_after_the_change() -> None:
    scorer, result, features = _base()
    s = result.scores
    users = _frames()["users"].set_index("user_id")
    late = users.reindex(s["user_id"])["repayments_late"].fillna(0).to_numpy()
    candidates = np.flatnonzero((s["decision"] != "approve").to_numpy() & (s["flag"] != "fraud").to_numpy() & (late > 0))
    assert len(candidates) > 0
    row = int(candidates[0])
    rc = recourse(features, result.fitted, CFG, row=row, max_actions=1)
    repay = [o for o in rc.options if [a.code for a in o.actions] == ["REPAY_LATE"]]
    if not repay:  # not an approving option: ask for every single action's score instead
        rc = recourse(features, result.fitted, CFG, row=row, max_actions=1, max_options=10)
    # do it for real: the late repayments repaid in the data, scored again with the same model
    frames = dict(_frames())
    changed = frames["users"].copy()
    user = s["user_id"].iloc[row]
    changed.loc[changed["user_id"] == user, "repayments_late"] = 0
    frames["users"] = changed
    _, after, _ = _scored(frames, combination=result.fitted)
    real = after.scores.set_index("user_id").loc[user]
    options = {tuple(a.code for a in o.actions): o for o in rc.options}
    if ("REPAY_LATE",) in options:
        assert options[("REPAY_LATE",)].credit_score == int(real["credit_score"])
        assert options[("REPAY_LATE",)].decision == real["decision"]
    assert "REPAY_LATE" in [a.code for a in rc.considered]


def test_options_are_smallest_sets_that_approve_and_only_actionable() -> None:
    _, result, features = _base()
    s = result.scores
    refused = np.flatnonzero(((s["decision"] != "approve") & (s["flag"] != "fraud")).to_numpy())
    seen_codes: set[str] = set()
    n_approving = 0
    for row in refused[:40]:
        rc = recourse(features, result.fitted, CFG, row=int(row))
        assert rc.decision in ("review", "reject") and rc.credit_score == int(s["credit_score"].iloc[row])
        sizes = [len(o.actions) for o in rc.options]
        assert len(rc.options) <= 3
        if rc.approves:
            n_approving += 1
            assert all(o.decision == "approve" for o in rc.options) and len(set(sizes)) == 1
            scores = [o.credit_score for o in rc.options]
            assert scores == sorted(scores, reverse=True)
        else:  # the best improvements, highest score first
            assert all(o.credit_score > rc.credit_score for o in rc.options)
            assert [o.credit_score for o in rc.options] == sorted((o.credit_score for o in rc.options), reverse=True)
        seen_codes |= {a.code for o in rc.options for a in o.actions}
    assert n_approving > 0
    assert seen_codes <= set(ACTIONS)


def test_recourse_errors_and_confirmed_fraud() -> None:
    _, result, features = _base()
    s = result.scores
    approved = int(np.flatnonzero((s["decision"] == "approve").to_numpy())[0])
    with pytest.raises(ParameterError, match=r"^User 'u\d+' is approved \(credit score \d+\): recourse is for refused or reviewed users\.$"):
        recourse(features, result.fitted, CFG, row=approved)
    fraud = int(np.flatnonzero((s["flag"] == "fraud").to_numpy())[0])
    rc = recourse(features, result.fitted, CFG, row=fraud)
    assert rc.options == () and not rc.approves and "confirmed as fraud" in rc.note
