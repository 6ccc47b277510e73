"""Fairness report: approval, adverse impact, good users refused and AUROC per segment."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from loaders import DataError
from loaders.synthetic import generate, write_tables
from scoring import ScoringConfig
from scoring.fairness import check_segment, fairness_table
from scoring.policy import policy_named
from socialrisk import workflow
from socialrisk.settings import Settings


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


def _report(tmp: Path, bias: str | None) -> pd.DataFrame:
    tables = generate(n_users=6_000, seed=2, fraud_rate=0.05, flag_rate=0.6, benign_flag_rate=0.2, bias_age_band=bias)
    write_tables({k: v for k, v in tables.items() if k != "truth"}, tmp, fmt="parquet")
    # under eu, credit_risk reads the user's own record only: where a recorded bias shows
    settings = Settings(scoring=ScoringConfig(policy=policy_named("eu")))
    return workflow.fairness_dir(tmp, settings, segment="age_band", repeats=1).table


def test_no_gap_generated_and_a_gap_when_biased(tmp_path: Path) -> None:
    plain = _report(tmp_path / "plain", None).set_index(["output", "segment"])
    biased = _report(tmp_path / "biased", "18-24").set_index(["output", "segment"])
    for out in ("credit", "fraud"):
        assert plain.xs(out)["adverse_impact_ratio"].min() > 0.95
    # the biased band's good users look worse on their repayments: the credit output approves fewer
    gap = plain.loc[("credit", "18-24"), "approval_rate"] - biased.loc[("credit", "18-24"), "approval_rate"]
    assert gap > 0.02
    assert biased.loc[("credit", "18-24"), "adverse_impact_ratio"] < plain.loc[("credit", "18-24"), "adverse_impact_ratio"]
    assert np.isfinite(plain["auroc"]).all()
