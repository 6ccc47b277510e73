"""How the service moves served scores when a flag changes a user's fraud exposure.

A full rescore recomputes every feature and asks the model again (minutes on a million users);
a flag must show in served scores within a second. The service keeps the fraud exposure as a
local-push state (:mod:`graph.propagation.push`): a new or cleared flag returns the users whose
exposure moved and by how much. This module turns that change into a change of score, with a
rule that is monotone and fitted to the scores being served:

- ``graph_map`` is an increasing function from fraud exposure to ``graph_risk``, fitted by
  isotonic regression on the users not flagged fraud (their exposure from the push state at
  start-up, their ``graph_risk`` from the last full scoring). A moved user's graph risk and risk
  both change by ``graph_map(after) - graph_map(before)``: a new fraud flag can only raise its
  neighbours' risk, a cleared one only lower it, and a user the flag does not reach keeps its
  score exactly.
- ``risk_map`` is the same for ``risk``; it estimates the risk of a user whose fraud flag from
  the last scoring is cleared (that user's stored risk was raised to its flag's severity, so the
  risk it would have without the flag is not stored): a user not flagged fraud with the same
  exposure.

These functions are pure (numpy in, numpy out); the service applies them under its lock.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.isotonic import IsotonicRegression

from loaders.errors import ParameterError

__all__ = ["ExposureMap", "fit_exposure_map", "exposure_shift"]


@dataclass(frozen=True)
class ExposureMap:
    """An increasing piecewise-linear map from fraud exposure to a share of risk in [0, 1].

    Attributes
    ----------
    x, y : ndarray
        Knots, ``x`` increasing and ``y`` non-decreasing; below ``x[0]`` the map is ``y[0]``,
        above ``x[-1]`` it is ``y[-1]``.
    """

    x: np.ndarray
    y: np.ndarray

    def __call__(self, exposure: np.ndarray) -> np.ndarray:
        if not len(self.x):
            return np.zeros(np.shape(exposure))
        return np.interp(np.asarray(exposure, dtype=np.float64), self.x, self.y)


def fit_exposure_map(exposure: np.ndarray, target: np.ndarray, *, max_points: int = 200_000, seed: int = 0) -> ExposureMap:
    """Fit an increasing map from exposure to ``target`` (isotonic regression, least squares).

    Parameters
    ----------
    exposure : ndarray, shape (n,)
        Fraud exposure of each user (push-state scores, seed-weight units).
    target : ndarray, shape (n,)
        What to predict from it (``graph_risk`` or ``risk``), in [0, 1]; NaN rows are ignored.
    max_points : int
        Users sampled at most (uniformly, with ``seed``), to keep the fit under a second.
    seed : int
        Seed of that sample.

    Returns
    -------
    ExposureMap
        Flat at 0 when there is nothing to fit.

    Examples
    --------
    >>> m = fit_exposure_map(np.array([0.0, 0.1, 0.2, 0.3]), np.array([0.0, 0.2, 0.1, 0.9]))
    >>> [round(float(v), 2) for v in m(np.array([0.0, 0.15, 0.3, 1.0]))]
    [0.0, 0.15, 0.9, 0.9]
    """
    x = np.asarray(exposure, dtype=np.float64).ravel()
    y = np.asarray(target, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise ParameterError(f"fit_exposure_map needs one target per exposure. Got {x.shape[0]} exposures and {y.shape[0]} targets instead.")
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if len(x) > max_points:
        pick = np.random.default_rng(seed).choice(len(x), size=max_points, replace=False)
        x, y = x[pick], y[pick]
    if len(x) < 2 or np.ptp(x) == 0:
        level = float(np.clip(y.mean(), 0, 1)) if len(y) else 0.0
        return ExposureMap(np.array([0.0]), np.array([level]))
    iso = IsotonicRegression(increasing=True, y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(x, y)
    return ExposureMap(np.asarray(iso.X_thresholds_, dtype=np.float64), np.asarray(iso.y_thresholds_, dtype=np.float64))


def exposure_shift(graph_map: ExposureMap, before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """Change of graph risk for exposures moving from ``before`` to ``after``.

    Positive where exposure rose, negative where it fell, 0 where it did not move.

    Examples
    --------
    >>> m = ExposureMap(np.array([0.0, 1.0]), np.array([0.0, 0.5]))
    >>> exposure_shift(m, np.array([0.2, 0.4]), np.array([0.6, 0.4])).tolist()
    [0.2, 0.0]
    """
    return graph_map(after) - graph_map(before)
