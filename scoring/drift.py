"""How far a population of scores has moved: population stability, shifts per dimension, approval.

Pure functions of two samples or two score frames (the ``scores`` of
:class:`scoring.pipeline.ScoreResult`, one from before and one from after, e.g. two snapshots or
two configurations).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from loaders.errors import ParameterError
from scoring.config import DIMENSIONS

__all__ = ["SHARE_FLOOR", "DECISIONS", "population_stability_index", "psi_table", "dimension_shift", "approval_rate"]

#: Smallest bin share used in the logarithm, so that an empty bin gives a large but finite term.
SHARE_FLOOR = 1e-6
#: The decisions of :func:`scoring.credit.decide`, in report order.
DECISIONS: tuple[str, ...] = ("approve", "review", "reject")


def _sample(name: str, values: object) -> np.ndarray:
    x = np.asarray(values, dtype=np.float64).ravel()
    if not len(x):
        raise ParameterError(f"The '{name}' sample is empty; the population stability index needs at least one value.")
    bad = np.flatnonzero(~np.isfinite(x))
    if len(bad):
        raise ParameterError(
            f"The '{name}' sample must hold finite numbers. Got {float(x[bad[0]])!r} at position {int(bad[0])} "
            f"({len(bad)} non-finite in all); drop or impute them first."
        )
    return x


def psi_table(expected: object, actual: object, *, bins: int = 10) -> pd.DataFrame:
    """Per-bin terms of the population stability index of ``actual`` against ``expected``.

    The bins are cut at the quantiles ``1/bins, ..., (bins-1)/bins`` of ``expected``, with
    repeated cut points merged (a value shared by many users makes fewer, wider bins) and the
    outer bins open-ended. A bin holds the values above its lower edge up to and including its
    upper edge, so a point mass at the lowest value (many zeros) keeps a bin of its own.

    Parameters
    ----------
    expected : array-like of float
        The reference sample (before, or the development population).
    actual : array-like of float
        The sample compared with it (after, or the current population).
    bins : int
        Number of quantile bins before merging, at least 2.

    Returns
    -------
    DataFrame
        One row per bin: ``lower`` and ``upper`` edges (``-inf`` and ``inf`` outside),
        ``expected_share`` and ``actual_share`` (shares of each sample in the bin),
        ``contribution`` ``(a - e) * ln(a / e)`` with both shares floored at :data:`SHARE_FLOOR`.
        The contributions sum to :func:`population_stability_index`.

    Raises
    ------
    ParameterError
        An empty sample, a non-finite value, or ``bins`` below 2.

    Examples
    --------
    >>> psi_table([1, 2, 3, 4], [1, 1, 1, 4], bins=2)
       lower  upper  expected_share  actual_share  contribution
    0   -inf    2.5             0.5          0.75      0.101366
    1    2.5    inf             0.5          0.25      0.173287
    """
    if isinstance(bins, bool) or not isinstance(bins, (int, np.integer)) or bins < 2:
        raise ParameterError(f"The 'bins' parameter of the population stability index must be an integer >= 2. Got {bins!r} instead.")
    e = _sample("expected", expected)
    a = _sample("actual", actual)
    cuts = np.unique(np.quantile(e, np.arange(1, bins) / bins))
    # bin i holds cuts[i-1] < x <= cuts[i]
    n_bins = len(cuts) + 1
    e_share = np.bincount(np.searchsorted(cuts, e, side="left"), minlength=n_bins) / len(e)
    a_share = np.bincount(np.searchsorted(cuts, a, side="left"), minlength=n_bins) / len(a)
    ef, af = np.maximum(e_share, SHARE_FLOOR), np.maximum(a_share, SHARE_FLOOR)
    return pd.DataFrame(
        {
            "lower": np.concatenate([[-np.inf], cuts]),
            "upper": np.concatenate([cuts, [np.inf]]),
            "expected_share": e_share,
            "actual_share": a_share,
            "contribution": (af - ef) * np.log(af / ef),
        }
    )


def population_stability_index(expected: object, actual: object, *, bins: int = 10) -> float:
    """Population stability index (PSI) of ``actual`` against ``expected``.

    ``PSI = sum_i (a_i - e_i) * ln(a_i / e_i)`` over the quantile bins of ``expected`` (see
    :func:`psi_table`), where ``e_i`` and ``a_i`` are the shares of each sample in bin ``i``,
    floored at :data:`SHARE_FLOOR`. It is zero when the shares agree and grows as mass moves
    between bins; it is the symmetrised Kullback-Leibler divergence of the binned shares. The
    usual reading in credit scoring: below 0.1 stable, 0.1 to 0.25 a moderate shift worth a look,
    above 0.25 a significant shift. A move within one bin is not seen.

    Parameters
    ----------
    expected : array-like of float
        The reference sample.
    actual : array-like of float
        The sample compared with it.
    bins : int
        Number of quantile bins of ``expected`` before merging repeated cut points, at least 2.

    Returns
    -------
    float

    Raises
    ------
    ParameterError
        An empty sample, a non-finite value, or ``bins`` below 2.

    References
    ----------
    .. [1] N. Siddiqi, "Credit Risk Scorecards: Developing and Implementing Intelligent Credit
       Scoring", Wiley, 2006, chapter 8 (system stability report).
    .. [2] B. Yurdakul, "Statistical Properties of Population Stability Index", dissertation,
       Western Michigan University, 2018.

    Examples
    --------
    Half of the expected sample lies on each side of 2.5; three quarters of the actual one lie
    below: ``0.25 * ln(1.5) + 0.25 * ln(2) = 0.25 * ln(3)``.

    >>> round(population_stability_index([1, 2, 3, 4], [1, 1, 1, 4], bins=2), 6)
    0.274653
    >>> population_stability_index([1, 2, 3, 4], [4, 3, 2, 1])
    0.0
    """
    return float(psi_table(expected, actual, bins=bins)["contribution"].sum())


def _score_frame(name: str, frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    missing = [c for c in ["user_id", *columns] if c not in frame.columns]
    if missing:
        raise ParameterError(
            f"The '{name}' score frame has no column {missing[0]!r}; expected 'user_id' and {', '.join(map(repr, columns))} "
            "(the scores of a ScoreResult)."
        )
    dup = frame["user_id"].duplicated()
    if dup.any():
        raise ParameterError(f"The '{name}' score frame holds user {frame['user_id'][dup].iloc[0]!r} more than once; expected one row per user.")
    return frame[["user_id", *columns]]


def dimension_shift(
    before: pd.DataFrame, after: pd.DataFrame, *, dims: Sequence[str] = DIMENSIONS, bins: int = 10
) -> pd.DataFrame:
    """How each dimension score and the credit score moved for the users scored both times.

    Parameters
    ----------
    before, after : DataFrame
        Score frames with ``user_id``, ``dim_<dimension>`` for each of ``dims`` and
        ``credit_score``, one row per user; they are joined on ``user_id``.
    dims : sequence of str
        Dimension names, without the ``dim_`` prefix.
    bins : int
        Quantile bins of the population stability index.

    Returns
    -------
    DataFrame
        One row per dimension, then one for ``credit_score``: ``dimension``, ``users`` (users in
        both frames with a value both times: a dimension without data is NaN and left out),
        ``mean_before``, ``mean_after``, ``mean_shift`` (after minus before) and ``psi``
        (:func:`population_stability_index` of the after values against the before values).
        A row with no users is NaN.

    Raises
    ------
    ParameterError
        A missing column, a user listed twice in a frame, or no user in both frames.

    Examples
    --------
    >>> before = pd.DataFrame({"user_id": ["a", "b"], "dim_repayment": [0.2, 0.4], "credit_score": [700, 600]})
    >>> after = pd.DataFrame({"user_id": ["b", "a", "c"], "dim_repayment": [0.6, 0.2, 0.9], "credit_score": [550, 700, 400]})
    >>> dimension_shift(before, after, dims=["repayment"], bins=2)[["dimension", "users", "mean_before", "mean_after", "mean_shift"]]
          dimension  users  mean_before  mean_after  mean_shift
    0     repayment      2          0.3         0.4         0.1
    1  credit_score      2        650.0       625.0       -25.0
    """
    columns = [f"dim_{d}" for d in dims] + ["credit_score"]
    b = _score_frame("before", before, columns)
    a = _score_frame("after", after, columns)
    both = b.merge(a, on="user_id", suffixes=("_before", "_after"))
    if not len(both):
        raise ParameterError("No user_id is in both the 'before' and the 'after' score frame; nothing to compare.")
    rows = []
    for name, column in zip([*dims, "credit_score"], columns):
        x = both[f"{column}_before"].to_numpy(dtype=np.float64)
        y = both[f"{column}_after"].to_numpy(dtype=np.float64)
        ok = np.isfinite(x) & np.isfinite(y)
        row: dict[str, object] = {"dimension": name, "users": int(ok.sum())}
        if ok.any():
            mb, ma = float(x[ok].mean()), float(y[ok].mean())
            row.update(mean_before=mb, mean_after=ma, mean_shift=ma - mb, psi=population_stability_index(x[ok], y[ok], bins=bins))
        else:
            row.update(mean_before=np.nan, mean_after=np.nan, mean_shift=np.nan, psi=np.nan)
        rows.append(row)
    return pd.DataFrame(rows, columns=["dimension", "users", "mean_before", "mean_after", "mean_shift", "psi"])


def approval_rate(decisions: object) -> dict[str, float]:
    """Shares of ``approve``, ``review`` and ``reject`` among the decisions.

    Raises
    ------
    ParameterError
        No decision, or a value other than the three.

    Examples
    --------
    >>> approval_rate(["approve", "approve", "review", "reject"])
    {'approve': 0.5, 'review': 0.25, 'reject': 0.25}
    """
    d = np.asarray(decisions, dtype=object).ravel()
    if not len(d):
        raise ParameterError("approval_rate needs at least one decision; got none.")
    unknown = ~np.isin(d, DECISIONS)
    if unknown.any():
        raise ParameterError(f"Unknown decision {d[unknown][0]!r} in approval_rate; expected one of {', '.join(DECISIONS)}.")
    return {name: float((d == name).sum() / len(d)) for name in DECISIONS}
