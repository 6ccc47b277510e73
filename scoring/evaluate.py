"""The evaluation protocol of the contract: hide labels, score with the rest, measure."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, roc_auc_score
from sklearn.model_selection import StratifiedShuffleSplit

from loaders.errors import DataError, ParameterError
from loaders.schema import Tables
from scoring.features import FlagVectors
from scoring.misjudgment import (
    TRADEOFF_CUTOFFS,
    brier_score,
    expected_calibration_error,
    good_user_costs,
    reliability_table,
    segment_metrics,
    tradeoff_curve,
)
from scoring.pipeline import Scorer

__all__ = ["EvaluationReport", "labelled_rows", "label_times", "tables_at", "evaluate_time", "recall_at_k", "evaluate", "user_segments", "HUB_USERS"]

#: Metrics summarised over repeats: ranking, then what good users pay, then calibration, then
#: ranking within segments.
SUMMARY_METRICS = (
    "auroc", "auprc", "rec_at_k", "good_refused", "collateral", "collateral_rate", "brier", "ece",
    "auroc_high_degree", "auprc_high_degree", "auroc_low_degree", "auprc_low_degree", "auroc_hub_only", "auprc_hub_only",
)
#: An identifier shared by at least this many users is a hub for the ``hub_only`` segment.
HUB_USERS = 20


@dataclass(frozen=True)
class EvaluationReport:
    """Per-repeat and summary metrics on the hidden users."""

    runs: pd.DataFrame
    train_frac: float
    repeats: int
    seed: int
    n_labelled: int
    n_fraud: int
    combination: str
    meta: dict[str, Any] = field(default_factory=dict)
    #: Hidden users of every repeat pooled: risk bins against the observed fraud rate.
    reliability: pd.DataFrame = field(default_factory=pd.DataFrame)
    #: Segment name -> how it is defined and how many labelled users fall in it.
    segments: dict[str, Any] = field(default_factory=dict)
    #: Hidden users of every repeat pooled: per credit-score cut-off, the share of fraud users
    #: refused against the share of good users refused, and refused for their graph alone
    #: (:func:`scoring.misjudgment.tradeoff_curve`).
    tradeoff: pd.DataFrame = field(default_factory=pd.DataFrame)
    #: Hidden users of every repeat, one row per user and repeat: ``repeat``, ``user_id``, ``y``
    #: (1 fraud, 0 benign), ``risk``, ``graph_risk``, ``credit_score``, ``decision``. What the
    #: curves and score distributions are drawn from (not part of :meth:`to_dict`).
    predictions: pd.DataFrame = field(default_factory=pd.DataFrame)

    def summary(self) -> dict[str, dict[str, float]]:
        """Mean and standard deviation of each metric over repeats."""
        out = {}
        for metric in SUMMARY_METRICS:
            if metric not in self.runs:
                continue
            values = self.runs[metric].to_numpy(dtype=np.float64)
            values = values[~np.isnan(values)]
            mean = float(values.mean()) if len(values) else float("nan")
            out[metric] = {"mean": mean, "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0}
        return out

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready data; a metric with no value (a segment without both classes) is None."""
        return _plain(self._dict())

    def _dict(self) -> dict[str, Any]:
        return {
            "reliability": self.reliability.to_dict(orient="records"),
            "tradeoff": self.tradeoff.to_dict(orient="records"),
            "segments": self.segments,
            "protocol": {"train_frac": self.train_frac, "repeats": self.repeats, "seed": self.seed},
            "labelled": self.n_labelled,
            "fraud": self.n_fraud,
            "combination": self.combination,
            "metrics": self.summary(),
            "runs": self.runs.to_dict(orient="records"),
            **self.meta,
        }


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, float) and np.isnan(value):
        return None
    return value


