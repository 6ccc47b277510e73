"""Misjudgment and calibration figures, and the trade-off curve, on cases worked out by hand."""

from __future__ import annotations

import json
import re
from functools import lru_cache

import numpy as np
import pytest

from graph.config import GraphConfig
from graph.projection import project
from loaders.errors import ParameterError
from loaders.load import read_tables
from loaders.synthetic import generate
from scoring.credit import credit_score, decide, risk_at_score
from scoring.evaluate import evaluate
from scoring.features import FlagVectors
from scoring.misjudgment import (
    TRADEOFF_CUTOFFS,
    brier_score,
    expected_calibration_error,
    good_user_costs,
    reliability_table,
    segment_metrics,
    tradeoff_curve,
)
from scoring.pipeline import Scorer
from tests.conftest import KEY


def test_good_user_costs_by_hand() -> None:
    # four good users, one fraud. Good users: approved (700+); refused by the graph (risk 0.9,
    # graph 0.85 -> 0.05 without it: approve); refused on their own (risk 0.6, no graph risk);
    # in review because of the graph (risk 0.4 -> 0.1 without: approve)
    y = np.array([0, 0, 0, 0, 1])
    risk = np.array([0.1, 0.9, 0.6, 0.4, 0.95])
    graph = np.array([0.0, 0.85, 0.0, 0.3, 0.5])
    decision = np.array(["approve", "reject", "reject", "review", "reject"], dtype=object)
    out = good_user_costs(y, risk, graph, decision, approve_at=650, review_at=550)
    assert out["good_refused"] == pytest.approx(3 / 4)
    assert out["collateral"] == pytest.approx(2 / 3)
    assert out["collateral_rate"] == pytest.approx(2 / 4)


def test_calibration_by_hand() -> None:
    y = np.array([1, 0, 1, 0])
    risk = np.array([0.9, 0.1, 0.35, 0.35])
    # Brier: (0.01 + 0.01 + 0.4225 + 0.1225) / 4
    assert brier_score(y, risk) == pytest.approx(0.565 / 4)
    table = reliability_table(y, risk, bins=10)
    assert table["bin"].tolist() == ["0.1-0.2", "0.3-0.4", "0.9-1.0"]
    assert table["users"].tolist() == [1, 2, 1] and table["fraud_rate"].tolist() == [0.0, 0.5, 1.0]
    # ECE: (1 * 0.1 + 2 * 0.15 + 1 * 0.1) / 4
    assert expected_calibration_error(y, risk) == pytest.approx(0.5 / 4)


def test_segment_metrics_leave_one_class_segments_empty() -> None:
    y = np.array([1, 0, 1, 0])
    risk = np.array([0.9, 0.1, 0.2, 0.3])
    out = segment_metrics(y, risk, {"all": np.ones(4, dtype=bool), "frauds": y == 1})
    assert out["all"]["auroc"] == pytest.approx(3 / 4) and out["all"]["users"] == 4
    assert np.isnan(out["frauds"]["auroc"]) and out["frauds"]["fraud"] == 2


# --- the trade-off curve -------------------------------------------------------------------


def _six_users() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    # risks at round credit scores: 0.8 -> 500, 2/3 -> 550, 0.5 -> 600, 0.2 -> 700, 1/9 -> 750
    risk = np.array([0.8, 0.2, 2 / 3, 0.5, 1 / 9, 0.8])
    without = np.array([0.8, 0.2, 0.2, 0.5, 1 / 9, 0.8])  # the graph alone takes user 2 from 700 to 550
    is_fraud = np.array([True, True, False, False, False, False])
    is_good = np.array([False, False, True, True, True, False])  # the last user is unlabelled
    return risk, without, is_fraud, is_good


def test_tradeoff_curve_by_hand() -> None:
    risk, without, is_fraud, is_good = _six_users()
    assert credit_score(risk).tolist() == [500, 700, 550, 600, 750, 500]
    curve = tradeoff_curve(risk, without, is_fraud, is_good, cutoffs=[725, 550, 650, 650])
    assert curve["credit_score_cutoff"].tolist() == [550, 650, 725]
    # below 550: the first fraud user (and the unlabelled one, not counted)
    # below 650: that fraud user; good users at 550 (700 without the graph) and 600
    # below 725: both fraud users; the same two good users, and the first would now be refused without its graph too
    assert curve["fraud_recall"].tolist() == pytest.approx([1 / 2, 1 / 2, 1])
    assert curve["good_refused"].tolist() == pytest.approx([0, 2 / 3, 2 / 3])
    assert curve["collateral_rate"].tolist() == pytest.approx([0, 1 / 3, 0])
    assert curve["risk_threshold"].tolist() == pytest.approx([risk_at_score(549.5), risk_at_score(649.5), risk_at_score(724.5)])


