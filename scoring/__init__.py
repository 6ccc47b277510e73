"""Scoring: dimension scores, the learned or scorecard combination, reason codes, evaluation."""

from scoring.config import DIMENSIONS, ColumnSpec, ScoringConfig
from scoring.credit import credit_score, decide
from scoring.pipeline import MODEL_VERSION, ScoreResult, Scorer, score_tables

__all__ = [
    "DIMENSIONS",
    "ColumnSpec",
    "ScoringConfig",
    "credit_score",
    "decide",
    "MODEL_VERSION",
    "ScoreResult",
    "Scorer",
    "score_tables",
]
