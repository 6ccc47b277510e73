"""Drift figures on samples small enough to work out by hand."""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
import pytest

from loaders.errors import ParameterError
from scoring.drift import SHARE_FLOOR, approval_rate, dimension_shift, population_stability_index, psi_table


def test_identical_samples_are_stable() -> None:
    x = np.random.default_rng(0).normal(size=500)
    assert population_stability_index(x, x) == 0.0
    assert population_stability_index(x, x[::-1].copy()) == 0.0  # order does not matter


def test_two_bins_by_hand() -> None:
    # the median of [1, 2, 3, 4] is 2.5: expected shares 1/2, 1/2; actual 3/4 below, 1/4 above
    table = psi_table([1, 2, 3, 4], [1, 1, 1, 4], bins=2)
    assert table["lower"].tolist() == [-np.inf, 2.5] and table["upper"].tolist() == [2.5, np.inf]
    assert table["expected_share"].tolist() == [0.5, 0.5] and table["actual_share"].tolist() == [0.75, 0.25]
    assert table["contribution"].tolist() == pytest.approx([0.25 * math.log(1.5), 0.25 * math.log(2)])
    # 0.25 ln 1.5 + 0.25 ln 2 = 0.25 ln 3
    assert population_stability_index([1, 2, 3, 4], [1, 1, 1, 4], bins=2) == pytest.approx(0.25 * math.log(3))


def test_empty_bin_uses_the_share_floor() -> None:
    # every actual value falls below the median: the upper bin's share 0 is floored at 1e-6
    expected = 0.5 * math.log(1 / 0.5) + (SHARE_FLOOR - 0.5) * math.log(SHARE_FLOOR / 0.5)
    assert population_stability_index([1, 2, 3, 4], [1, 1, 2, 2], bins=2) == pytest.approx(expected)
    assert expected == pytest.approx(6.9077, abs=1e-4)


def test_outer_bins_are_open_and_repeated_cuts_merge() -> None:
    # values beyond the expected range land in the outer bins
    assert population_stability_index([1, 2, 3, 4], [-10, 0, 100, 1e9], bins=2) == 0.0
    # three quarters zeros: every inner quantile of 4 bins is 0 or 0.5, giving two cuts and three bins;
    # the zeros keep a bin of their own
    table = psi_table([0, 0, 0, 1], [0, 0.1, 0.2, 1], bins=4)
    assert table["upper"].tolist() == [0.0, 0.25, np.inf]
    assert table["expected_share"].tolist() == [0.75, 0.0, 0.25]
    assert table["actual_share"].tolist() == [0.25, 0.5, 0.25]
    # a constant expected sample: one cut at its value
    assert psi_table([3, 3, 3], [3, 4], bins=10)["actual_share"].tolist() == [0.5, 0.5]


@pytest.mark.parametrize(
    ("expected", "actual", "bins", "message"),
    [
        ([], [1.0], 10, "The 'expected' sample is empty"),
        ([1.0, 2.0], [], 10, "The 'actual' sample is empty"),
        ([1.0, np.nan, 3.0], [1.0], 10, "The 'expected' sample must hold finite numbers. Got nan at position 1 (1 non-finite in all)"),
        ([1.0], [np.inf], 10, "The 'actual' sample must hold finite numbers. Got inf at position 0"),
        ([1.0, 2.0], [1.0], 1, "The 'bins' parameter of the population stability index must be an integer >= 2. Got 1 instead."),
        ([1.0, 2.0], [1.0], 2.5, "must be an integer >= 2. Got 2.5 instead."),
    ],
)
def test_bad_samples_are_refused(expected: list[float], actual: list[float], bins: int, message: str) -> None:
    with pytest.raises(ParameterError, match=re.escape(message)):
        population_stability_index(expected, actual, bins=bins)


def _scores(users: list[str], repayment: list[float], identity: list[float], credit: list[int]) -> pd.DataFrame:
    return pd.DataFrame({"user_id": users, "dim_repayment": repayment, "dim_identity": identity, "risk": 0.1, "credit_score": credit})


def test_dimension_shift_by_hand() -> None:
    before = _scores(["a", "b", "c", "d"], [0.1, 0.2, 0.3, 0.4], [np.nan, 0.5, 0.5, 0.5], [700, 690, 610, 600])
    # d is gone, e is new; a's identity has no data before and is left out of that row
    after = _scores(["e", "c", "b", "a"], [0.9, 0.5, 0.2, 0.1], [0.0, 0.5, 0.9, 0.1], [400, 560, 690, 700])
    out = dimension_shift(before, after, dims=["repayment", "identity"], bins=2).set_index("dimension")
    assert out.index.tolist() == ["repayment", "identity", "credit_score"]
    assert out["users"].tolist() == [3, 2, 3]
    rep = out.loc["repayment"]
    assert (rep["mean_before"], rep["mean_after"], rep["mean_shift"]) == pytest.approx((0.2, 0.8 / 3, 0.2 / 3))
    # before [0.1, 0.2, 0.3]: median 0.2, bins <= 0.2 (2/3) and above (1/3); after [0.1, 0.2, 0.5]: the same shares
    assert rep["psi"] == pytest.approx(0.0)
    ident = out.loc["identity"]
    assert (ident["mean_before"], ident["mean_after"], ident["mean_shift"]) == pytest.approx((0.5, 0.7, 0.2))
    # before [0.5, 0.5]: one cut at 0.5, all below or at it; after [0.9, 0.5]: half above
    assert ident["psi"] == pytest.approx((0.5 - 1.0) * math.log(0.5 / 1.0) + (0.5 - SHARE_FLOOR) * math.log(0.5 / SHARE_FLOOR))
    cs = out.loc["credit_score"]
    assert (cs["mean_before"], cs["mean_after"], cs["mean_shift"]) == pytest.approx((2000 / 3, 1950 / 3, -50 / 3))


def test_dimension_shift_without_data_is_nan() -> None:
    before = _scores(["a", "b"], [np.nan, np.nan], [0.1, 0.2], [700, 600])
    out = dimension_shift(before, before, dims=["repayment"]).set_index("dimension")
    assert out.loc["repayment", "users"] == 0 and np.isnan(out.loc["repayment", "psi"])
    assert out.loc["credit_score", "psi"] == 0.0


def test_dimension_shift_refuses_frames_it_cannot_compare() -> None:
    before = _scores(["a", "b"], [0.1, 0.2], [0.1, 0.2], [700, 600])
    with pytest.raises(ParameterError, match="The 'after' score frame has no column 'dim_identity'"):
        dimension_shift(before, before.drop(columns="dim_identity"), dims=["repayment", "identity"])
    with pytest.raises(ParameterError, match="The 'before' score frame holds user 'a' more than once"):
        dimension_shift(pd.concat([before, before.iloc[:1]]), before, dims=["repayment"])
    with pytest.raises(ParameterError, match="No user_id is in both"):
        dimension_shift(before, before.assign(user_id=["x", "y"]), dims=["repayment"])


def test_approval_rate() -> None:
    rates = approval_rate(np.array(["approve", "reject", "approve", "review", "approve"], dtype=object))
    assert rates == pytest.approx({"approve": 0.6, "review": 0.2, "reject": 0.2})
    assert list(rates) == ["approve", "review", "reject"]
    assert approval_rate(pd.Series(["reject"])) == {"approve": 0.0, "review": 0.0, "reject": 1.0}
    with pytest.raises(ParameterError, match="Unknown decision 'accept' in approval_rate"):
        approval_rate(["approve", "accept"])
    with pytest.raises(ParameterError, match="at least one decision"):
        approval_rate([])