def labelled_rows(flags: pd.DataFrame) -> pd.DataFrame:
    """The labelled users in file order, one row each (a user's latest flag decides its label)."""
    if not len(flags):
        return flags.iloc[0:0]
    first = flags.drop_duplicates("user_id", keep="first")[["user_id"]]
    ordered = flags.assign(_order=np.arange(len(flags))).sort_values(["ts", "_order"], na_position="first", kind="stable")
    latest = ordered.drop_duplicates("user_id", keep="last").set_index("user_id")
    out = first.join(latest[["label", "severity"]], on="user_id")
    return out.reset_index(drop=True)


def recall_at_k(y_true: np.ndarray, score: np.ndarray, k: int) -> float:
    """Share of positives among the ``k`` highest scores' positives (k = number of positives)."""
    if k <= 0:
        return float("nan")
    top = np.argsort(-score, kind="stable")[:k]
    return float(y_true[top].sum() / y_true.sum())


def evaluate(
    scorer: Scorer,
    *,
    train_frac: float = 0.4,
    repeats: int = 5,
    seed: int = 0,
    benign_seeds: bool = True,
    progress: Callable[[int, int], None] | None = None,
) -> EvaluationReport:
    """Hide a stratified share of the labelled users, score with the rest, measure on the hidden.

    The split is ``StratifiedShuffleSplit(n_splits=repeats, train_size=train_frac,
    random_state=seed)`` over the labelled rows in file order, as the contract fixes.

    ``benign_seeds=False`` keeps the benign flags as training labels of the combination but not
    as seeds of the graph features (no benign PageRank lift, no benign side of belief
    propagation, no TrustRank): what the benign counter-evidence adds is the difference. The
    hidden users and the figures are the same either way.

    Raises
    ------
    ParameterError
        ``train_frac`` outside (0, 1) or ``repeats`` < 1.
    DataError
        Fewer than two users of each label.
    """
    if not 0.0 < train_frac < 1.0:
        raise ParameterError(f"The 'train_frac' parameter of evaluate must be in (0, 1). Got {train_frac!r} instead.")
    if repeats < 1:
        raise ParameterError(f"The 'repeats' parameter of evaluate must be >= 1. Got {repeats!r} instead.")
    rows = labelled_rows(scorer.tables.flags)
    y = (rows["label"] == "fraud").to_numpy(dtype=np.int64)
    if len(rows) == 0 or y.sum() < 2 or (1 - y).sum() < 2:
        raise DataError(
            f"evaluate needs at least 2 users flagged fraud and 2 flagged benign; got {int(y.sum())} fraud and {int((1 - y).sum())} benign"
        )
    idx = scorer.projection.index_of(rows["user_id"].to_numpy())
    segments = {name: mask[idx] for name, mask in user_segments(scorer.projection, labelled=idx).items()}
    cfg = scorer.config
    pooled_y, pooled_risk, pooled_without = [], [], []
    predictions = []
    severity = rows["severity"].fillna(1.0).to_numpy(dtype=np.float64)
    splitter = StratifiedShuffleSplit(n_splits=repeats, train_size=train_frac, random_state=seed)
    n = scorer.projection.n_users
    records = []
    combination = ""
    for r, (train, test) in enumerate(splitter.split(np.zeros(len(y)), y)):
        fraud = np.zeros(n)
        benign = np.zeros(n)
        tr_f = train[y[train] == 1]
        tr_b = train[y[train] == 0]
        fraud[idx[tr_f]] = np.maximum(severity[tr_f], 1e-6)
        benign[idx[tr_b]] = np.maximum(severity[tr_b], 1e-6)
        flags = FlagVectors(fraud=fraud, benign=benign)
        result = scorer.score(flags, seeds=None if benign_seeds else FlagVectors(fraud=fraud, benign=np.zeros(n)))
        combination = result.combination
        record, hidden_frame = _hidden_metrics(result, idx[test], y[test], {k: v[test] for k, v in segments.items()}, cfg, repeat=r)
        records.append(record)
        pooled_y.append(y[test])
        pooled_risk.append(hidden_frame["risk"].to_numpy())
        # graph_risk is clip(risk - risk without graph, 0, 1): subtracting it gives the risk
        # without graph wherever the graph raised the risk, and the risk itself elsewhere,
        # which decides the same refusals
        pooled_without.append(hidden_frame["risk"].to_numpy() - hidden_frame["graph_risk"].to_numpy())
        predictions.append(hidden_frame)
        if progress:
            progress(r + 1, repeats)
    all_y = np.concatenate(pooled_y)
    cutoffs = sorted(set(TRADEOFF_CUTOFFS) | {cfg.review_at, cfg.approve_at})
    return EvaluationReport(
        runs=pd.DataFrame(records),
        train_frac=train_frac,
        repeats=repeats,
        seed=seed,
        n_labelled=len(rows),
        n_fraud=int(y.sum()),
        combination=combination,
        reliability=reliability_table(all_y, np.concatenate(pooled_risk)),
        tradeoff=tradeoff_curve(np.concatenate(pooled_risk), np.concatenate(pooled_without), all_y == 1, all_y == 0, cutoffs=cutoffs),
        predictions=pd.concat(predictions, ignore_index=True),
        segments={
            "high_degree": {"definition": "labelled users above the median number of shared identifiers plus relation partners", "users": int(segments["high_degree"].sum())},
            "low_degree": {"definition": "the other labelled users", "users": int(segments["low_degree"].sum())},
            "hub_only": {
                "definition": f"users whose only links are shared identifiers used by {HUB_USERS} or more users (no relations)",
                "users": int(segments["hub_only"].sum()),
            },
        },
    )



