"""Scoring settings: which input columns feed which dimension, weights, thresholds, model."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING

from loaders.errors import ParameterError

if TYPE_CHECKING:
    from scoring.policy import DecisionPolicy

__all__ = [
    "DIMENSIONS",
    "GRAPH_DIMENSIONS",
    "DIMENSION_LABELS",
    "PROPAGATIONS",
    "PROTECTED_COLUMNS",
    "ColumnSpec",
    "ScoringConfig",
]

#: The seven dimensions of the consumer credit scores socialrisk serves, in report order.
#: ``alternative_payments`` (utility, telecom, rent and transit top-ups) is the evidence of
#: users with a thin file: few transactions and no repayment history.
DIMENSIONS: tuple[str, ...] = (
    "transaction_history",
    "repayment",
    "linked_accounts",
    "social_network",
    "identity",
    "consumption",
    "alternative_payments",
)
#: User columns that are never a feature of any model nor a recourse action, whatever their
#: type: attributes protected by anti-discrimination law, and ones that stand in for them.
#: They may be used as segments of the fairness report.
PROTECTED_COLUMNS: tuple[str, ...] = (
    "age",
    "age_band",
    "birth_year",
    "date_of_birth",
    "sex",
    "gender",
    "ethnicity",
    "race",
    "religion",
    "nationality",
    "marital_status",
    "disability",
    "region",
    "postcode",
    "zip_code",
)
GRAPH_DIMENSIONS: tuple[str, ...] = ("linked_accounts", "social_network")
#: Optional propagation features, besides the personalized PageRank lifts that are always on.
PROPAGATIONS: tuple[str, ...] = ("belief_propagation", "label_spreading", "trustrank")
#: Unmapped numeric user columns: used by the learned model, explained as "profile".
PROFILE = "profile"
DIMENSION_LABELS: Mapping[str, str] = MappingProxyType(
    {
        "transaction_history": "transaction history",
        "repayment": "repayment behaviour",
        "linked_accounts": "linked-account risk",
        "social_network": "social network",
        "identity": "identity verification",
        "consumption": "consumption behaviour",
        "alternative_payments": "utility, telecom, rent and transit payments",
        PROFILE: "other account attributes",
    }
)


@dataclass(frozen=True)
class ColumnSpec:
    """One input column feeding a dimension.

    Attributes
    ----------
    column : str
        Column of the ``users`` table.
    higher_is_riskier : bool
        Orientation: ``True`` when a larger value is worse (late repayments), ``False`` when
        better (tenure, verified identity).
    denominator : str or None
        When set, the dimension uses ``column / denominator`` (e.g. late / total repayments).
    reason : str or None
        Words for a reason code, formatted with ``{value}``, ``{denominator}`` and ``{pct}``
        (the share of users doing better, in percent), e.g. ``"{value:.0f} of {denominator:.0f}
        repayments late"``. When absent, a generic sentence names the column.
    no_history : str or None
        Words for a user whose ``denominator`` is zero (no repayment at all: a thin file), who
        has no ratio to quote, e.g. ``"no repayment history"``; when absent, ``"no
        <denominator> on record"``.
    """

    column: str
    higher_is_riskier: bool = True
    denominator: str | None = None
    reason: str | None = None
    no_history: str | None = None


def _default_columns() -> Mapping[str, tuple[ColumnSpec, ...]]:
    return MappingProxyType(
        {
            "transaction_history": (
                ColumnSpec("chargebacks_90d", True, reason="{value:.0f} chargebacks in the last 90 days"),
                ColumnSpec("txn_count_90d", False, reason="few transactions in the last 90 days ({value:.0f})"),
            ),
            "repayment": (
                ColumnSpec(
                    "repayments_late",
                    True,
                    denominator="repayments_total",
                    reason="{value:.0f} of {denominator:.0f} repayments late",
                    no_history="no repayment history",
                ),
            ),
            "identity": (
                ColumnSpec("id_verified", False, reason="identity not verified"),
                ColumnSpec("tenure_days", False, reason="account opened only {value:.0f} days ago"),
            ),
            "consumption": (
                ColumnSpec("night_spend_share", True, reason="{value:.0%} of spending at night, more than {pct:.0f}% of users"),
                ColumnSpec("spend_volatility", True, reason="spending more erratic than for {pct:.0f}% of users"),
            ),
            "alternative_payments": (
                ColumnSpec(
                    "altpay_on_time_share",
                    False,
                    reason="{value:.0%} of utility, telecom, rent and transit payments on time",
                ),
                ColumnSpec(
                    "altpay_months",
                    False,
                    reason="only {value:.0f} months of utility, telecom, rent or transit payment history",
                ),
            ),
        }
    )


def _default_weights() -> Mapping[str, float]:
    return MappingProxyType(
        {
            "transaction_history": 0.3,
            "repayment": 0.4,
            "linked_accounts": 0.6,
            "social_network": 0.5,
            "identity": 0.3,
            "consumption": 0.2,
            "alternative_payments": 0.3,
        }
    )


@dataclass(frozen=True)
class ScoringConfig:
    """How dimensions are computed and combined into a score and a decision.

    Attributes
    ----------
    columns : mapping of dimension to ColumnSpec tuple
        Input columns per non-graph dimension. Columns absent from the data are skipped; a
        dimension with no column present is neutral.
    scorecard_weights : mapping
        Weight in [0, 1] of each dimension in the transparent scorecard, used when there are
        too few labels to learn: ``risk = 1 - prod(1 - w_d * s_d)``.
    min_labels_per_class : int
        Fewest fraud and fewest benign flags needed to learn the combination.
    alpha : float
        Probability of continuing the walk in personalized PageRank.
    tol : float
        Convergence tolerance (L1) of the propagation.
    crossfit_folds : int
        Folds for cross-fitting label-based graph features of labelled users.
    propagation : tuple of str
        Optional cross-fitted propagation features, any of ``belief_propagation`` (fraud
        probability from fraud and benign seeds, signed relations), ``label_spreading``
        (fraud share of the spread class mass) and ``trustrank`` (trust from benign seeds),
        added to the personalized PageRank lifts; see :func:`scoring.features.label_features`.
        The default, belief propagation alone, was chosen on the labelled graphs of the
        docs' quality page (docs/quality.md: better on average than none, no dataset worse; adding more
        did not help beyond noise); ``()`` keeps the PageRank lifts only.
    model : {"boosting", "logistic"}
        Learned combination: gradient boosting (default) or logistic regression.
    boosting_iter, learning_rate, max_leaf_nodes, min_samples_leaf, l2_regularization
        Gradient-boosting settings (scikit-learn ``HistGradientBoostingClassifier``).
    approve_at, review_at : int
        Credit score thresholds: ``approve`` at or above ``approve_at``, ``review`` at or above
        ``review_at``, ``reject`` below.
    min_reason_share : float
        A dimension becomes a reason when removing its evidence would lower ``risk`` by at
        least this much (learned model), or when ``w_d * s_d`` reaches it (scorecard).
    max_reasons : int
        Reason codes per user, most important first.
    prior_fraud_rate : float or None
        Share of fraud expected in the scored population. Flags come from investigations, so
        the labelled sample over-represents fraud (half of it, often); the learned model's
        odds are shifted from the labelled share to this rate (Saerens et al., 2002), so that
        ``risk`` reads as a probability for the population. Ranking metrics do not change.
        ``None`` keeps the labelled share.
    seed : int
        For cross-fitting folds and the model.
    protected_columns : tuple of str
        User columns never used as a feature nor offered as a recourse action
        (:data:`PROTECTED_COLUMNS` by default); any column may be a fairness segment.
    policy : DecisionPolicy
        How ``fraud_risk`` and ``credit_risk`` are made and turned into the decision
        (:mod:`scoring.policy`; ``default`` keeps one model seeing every feature).
    """

    columns: Mapping[str, tuple[ColumnSpec, ...]] = field(default_factory=_default_columns)
    scorecard_weights: Mapping[str, float] = field(default_factory=_default_weights)
    min_labels_per_class: int = 20
    alpha: float = 0.85
    tol: float = 1e-8
    crossfit_folds: int = 5
    propagation: tuple[str, ...] = ("belief_propagation",)
    model: str = "boosting"
    boosting_iter: int = 300
    learning_rate: float = 0.05
    max_leaf_nodes: int = 15
    min_samples_leaf: int = 20
    l2_regularization: float = 1.0
    approve_at: int = 650
    review_at: int = 550
    min_reason_share: float = 0.02
    max_reasons: int = 4
    prior_fraud_rate: float | None = 0.05
    seed: int = 0
    protected_columns: tuple[str, ...] = PROTECTED_COLUMNS
    policy: "DecisionPolicy" = field(default_factory=lambda: _default_policy())

    def __post_init__(self) -> None:
        unknown = sorted(set(self.columns) - set(DIMENSIONS) - {PROFILE})
        if unknown:
            raise ParameterError(f"Unknown dimension(s) {', '.join(unknown)} in 'columns'; expected any of {', '.join(DIMENSIONS)}.")
        for dim in GRAPH_DIMENSIONS:
            if self.columns.get(dim):
                raise ParameterError(f"The '{dim}' dimension is computed from the graph; it takes no input columns.")
        for dim, w in self.scorecard_weights.items():
            if dim not in DIMENSIONS:
                raise ParameterError(f"Unknown dimension {dim!r} in 'scorecard_weights'; expected any of {', '.join(DIMENSIONS)}.")
            if not 0.0 <= w <= 1.0:
                raise ParameterError(f"The scorecard weight of {dim!r} must be in [0, 1]. Got {w!r} instead.")
        if not 0.0 < self.alpha < 1.0:
            raise ParameterError(f"The 'alpha' parameter must be in (0, 1). Got {self.alpha!r} instead.")
        if isinstance(self.propagation, str) or not all(isinstance(p, str) for p in self.propagation):
            raise ParameterError(
                f"The 'propagation' parameter must be a tuple of names, e.g. ('belief_propagation',). Got {self.propagation!r} instead."
            )
        unknown = [p for p in self.propagation if p not in PROPAGATIONS]
        if unknown:
            raise ParameterError(
                f"Unknown propagation(s) {', '.join(map(repr, unknown))} in 'propagation'; expected any of {', '.join(PROPAGATIONS)}."
            )
        object.__setattr__(self, "propagation", tuple(dict.fromkeys(self.propagation)))
        if self.crossfit_folds < 2:
            raise ParameterError(f"The 'crossfit_folds' parameter must be >= 2. Got {self.crossfit_folds!r} instead.")
        if self.model not in ("boosting", "logistic"):
            raise ParameterError(f"The 'model' parameter must be one of boosting, logistic. Got {self.model!r} instead.")
        if not 350 <= self.review_at <= self.approve_at <= 950:
            raise ParameterError(
                f"Thresholds must satisfy 350 <= review_at <= approve_at <= 950. Got review_at={self.review_at}, approve_at={self.approve_at}."
            )
        if self.prior_fraud_rate is not None and not 0.0 < self.prior_fraud_rate < 1.0:
            raise ParameterError(f"The 'prior_fraud_rate' parameter must be in (0, 1) or None. Got {self.prior_fraud_rate!r} instead.")
        if isinstance(self.protected_columns, str):
            raise ParameterError(
                f"The 'protected_columns' parameter must be a tuple of column names. Got {self.protected_columns!r} instead."
            )
        object.__setattr__(self, "protected_columns", tuple(self.protected_columns))
        from scoring.policy import DecisionPolicy

        if not isinstance(self.policy, DecisionPolicy):
            raise ParameterError(f"The 'policy' parameter must be a DecisionPolicy (scoring.policy). Got {self.policy!r} instead.")
        if self.min_labels_per_class < 2:
            raise ParameterError(f"The 'min_labels_per_class' parameter must be >= 2. Got {self.min_labels_per_class!r} instead.")


def _default_policy() -> "DecisionPolicy":
    from scoring.policy import policy_named

    return policy_named("default")
