"""Score one applicant at application time: a new user (or a known one) with the identifiers
and contacts its application carries, placed in the live graph.

What a full scoring would have given the user had it been loaded, without a full scoring:

- identifier values are normalised and pseudonymised by the loader's own validation
  (:func:`loaders.validate.validate_links`) with the workspace key, relations validated as the
  loader validates them;
- the label-free features (profile columns, identifier sharing, relation activity, neighbour
  means) and the direct label features come from the functions that score the population
  (:mod:`scoring.features`), evaluated on the subgraph around the applicant
  (:meth:`graph.live.LiveGraph.local`), of which the applicant's row is exact;
- the propagation features (personalized PageRank lifts, belief propagation) are read at the
  applicant's node of the live graph's kept states, placed by local push
  (:meth:`graph.live.LiveGraph.trial` for a what-if, :meth:`~graph.live.LiveGraph.commit`);
- column standings place the applicant against the scored population;
- risk, graph risk, credit score, decision and reasons come from :func:`scoring.pipeline.combine`
  with the current model version.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from graph.config import GraphConfig
from graph.live import LiveGraph, LocalGraph, Placement
from graph.projection import Projection, project
from loaders.errors import DataError, ParameterError
from loaders.read import RawTable, read_frame
from loaders.normalise import Normalisation
from loaders.validate import validate_links, validate_relations
from scoring.config import DIMENSIONS, ScoringConfig
from scoring.dimensions import column_dimensions, column_standings
from scoring.features import FlagVectors, co_user_sharing, co_users_per_kind, label_features, neighbour_means, structural_features
from scoring.pipeline import Combination, FeatureSet, align_features, combine, dimension_frame
from scoring.recourse import Recourse, recourse as find_recourse

__all__ = ["Application", "ApplicantScorer", "ApplicationScore", "DIRECTIONS", "MAX_ITEMS", "application_from_dict", "canonical_frames"]

#: How an application's relation runs: ``out`` from the applicant to the other user, ``in``
#: the reverse, ``both`` one relation each way.
DIRECTIONS = ("out", "in", "both")
#: Links or relations one application may carry.
MAX_ITEMS = 1000


@dataclass(frozen=True)
class Application:
    """What a credit-line application carries.

    Attributes
    ----------
    user_id : str
    features : mapping of str to float
        Profile columns (the ``users`` table's numeric columns: repayments, tenure...).
    links : sequence of mapping
        ``{kind, value, first_seen?, last_seen?, weight?}``: identifiers the applicant uses.
    relations : sequence of mapping
        ``{user_id, kind, direction ("out", "in", "both"), weight?, ts?}``: relations to
        users the graph knows.
    """

    user_id: str
    features: Mapping[str, float] = field(default_factory=dict)
    links: Sequence[Mapping[str, Any]] = ()
    relations: Sequence[Mapping[str, Any]] = ()


@dataclass(frozen=True)
class ApplicationScore:
    """An applicant's score, as a full scoring would have written its row.

    Attributes
    ----------
    row : dict
        ``user_id``, ``risk``, ``graph_risk``, ``credit_score``, ``decision``, ``reasons``,
        ``reason_codes`` (lists), ``flag``, ``ring_id``, ``dimensions``.
    placement : Placement
        The propagations at the applicant's node (exposure moved, explanation edges).
    local : LocalGraph
    new : bool
        Whether the user was unknown to the live graph.
    ignored_features : list of str
        Features sent that the model does not use (not profile columns of the load).
    committed : bool
    explanation : object
        What the ``explain`` callback of :meth:`ApplicantScorer.score` returned.
    recourse : Recourse or None
        With ``recourse=True`` and a decision other than ``approve``: the smallest changes the
        applicant can make that would bring an approval (:func:`scoring.recourse.recourse`, on
        the same features and model as the score).
    """

    row: dict[str, Any]
    placement: Placement
    local: LocalGraph
    new: bool
    ignored_features: list[str]
    committed: bool
    explanation: Any = None
    recourse: Recourse | None = None


def canonical_frames(
    application: Application, *, key: bytes, source: str = "application", normalisation: Normalisation | None = None,
    max_items: int | None = MAX_ITEMS,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The application's links and relations as the loader's canonical frames.

    Links go through :func:`loaders.validate.validate_links` (normalised and pseudonymised
    with ``key`` under ``normalisation``, the settings the store was loaded with; the raw values
    are dropped there), relations through
    :func:`loaders.validate.validate_relations`; the errors are the loader's (row numbers are
    1-based positions in the application's lists). ``max_items`` caps the links and the
    relations of one application (None: no cap, for batches of events).

    Raises
    ------
    DataError
        A value the loader refuses; ParameterError for a wrong direction or too many items.
    """
    uid = application.user_id
    for name, items in (("links", application.links), ("relations", application.relations)):
        if max_items is not None and len(items) > max_items:
            raise ParameterError(f"{name}: at most {max_items:,} per application. Got {len(items):,} instead.")
    link_rows = [{"user_id": uid, **{k: v for k, v in dict(item).items()}} for item in application.links]
    links_raw = pd.DataFrame(link_rows, columns=["user_id", "kind", "value", "first_seen", "last_seen", "weight"]).astype(object)
    links = validate_links(_raw("links", links_raw, f"{source}.links"), key=key, normalisation=normalisation)
    rel_rows = []
    for i, item in enumerate(application.relations, start=1):
        item = dict(item)
        direction = item.get("direction", "out")
        if direction not in DIRECTIONS:
            raise ParameterError(f"relations[{i}].direction must be one of {', '.join(DIRECTIONS)}. Got {direction!r} instead.")
        other = item.get("user_id")
        base = {"kind": item.get("kind"), "weight": item.get("weight"), "ts": item.get("ts")}
        if direction in ("out", "both"):
            rel_rows.append({"src": uid, "dst": other, **base})
        if direction in ("in", "both"):
            rel_rows.append({"src": other, "dst": uid, **base})
    rel_raw = pd.DataFrame(rel_rows, columns=["src", "dst", "kind", "weight", "ts"]).astype(object)
    relations = validate_relations(_raw("relations", rel_raw, f"{source}.relations"))
    return links, relations


def _raw(name: str, frame: pd.DataFrame, source: str) -> RawTable:
    raw = read_frame(name, frame.where(frame.notna(), None))
    return dataclasses.replace(raw, source=source)


class ApplicantScorer:
    """Scores applicants against a live graph with one model version.

    Parameters
    ----------
    live : LiveGraph
    users : DataFrame
        Profile columns of the live graph's users of the load (``user_columns``: one row per
        projection user, numeric columns), the population the applicant is placed against.
    combination : Combination
        The current model version's combination.
    config : ScoringConfig
    """

    def __init__(self, live: LiveGraph, users: pd.DataFrame, *, combination: Combination, config: ScoringConfig) -> None:
        unsupported = [p for p in config.propagation if p == "label_spreading"]
        if unsupported:
            raise ParameterError("The applicant path keeps PageRank, belief propagation and TrustRank live; 'label_spreading' in "
                                 "scoring.propagation needs a full solve per applicant. Score applicants with a configuration without it.")
        self.live = live
        self.users = users.reset_index(drop=True)
        self.columns = list(self.users.columns)
        self.combination = combination
        self.config = config
        self.population = column_standings(self.users, config)

    def score(
        self, application: Application, *, links: pd.DataFrame, relations: pd.DataFrame, commit: bool = False,
        explain: Callable[[Placement], Any] | None = None, recourse: bool = False, ident_label: Callable[[str], str] | None = None,
    ) -> ApplicationScore:
        """Score ``application`` (its canonical ``links`` and ``relations``, from
        :func:`canonical_frames`); with ``commit``, the applicant stays in the live graph.

        ``explain`` is called with the placement while the applicant is in the graph (a what-if
        takes it out again on return); what it returns is :attr:`ApplicationScore.explanation`.
        With ``recourse``, a refused or reviewed applicant's recourse is found on the same
        features (identifiers named by ``ident_label``).
        """
        live = self.live
        features, ignored = self._features(application.features)
        explanation = None
        with live.lock:
            local = live.local(application.user_id, links, relations)
            frame = self._profile(local, application.user_id, features)
            if commit:
                placement = live.commit(local, links=links, relations=relations, features=features)
                row, fs = self._row(local, frame, placement)
                explanation = explain(placement) if explain is not None else None
            else:
                with live.trial(local) as placement:
                    row, fs = self._row(local, frame, placement)
                    explanation = explain(placement) if explain is not None else None
        found = None
        if recourse and row["decision"] != "approve":
            try:
                found = find_recourse(fs, self.combination, self.config, row=0, ident_label=ident_label)
            except ParameterError as exc:  # approved when the changes are scored in one batch with today's row
                found = Recourse(user_id=row["user_id"], credit_score=row["credit_score"], decision=row["decision"], options=(), approves=False,
                                 considered=(), note=str(exc))
        return ApplicationScore(row=row, placement=placement, local=local, new=local.new, ignored_features=ignored, committed=commit,
                                explanation=explanation, recourse=found)

    # -- pieces ---------------------------------------------------------------------------------

    def _features(self, given: Mapping[str, Any]) -> tuple[dict[str, float], list[str]]:
        out: dict[str, float] = {}
        ignored = []
        for name, value in dict(given).items():
            if name not in self.columns:
                ignored.append(str(name))
                continue
            if value is None:
                out[name] = math.nan
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(float(value)):
                raise DataError(f"features.{name}: expected a finite number. Got {value!r} instead.")
            out[name] = float(value)
        return out, sorted(ignored)

    def _profile(self, local: LocalGraph, user_id: str, features: dict[str, float]) -> pd.DataFrame:
        """Profile columns of the local users: the load's, the added users', the applicant's."""
        live = self.live
        n_base = len(self.users)
        rows = np.where((local.nodes >= 0) & (local.nodes < n_base), local.nodes, 0)
        frame = self.users.iloc[rows].reset_index(drop=True)
        frame.loc[~((local.nodes >= 0) & (local.nodes < n_base)), :] = np.nan
        for i, u in enumerate(local.user_ids.tolist()):
            if local.nodes[i] >= n_base or (i == 0 and local.nodes[0] < 0):
                added = live.added_users.get(str(u), {})
                for c, v in added.items():
                    frame.loc[i, c] = v
        for c, v in features.items():
            frame.loc[0, c] = v
        return frame.astype("float64")

    def _row(self, local: LocalGraph, profile: pd.DataFrame, placement: Placement) -> tuple[dict[str, Any], FeatureSet]:
        cfg = self.config
        P = local.projection
        n = P.n_users
        live = self.live
        standings = column_standings(profile, cfg, population=self.population)
        column_dims = column_dimensions(standings, n)
        structure = _structure(local, live.config)
        neighbours = neighbour_means(profile, P)
        nodes = local.nodes.copy()
        nodes[0] = placement.node
        known = nodes >= 0
        fraud = np.where(known, live._seed("fraud", np.maximum(nodes, 0)), 0.0)
        benign = np.where(known, live._seed("benign", np.maximum(nodes, 0)), 0.0)
        flags = FlagVectors(fraud=fraud, benign=benign)
        walks = _PlacedWalks(P, placement, live)
        labels = label_features(walks, flags, np.full(n, -1, dtype=np.int64), propagation=cfg.propagation)
        X = pd.concat([profile.add_prefix("usr_"), structure, neighbours, labels], axis=1)
        X, _ = align_features(X, self.combination)
        dims = dimension_frame(column_dims, labels, structure, n)
        rings = np.full(n, "", dtype=object)
        fs = FeatureSet(X=X, dims=dims, flags=flags, projection=P, standings=standings, structure=structure, rings=rings,
                        population=self.population)
        frame, _ = combine(fs, self.combination, cfg, rows=np.array([0]))
        rec = frame.iloc[0].to_dict()
        row = {
            "user_id": str(rec["user_id"]),
            "risk": float(rec["risk"]),
            "graph_risk": float(rec["graph_risk"]),
            "credit_score": int(rec["credit_score"]),
            "decision": str(rec["decision"]),
            "dimensions": {d: (None if pd.isna(rec[f"dim_{d}"]) else float(rec[f"dim_{d}"])) for d in DIMENSIONS},
            "reasons": [r for r in str(rec["reasons"]).split(";") if r],
            "reason_codes": [r for r in str(rec["reason_codes"]).split(";") if r],
            "flag": rec["flag"] or None,
            "ring_id": None,
            **_policy_outputs(rec),
        }
        return row, fs


def _structure(local: LocalGraph, config: GraphConfig) -> pd.DataFrame:
    """Label-free structure of the local users; the applicant's row as the whole graph gives it.

    The co-users' own identifier sharing (:func:`scoring.features.co_user_sharing`) reaches two
    identifiers beyond the applicant: it is computed on :attr:`LocalGraph.wider`, which holds them."""
    structure = structural_features(local.tables, local.projection)
    if local.wider is None or local.wider is local.tables:
        return structure
    # only the sharing two identifiers away needs the wider graph; the rest is the local one's
    wider = project(local.wider, config)
    rows = wider.index_of(local.projection.user_ids)
    for column, values in co_user_sharing(wider, co_users_per_kind(wider)).items():
        structure[column] = values[rows]
    return structure


def _policy_outputs(rec: dict[str, Any]) -> dict[str, Any]:
    """The decision policy's outputs of a scored row (fraud and credit risk, principal reasons...),
    as the served score shows them."""
    out: dict[str, Any] = {}
    for c in ("fraud_risk", "credit_risk", "fraud_decision", "credit_decision", "principal_reasons", "principal_reason_codes",
              "decision_basis", "review_route", "policy"):
        if c not in rec:
            continue
        v = rec[c]
        if c.endswith("_risk"):
            out[c] = None if pd.isna(v) else float(v)
        elif c in ("principal_reasons", "principal_reason_codes"):
            out[c] = [r for r in str(v if isinstance(v, str) else "").split(";") if r]
        elif c in ("fraud_decision", "credit_decision", "policy"):
            out[c] = (str(v) or None) if isinstance(v, str) else None
        else:
            out[c] = "" if v is None or (isinstance(v, float) and v != v) else str(v)
    return out


class _PlacedWalks:
    """The propagations :func:`scoring.features.label_features` asks a walks object for, read
    from a placement in the live graph instead of solved (seed arguments are the local view of
    the same global seeds, so they are not used)."""

    def __init__(self, projection: Projection, placement: Placement, live: LiveGraph) -> None:
        self.projection = projection
        self.placement = placement
        self.live = live
        self.layers = {layer: None for layer in ("lnk", "rel") if any(k[0] == layer for k in placement.scores)}

    def lifts(self, name: str, seeds: np.ndarray, *, kind: str = "") -> np.ndarray:
        if kind not in ("fraud", "benign"):
            raise ParameterError(f"the live graph keeps fraud and benign PageRank; asked for {kind!r}")
        return self._lift(name, kind, seeds.shape[1])

    def _lift(self, layer: str, kind: str, k: int) -> np.ndarray:
        n = self.projection.n_users
        out = np.zeros((n, k))
        score = self.placement.scores.get((layer, kind))
        base = self.placement.scores.get((layer, "uniform"))
        if score is not None and base is not None:
            with np.errstate(invalid="ignore", divide="ignore"):
                out[:, 0] = np.where(base > 0, score / np.where(base > 0, base, 1.0), 0.0)
        return out

    def propagation_features(self, method: str, F: np.ndarray, Bn: np.ndarray) -> list[tuple[str, np.ndarray, bool]]:
        n = self.projection.n_users
        out = []
        if method == "belief_propagation":
            for layer in ("lnk", "rel"):
                if layer in self.placement.belief:
                    out.append((f"{layer}_bp_fraud", self.placement.belief[layer][:, None].copy(), True))
        elif method == "trustrank":
            users = len(self.live.node_users)
            for layer in self.layers:
                score = self.placement.scores.get((layer, "benign"))
                values = np.zeros((n, 1)) if score is None else (score * users)[:, None]
                out.append((f"{layer}_trust", values, True))
        return out


_APPLICATION_KEYS = {"user_id", "features", "links", "relations", "commit", "create_missing"}


def application_from_dict(body: Mapping[str, Any], *, source: str = "application") -> Application:
    """An :class:`Application` from the JSON body of ``POST /v1/applications`` (a file for
    ``socialrisk score-application``), checked field by field.

    Raises
    ------
    ParameterError
        Naming the field and what was expected.
    """
    if not isinstance(body, Mapping):
        raise ParameterError(f"{source}: expected a JSON object with user_id, features, links and relations. Got {type(body).__name__} instead.")
    unknown = sorted(set(body) - _APPLICATION_KEYS)
    if unknown:
        raise ParameterError(f"{source}: unknown field(s) {', '.join(map(repr, unknown))}; expected any of {', '.join(sorted(_APPLICATION_KEYS))}.")
    user_id = body.get("user_id")
    if not isinstance(user_id, str) or not user_id.strip() or len(user_id) > 256:
        raise ParameterError(f"{source}.user_id: expected a non-empty id of at most 256 characters. Got {user_id!r} instead.")
    features = body.get("features") or {}
    if not isinstance(features, Mapping):
        raise ParameterError(f"{source}.features: expected an object of column -> number. Got {type(features).__name__} instead.")
    out = []
    for name in ("links", "relations"):
        items = body.get(name) or []
        if not isinstance(items, list) or not all(isinstance(i, Mapping) for i in items):
            raise ParameterError(f"{source}.{name}: expected a list of objects.")
        if len(items) > MAX_ITEMS:
            raise ParameterError(f"{source}.{name}: at most {MAX_ITEMS:,} per application. Got {len(items):,} instead.")
        out.append(items)
    for i, r in enumerate(out[1], start=1):
        if not isinstance(r.get("user_id"), str) or not r.get("user_id"):
            raise ParameterError(f"{source}.relations[{i}].user_id: expected the other user's id. Got {r.get('user_id')!r} instead.")
    return Application(user_id=user_id, features=dict(features), links=list(out[0]), relations=list(out[1]))
