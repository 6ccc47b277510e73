"""What scoring by association costs good users, and how well the risk is calibrated.

Pure functions of labels, risks and decisions, used by :func:`scoring.evaluate.evaluate` on
the hidden users of each repeat (the reliability table and the trade-off curve: of all repeats
pooled).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, roc_auc_score

from loaders.errors import ParameterError
from scoring.credit import SCORE_MAX, SCORE_MIN, credit_score, decide, risk_at_score

__all__ = [
    "TRADEOFF_CUTOFFS",
    "good_user_costs",
    "tradeoff_curve",
    "brier_score",
    "expected_calibration_error",
    "reliability_table",
    "segment_metrics",
]

#: Credit-score cut-offs of the default trade-off curve (refused below the cut-off).
TRADEOFF_CUTOFFS: tuple[int, ...] = tuple(range(500, 801, 25))


def good_user_costs(
    y: np.ndarray, risk: np.ndarray, graph_risk: np.ndarray, decision: np.ndarray, *, approve_at: int, review_at: int
) -> dict[str, float]:
    """Refusals of known-good users, and how many the graph alone caused.

    Returns
    -------
    dict
        ``good_refused``: share of good users (``y == 0``) decided ``reject`` or ``review``;
        ``collateral``: share of those refused good users who, without their graph risk
        (``risk - graph_risk``), would be approved (NaN when no good user is refused); ``collateral_rate``: the same users as a
        share of all good users.

    Examples
    --------
    >>> y = np.array([0, 0, 0, 1])
    >>> risk = np.array([0.9, 0.6, 0.1, 0.9])
    >>> graph = np.array([0.85, 0.0, 0.0, 0.5])  # the first good user is refused for its graph
    >>> dec = np.array(["reject", "reject", "approve", "reject"])
    >>> good_user_costs(y, risk, graph, dec, approve_at=650, review_at=550)
    {'good_refused': 0.6666666666666666, 'collateral': 0.5, 'collateral_rate': 0.3333333333333333}
    """
    good = np.asarray(y) == 0
    n_good = int(good.sum())
    if n_good == 0:
        return {"good_refused": float("nan"), "collateral": float("nan"), "collateral_rate": float("nan")}
    refused = good & np.isin(np.asarray(decision, dtype=object), ["reject", "review"])
    without_graph = decide(credit_score(np.clip(np.asarray(risk) - np.asarray(graph_risk), 0.0, 1.0)), approve_at=approve_at, review_at=review_at)
    caught = refused & (without_graph == "approve")
    n_refused = int(refused.sum())
    return {
        "good_refused": n_refused / n_good,
        "collateral": int(caught.sum()) / n_refused if n_refused else float("nan"),
        "collateral_rate": int(caught.sum()) / n_good,
    }


def tradeoff_curve(
    risk: np.ndarray,
    risk_without_graph: np.ndarray,
    is_fraud: np.ndarray,
    is_good: np.ndarray,
    *,
    cutoffs: Sequence[int] = TRADEOFF_CUTOFFS,
) -> pd.DataFrame:
    """Fraud caught against good users refused, and refused for their graph alone, per cut-off.

    At credit-score cut-off ``c`` a user is refused when ``credit_score(risk) < c``, as
    :func:`scoring.credit.decide` with ``approve_at=c`` sends it to review or rejection. The
    curve's row at the configured ``approve_at`` therefore agrees with :func:`good_user_costs`.

    Parameters
    ----------
    risk : ndarray of float, shape (n,)
        Risk in [0, 1] of each user.
    risk_without_graph : ndarray of float, shape (n,)
        The same users' risk without the graph dimensions (``risk - graph_risk`` of the scores).
    is_fraud, is_good : ndarray of bool, shape (n,)
        Users known to be fraud, and known to be good; a user may be neither (unlabelled), never
        both.
    cutoffs : sequence of int
        Credit-score cut-offs in 350..950; duplicates are dropped and rows come in ascending order.

    Returns
    -------
    DataFrame
        One row per cut-off: ``credit_score_cutoff``; ``risk_threshold``, the risk above which
        the rounded score falls below the cut-off (``risk_at_score(c - 0.5)``); ``fraud_recall``,
        the share of fraud users refused; ``good_refused``, the share of good users refused;
        ``collateral_rate``, the share of good users refused who would not be refused without
        their graph dimensions (refused at ``risk`` but not at ``risk_without_graph``), over all
        good users. A share over no users is NaN.

    Raises
    ------
    ParameterError
        Arrays of different lengths, a non-finite risk, a user both fraud and good, or a cut-off
        outside 350..950.

    Examples
    --------
    Two fraud users and three good ones; the third good user is refused only for its graph:

    >>> risk = np.array([0.9, 0.3, 0.05, 0.5, 0.9])
    >>> without = np.array([0.9, 0.3, 0.05, 0.5, 0.1])
    >>> fraud = np.array([True, True, False, False, False])
    >>> tradeoff_curve(risk, without, fraud, ~fraud, cutoffs=[600, 650])[["credit_score_cutoff", "fraud_recall", "good_refused", "collateral_rate"]]
       credit_score_cutoff  fraud_recall  good_refused  collateral_rate
    0                  600           0.5      0.333333         0.333333
    1                  650           0.5      0.666667         0.333333
    """
    arrays = {"risk": risk, "risk_without_graph": risk_without_graph, "is_fraud": is_fraud, "is_good": is_good}
    n = len(np.asarray(risk))
    for name, values in arrays.items():
        if np.ndim(values) != 1 or len(values) != n:
            raise ParameterError(
                f"The '{name}' parameter of tradeoff_curve must be a 1-D array of {n} values, like 'risk'. Got shape {np.shape(values)} instead."
            )
    risk = np.asarray(risk, dtype=np.float64)
    without = np.asarray(risk_without_graph, dtype=np.float64)
    for name, values in (("risk", risk), ("risk_without_graph", without)):
        bad = np.flatnonzero(~np.isfinite(values))
        if len(bad):
            raise ParameterError(f"The '{name}' parameter of tradeoff_curve must be finite. Got {float(values[bad[0]])!r} at position {int(bad[0])}.")
    fraud = np.asarray(is_fraud, dtype=bool)
    good = np.asarray(is_good, dtype=bool)
    both = np.flatnonzero(fraud & good)
    if len(both):
        raise ParameterError(f"A user cannot be both fraud and good in tradeoff_curve; user at position {int(both[0])} is both.")
    wanted = sorted({int(c) for c in cutoffs})
    outside = [c for c in wanted if not SCORE_MIN <= c <= SCORE_MAX]
    if not wanted or outside:
        raise ParameterError(
            f"The 'cutoffs' parameter of tradeoff_curve must be credit scores in {SCORE_MIN}..{SCORE_MAX}. "
            f"Got {outside[0] if outside else 'none'} instead."
        )
    score, score_without = credit_score(risk), credit_score(without)
    n_fraud, n_good = int(fraud.sum()), int(good.sum())

    def share(mask: np.ndarray, of: int) -> float:
        return int(mask.sum()) / of if of else float("nan")

    rows = []
    for c in wanted:
        refused = score < c
        rows.append(
            {
                "credit_score_cutoff": c,
                "risk_threshold": risk_at_score(c - 0.5),
                "fraud_recall": share(refused & fraud, n_fraud),
                "good_refused": share(refused & good, n_good),
                "collateral_rate": share(refused & good & (score_without >= c), n_good),
            }
        )
    return pd.DataFrame(rows, columns=["credit_score_cutoff", "risk_threshold", "fraud_recall", "good_refused", "collateral_rate"])


def brier_score(y: np.ndarray, risk: np.ndarray) -> float:
    """Mean squared difference between the risk and the outcome (0 is perfect).

    >>> brier_score(np.array([1, 0]), np.array([0.8, 0.4]))
    0.1
    """
    return float(np.mean((np.asarray(risk, dtype=np.float64) - np.asarray(y, dtype=np.float64)) ** 2))


def reliability_table(y: np.ndarray, risk: np.ndarray, *, bins: int = 10) -> pd.DataFrame:
    """Users grouped by risk in ``bins`` equal-width bins: count, mean risk, observed fraud rate.

    Empty bins are left out.
    """
    risk = np.clip(np.asarray(risk, dtype=np.float64), 0.0, 1.0)
    y = np.asarray(y, dtype=np.float64)
    which = np.minimum((risk * bins).astype(np.int64), bins - 1)
    rows = []
    for b in range(bins):
        m = which == b
        if m.any():
            rows.append({"bin": f"{b / bins:.1f}-{(b + 1) / bins:.1f}", "users": int(m.sum()), "mean_risk": float(risk[m].mean()), "fraud_rate": float(y[m].mean())})
    return pd.DataFrame(rows, columns=["bin", "users", "mean_risk", "fraud_rate"])


def expected_calibration_error(y: np.ndarray, risk: np.ndarray, *, bins: int = 10) -> float:
    """Users-weighted mean gap between mean risk and observed fraud rate over the bins.

    >>> expected_calibration_error(np.array([1, 0, 0, 0]), np.array([0.95, 0.05, 0.05, 0.05]))
    0.05
    """
    table = reliability_table(y, risk, bins=bins)
    if not len(table):
        return float("nan")
    w = table["users"].to_numpy(dtype=np.float64)
    gap = np.abs(table["mean_risk"].to_numpy() - table["fraud_rate"].to_numpy())
    return float(round((w * gap).sum() / w.sum(), 12))


def segment_metrics(y: np.ndarray, risk: np.ndarray, segments: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """AUROC / AUPRC within each segment (a boolean mask); NaN where a segment lacks a class."""
    out = {}
    for name, mask in segments.items():
        yt, rt = np.asarray(y)[mask], np.asarray(risk)[mask]
        ok = 0 < yt.sum() < len(yt)
        out[name] = {
            "users": int(mask.sum()),
            "fraud": int(yt.sum()),
            "auroc": float(roc_auc_score(yt, rt)) if ok else float("nan"),
            "auprc": float(average_precision_score(yt, rt)) if ok else float("nan"),
        }
    return out
