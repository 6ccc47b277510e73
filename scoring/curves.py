"""Points of the ROC and precision-recall curves, for drawing (:mod:`socialrisk.plots`).

Pure functions of labels and scores; the areas under them are
:func:`sklearn.metrics.roc_auc_score` and :func:`~sklearn.metrics.average_precision_score`, as
:func:`scoring.evaluate.evaluate` reports them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve

from loaders.errors import ParameterError

__all__ = ["roc_points", "pr_points"]


def _check(y: np.ndarray, score: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y).astype(np.int64)
    score = np.asarray(score, dtype=np.float64)
    if y.shape != score.shape or y.ndim != 1:
        raise ParameterError(f"{name} needs labels and scores of one length. Got {y.shape} and {score.shape} instead.")
    if not (np.isin(y, (0, 1)).all() and 0 < y.sum() < len(y)):
        raise ParameterError(f"{name} needs labels 0 and 1, both present.")
    return y, score


def roc_points(y: np.ndarray, score: np.ndarray) -> tuple[pd.DataFrame, float]:
    """The ROC curve of ``score`` for labels ``y`` (1 = fraud) and its area.

    Returns
    -------
    points : DataFrame
        ``false_positive_rate``, ``true_positive_rate``, ``threshold`` (from the top score down).
    auroc : float

    Examples
    --------
    >>> points, auc = roc_points(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8]))
    >>> round(auc, 2)
    0.75
    """
    y, score = _check(y, score, "roc_points")
    fpr, tpr, thr = roc_curve(y, score)
    return pd.DataFrame({"false_positive_rate": fpr, "true_positive_rate": tpr, "threshold": thr}), float(roc_auc_score(y, score))


def pr_points(y: np.ndarray, score: np.ndarray) -> tuple[pd.DataFrame, float]:
    """The precision-recall curve of ``score`` for labels ``y`` (1 = fraud) and its average
    precision (AUPRC as the contract measures it).

    Returns
    -------
    points : DataFrame
        ``recall``, ``precision`` (recall decreasing, as scikit-learn gives them).
    auprc : float

    Examples
    --------
    >>> points, ap = pr_points(np.array([0, 0, 1, 1]), np.array([0.1, 0.4, 0.35, 0.8]))
    >>> round(ap, 2)
    0.83
    """
    y, score = _check(y, score, "pr_points")
    precision, recall, _ = precision_recall_curve(y, score)
    return pd.DataFrame({"recall": recall, "precision": precision}), float(average_precision_score(y, score))