def test_tradeoff_curve_default_cutoffs_and_empty_classes() -> None:
    risk, without, is_fraud, _ = _six_users()
    curve = tradeoff_curve(risk, without, is_fraud, np.zeros(6, dtype=bool))
    assert curve["credit_score_cutoff"].tolist() == list(range(500, 801, 25)) == list(TRADEOFF_CUTOFFS)
    assert curve["good_refused"].isna().all() and curve["collateral_rate"].isna().all()
    assert curve["fraud_recall"].is_monotonic_increasing


def test_tradeoff_curve_at_approve_at_agrees_with_good_user_costs() -> None:
    rng = np.random.default_rng(0)
    y = (rng.random(400) < 0.3).astype(np.int64)
    risk = rng.random(400)
    graph = risk * rng.random(400) * (rng.random(400) < 0.5)
    decision = decide(credit_score(risk), approve_at=650, review_at=550)
    costs = good_user_costs(y, risk, graph, decision, approve_at=650, review_at=550)
    row = tradeoff_curve(risk, risk - graph, y == 1, y == 0, cutoffs=[650]).iloc[0]
    assert row["good_refused"] == pytest.approx(costs["good_refused"])
    assert row["collateral_rate"] == pytest.approx(costs["collateral_rate"])
    assert row["fraud_recall"] == pytest.approx(np.mean(decision[y == 1] != "approve"))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"risk_without_graph": np.zeros(5)}, "'risk_without_graph' parameter of tradeoff_curve must be a 1-D array of 6 values"),
        ({"risk": np.array([0.1, np.nan, 0.2, 0.3, 0.4, 0.5])}, "'risk' parameter of tradeoff_curve must be finite. Got nan at position 1"),
        ({"is_good": np.ones(6, dtype=bool)}, "both fraud and good in tradeoff_curve; user at position 0"),
        ({"cutoffs": [300]}, "credit scores in 350..950. Got 300"),
        ({"cutoffs": []}, "credit scores in 350..950. Got none"),
    ],
)
def test_tradeoff_curve_rejects_bad_input(change: dict[str, object], message: str) -> None:
    risk, without, is_fraud, is_good = _six_users()
    args: dict[str, object] = {"risk": risk, "risk_without_graph": without, "is_fraud": is_fraud, "is_good": is_good, **change}
    with pytest.raises(ParameterError, match=re.escape(message)):
        tradeoff_curve(**args)  # type: ignore[arg-type]


# --- in the evaluation ---------------------------------------------------------------------


@lru_cache(maxsize=1)
def _scorer() -> Scorer:
    frames = generate(n_users=3000, seed=11, fraud_rate=0.04, benign_flag_rate=0.05)
    tables = read_tables({k: v for k, v in frames.items() if k != "truth"}, key=KEY)
    return Scorer(tables, project(tables, GraphConfig()))


def test_evaluate_pools_the_hidden_users_into_the_tradeoff_curve() -> None:
    report = evaluate(_scorer(), train_frac=0.4, repeats=2, seed=0)
    curve = report.tradeoff
    # the default cut-offs, and the configured review and approve thresholds (550 and 650 are among them)
    assert curve["credit_score_cutoff"].tolist() == list(TRADEOFF_CUTOFFS)
    assert curve["fraud_recall"].is_monotonic_increasing and curve["good_refused"].is_monotonic_increasing
    assert (curve["collateral_rate"] <= curve["good_refused"]).all()
    # pooled over repeats of equal size, the approve_at row is the mean of the repeats' figures
    at = curve.set_index("credit_score_cutoff").loc[650]
    assert at["good_refused"] == pytest.approx(report.runs["good_refused"].mean())
    assert at["collateral_rate"] == pytest.approx(report.runs["collateral_rate"].mean())
    payload = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    assert [r["credit_score_cutoff"] for r in payload["tradeoff"]] == list(TRADEOFF_CUTOFFS)


def test_evaluate_without_benign_seeds_keeps_labels_and_drops_counter_evidence() -> None:
    scorer = _scorer()
    plain = evaluate(scorer, train_frac=0.4, repeats=1, seed=0)
    no_benign = evaluate(scorer, train_frac=0.4, repeats=1, seed=0, benign_seeds=False)
    # same hidden users, still a learned combination
    assert no_benign.combination == plain.combination == "boosting"
    assert no_benign.runs[["hidden", "hidden_fraud"]].equals(plain.runs[["hidden", "hidden_fraud"]])
    assert no_benign.runs["auroc"].iloc[0] != plain.runs["auroc"].iloc[0]
    # what the switch does inside: benign flags train the model but seed nothing
    flags = scorer.flags_from(scorer.tables.flags)
    seeds = FlagVectors(fraud=flags.fraud, benign=np.zeros_like(flags.benign))
    result = scorer.score(flags, seeds=seeds)
    assert (result.features["lnk_lift_benign"] == 0).all() and (result.features["lnk_lift_fraud"] > 0).any()
    assert result.meta["labels"] == scorer.score(flags).meta["labels"]
    with pytest.raises(ParameterError, match="The 'seeds' of Scorer.score must cover the same"):
        scorer.score(flags, seeds=FlagVectors(fraud=flags.fraud[:5], benign=flags.benign[:5]))
