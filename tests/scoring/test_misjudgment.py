"""Misjudgment and calibration figures on cases worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from scoring.misjudgment import brier_score, expected_calibration_error, good_user_costs, reliability_table, segment_metrics


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