def _hidden_metrics(
    result: Any, rows: np.ndarray, yt: np.ndarray, segments: dict[str, np.ndarray], cfg: Any, *, repeat: int
) -> tuple[dict[str, Any], pd.DataFrame]:
    """Metrics of one split on its hidden users (``rows``: their indices in ``result.scores``),
    and their predictions."""
    hidden = result.scores.iloc[rows]
    risk = hidden["risk"].to_numpy(dtype=np.float64)
    graph_risk = hidden["graph_risk"].to_numpy(dtype=np.float64)
    record: dict[str, Any] = {
        "repeat": repeat,
        "auroc": float(roc_auc_score(yt, risk)),
        "auprc": float(average_precision_score(yt, risk)),
        "rec_at_k": recall_at_k(yt, risk, int(yt.sum())),
        "hidden": int(len(rows)),
        "hidden_fraud": int(yt.sum()),
    }
    record.update(
        good_user_costs(
            yt, risk, graph_risk, hidden["decision"].to_numpy(dtype=object),
            approve_at=cfg.approve_at, review_at=cfg.review_at,
        )
    )
    record["brier"] = brier_score(yt, risk)
    record["ece"] = expected_calibration_error(yt, risk)
    for name, m in segment_metrics(yt, risk, segments).items():
        record[f"auroc_{name}"], record[f"auprc_{name}"] = m["auroc"], m["auprc"]
    frame = pd.DataFrame({
        "repeat": repeat, "user_id": hidden["user_id"].to_numpy(), "y": yt, "risk": risk, "graph_risk": graph_risk,
        "credit_score": hidden["credit_score"].to_numpy(), "decision": hidden["decision"].to_numpy(dtype=object),
        # the two outputs of the decision policy, for the fairness report
        **{c: hidden[c].to_numpy() for c in ("fraud_risk", "fraud_decision", "credit_risk", "credit_decision", "decision_basis", "graph_evidence_only") if c in hidden},
    })
    return record, frame


