from __future__ import annotations

import json

from functools import lru_cache

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from graph import GraphConfig, project
from graph.walks import Walks
from loaders import DataError, ParameterError, read_tables
from loaders.synthetic import generate
from scoring import ScoringConfig, Scorer, score_tables
from scoring.credit import credit_score, decide, risk_at_score
from scoring.evaluate import evaluate, labelled_rows, recall_at_k
from scoring.features import FlagVectors, crossfit_folds, label_features
from tests.conftest import KEY, tiny_frames


def _tiny_result():  # type: ignore[no-untyped-def]
    tables = read_tables(tiny_frames(), key=KEY)
    return score_tables(tables, project(tables, GraphConfig()))


def _row(result, user: str) -> pd.Series:  # type: ignore[no-untyped-def]
    return result.scores.set_index("user_id").loc[user]


def test_output_columns_and_ranges() -> None:
    result = _tiny_result()
    s = result.scores
    assert list(s.columns[:6]) == ["user_id", "risk", "graph_risk", "credit_score", "decision", "reasons"]
    assert s["risk"].between(0, 1).all() and s["graph_risk"].between(0, 1).all()
    assert s["credit_score"].between(350, 950).all() and s["credit_score"].dtype.kind == "i"
    assert set(s["decision"]) <= {"approve", "review", "reject"}
    assert result.combination == "scorecard"  # two labels only: too few to learn


def test_scorecard_reasons_in_plain_words() -> None:
    result = _tiny_result()
    a = _row(result, "a")
    reasons = a["reasons"].split(";")
    assert "shares a device with 1 account confirmed as fraud" in reasons
    assert "3 of 5 repayments late" in reasons
    assert a["graph_risk"] > 0 and a["dim_linked_accounts"] > 0
    f1 = _row(result, "f1")
    assert f1["reasons"].split(";")[0] == "account confirmed as fraud" and f1["risk"] >= 1.0
    assert f1["decision"] == "reject"
    # an isolated user whose record is better than the median has nothing against it
    z = _row(result, "z")
    assert z["reasons"] == "" and z["decision"] == "approve" and z["graph_risk"] == 0
    # g is flagged benign, but its own label is not evidence for itself (cross-fitting):
    # the IP it shares with f1 is what the graph sees
    assert _row(result, "g")["reasons"] == "shares an IP address with 1 account confirmed as fraud"


def test_missing_dimension_is_neutral() -> None:
    result = _tiny_result()
    assert result.scores["dim_identity"].isna().all()  # no identity columns in the data
    assert result.scores["dim_consumption"].isna().all()
    assert not result.scores["reason_codes"].str.contains("IDENTITY").any()
    # a user with no repayment history (0 repayments) is neutral on repayment, not bad
    assert np.isnan(_row(result, "c")["dim_repayment"])


def test_graph_risk_is_the_part_the_graph_adds() -> None:
    tables = read_tables(tiny_frames(), key=KEY)
    p = project(tables, GraphConfig())
    cfg = ScoringConfig(scorecard_weights={"linked_accounts": 0.0, "social_network": 0.0})
    s = score_tables(tables, p, config=cfg).scores
    assert (s["graph_risk"] == 0).all()


def test_crossfitting_keeps_a_users_label_out_of_its_own_features() -> None:
    # two disconnected pairs: fraud f - x, and a lone fraud y whose only neighbour is unlabelled
    frames = {
        "relations": pd.DataFrame({"src": ["f", "y", "b1", "b2"], "dst": ["x", "w", "b2", "b3"], "kind": ["transfer"] * 4, "weight": [1.0] * 4}),
        "flags": pd.DataFrame({"user_id": ["f", "y", "b1", "b2"], "label": ["fraud", "fraud", "benign", "benign"]}),
    }
    tables = read_tables(frames, key=KEY)
    p = project(tables, GraphConfig())
    walks = Walks(p, hub_exponent=1.0, alpha=0.85, tol=1e-12)
    fraud = np.zeros(p.n_users)
    benign = np.zeros(p.n_users)
    fraud[p.index_of(["f", "y"])] = 1
    benign[p.index_of(["b1", "b2"])] = 1
    flags = FlagVectors(fraud=fraud, benign=benign)
    folds = crossfit_folds(flags, n_folds=2, seed=0)
    feats = label_features(walks, flags, folds)
    y = p.index_of(["y"])[0]
    f = p.index_of(["f"])[0]
    # y's own flag is excluded: the only fraud left is f, unreachable from y's component
    assert folds[y] != folds[f]  # stratified: one fraud user per fold
    assert feats.loc[y, "rel_lift_fraud"] == 0.0
    naive = label_features(walks, flags, np.full(p.n_users, -1))
    assert naive.loc[y, "rel_lift_fraud"] > 1.0  # without cross-fitting it would see itself


