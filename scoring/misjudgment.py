"""What scoring by association costs good users, and how well the risk is calibrated.

Pure functions of labels, risks and decisions, used by :func:`scoring.evaluate.evaluate` on
the hidden users of each repeat.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, roc_auc_score

from scoring.credit import credit_score, decide

__all__ = ["good_user_costs", "brier_score", "expected_calibration_error", "reliability_table", "segment_metrics"]


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