def user_segments(projection: Any, *, labelled: np.ndarray) -> dict[str, np.ndarray]:
    """Boolean masks over all users: ``high_degree`` / ``low_degree`` (split at the median degree
    of the ``labelled`` users; degree = shared identifiers + relation partners, either way) and
    ``hub_only`` (some shared identifiers, all of them used by ``HUB_USERS`` or more, no relations).
    """
    B = projection.shared
    R = projection.related
    n_idents = np.asarray(B.sum(axis=1)).ravel()
    partners = np.asarray((R + R.T > 0).sum(axis=1)).ravel()
    degree = n_idents + partners
    median = float(np.median(degree[labelled])) if len(labelled) else 0.0
    hub = (projection.ident_degree >= HUB_USERS).astype(np.float64)
    hub_links = np.asarray(B @ hub).ravel()
    return {
        "high_degree": degree > median,
        "low_degree": degree <= median,
        "hub_only": (n_idents > 0) & (hub_links == n_idents) & (partners == 0),
    }


def label_times(tables: Tables) -> pd.Series:
    """When each labelled user's label became known: its latest flag's ``ts``, or, for a flag
    without one, the user's first activity (its earliest link ``first_seen`` or relation ``ts``),
    the time a label about a registration or a first transaction refers to. NaT when neither
    exists. Indexed like :func:`labelled_rows`."""
    rows = labelled_rows(tables.flags)
    ordered = tables.flags.assign(_order=np.arange(len(tables.flags))).sort_values(["ts", "_order"], na_position="first", kind="stable")
    flag_ts = ordered.drop_duplicates("user_id", keep="last").set_index("user_id")["ts"]
    activity = pd.concat([
        pd.Series(tables.links["first_seen"].to_numpy(), index=tables.links["user_id"].to_numpy()),
        pd.Series(tables.relations["ts"].to_numpy(), index=tables.relations["src"].to_numpy()),
        pd.Series(tables.relations["ts"].to_numpy(), index=tables.relations["dst"].to_numpy()),
    ])
    first = pd.to_datetime(activity, utc=True).groupby(level=0).min() if len(activity) else pd.Series(dtype="datetime64[ns, UTC]")
    ids = rows["user_id"].to_numpy()
    ts = pd.to_datetime(flag_ts.reindex(ids), utc=True).to_numpy()
    fallback = pd.to_datetime(first.reindex(ids), utc=True).to_numpy()
    out = np.where(pd.isna(ts), fallback, ts)
    return pd.Series(pd.to_datetime(out, utc=True), index=rows.index)


def tables_at(tables: Tables, cut: pd.Timestamp) -> Tables:
    """The tables as they stood at ``cut``: links first seen, relations and flags dated after it
    are left out (undated rows stay: nothing says they came later)."""
    import dataclasses

    links = tables.links[~(tables.links["first_seen"] > cut)]
    relations = tables.relations[~(tables.relations["ts"] > cut)]
    flags = tables.flags[~(tables.flags["ts"] > cut)]
    return dataclasses.replace(tables, links=links.reset_index(drop=True), relations=relations.reset_index(drop=True), flags=flags.reset_index(drop=True))


