"""Fairness report: approval, adverse impact, good users refused and AUROC per segment."""

from __future__ import annotations


import pandas as pd
import pytest

from loaders import DataError
from scoring.fairness import check_segment, fairness_table


def test_table_by_hand() -> None:
    ids = [f"u{i}" for i in range(8)]
    scores = pd.DataFrame(
        {
            "user_id": ids,
            "credit_decision": ["approve", "approve", "approve", "reject", "approve", "reject", "reject", "review"],
            "fraud_decision": ["approve"] * 8,
        }
    )
    hidden = scores.assign(y=[0, 0, 1, 1, 0, 0, 1, 1], credit_risk=[0.1, 0.2, 0.3, 0.9, 0.1, 0.8, 0.9, 0.6], fraud_risk=[0.1] * 8)
    seg = pd.Series(["a"] * 4 + ["b"] * 4, index=ids)
    t = fairness_table(scores, hidden, seg).set_index(["output", "segment"])
    # credit: a approves 3 of 4, b 1 of 4 -> ratio 1/3, under four fifths
    assert t.loc[("credit", "a"), "approval_rate"] == 0.75 and t.loc[("credit", "b"), "approval_rate"] == 0.25
    assert t.loc[("credit", "b"), "adverse_impact_ratio"] == pytest.approx(1 / 3) and t.loc[("credit", "b"), "flagged"]
    assert t.loc[("credit", "a"), "adverse_impact_ratio"] == 1.0 and not t.loc[("credit", "a"), "flagged"]
    # good users of b: u4 approved, u5 refused
    assert t.loc[("credit", "b"), "good_refused_rate"] == 0.5 and t.loc[("credit", "a"), "good_refused_rate"] == 0.0
    assert t.loc[("credit", "a"), "auroc"] == 1.0 and t.loc[("credit", "b"), "auroc"] == 0.75
    # fraud approves everyone: no gap; AUROC of a constant is 0.5
    assert (t.xs("fraud")["adverse_impact_ratio"] == 1.0).all() and (t.xs("fraud")["auroc"] == 0.5).all()


def test_bad_segments_are_one_line_errors() -> None:
    users = pd.DataFrame({"user_id": ["a", "b"], "band": ["x", "x"], "n": [1, 2]})
    with pytest.raises(DataError, match=r"^users: no segment column 'age'; the columns are: band, n$"):
        check_segment(users, "age")
    with pytest.raises(DataError, match=r"^users: the segment column 'band' has one value \('x'\): there is nothing to compare"):
        check_segment(users, "band")
    assert check_segment(users, "n").tolist() == ["1", "2"]