@lru_cache(maxsize=1)
def _population() -> tuple[dict[str, pd.DataFrame], object]:
    frames = generate(n_users=3000, seed=11, fraud_rate=0.04, benign_flag_rate=0.05)
    tables = read_tables({k: v for k, v in frames.items() if k != "truth"}, key=KEY)
    return frames, tables


def test_learned_combination_ranks_unflagged_fraud_high() -> None:
    frames, tables = _population()
    result = score_tables(tables, project(tables, GraphConfig()))  # type: ignore[arg-type]
    assert result.combination == "boosting"
    s = result.scores.merge(frames["truth"], on="user_id")
    unflagged = s["flag"] == ""
    auc = roc_auc_score(s.loc[unflagged, "is_fraud"], s.loc[unflagged, "risk"])
    assert auc > 0.9
    # refused users always get reasons; family members are told about the shared device
    refused = s[s["decision"] == "reject"]
    assert (refused["reasons"] != "").all()
    family = s[(s["role"] == "family") & (s["decision"] != "approve")]
    if len(family):
        assert family["reasons"].str.contains("shares").any()


def test_evaluate_follows_the_protocol() -> None:
    _, tables = _population()
    scorer = Scorer(tables, project(tables, GraphConfig()))  # type: ignore[arg-type]
    report = evaluate(scorer, train_frac=0.4, repeats=2, seed=0)
    rows = labelled_rows(tables.flags)  # type: ignore[attr-defined]
    assert report.n_labelled == len(rows)
    assert len(report.runs) == 2
    assert (report.runs["hidden"] == len(rows) - int(np.floor(0.4 * len(rows)))).all()
    summary = report.summary()
    assert 0.5 < summary["auroc"]["mean"] <= 1.0 and 0.0 < summary["auprc"]["mean"] <= 1.0
    # what good users pay, and calibration, on the same hidden users
    for metric in ("good_refused", "collateral_rate", "brier", "ece"):
        assert 0.0 <= summary[metric]["mean"] <= 1.0
    assert summary["collateral_rate"]["mean"] <= summary["good_refused"]["mean"]
    assert report.reliability["users"].sum() == report.runs["hidden"].sum()
    seg = report.segments
    assert seg["high_degree"]["users"] + seg["low_degree"]["users"] == report.n_labelled
    payload = json.dumps(report.to_dict(), allow_nan=False)  # JSON for other programs: no NaN
    assert "reliability" in payload
    with pytest.raises(ParameterError, match="train_frac"):
        evaluate(scorer, train_frac=1.0)


def test_evaluate_needs_both_labels() -> None:
    tables = read_tables(tiny_frames(), key=KEY)
    with pytest.raises(DataError, match="at least 2 users flagged fraud"):
        evaluate(Scorer(tables, project(tables, GraphConfig())))


def test_recall_at_k() -> None:
    y = np.array([1, 0, 1, 0, 0])
    assert recall_at_k(y, np.array([0.9, 0.8, 0.7, 0.1, 0.0]), 2) == 0.5
    assert recall_at_k(y, np.array([0.9, 0.1, 0.8, 0.2, 0.0]), 2) == 1.0


def test_credit_score_scale_and_decisions() -> None:
    assert credit_score(np.array([0.5, 1 / 3, 0.0, 1.0])).tolist() == [600, 650, 950, 350]
    risks = np.linspace(0, 1, 101)
    assert np.all(np.diff(credit_score(risks)) <= 0)
    assert risk_at_score(650) == pytest.approx(1 / 3)
    assert decide(np.array([700, 650, 600, 549]), approve_at=650, review_at=550).tolist() == ["approve", "approve", "review", "reject"]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"approve_at": 500, "review_at": 600}, "review_at <= approve_at"),
        ({"columns": {"linked_accounts": ()}}, None),
        ({"scorecard_weights": {"repayment": 2.0}}, "in \\[0, 1\\]"),
        ({"model": "forest"}, "boosting, logistic"),
        ({"prior_fraud_rate": 0.0}, "prior_fraud_rate"),
    ],
)
def test_config_errors(kwargs: dict[str, object], match: str | None) -> None:
    if match is None:
        ScoringConfig(**kwargs)  # an empty column list for a graph dimension is allowed
        return
    with pytest.raises(ParameterError, match=match):
        ScoringConfig(**kwargs)


def test_a_thin_file_is_told_it_has_no_repayment_history_not_a_share_of_none() -> None:
    from scoring.config import ScoringConfig as Cfg
    from scoring.dimensions import column_standings
    from scoring.reasons import column_reason

    users = pd.DataFrame({"repayments_late": [3, 0], "repayments_total": [5, 0]})
    standings = column_standings(users, Cfg())["repayment"]
    assert column_reason("repayment", standings, 0).text == "3 of 5 repayments late"
    thin = column_reason("repayment", standings, 1)
    assert (thin.code, thin.text) == ("REPAYMENT_NO_HISTORY", "no repayment history")