def evaluate_time(
    tables: Tables,
    *,
    graph_config: Any = None,
    config: Any = None,
    at: pd.Timestamp | str | None = None,
    train_frac: float = 0.4,
    progress: Callable[[str], None] | None = None,
) -> EvaluationReport:
    """Out-of-time evaluation: labels known before ``at`` train, later ones are judged.

    The model (features and combination) is fitted on the graph as it stood at the cut: no
    link, relation or flag dated after it (:func:`tables_at`). The later users are then scored
    as they would have been when they arrived: on the whole graph, with the flags known at the
    cut as the only seeds, by the combination fitted at the cut. A label's time is its flag's
    ``ts``, or the user's first activity where the flag has none (:func:`label_times`).

    Parameters
    ----------
    tables : Tables
    at : timestamp or str, optional
        The cut. Default: the time by which ``train_frac`` of the dated labelled users were
        labelled.
    train_frac : float
        Only used to place the default cut.

    Raises
    ------
    DataError
        No label has a time, or either side of the cut lacks 2 users of each label.
    """
    from graph.projection import project
    from scoring.features import flag_vectors

    say = progress or (lambda _m: None)
    rows = labelled_rows(tables.flags)
    times = label_times(tables)
    dated = times.notna().to_numpy()
    if not dated.any():
        raise DataError("--split time needs times: no flag has a 'ts' and no flagged user has a link 'first_seen' or a relation 'ts'")
    if at is None:
        if not 0.0 < train_frac < 1.0:
            raise ParameterError(f"The 'train_frac' parameter of evaluate must be in (0, 1). Got {train_frac!r} instead.")
        cut = pd.Timestamp(np.quantile(times[dated].astype("int64").to_numpy(), train_frac), tz="UTC")
    else:
        cut = pd.Timestamp(at)
        cut = cut.tz_localize("UTC") if cut.tzinfo is None else cut.tz_convert("UTC")
    y = (rows["label"] == "fraud").to_numpy(dtype=np.int64)
    before = dated & (times <= cut).to_numpy()
    after = dated & (times > cut).to_numpy()
    for name, side in (("before", before), ("after", after)):
        f, b = int(y[side].sum()), int((1 - y[side]).sum())
        if f < 2 or b < 2:
            raise DataError(
                f"--split time at {cut.isoformat()}: {f} fraud and {b} benign labels {name} the cut; each side needs at least 2 of each. "
                "Choose another --at."
            )
    train_ids = rows["user_id"].to_numpy()[before]
    severity = rows["severity"].fillna(1.0).to_numpy(dtype=np.float64)

    def seeds(projection: Any) -> FlagVectors:
        n = projection.n_users
        fraud, benign = np.zeros(n), np.zeros(n)
        idx = projection.index_of(train_ids)
        is_f = y[before] == 1
        fraud[idx[is_f]] = np.maximum(severity[before][is_f], 1e-6)
        benign[idx[~is_f]] = np.maximum(severity[before][~is_f], 1e-6)
        return FlagVectors(fraud=fraud, benign=benign)

    say(f"fitting on the graph at {cut.isoformat()}")
    past = tables_at(tables, cut)
    past_projection = project(past, graph_config)
    past_scorer = Scorer(past, past_projection, graph_config=graph_config, config=config)
    fitted = past_scorer.score(seeds(past_projection)).fitted
    say("scoring the later users on the whole graph")
    projection = project(tables, graph_config)
    scorer = Scorer(tables, projection, graph_config=graph_config, config=config)
    result = scorer.score(seeds(projection), combination=fitted)
    cfg = scorer.config
    idx_all = projection.index_of(rows["user_id"].to_numpy())
    segments = {name: mask[idx_all][after] for name, mask in user_segments(projection, labelled=idx_all).items()}
    record, frame = _hidden_metrics(result, idx_all[after], y[after], segments, cfg, repeat=0)
    risk = frame["risk"].to_numpy()
    cutoffs = sorted(set(TRADEOFF_CUTOFFS) | {cfg.review_at, cfg.approve_at})
    split = {
        "split": "time",
        "at": cut.isoformat(),
        "train": {"users": int(before.sum()), "fraud": int(y[before].sum())},
        "test": {"users": int(after.sum()), "fraud": int(y[after].sum())},
        "undated": int((~dated).sum()),
        "graph_at_cut": {"users": int(past_projection.n_users), "links": int(len(past.links)), "relations": int(len(past.relations))},
        "graph": {"users": int(projection.n_users), "links": int(len(tables.links)), "relations": int(len(tables.relations))},
        "label_time": "flag ts, else the user's first activity",
    }
    return EvaluationReport(
        runs=pd.DataFrame([record]),
        train_frac=float(before.sum() / max(dated.sum(), 1)),
        repeats=1,
        seed=0,
        n_labelled=len(rows),
        n_fraud=int(y.sum()),
        combination=result.combination,
        meta={"split": split},
        reliability=reliability_table(y[after], risk),
        tradeoff=tradeoff_curve(risk, risk - frame["graph_risk"].to_numpy(), y[after] == 1, y[after] == 0, cutoffs=cutoffs),
        predictions=frame,
    )
