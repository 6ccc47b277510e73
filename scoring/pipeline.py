"""Combine graph risk and the other dimensions into risk, credit score, decision and reasons."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from graph.config import GraphConfig
from graph.projection import Projection
from graph.rings import ring_ids
from loaders.errors import ParameterError
from loaders.schema import Tables
from scoring._trees import flatten, predict_proba
from scoring.config import DIMENSIONS, GRAPH_DIMENSIONS, ScoringConfig
from scoring.credit import credit_score, decide
from scoring.dimensions import column_dimensions, column_standings, feature_dimension, graph_dimension
from scoring.features import (
    FlagVectors,
    Walks,
    crossfit_folds,
    flag_vectors,
    label_features,
    neighbour_means,
    structural_features,
    user_columns,
)
from scoring.policy import DecisionPolicy, PolicyDecision, combine_outputs, credit_columns, principal_reasons
from scoring.reasons import Reason, column_reason, linked_account_reasons, social_reasons

__all__ = [
    "MODEL_VERSION", "OUTPUT_COLUMNS", "Combination", "FeatureSet", "ScoreResult", "Scorer", "align_features", "combine", "combine_rows", "dimension_frame",
    "fit_combination", "reasons_for", "score_tables",
]

MODEL_VERSION = "socialrisk-0.1"
Progress = Callable[[str], None]


@dataclass(frozen=True)
class ScoreResult:
    """Scores of every user and how they were made.

    Attributes
    ----------
    scores : DataFrame
        One row per user: ``user_id``, ``risk``, ``graph_risk``, ``credit_score``, ``decision``,
        ``reasons``, plus ``reason_codes``, ``flag``, ``ring_id`` (users joined by shared
        identifiers; empty when none) and one ``dim_<dimension>`` column each.
    features : DataFrame
        The model's input features (same row order).
    combination : str
        ``boosting``, ``logistic`` or ``scorecard``.
    contributions : DataFrame
        Per user and dimension: how much ``risk`` would fall without that dimension's evidence.
    meta : dict
        Model version, label counts, propagation convergence.
    fitted : Combination or None
        The combination that made ``risk`` (picklable: a model version's payload).
    """

    scores: pd.DataFrame
    features: pd.DataFrame
    combination: str
    contributions: pd.DataFrame
    meta: dict[str, Any] = field(default_factory=dict)
    fitted: "Combination | None" = None


class Scorer:
    """Prepares the label-free parts once, then scores for any set of flags.

    Parameters
    ----------
    tables : Tables
    projection : Projection
    graph_config : GraphConfig
    config : ScoringConfig
    walks : Walks, optional
        The random-walk operators to propagate with; default: the single-machine ones over
        ``projection`` (the spark engine passes its own, ``graph.spark.walks.SparkWalks``).
    """

    def __init__(
        self,
        tables: Tables,
        projection: Projection,
        *,
        graph_config: GraphConfig | None = None,
        config: ScoringConfig | None = None,
        progress: Progress | None = None,
        walks: Walks | None = None,
    ) -> None:
        self.tables = tables
        self.projection = projection
        self.graph_config = graph_config or GraphConfig()
        self.config = config or ScoringConfig()
        say = progress or (lambda _m: None)
        n = projection.n_users
        say("user features")
        self.user_frame = user_columns(tables, projection)
        protected = [c for c in self.user_frame.columns if c in self.config.protected_columns]
        if protected:
            say(f"protected columns, never features: {', '.join(protected)}")
            self.user_frame = self.user_frame.drop(columns=protected)
        self.standings = column_standings(self.user_frame, self.config)
        self.column_dims = column_dimensions(self.standings, n)
        say("graph structure features")
        self.structure = structural_features(tables, projection)
        say("neighbour aggregates")
        self.neighbours = neighbour_means(self.user_frame, projection)
        say("random-walk operators")
        self.walks = walks if walks is not None else Walks(
            projection, hub_exponent=self.graph_config.hub_exponent, hub_exponents=self.graph_config.hub_exponents,
            alpha=self.config.alpha, tol=self.config.tol,
        )
        self.rings = ring_ids(projection)
        usr = self.user_frame.add_prefix("usr_")
        self.base = pd.concat([usr, self.structure, self.neighbours], axis=1)

    def flags_from(self, flags: pd.DataFrame) -> FlagVectors:
        return flag_vectors(flags, self.projection)

    def score(
        self, flags: FlagVectors, *, progress: Progress | None = None, seeds: FlagVectors | None = None,
        combination: "Combination | None" = None,
    ) -> ScoreResult:
        """Score every user given the known flags.

        ``combination``, when given (a stored model version), turns the features into risk as
        it was fitted; otherwise the combination is fitted on ``flags`` first.

        ``seeds``, when given, replaces ``flags`` as the seeds of the label-based graph features
        (the flags still train the combination); :func:`scoring.evaluate.evaluate` uses it to
        measure what the benign flags add as counter-evidence.
        """
        cfg = self.config
        say = progress or (lambda _m: None)
        n = self.projection.n_users
        if seeds is not None and len(seeds.fraud) != len(flags.fraud):
            raise ParameterError(f"The 'seeds' of Scorer.score must cover the same {len(flags.fraud)} users as the flags. Got {len(seeds.fraud)} instead.")
        folds = crossfit_folds(flags, n_folds=cfg.crossfit_folds, seed=cfg.seed)
        say("propagating risk from flags (cross-fitted)")
        labels = label_features(self.walks, flags if seeds is None else seeds, folds, propagation=cfg.propagation)
        converged = dict(labels.attrs.get("converged", {}))
        X = pd.concat([self.base, labels], axis=1)

        dims = dimension_frame(self.column_dims, labels, self.structure, n)

        if combination is None:
            combination = fit_combination(X, flags.y, cfg, progress=say)
        X, feature_note = align_features(X, combination)
        say("reason codes")
        features = FeatureSet(
            X=X, dims=dims, flags=flags, projection=self.projection, standings=self.standings, structure=self.structure,
            rings=self.rings,
        )
        frame, contributions = combine(features, combination, cfg)
        n_fraud, n_benign = int((flags.y == 1).sum()), int((flags.y == 0).sum())
        meta = {
            "model_version": MODEL_VERSION,
            "combination": combination.kind,
            "labels": {"fraud": n_fraud, "benign": n_benign},
            "users": n,
            "features": int(X.shape[1]),
            "propagation": {"features": list(cfg.propagation), "converged": converged},
            **({"features_aligned": feature_note} if feature_note else {}),
        }
        return ScoreResult(
            scores=frame, features=X, combination=combination.kind, contributions=contributions, meta=meta, fitted=combination
        )


@dataclass(frozen=True)
class Combination:
    """A fitted combination: how a row of features becomes a risk probability.

    This is what a model version stores (pickled); :meth:`Scorer.score` applies it to the
    features of the current graph and flags.

    Attributes
    ----------
    kind : {"boosting", "logistic", "scorecard"}
    columns : tuple of str
        The feature columns it was fitted on, in order.
    model : estimator or None
        The fitted scikit-learn estimator (None for the scorecard).
    shift : float
        Log-odds shift from the training fraud rate to the configured prior.
    reference : ndarray or None
        Feature values of the typical user in good standing (what reasons occlude with).
    scorecard_weights : dict
        Per-dimension weights of the scorecard.
    labels : dict
        Fraud and benign labels it was fitted on.
    version : str or None
        The model version it is stored under, once stored.
    credit : Combination or None
        The combination of ``credit_risk`` when the decision policy restricts what it may see
        (fitted on the allowed columns only, :func:`scoring.policy.credit_columns`); None when
        ``credit_risk`` is ``fraud_risk`` (a policy granting every feature).
    policy : str
        The decision policy it was fitted under.
    """

    kind: str
    columns: tuple[str, ...]
    model: Any = None
    shift: float = 0.0
    reference: np.ndarray | None = None
    scorecard_weights: dict[str, float] = field(default_factory=dict)
    labels: dict[str, int] = field(default_factory=dict)
    version: str | None = None
    credit: "Combination | None" = None
    policy: str = "default"

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Risk of each row of ``X`` (columns as :attr:`columns`)."""
        return _shift(_predict(self.model, X), self.shift)


def fit_combination(X: pd.DataFrame, y: np.ndarray, config: ScoringConfig, *, progress: Progress | None = None) -> Combination:
    """Fit the combination on the labelled rows of ``X`` (``y``: 1 fraud, 0 benign, -1 none).

    With fewer than ``config.min_labels_per_class`` labels of either class, the transparent
    scorecard (``config.scorecard_weights``) is returned instead.
    """
    X = _without_protected(X, config)
    fraud = _fit_one(X, y, config, progress=progress)
    policy = config.policy
    if policy.credit_sees_all:
        return replace(fraud, policy=policy.name)
    cols = credit_columns(list(X.columns), policy)
    say = progress or (lambda _m: None)
    say(f"credit_risk under the {policy.name!r} policy: {len(cols)} of {X.shape[1]} features ({', '.join(policy.credit_features)})")
    if not cols:
        # no column the policy grants (a graph without user columns): credit_risk has no
        # evidence and is neutral, the scorecard of the granted dimensions, all without data
        weights = {d: w for d, w in config.scorecard_weights.items() if d in _credit_dimensions(policy)}
        credit = Combination("scorecard", (), scorecard_weights=weights, labels=fraud.labels)
    else:
        credit = _fit_one(X[cols], y, config, progress=None, scorecard_dims=_credit_dimensions(policy))
    return replace(fraud, credit=credit, policy=policy.name)


def _credit_dimensions(policy: DecisionPolicy) -> tuple[str, ...]:
    """The dimensions ``credit_risk`` may weigh in the scorecard under ``policy``."""
    return tuple(d for d in DIMENSIONS if d not in GRAPH_DIMENSIONS or policy.credit_sees(d))


def _without_protected(X: pd.DataFrame, config: ScoringConfig) -> pd.DataFrame:
    protected = {f"usr_{c}" for c in config.protected_columns}
    drop = [c for c in X.columns if c in protected or any(c.endswith(f"_{p}") and c.startswith(("rel_nbr", "lnk_nbr")) for p in config.protected_columns)]
    return X.drop(columns=drop) if drop else X


def _fit_one(
    X: pd.DataFrame, y: np.ndarray, config: ScoringConfig, *, progress: Progress | None, scorecard_dims: tuple[str, ...] = DIMENSIONS
) -> Combination:
    say = progress or (lambda _m: None)
    labelled = y >= 0
    n_fraud, n_benign = int((y == 1).sum()), int((y == 0).sum())
    labels = {"fraud": n_fraud, "benign": n_benign}
    if n_fraud < config.min_labels_per_class or n_benign < config.min_labels_per_class:
        say(f"too few labels to learn ({n_fraud} fraud / {n_benign} benign): transparent scorecard")
        weights = {d: w for d, w in config.scorecard_weights.items() if d in scorecard_dims}
        return Combination("scorecard", tuple(X.columns), scorecard_weights=weights, labels=labels)
    say(f"learning the combination ({config.model}, {n_fraud} fraud / {n_benign} benign labels)")
    model = _fit(X.loc[labelled], y[labelled], config)
    shift = 0.0
    if config.prior_fraud_rate is not None:
        shift = _logit(config.prior_fraud_rate) - _logit(n_fraud / (n_fraud + n_benign))
    reference = _good_standing(X.to_numpy(dtype=np.float64), y)
    return Combination(config.model, tuple(X.columns), model=model, shift=shift, reference=reference, labels=labels)


@dataclass(frozen=True)
class FeatureSet:
    """What the combination step reads: the model features and dimensions of some users, and
    the graph they live in (for the reasons' words).

    Rows are the users of :attr:`projection`, in its order. The batch scoring holds every user;
    an applicant's holds the small subgraph around it (:mod:`scoring.application`), of which
    only the applicant's row is complete, so :func:`combine` is asked for that row alone.

    Attributes
    ----------
    X : DataFrame
        Model features, columns in the combination's order (:func:`align_features`).
    dims : DataFrame
        Dimension scores (:func:`dimension_frame`).
    flags : FlagVectors
        Each user's own flags (its own fraud flag dominates its score).
    projection : Projection
    standings : dict
        Column standings (:func:`scoring.dimensions.column_standings`) for the column reasons.
    structure : DataFrame
        Label-free structure features (negative ratings received, for the social reasons).
    rings : ndarray of str
        Ring id of each user ("" when none).
    population : dict, optional
        Column standings of the scored population that changed rows are placed against
        (:func:`combine_rows`); None when :attr:`standings` are that population's (the batch
        scoring). An applicant's subgraph holds a handful of users: its rows are placed against
        the population its standings were placed against.
    """

    X: pd.DataFrame
    dims: pd.DataFrame
    flags: FlagVectors
    projection: Projection
    standings: dict[str, Any]
    structure: pd.DataFrame
    rings: np.ndarray
    population: dict[str, Any] | None = None


def dimension_frame(column_dims: pd.DataFrame, labels: pd.DataFrame, structure: pd.DataFrame, n: int) -> pd.DataFrame:
    """The six dimension scores of ``n`` users from the column dimensions, the label features
    (PageRank lifts) and the structure (negative ratings received). NaN means no data."""
    dims = pd.DataFrame(index=pd.RangeIndex(n))
    for dim in DIMENSIONS:
        dims[dim] = column_dims[dim].to_numpy() if dim in column_dims else np.nan
    if "lnk_lift_fraud" in labels:
        dims["linked_accounts"] = graph_dimension(labels["lnk_lift_fraud"].to_numpy(), labels["lnk_lift_benign"].to_numpy())
    social = np.zeros(n)
    if "rel_lift_fraud" in labels:
        social = graph_dimension(labels["rel_lift_fraud"].to_numpy(), labels["rel_lift_benign"].to_numpy())
    if "rel_in_negative_share" in structure:
        social = 1.0 - (1.0 - social) * (1.0 - structure["rel_in_negative_share"].to_numpy())
    if "rel_lift_fraud" in labels or "rel_in_negative_share" in structure:
        dims["social_network"] = social
    return dims


def align_features(X: pd.DataFrame, combination: "Combination") -> tuple[pd.DataFrame, dict[str, list[str]]]:
    """``X`` with the columns ``combination`` was fitted on, in its order.

    Some features exist only for the kinds present (a phone column needs a shared phone): one
    the model knows that the data does not make is 0, one it does not know is not used. The
    note says which (empty when the columns agree)."""
    if combination.columns == tuple(X.columns):
        return X, {}
    absent = [c for c in combination.columns if c not in X.columns]
    unused = [c for c in X.columns if c not in combination.columns]
    return X.reindex(columns=list(combination.columns), fill_value=0.0), {"absent_taken_as_0": absent, "unused": unused}


#: Columns :func:`combine` adds to the contract's, one pair of outputs and the policy's decision.
OUTPUT_COLUMNS: tuple[str, ...] = (
    "fraud_risk", "fraud_score", "fraud_decision", "fraud_reasons", "fraud_reason_codes",
    "credit_risk", "credit_risk_score", "credit_decision", "credit_reasons", "credit_reason_codes",
    "principal_reasons", "principal_reason_codes", "decision_basis", "graph_evidence_only", "review_route", "policy",
)


@dataclass(frozen=True)
class _Output:
    """One output's risk of each scored row, per-dimension contributions and risk without graph."""

    risk: np.ndarray
    contributions: pd.DataFrame
    without_graph: np.ndarray


def _evaluate(
    X: pd.DataFrame, dims: pd.DataFrame, rows: np.ndarray, combination: "Combination", cfg: ScoringConfig, *,
    all_reasons: np.ndarray | None = None, contributions: bool = True,
) -> _Output:
    """Risk, contributions (for rows at least ``min_reason_share`` risky, and ``all_reasons``;
    none when ``contributions`` is False) and risk without the graph features of ``rows``
    under one fitted combination."""
    n = len(rows)
    cols = list(combination.columns)
    if combination.kind != "scorecard":
        Xa = (X if list(X.columns) == cols else X[cols]).to_numpy(dtype=np.float64)[rows]
        groups = _feature_groups(cols, cfg)
        predict = combination.predict
        reference = combination.reference
        graph_cols = [c for d in GRAPH_DIMENSIONS for c in groups.get(d, [])]
        if not contributions:
            # a few rows (recourse candidates): one call for the risk and the risk without graph
            both = predict(np.vstack([Xa, _occlude(Xa, graph_cols, reference)])) if graph_cols else predict(Xa)
            risk = both[:n]
            return _Output(risk=risk, contributions=pd.DataFrame(index=pd.RangeIndex(n)), without_graph=both[n:] if graph_cols else risk)
        risk = predict(Xa)
        # A contribution is at most the risk itself, so users below the reason threshold
        # can have no reason: occlude only the others (a few percent of a population).
        want = risk >= cfg.min_reason_share
        if all_reasons is not None:
            want |= all_reasons
        need = np.flatnonzero(want)
        contrib = {}
        for dim, gcols in groups.items():
            values = np.zeros(n)
            if len(need):
                values[need] = risk[need] - predict(_occlude(Xa[need], gcols, reference))
            contrib[dim] = values
        without_graph = predict(_occlude(Xa, graph_cols, reference)) if graph_cols else risk
    else:
        weights = combination.scorecard_weights
        terms = {d: weights.get(d, 0.0) * np.nan_to_num(dims[d].to_numpy()) for d in DIMENSIONS}
        risk = 1.0 - np.prod([1.0 - t for t in terms.values()], axis=0)
        contrib = {}
        for d in terms:
            rest = 1.0 - np.prod([1.0 - terms[o] for o in DIMENSIONS if o != d], axis=0)
            contrib[d] = risk - rest
        without_graph = 1.0 - np.prod([1.0 - terms[d] for d in DIMENSIONS if d not in GRAPH_DIMENSIONS], axis=0)
    return _Output(risk=risk, contributions=pd.DataFrame(contrib, index=pd.RangeIndex(n)), without_graph=without_graph)


def _credit_combination(combination: "Combination", config: ScoringConfig) -> "Combination | None":
    """The combination of ``credit_risk`` under the configured policy (None: it is ``fraud_risk``)."""
    policy = config.policy
    if policy.credit_sees_all:
        return None
    if combination.credit is None or combination.policy != policy.name:
        raise ParameterError(
            f"The combination{f' of model version {combination.version}' if combination.version else ''} was fitted under the "
            f"{combination.policy!r} decision policy, not {policy.name!r}: fit a new version under {policy.name!r} (socialrisk calibrate)."
        )
    return combination.credit


def combine(
    features: FeatureSet, combination: "Combination", config: ScoringConfig, *, rows: np.ndarray | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Turn features into both outputs, the policy's decision, credit score and reasons.

    The one step every path that scores goes through: the batch scoring (every user) and an
    applicant's scoring (its own row of a local subgraph). ``fraud_risk`` comes from
    ``combination`` (every feature), ``credit_risk`` from ``combination.credit`` (the features
    the decision policy lets it see), or is ``fraud_risk`` under a policy that lets it see
    everything; :func:`scoring.policy.combine_outputs` decides from the two.

    Parameters
    ----------
    features : FeatureSet
    combination : Combination
        Fitted (or the scorecard); ``features.X`` has its columns (:func:`align_features`).
    config : ScoringConfig
    rows : ndarray of int, optional
        The rows to score (default: all), in the order wanted.

    Returns
    -------
    scores : DataFrame
        One row per scored user: ``user_id``, ``risk`` (the worse of the two outputs),
        ``graph_risk``, ``credit_score``, ``decision`` (the policy's), ``reasons`` (those of
        the worse output), ``reason_codes``, ``flag``, ``ring_id``, ``dim_<dimension>``, and
        :data:`OUTPUT_COLUMNS`.
    contributions : DataFrame
        Per scored user and dimension: how much ``risk`` would fall without that evidence
        (of the output that makes ``risk``).

    Raises
    ------
    ParameterError
        ``combination`` was fitted under another decision policy than the configured one.
    """
    cfg = config
    policy = cfg.policy
    n_all = features.projection.n_users
    rows = np.arange(n_all) if rows is None else np.asarray(rows, dtype=np.int64)
    X = features.X
    dims = features.dims.iloc[rows].reset_index(drop=True)
    credit_comb = _credit_combination(combination, cfg)
    fraud_out = _evaluate(X, dims, rows, combination, cfg)
    credit_out = fraud_out if credit_comb is None else _evaluate(X, dims, rows, credit_comb, cfg)

    # the user's own confirmed label dominates its fraud risk
    fraud, benign = features.flags.fraud[rows], features.flags.benign[rows]
    own_fraud = fraud > 0
    fraud_risk = np.clip(np.where(own_fraud, np.maximum(fraud_out.risk, fraud), fraud_out.risk), 0.0, 1.0)
    credit_risk = fraud_risk if credit_comb is None else np.clip(credit_out.risk, 0.0, 1.0)
    decided = combine_outputs(
        fraud_risk=fraud_risk, credit_risk=credit_risk, fraud_without_graph=fraud_out.without_graph,
        credit_without_graph=credit_out.without_graph, own_fraud=own_fraud, policy=policy,
        approve_at=cfg.approve_at, review_at=cfg.review_at,
    )
    risk = decided.risk
    graph_risk = np.clip(np.maximum(fraud_out.risk, credit_out.risk) - np.maximum(fraud_out.without_graph, credit_out.without_graph), 0.0, 1.0)
    refused = {"fraud": decided.fraud_decision != "approve", "credit": decided.credit_decision != "approve"}

    fraud_reasons = reasons_for(features, fraud_out.contributions, rows, cfg)
    credit_reasons = fraud_reasons if credit_comb is None else reasons_for(features, credit_out.contributions, rows, cfg, own_flag=False)
    fraud_reasons, credit_reasons = _specific_for_refusals(
        features, rows, cfg, refused, fraud_reasons, credit_reasons, X, dims, combination, credit_comb
    )
    principal = principal_reasons(
        decided.decision, decided.basis, [[(r.code, r.text) for r in rs] for rs in fraud_reasons],
        [[(r.code, r.text) for r in rs] for rs in credit_reasons], max_reasons=min(4, cfg.max_reasons),
    )
    credit_worse = credit_risk > fraud_risk
    reasons = [c if w else f for f, c, w in zip(fraud_reasons, credit_reasons, credit_worse)]
    contributions = fraud_out.contributions
    if credit_comb is not None and credit_worse.any():
        contributions = fraud_out.contributions.reindex(columns=sorted(set(fraud_out.contributions) | set(credit_out.contributions)), fill_value=0.0)
        other = credit_out.contributions.reindex(columns=contributions.columns, fill_value=0.0)
        contributions = pd.DataFrame(
            np.where(credit_worse[:, None], other.to_numpy(), contributions.to_numpy()), columns=contributions.columns, index=contributions.index
        )

    scores = credit_score(risk)
    join = lambda rss, attr: [";".join(getattr(r, attr) for r in rs) for rs in rss]  # noqa: E731
    frame = pd.DataFrame(
        {
            "user_id": np.asarray(features.projection.user_ids)[rows],
            "risk": risk,
            "graph_risk": graph_risk,
            "credit_score": scores,
            "decision": decided.decision,
            "reasons": join(reasons, "text"),
            "reason_codes": join(reasons, "code"),
            "flag": np.where(own_fraud, "fraud", np.where(benign > 0, "benign", "")),
            "ring_id": np.asarray(features.rings)[rows],
        }
    )
    for dim in DIMENSIONS:
        frame[f"dim_{dim}"] = dims[dim].to_numpy()
    frame["fraud_risk"] = fraud_risk
    frame["fraud_score"] = credit_score(fraud_risk)
    frame["fraud_decision"] = decided.fraud_decision
    frame["fraud_reasons"] = join(fraud_reasons, "text")
    frame["fraud_reason_codes"] = join(fraud_reasons, "code")
    frame["credit_risk"] = credit_risk
    frame["credit_risk_score"] = credit_score(credit_risk)
    frame["credit_decision"] = decided.credit_decision
    frame["credit_reasons"] = join(credit_reasons, "text")
    frame["credit_reason_codes"] = join(credit_reasons, "code")
    frame["principal_reasons"] = [";".join(t for _, t in p) for p in principal]
    frame["principal_reason_codes"] = [";".join(c for c, _ in p) for p in principal]
    frame["decision_basis"] = decided.basis
    frame["graph_evidence_only"] = decided.graph_evidence_only
    frame["review_route"] = decided.review_route
    frame["policy"] = policy.name
    return frame, contributions


def combine_rows(
    features: FeatureSet, combination: "Combination", config: ScoringConfig, *, X: np.ndarray, rows: np.ndarray
) -> PolicyDecision:
    """Both outputs and the policy's decision for feature rows that are not in ``features``:
    the rows of ``X`` (columns as ``features.X``), each standing for the user at ``rows`` (its
    flags, its graph dimensions). What :mod:`scoring.recourse` scores its candidate changes
    with; the same fitted combinations and policy as :func:`combine`.

    Returns
    -------
    PolicyDecision
        With ``credit_score`` (of the policy's ``risk``) added as an attribute-free array in
        :attr:`PolicyDecision.credit_score`.
    """
    cfg = config
    rows = np.asarray(rows, dtype=np.int64)
    frame = pd.DataFrame(np.asarray(X, dtype=np.float64), columns=features.X.columns)
    dims = features.dims.iloc[rows].reset_index(drop=True).copy()
    usr = frame[[c for c in frame.columns if c.startswith("usr_")]]
    usr.columns = [c[4:] for c in usr.columns]
    population = features.population if features.population is not None else features.standings
    placed = column_dimensions(column_standings(usr, cfg, population=population), len(rows))
    for dim in placed.columns:
        dims[dim] = placed[dim].to_numpy()
    if "lnk_lift_fraud" in frame and "lnk_lift_benign" in frame:
        dims["linked_accounts"] = graph_dimension(frame["lnk_lift_fraud"].to_numpy(), frame["lnk_lift_benign"].to_numpy())
    idx = np.arange(len(rows))
    credit_comb = _credit_combination(combination, cfg)
    fraud_out = _evaluate(frame, dims, idx, combination, cfg, contributions=False)
    credit_out = fraud_out if credit_comb is None else _evaluate(frame, dims, idx, credit_comb, cfg, contributions=False)
    fraud = features.flags.fraud[rows]
    own_fraud = fraud > 0
    fraud_risk = np.clip(np.where(own_fraud, np.maximum(fraud_out.risk, fraud), fraud_out.risk), 0.0, 1.0)
    credit_risk = fraud_risk if credit_comb is None else np.clip(credit_out.risk, 0.0, 1.0)
    decided = combine_outputs(
        fraud_risk=fraud_risk, credit_risk=credit_risk, fraud_without_graph=fraud_out.without_graph,
        credit_without_graph=credit_out.without_graph, own_fraud=own_fraud, policy=cfg.policy,
        approve_at=cfg.approve_at, review_at=cfg.review_at,
    )
    return replace(decided, credit_score=credit_score(decided.risk))


def _specific_for_refusals(
    features: FeatureSet, rows: np.ndarray, cfg: ScoringConfig, refused: dict[str, np.ndarray],
    fraud_reasons: list[list[Reason]], credit_reasons: list[list[Reason]], X: pd.DataFrame, dims: pd.DataFrame,
    combination: "Combination", credit_comb: "Combination | None",
) -> tuple[list[list[Reason]], list[list[Reason]]]:
    """A refused user is owed specific reasons: where an output refuses (``refused``, per
    output) with no reason above the reason threshold (many small contributions), its largest
    positive contributions are named. Each output's reasons depend on that output alone."""
    for which, comb, reasons in (("fraud", combination, fraud_reasons), ("credit", credit_comb, credit_reasons)):
        if comb is None:
            continue
        empty = np.flatnonzero(refused[which] & np.array([not rs for rs in reasons], dtype=bool))
        if not len(empty):
            continue
        out = _evaluate(X, dims.iloc[empty].reset_index(drop=True), rows[empty], comb, cfg, all_reasons=np.ones(len(empty), dtype=bool))
        low = replace(cfg, min_reason_share=1e-9)
        filled = reasons_for(features, out.contributions, rows[empty], low, own_flag=which == "fraud")
        reasons = list(reasons)
        for k, i in enumerate(empty):
            reasons[i] = filled[k]
        if which == "fraud":
            fraud_reasons = reasons
            if credit_comb is None:
                credit_reasons = reasons
        else:
            credit_reasons = reasons
    return fraud_reasons, credit_reasons


def reasons_for(
    features: FeatureSet, contributions: pd.DataFrame, rows: np.ndarray, config: ScoringConfig, *, own_flag: bool = True
) -> list[list[Reason]]:
    """The reasons of each user of ``rows`` (``contributions`` has one row each, in that order),
    most important first: its own fraud flag (unless ``own_flag`` is False: ``credit_risk``
    does not read it), then the dimensions whose evidence adds at least ``min_reason_share``
    to its risk, each in specific words."""
    cfg = config
    projection, dims, flags = features.projection, features.dims, features.flags
    n_all = projection.n_users
    C = contributions.reindex(columns=list(DIMENSIONS) + ["profile"]).fillna(0.0)
    out: list[list[Reason]] = [[] for _ in rows]
    order = np.argsort(-C.to_numpy(), axis=1, kind="stable")
    values = C.to_numpy()
    names = list(C.columns)
    # dimension reasons, most important first
    wanted: dict[str, list[int]] = {}
    ranked: list[list[str]] = []
    for k in range(len(rows)):
        chosen = [names[j] for j in order[k] if values[k, j] >= cfg.min_reason_share][: cfg.max_reasons]
        ranked.append(chosen)
        for d in chosen:
            wanted.setdefault(d, []).append(int(rows[k]))
    texts: dict[tuple[str, int], list[Reason]] = {}
    if "linked_accounts" in wanted:
        at = np.asarray(wanted["linked_accounts"])
        near = dims["linked_accounts"].fillna(0.0).to_numpy()
        for r, rs in zip(at, linked_account_reasons(projection, at, flags.fraud, near)):
            texts[("linked_accounts", int(r))] = rs
    if "social_network" in wanted:
        at = np.asarray(wanted["social_network"])
        structure = features.structure
        neg = structure["rel_in_negative"].to_numpy() if "rel_in_negative" in structure else np.zeros(n_all)
        cnt = structure["rel_in_count"].to_numpy() if "rel_in_count" in structure else np.zeros(n_all)
        near = dims["social_network"].fillna(0.0).to_numpy()
        for r, rs in zip(at, social_reasons(projection, at, flags.fraud, neg, cnt, near)):
            texts[("social_network", int(r))] = rs
    for k, i in enumerate(rows.tolist()):
        if own_flag and flags.fraud[i] > 0:
            out[k].append(Reason("CONFIRMED_FRAUD", "account confirmed as fraud"))
        for d in ranked[k]:
            if (d, i) in texts:
                out[k].extend(texts[(d, i)][:2])
            elif d in features.standings:
                out[k].append(column_reason(d, features.standings[d], i))
            elif d == "profile":
                out[k].append(Reason("PROFILE", "account attributes unlike those of most users in good standing"))
        out[k] = out[k][: cfg.max_reasons]
    return out


def score_tables(
    tables: Tables,
    projection: Projection,
    *,
    graph_config: GraphConfig | None = None,
    config: ScoringConfig | None = None,
    progress: Progress | None = None,
) -> ScoreResult:
    """Score every user of the tables with all their flags (the ``score`` command)."""
    scorer = Scorer(tables, projection, graph_config=graph_config, config=config, progress=progress)
    return scorer.score(scorer.flags_from(tables.flags), progress=progress)


def _feature_groups(columns: list[str], config: ScoringConfig) -> dict[str, list[int]]:
    groups: dict[str, list[int]] = {}
    for j, c in enumerate(columns):
        groups.setdefault(feature_dimension(c, config), []).append(j)
    return groups


def _fit(X: pd.DataFrame, y: np.ndarray, config: ScoringConfig) -> Any:
    if config.model == "logistic":
        model = make_pipeline(SimpleImputer(strategy="median"), StandardScaler(), LogisticRegression(C=1.0, max_iter=2000))
    else:
        model = HistGradientBoostingClassifier(
            max_iter=config.boosting_iter,
            learning_rate=config.learning_rate,
            max_leaf_nodes=config.max_leaf_nodes,
            min_samples_leaf=config.min_samples_leaf,
            l2_regularization=config.l2_regularization,
            early_stopping=False,
            random_state=config.seed,
        )
    model.fit(_model_input(X.to_numpy(dtype=np.float64)), y)
    return model


def _model_input(X: np.ndarray) -> np.ndarray:
    """Features as the learned model sees them, in fitting and in scoring: at single precision
    (then back to float64), non-finite values missing.

    Propagated features summed in another order (another engine, another partitioning) differ
    in their last bits; at full precision a tie of a hundred users becomes a hundred distinct
    values that the boosting bins and splits apart, and two engines fit two different models.
    Rounded to 24 bits, last-bit noise no longer moves a value.
    """
    with np.errstate(over="ignore"):
        X = X.astype(np.float32).astype(np.float64)
    return np.where(np.isfinite(X), X, np.nan)


#: Rows at most that the flat trees (:mod:`scoring._trees`) score instead of scikit-learn:
#: an applicant's handful; the population keeps scikit-learn's threads.
FLAT_ROWS = 256


def _predict(model: Any, X: np.ndarray) -> np.ndarray:
    X = _model_input(X)
    if X.shape[0] <= FLAT_ROWS:
        flat = flatten(model)
        if flat is not None:
            return predict_proba(flat, X)
    return np.asarray(model.predict_proba(X)[:, 1], dtype=np.float64)


def _good_standing(X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Feature values of the typical user in good standing: the median over benign-labelled
    users (all users when none). A dimension's contribution is how much risk would fall if the
    user looked like that on this dimension, the "points below the best" of adverse-action
    reasons; the population median would explain nothing where the typical user looks risky."""
    rows = X[y == 0] if (y == 0).sum() >= 5 else X
    finite = np.where(np.isfinite(rows), rows, np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        reference = np.nanmedian(finite, axis=0)
    return np.where(np.isnan(reference), 0.0, reference)


def _logit(p: float) -> float:
    return float(np.log(p / (1.0 - p)))


def _shift(p: np.ndarray, shift: float) -> np.ndarray:
    """Move probabilities by ``shift`` on the log-odds scale."""
    if shift == 0.0:
        return p
    q = np.clip(p, 1e-12, 1 - 1e-12)
    return 1.0 / (1.0 + np.exp(-(np.log(q / (1 - q)) + shift)))


def _occlude(X: np.ndarray, cols: list[int], reference: np.ndarray) -> np.ndarray:
    Y = X.copy()
    Y[:, cols] = reference[cols]
    return Y
