"""From a risk probability to the user-facing credit score and a decision."""

from __future__ import annotations

import numpy as np

__all__ = ["SCORE_MIN", "SCORE_MAX", "credit_score", "risk_at_score", "decide"]

SCORE_MIN, SCORE_MAX = 350, 950
#: Points to double the odds, and the score at even odds (the usual scorecard scaling).
PDO, SCORE_AT_EVEN_ODDS = 50.0, 600.0


def credit_score(risk: np.ndarray) -> np.ndarray:
    """Integer score in 350..950: 600 at risk 0.5, +50 points each time the odds of being
    good double, clipped to the range.

    Examples
    --------
    >>> credit_score(np.array([0.5, 1 / 3, 0.2, 0.999])).tolist()
    [600, 650, 700, 350]
    """
    p = np.clip(np.asarray(risk, dtype=np.float64), 1e-9, 1 - 1e-9)
    score = SCORE_AT_EVEN_ODDS + PDO / np.log(2.0) * np.log((1.0 - p) / p)
    return np.clip(np.rint(score), SCORE_MIN, SCORE_MAX).astype(np.int64)


def risk_at_score(score: float) -> float:
    """The risk at which :func:`credit_score` gives ``score`` (before rounding)."""
    odds_good = 2.0 ** ((score - SCORE_AT_EVEN_ODDS) / PDO)
    return float(1.0 / (1.0 + odds_good))


def decide(scores: np.ndarray, *, approve_at: int, review_at: int) -> np.ndarray:
    """``approve`` at or above ``approve_at``, ``review`` at or above ``review_at``, else ``reject``."""
    scores = np.asarray(scores)
    return np.where(scores >= approve_at, "approve", np.where(scores >= review_at, "review", "reject")).astype(object)
