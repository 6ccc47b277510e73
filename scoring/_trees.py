"""Gradient-boosted trees evaluated for a few rows without scikit-learn's per-tree overhead.

scikit-learn's ``HistGradientBoostingClassifier.predict_proba`` walks its trees one call at a
time (a few microseconds each, plus a thread pool per call): 300 trees cost milliseconds for
one row, the largest part of scoring one applicant. The same trees, flattened once into arrays,
are walked here by one compiled loop; the sum runs tree by tree in the same order from the
same baseline, so the probabilities are the same to the last bit (tested).
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np
from scipy.special import expit

__all__ = ["FlatTrees", "flatten", "predict_proba"]


class FlatTrees:
    """The trees of one fitted binary classifier as flat arrays (nodes of every tree end to end)."""

    def __init__(self, model: Any) -> None:
        nodes = [p.nodes for (p,) in model._predictors]
        self.offsets = np.cumsum([0] + [len(n) for n in nodes]).astype(np.int64)
        allnodes = np.concatenate(nodes)
        self.value = allnodes["value"].astype(np.float64)
        self.feature = allnodes["feature_idx"].astype(np.int64)
        self.threshold = allnodes["num_threshold"].astype(np.float64)
        self.missing_left = allnodes["missing_go_to_left"].astype(np.bool_)
        self.left = allnodes["left"].astype(np.int64)
        self.right = allnodes["right"].astype(np.int64)
        self.leaf = allnodes["is_leaf"].astype(np.bool_)
        self.baseline = float(np.asarray(model._baseline_prediction).ravel()[0])


def flatten(model: Any) -> FlatTrees | None:
    """The flat trees of ``model`` (kept on it), or None when it is not a binary
    ``HistGradientBoostingClassifier`` on numeric features (then use its own predict)."""
    cached = getattr(model, "_socialrisk_flat", None)
    if cached is not None:
        return cached
    if type(model).__name__ != "HistGradientBoostingClassifier" or getattr(model, "n_trees_per_iteration_", 0) != 1:
        return None
    if getattr(model, "is_categorical_", None) is not None and np.any(model.is_categorical_):
        return None
    flat = FlatTrees(model)
    model._socialrisk_flat = flat
    return flat


@numba.njit(cache=True, nogil=True)
def _raw(X: np.ndarray, offsets: np.ndarray, value: np.ndarray, feature: np.ndarray, threshold: np.ndarray, missing_left: np.ndarray,
         left: np.ndarray, right: np.ndarray, leaf: np.ndarray, baseline: float) -> np.ndarray:  # pragma: no cover - compiled
    n = X.shape[0]
    out = np.empty(n)
    for i in range(n):
        raw = 0.0 + baseline
        for t in range(len(offsets) - 1):
            base = offsets[t]
            k = 0
            while not leaf[base + k]:
                x = X[i, feature[base + k]]
                if np.isnan(x):
                    k = left[base + k] if missing_left[base + k] else right[base + k]
                elif x <= threshold[base + k]:
                    k = left[base + k]
                else:
                    k = right[base + k]
            raw += value[base + k]
        out[i] = raw
    return out


def predict_proba(flat: FlatTrees, X: np.ndarray) -> np.ndarray:
    """Probability of the positive class of each row of ``X`` (float64, NaN for missing)."""
    X = np.ascontiguousarray(X, dtype=np.float64)
    raw = _raw(X, flat.offsets, flat.value, flat.feature, flat.threshold, flat.missing_left, flat.left, flat.right, flat.leaf, flat.baseline)
    return np.asarray(expit(raw), dtype=np.float64)
