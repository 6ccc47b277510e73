"""The steps behind the commands, wired from the libraries. No math lives here."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import os
import pickle
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from graph.explain import Explanation, explain_user
from graph.projection import Projection, project
from graph.rings import RING_KINDS, rank_rings, ring_labels
from graph.store import EmbeddedStore, GraphStore
from graph.walks import Walks
from loaders.errors import ConfigError, NotFoundError, ParameterError, StoreError
from loaders.load import ERASED_USER, LoadReport, load, read_tables
from loaders.schema import Tables, empty_tables
from loaders.pseudonym import key_fingerprint, new_key, parse_key
from scoring.dimensions import graph_dimension
from scoring.evaluate import EvaluationReport, evaluate, evaluate_time
from scoring.fairness import FOUR_FIFTHS, check_segment, fairness_table
from scoring.features import flag_vectors
from scoring.pipeline import MODEL_VERSION, Combination, ScoreResult, Scorer
from socialrisk.settings import ENV_KEY, Settings, resolve_key

__all__ = [
    "STORES",
    "open_store",
    "load_into",
    "bulk_load_into",
    "propagate",
    "score",
    "calibrate",
    "Calibration",
    "save_model",
    "load_model",
    "explain",
    "rings",
    "evaluate_dir",
    "FairnessReport",
    "fairness_dir",
    "recourse",
    "PropagationSummary",
    "flag",
    "FlagUpdate",
    "appeal",
    "appeal_view",
    "AppealView",
    "AppealOutcome",
    "WhatIf",
    "audit_trail",
    "forget",
    "forgotten_users",
    "record_flags",
    "state_path",
    "load_state",
    "save_state",
    "folded_adjacency",
    "RingsSummary",
]

STORES = ("embedded", "neo4j")
Progress = Callable[[str], None]
Notice = Callable[[str], None]


def open_store(kind: str, workspace: str | Path) -> GraphStore:
    """Open the named store over ``workspace``."""
    if kind == "embedded":
        return EmbeddedStore(workspace)
    if kind == "neo4j":
        # the last graph read out of Neo4j is kept beside the workspace, keyed by the store's counters
        return open_neo4j(cache_dir=Path(workspace) / "neo4j-cache")
    raise ConfigError(f"Unknown store {kind!r}; expected one of {', '.join(STORES)}.")


def open_neo4j(**kwargs: Any) -> GraphStore:
    """The Neo4j store named by the environment (``SOCIALRISK_NEO4J_URI``, ``_USER``, ``_PASSWORD``)."""
    import os

    from graph.store.neo4j import Neo4jStore

    password = os.environ.get("SOCIALRISK_NEO4J_PASSWORD")
    if not password:
        raise ConfigError("Set SOCIALRISK_NEO4J_PASSWORD (and SOCIALRISK_NEO4J_URI if the server is not on bolt://127.0.0.1:7687) to use --store neo4j.")
    uri = os.environ.get("SOCIALRISK_NEO4J_URI", f"bolt://127.0.0.1:{os.environ.get('SOCIALRISK_NEO4J_PORT', '7687')}")
    return Neo4jStore(uri, user=os.environ.get("SOCIALRISK_NEO4J_USER", "neo4j"), password=password, **kwargs)


def load_into(
    store: GraphStore,
    source: str | Path,
    settings: Settings,
    workspace: str | Path,
    *,
    progress: Progress | None = None,
    notice: Notice | None = None,
    on_error: str = "fail",
    rejects_path: str | Path | None = None,
) -> LoadReport:
    """Load a data directory into the store, binding the pseudonymisation key to it.

    ``on_error="quarantine"`` sets bad rows aside (written to ``rejects_path``) and loads the
    rest; the audit entry of the load counts them, and the rows of erased users it set aside."""
    key, message = resolve_key(settings, workspace)
    if message and notice:
        notice(message)
    store.bind_key(key_fingerprint(key))
    store.bind_normalisation(settings.normalise.fingerprint())
    if progress is not None and hasattr(store, "progress"):
        # stores that write in batches (Neo4j) report each batch on the same progress line
        store.progress = lambda table, done, total: progress(f"writing {table}: {done:,} / {total:,} rows")
    before = int(store.metadata().get("snapshot", 0))
    report = load(
        source, store, key=key, label_map=settings.label_map, progress=progress, on_error=on_error, rejects_path=rejects_path,
        normalisation=settings.normalise,
    )
    if sum(report.added.values()) or sum(report.rejected.values()):
        # flags arrive in bulk too: the log says which load brought which rows
        store.append_audit([_load_entry(report, before, int(store.metadata().get("snapshot", 0)))])
    return report


def _load_entry(report: LoadReport, before: int, after: int, **detail: Any) -> dict[str, Any]:
    """The audit entry of a load: the snapshots around it, the rows it added and set aside."""
    return {
        "action": "load",
        "before": {"snapshot": before},
        "after": {"snapshot": after, "added": {k: int(v) for k, v in report.added.items()}},
        "detail": {
            "sources": {k: str(v) for k, v in report.sources.items()}, "rejected": {k: int(v) for k, v in report.rejected.items()},
            "erased_user_rows": int(len(report.rejects.loc[report.rejects["expected"] == ERASED_USER].drop_duplicates(["table", "row"]))),
            "rejects_file": report.rejects_path,
            **detail,
        },
    }


def bulk_load_into(
    source: str | Path | dict[str, pd.DataFrame],
    settings: Settings,
    workspace: str | Path,
    *,
    progress: Progress | None = None,
    notice: Notice | None = None,
    on_error: str = "fail",
    rejects_path: str | Path | None = None,
) -> LoadReport:
    """The first load of an empty Neo4j database with ``neo4j-admin database import full``.

    The server is the one ``socialrisk neo4j start`` runs (``SOCIALRISK_NEO4J_HOME`` and
    ``_PORT``). The data directory is read and validated as by :func:`load_into`; the tables are
    written as the tool's CSV files, the server is stopped, the tool imports them, the server
    starts again, and the constraints are created; only then is the graph served. The graph
    is the one an online load of the same data gives, and later loads add to it online.

    Raises
    ------
    StoreError
        The database is not empty (load without ``--bulk`` to add to it), or the import failed.
    """
    from graph.store.neo4j import BulkSink, import_arguments
    from socialrisk import neo4j_server

    say = progress or (lambda _m: None)
    server = neo4j_server.server_settings()
    uri = os.environ.get("SOCIALRISK_NEO4J_URI", server.uri)
    if uri.rsplit(":", 1)[-1].strip("/") != str(server.port):
        raise ConfigError(
            f"--bulk imports into the server 'socialrisk neo4j start' runs on port {server.port}, but SOCIALRISK_NEO4J_URI is {uri}; "
            "set SOCIALRISK_NEO4J_PORT to the same port (a bulk import writes that server's database files)"
        )
    interrupted = neo4j_server.interrupted_import(server)
    if interrupted is None:
        with open_neo4j() as store:
            nodes, pending = store.database_contents()  # type: ignore[attr-defined]
        if nodes and pending is None:
            raise StoreError(
                f"Neo4j at {uri} already holds {nodes:,} nodes: --bulk only loads an empty database. Load without --bulk to add "
                f"to it, or stop the server and delete {server.home / 'data'} to start from an empty one."
            )
    elif notice:
        notice(f"a bulk import started at {interrupted.get('started_at', '?')} did not finish; importing afresh over it")
    key, message = resolve_key(settings, workspace)
    if message and notice:
        notice(message)
    directory = server.home / "import" / f"socialrisk-bulk-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
    # The server is stopped while the tables are read and written out (the import needs it
    # stopped, and it takes seconds); a load that fails before the import starts it again.
    stopping = threading.Thread(target=neo4j_server.stop, args=(server,), name="socialrisk-stop-neo4j")
    stopping.start()
    importing = threading.Event()

    def importer(files: Any) -> None:
        stopping.join()
        importing.set()
        neo4j_server.bulk_import(server, import_arguments(files), log=say)

    sink = BulkSink(
        directory, meta={"key_fingerprint": key_fingerprint(key), "normalisation": settings.normalise.fingerprint()}, progress=say,
        importer=importer,
    )
    try:
        report = load(
            source, sink, key=key, label_map=settings.label_map, progress=progress, on_error=on_error, rejects_path=rejects_path,
            normalisation=settings.normalise,
        )
    except BaseException:
        stopping.join()
        if not importing.is_set() and interrupted is None:
            say("starting Neo4j again: nothing was imported")
            neo4j_server.start(server, log=say)
        raise
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    say("creating the constraints")
    with open_neo4j() as store:
        store.finish_bulk_import()  # type: ignore[attr-defined]
        neo4j_server.finish_import(server)
        store.append_audit([_load_entry(report, 0, int(store.metadata().get("snapshot", 0)), bulk=True)])
    return report


def _provenance(store: GraphStore, settings: Settings, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    meta = store.metadata()
    out = {
        "code_version": MODEL_VERSION,
        "config_hash": settings.config_hash(),
        "snapshot": meta.get("snapshot", 0),
    }
    out.update(extra or {})
    return out


def _projection(store: GraphStore, settings: Settings) -> Projection:
    projection = store.projection(settings.graph)
    if not projection.n_users:
        raise NotFoundError("the store holds no users yet; run 'socialrisk load DATA_DIR' first")
    return projection


@dataclass(frozen=True)
class PropagationSummary:
    """What ``propagate`` computed: per-user exposure and convergence."""

    frame: pd.DataFrame
    meta: dict[str, Any]


def propagate(store: GraphStore, settings: Settings, *, progress: Progress | None = None) -> PropagationSummary:
    """Spread risk from every fraud flag (and trust from benign flags) and store the exposure.

    Writes the ``propagation`` result: per user the PageRank lift from fraud and from benign
    seeds on the shared-identifier and relation layers, and the two graph dimension scores.
    """
    say = progress or (lambda _m: None)
    say("projecting the graph")
    projection = _projection(store, settings)
    flags = flag_vectors(store.read_table("flags"), projection)
    if not (flags.fraud > 0).any():
        raise NotFoundError("no user is flagged fraud: there is no risk to propagate. Load a flags table with label=fraud.")
    say("propagating")
    walks = Walks(projection, hub_exponent=settings.graph.hub_exponent, hub_exponents=settings.graph.hub_exponents, alpha=settings.scoring.alpha, tol=settings.scoring.tol)
    frame = pd.DataFrame({"user_id": projection.user_ids})
    for layer in walks.layers:
        lf = walks.lifts(layer, flags.fraud[:, None])[:, 0]
        lb = walks.lifts(layer, flags.benign[:, None])[:, 0] if (flags.benign > 0).any() else np.zeros_like(lf)
        frame[f"{layer}_lift_fraud"] = lf
        frame[f"{layer}_lift_benign"] = lb
        frame[f"{layer}_exposure"] = graph_dimension(lf, lb)
    meta = _provenance(
        store,
        settings,
        {"users": projection.n_users, "shared_identifiers": projection.n_idents, "layers": list(walks.layers), "projection_bytes": projection.nbytes()},
    )
    store.write_result("propagation", frame, meta=meta)
    return PropagationSummary(frame=frame, meta=meta)


def _model_key(settings: Settings, workspace: str | Path) -> bytes:
    key, _ = resolve_key(settings, workspace)
    return hashlib.sha256(b"socialrisk model signature\0" + key).digest()


def save_model(
    store: GraphStore, settings: Settings, workspace: str | Path, combination: Combination, extra: dict[str, Any], *, make_current: bool = True
) -> Combination:
    """Register a fitted combination as a new model version, signed with the store's key, and
    (unless ``make_current`` is False) make it current."""
    from graph.store.models import new_model_version

    payload = pickle.dumps(dataclasses.replace(combination, version=None), protocol=pickle.HIGHEST_PROTOCOL)
    version = new_model_version(payload)
    if any(m["version"] == version for m in store.list_models()):
        # the same fit in the same second (same payload digest): it is that version
        if make_current:
            store.set_current_model(version)
        return dataclasses.replace(combination, version=version)
    meta = {
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "code_version": MODEL_VERSION,
        "config_hash": settings.config_hash(),
        "snapshot": int(store.metadata().get("snapshot", 0)),
        "combination": combination.kind,
        "labels": combination.labels,
        "features": len(combination.columns),
        "signature": hmac.new(_model_key(settings, workspace), payload, hashlib.sha256).hexdigest(),
        **extra,
    }
    store.write_model(version, payload, meta)
    if make_current:
        store.set_current_model(version)
    return dataclasses.replace(combination, version=version)


def load_model(store: GraphStore, settings: Settings, workspace: str | Path, version: str) -> Combination:
    """A stored model version, after checking its signature against the store's key.

    Model payloads are pickles: one is only unpickled when it was signed with the
    pseudonymisation key this store is bound to.
    """
    payload, meta = store.read_model(version)
    expected = hmac.new(_model_key(settings, workspace), payload, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(str(meta.get("signature", "")), expected):
        raise ConfigError(
            f"{store}: model version {version} is not signed with this store's pseudonymisation key; it was not written by "
            "socialrisk with this key and is not loaded. Run 'socialrisk calibrate' to fit a new version."
        )
    combination = pickle.loads(payload)  # noqa: S301 - signed by this store's key, checked above
    return dataclasses.replace(combination, version=version)


def score(
    store: GraphStore,
    settings: Settings,
    *,
    workspace: str | Path,
    model: str | None = None,
    progress: Progress | None = None,
    walks: Callable[[Projection], Walks] | None = None,
) -> ScoreResult:
    """Score every user in the store and keep the scores with their provenance.

    The combination is the store's current model version (``model`` names another one); the
    first scoring of a store fits one and registers it. ``calibrate`` fits new versions.
    Every row carries its ``model_version``, ``config_hash`` and ``snapshot``. ``walks`` makes
    the random-walk operators from the projection (the spark engine's); default: the
    single-machine ones.
    """
    say = progress or (lambda _m: None)
    say("projecting the graph")
    projection = _projection(store, settings)
    tables = store.read_tables()
    scorer = Scorer(
        tables, projection, graph_config=settings.graph, config=settings.scoring, progress=progress,
        walks=walks(projection) if walks is not None else None,
    )
    version = model or store.current_model()
    combination = load_model(store, settings, workspace, version) if version else None
    result = scorer.score(scorer.flags_from(tables.flags), progress=progress, combination=combination)
    fitted = result.fitted
    if combination is None and fitted is not None:
        # registered first, made current only once the scores it made are written: a failed
        # write-back leaves the previous version current
        fitted = save_model(store, settings, workspace, fitted, {"reason": "first scoring of this store"}, make_current=False)
        written = _write_scores(store, settings, result, fitted)
        store.set_current_model(str(fitted.version))
        return written
    return _write_scores(store, settings, result, fitted)


def _write_scores(store: GraphStore, settings: Settings, result: ScoreResult, fitted: Combination | None) -> ScoreResult:
    version = fitted.version if fitted is not None else None
    gone = forgotten_users(store)
    if gone:  # erased users are not scored any more
        result = dataclasses.replace(result, scores=result.scores.loc[~result.scores["user_id"].astype(str).isin(gone)].reset_index(drop=True))
    meta = _provenance(store, settings, {**result.meta, "model_version": version, "code_version": MODEL_VERSION})
    scores = result.scores.assign(model_version=version, config_hash=meta["config_hash"], snapshot=int(meta["snapshot"]))
    store.write_result("scores", scores, meta=meta)
    return dataclasses.replace(result, scores=scores, meta=meta, fitted=fitted)


@dataclass(frozen=True)
class Calibration:
    """What ``calibrate`` changed.

    Attributes
    ----------
    previous, current : str or None
        Model versions before and after (``previous`` None on a store never scored).
    result : ScoreResult
        The scores under the new version (written as the store's ``scores``).
    shift : DataFrame or None
        Per dimension and for the credit score: mean before and after, shift and PSI over the
        users scored both times (:func:`scoring.drift.dimension_shift`); None without
        previous scores.
    psi : float or None
        Population stability index of the credit score, previous run against this one.
    approval : dict
        ``before`` and ``after``: shares of approve / review / reject at the current thresholds.
    """

    previous: str | None
    current: str
    result: ScoreResult
    shift: pd.DataFrame | None
    psi: float | None
    approval: dict[str, dict[str, float] | None]


def calibrate(store: GraphStore, settings: Settings, *, workspace: str | Path, progress: Progress | None = None) -> Calibration:
    """Refit the combination on the current labels, register it as the new current model
    version, rescore, and report the drift against the previous scores.

    The previous version stays in the store: ``score --model VERSION`` scores with it.
    ``workspace`` is where the store's pseudonymisation key is found when it is not configured
    (model versions are signed with it).
    """
    from scoring.drift import approval_rate, dimension_shift, population_stability_index

    say = progress or (lambda _m: None)
    previous = store.current_model()
    before = store.read_result("scores")[0] if store.has_result("scores") else None
    say("projecting the graph")
    projection = _projection(store, settings)
    tables = store.read_tables()
    scorer = Scorer(tables, projection, graph_config=settings.graph, config=settings.scoring, progress=progress)
    result = scorer.score(scorer.flags_from(tables.flags), progress=progress)
    assert result.fitted is not None
    fitted = save_model(store, settings, workspace, result.fitted, {"reason": "calibrate", "previous": previous}, make_current=False)
    result = _write_scores(store, settings, result, fitted)
    store.set_current_model(str(fitted.version))  # only once its scores are written
    after = result.scores
    shift = psi = None
    if before is not None and len(before):
        before = before.drop_duplicates("user_id", keep="last")
        shift = dimension_shift(before, after)
        common = before.merge(after[["user_id", "credit_score"]], on="user_id", suffixes=("_before", "_after"))
        psi = population_stability_index(common["credit_score_before"], common["credit_score_after"]) if len(common) else None
    approval = {"before": approval_rate(before["decision"]) if before is not None and "decision" in before else None,
                "after": approval_rate(after["decision"])}
    store.append_audit([{
        "action": "calibrate",
        "before": {"model_version": previous},
        "after": {"model_version": fitted.version, "labels": fitted.labels, "psi": psi, "approval": approval["after"]},
        "detail": {"config_hash": settings.config_hash(), "snapshot": int(store.metadata().get("snapshot", 0))},
    }])
    return Calibration(previous=previous, current=str(fitted.version), result=result, shift=shift, psi=psi, approval=approval)


def explain(store: GraphStore, settings: Settings, user_id: str, *, top: int = 5) -> tuple[pd.Series, Explanation, dict[str, Any]]:
    """A user's stored score and the flagged accounts and paths behind its graph risk."""
    scores, meta = store.read_result("scores")
    row = scores.loc[scores["user_id"] == user_id]
    if row.empty:
        raise NotFoundError(f"unknown user {user_id!r}: not in the stored scores")
    projection = _projection(store, settings)
    tables = store.read_tables()
    flags = flag_vectors(tables.flags, projection)
    explanation = explain_user(
        tables, projection, user_id, flags.fraud, hub_exponent=settings.graph.hub_exponent, hub_exponents=settings.graph.hub_exponents, alpha=settings.scoring.alpha, top=top
    )
    return row.iloc[0], explanation, meta


@dataclass(frozen=True)
class RingsSummary:
    """What ``rings`` found: the ranked rings and how they were made.

    Attributes
    ----------
    frame : DataFrame
        The top rings, as :func:`graph.rings.rank_rings` returns them.
    kind : str
        ``components``, ``communities`` or ``dense``.
    meta : dict
        ``rings`` (how many were found), ``users_in_rings``, ``unscored`` (users of the graph
        without a stored score, counted at risk 0), ``seed``, and the provenance of the scores.
    """

    frame: pd.DataFrame
    kind: str
    meta: dict[str, Any]


def rings(
    store: GraphStore,
    settings: Settings,
    *,
    kind: str,
    top: int,
    seed: int = 0,
    progress: Progress | None = None,
) -> RingsSummary:
    """The ``top`` rings of a kind, ranked by the stored risk of their members.

    ``dense`` looks for ``top`` blocks; ``seed`` drives the Louvain communities.
    """
    if kind not in RING_KINDS:
        raise ParameterError(f"Unknown ring kind {kind!r}; expected one of {', '.join(RING_KINDS)}.")
    if int(top) < 1:
        raise ParameterError(f"The 'top' parameter of rings must be >= 1. Got {top!r} instead.")
    say = progress or (lambda _m: None)
    if not store.has_result("scores"):
        raise NotFoundError("no 'scores' result yet: run 'socialrisk score' first (rings are ranked by their members' risk)")
    scores, scores_meta = store.read_result("scores")
    say("projecting the graph")
    projection = _projection(store, settings)
    tables = store.read_tables()
    say(f"finding {kind}")
    labels = ring_labels(projection, kind=kind, k=top, seed=seed)
    say("ranking")
    risk = scores.drop_duplicates("user_id", keep="last").set_index("user_id")["risk"].reindex(projection.user_ids)
    flags = flag_vectors(tables.flags, projection)
    frame = rank_rings(
        projection, labels, risk.fillna(0.0).to_numpy(dtype=np.float64), fraud=flags.fraud > 0, benign=flags.benign > 0, top=top
    )
    meta = {
        "kind": kind,
        "rings": int(labels.max(initial=-1)) + 1,
        "users_in_rings": int((labels >= 0).sum()),
        "unscored": int(risk.isna().sum()),
        "seed": seed if kind == "communities" else None,
        "scores": {k: scores_meta.get(k) for k in ("model_version", "config_hash", "snapshot", "written_at")},
    }
    return RingsSummary(frame=frame, kind=kind, meta=meta)


def evaluate_dir(
    source: str | Path,
    settings: Settings,
    *,
    train_frac: float,
    repeats: int,
    seed: int,
    progress: Progress | None = None,
    repeat_progress: Callable[[int, int], None] | None = None,
    split: str = "random",
    at: str | None = None,
) -> EvaluationReport:
    """The contract's evaluation of a data directory, in memory (nothing is written).

    ``split="time"``: out of time instead (:func:`scoring.evaluate.evaluate_time`), the cut at
    ``at`` or where ``train_frac`` of the dated labels fall before it."""
    import os

    # Pseudonyms only need to be consistent within this run; use the configured key when there is one.
    configured = os.environ.get(ENV_KEY) or settings.config_key
    key = parse_key(configured) if configured else parse_key(new_key())
    tables = read_tables(source, key=key, label_map=settings.label_map, progress=progress, normalisation=settings.normalise)
    if split not in ("random", "time"):
        raise ParameterError(f"The 'split' parameter of evaluate must be random or time. Got {split!r} instead.")
    if split == "time":
        report = evaluate_time(tables, graph_config=settings.graph, config=settings.scoring, at=at, train_frac=train_frac, progress=progress)
    else:
        if at is not None:
            raise ParameterError("--at sets the cut of --split time; with the random split it has no meaning.")
        projection = project(tables, settings.graph)
        scorer = Scorer(tables, projection, graph_config=settings.graph, config=settings.scoring, progress=progress)
        report = evaluate(scorer, train_frac=train_frac, repeats=repeats, seed=seed, progress=repeat_progress)
    if settings.fairness_segment:
        # the segment the configuration names, on the hidden users (approval rates included)
        segment = check_segment(tables.users, settings.fairness_segment, source=f"{source}/users")
        table = fairness_table(report.predictions, report.predictions, segment)
        report = dataclasses.replace(report, meta={**report.meta, "fairness": {"segment": settings.fairness_segment, "rows": table.to_dict(orient="records")}})
    return report


def recourse(
    store: GraphStore, settings: Settings, user_id: str, *, workspace: str | Path, progress: Progress | None = None
) -> Any:
    """The recourse of a refused or reviewed user (:func:`scoring.recourse.recourse`), with the
    store's current model version on the store's graph.

    The features are computed again as ``score`` computes them (the stored scores keep no
    features), then every candidate set of actions is scored in one batch.

    Raises
    ------
    NotFoundError
        The user has no stored score.
    ParameterError
        The user is approved: recourse is for refused or reviewed users.
    """
    from graph.explain import ident_label
    from scoring.pipeline import FeatureSet, dimension_frame
    from scoring.recourse import recourse as find

    say = progress or (lambda _m: None)
    scores, _ = store.read_result("scores")
    row = scores.loc[scores["user_id"].astype(str) == str(user_id)]
    if row.empty:
        raise NotFoundError(f"unknown user {user_id!r}: not in the stored scores")
    stored = row.iloc[-1]
    if stored["decision"] == "approve":
        raise ParameterError(f"User {user_id!r} is approved (credit score {int(stored['credit_score'])}): recourse is for refused or reviewed users.")
    say("projecting the graph")
    projection = _projection(store, settings)
    tables = store.read_tables()
    scorer = Scorer(tables, projection, graph_config=settings.graph, config=settings.scoring, progress=progress)
    version = store.current_model()
    combination = load_model(store, settings, workspace, version) if version else None
    flags = scorer.flags_from(tables.flags)
    result = scorer.score(flags, progress=progress, combination=combination)
    assert result.fitted is not None
    features = FeatureSet(
        X=result.features, dims=dimension_frame(scorer.column_dims, result.features, scorer.structure, projection.n_users),
        flags=flags, projection=projection, standings=scorer.standings, structure=scorer.structure, rings=scorer.rings,
    )
    say("scoring the changes open to the user")
    return find(features, result.fitted, settings.scoring, row=int(projection.index_of(np.array([str(user_id)]))[0]), ident_label=ident_label)


@dataclass(frozen=True)
class FairnessReport:
    """What ``fairness`` found.

    Attributes
    ----------
    segment : str
        The users column compared.
    table : DataFrame
        :func:`scoring.fairness.fairness_table`: per output and segment value.
    users, hidden : int
        Users scored (approval rates), hidden labelled users pooled over repeats (good-user
        refusals and AUROC).
    policy : str
        The decision policy the outputs were decided under.
    protocol : dict
        ``train_frac``, ``repeats``, ``seed`` of the hidden-label protocol.
    """

    segment: str
    table: pd.DataFrame
    users: int
    hidden: int
    policy: str
    protocol: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        rows = [{k: (None if isinstance(v, float) and v != v else v) for k, v in r.items()} for r in self.table.to_dict(orient="records")]
        return {
            "segment": self.segment, "policy": self.policy, "users": self.users, "hidden": self.hidden,
            "protocol": self.protocol, "four_fifths": FOUR_FIFTHS, "rows": rows,
        }


def fairness_dir(
    source: str | Path,
    settings: Settings,
    *,
    segment: str,
    train_frac: float = 0.4,
    repeats: int = 3,
    seed: int = 0,
    progress: Progress | None = None,
    repeat_progress: Callable[[int, int], None] | None = None,
) -> FairnessReport:
    """The fairness report of a data directory by the users column ``segment``, in memory.

    Approval rates come from scoring every user with all the flags; good-user refusals and
    AUROC from the hidden users of the contract's evaluation protocol (``train_frac``,
    ``repeats``, ``seed``), so that they are measured on users whose label the model did not see.

    Raises
    ------
    DataError
        No such column in ``users``, or a column with fewer than two values.
    """
    import os

    configured = os.environ.get(ENV_KEY) or settings.config_key
    key = parse_key(configured) if configured else parse_key(new_key())
    tables = read_tables(source, key=key, label_map=settings.label_map, progress=progress, normalisation=settings.normalise)
    seg = check_segment(tables.users, segment, source=f"{source}/users")
    projection = project(tables, settings.graph)
    scorer = Scorer(tables, projection, graph_config=settings.graph, config=settings.scoring, progress=progress)
    full = scorer.score(scorer.flags_from(tables.flags), progress=progress).scores
    report = evaluate(scorer, train_frac=train_frac, repeats=repeats, seed=seed, progress=repeat_progress)
    table = fairness_table(full, report.predictions, seg)
    return FairnessReport(
        segment=segment, table=table, users=len(full), hidden=len(report.predictions), policy=settings.scoring.policy.name,
        protocol={"train_frac": train_frac, "repeats": repeats, "seed": seed},
    )


@dataclass(frozen=True)
class FlagUpdate:
    """What ``flag`` changed: the users whose exposure moved, largest change first.

    ``moved`` has ``user_id``, ``before``, ``after`` and ``change`` (exposure as a share of all
    fraud seed weight, ``after`` renormalised to the new total), ``error_bound`` the L1 bound of
    the kept scores against a full recompute, ``rebuilt`` whether the state had to be solved
    from scratch first (none kept, or the store changed since).
    """

    user_id: str
    label: str
    moved: pd.DataFrame
    n_moved: int
    pushes: int
    error_bound: float
    rebuilt: bool
    seconds: float


#: Re-solve the kept state when the error bound of the updates since the last solve passes this
#: share of the seed mass (L1).
REBUILD_AT = 0.01


def record_flags(
    store: GraphStore, settings: Settings, workspace: str | Path, records: list[dict[str, Any]], *, replay: list[bool] | None = None
) -> None:
    """Write flags to the store and the audit log, each with the user's label before and after.

    A record has ``user_id``, ``label`` (as given), ``canonical`` (fraud/benign), ``severity``,
    ``ts``, ``source``, and optionally ``action`` (default ``flag``), ``actor``, ``note`` and
    ``detail`` (more for the audit entry). With ``replay`` (one flag per record), a replayed
    record whose ``detail.flag_id`` already has an audit entry gets no second one; its row is
    not added twice either, as long as its ``source`` names the flag id (the loader keeps one
    row per content).
    """
    erased = sorted({str(r["user_id"]) for r in records} & store.erased_user_ids())
    if erased:  # a load would set the row aside: refuse it rather than audit a flag never stored
        raise NotFoundError(f"user {erased[0]!r} was erased ('socialrisk forget'): no flag is recorded about it any more")
    key, _ = resolve_key(settings, workspace)
    previous = store.read_table("flags")
    last = previous.assign(_o=range(len(previous))).drop_duplicates("user_id", keep="last").set_index("user_id") if len(previous) else None
    rows, audit = [], []
    seen: dict[str, dict[str, Any]] = {}
    for i, record in enumerate(records):
        user = str(record["user_id"])
        if user in seen:
            before = seen[user]
        elif last is not None and user in last.index:
            before = {"label": str(last.loc[user, "label"]), "severity": float(last.loc[user, "severity"])}
        else:
            before = {"label": None}
        seen[user] = {"label": record["canonical"], "severity": record["severity"]}
        rows.append({"user_id": user, "label": record["label"], "severity": record["severity"], "source": record["source"],
                     "ts": pd.Timestamp(record["ts"])})
        detail = {"note": record.get("note", ""), **(record.get("detail") or {})}
        if replay is not None and replay[i] and any((e.detail or {}).get("flag_id") == detail.get("flag_id") for e in store.read_audit(user)):
            continue
        entry = {"action": record.get("action", "flag"), "user_id": user, "before": before, "after": dict(seen[user]), "detail": detail}
        if record.get("actor"):
            entry["actor"] = record["actor"]
        audit.append(entry)
    load({"flags": pd.DataFrame(rows)}, store, key=key, label_map=settings.label_map)
    if audit:
        store.append_audit(audit)


def folded_adjacency(state: Any) -> Any:
    """The state's adjacency with the rows changed by new or re-weighted edges folded in."""
    import scipy.sparse as sp

    A = sp.lil_matrix(state.adjacency)
    for u, (idx, w) in state.extra.items():
        A.rows[u], A.data[u] = idx.tolist(), w.tolist()
    return sp.csr_matrix(A)


def state_path(workspace: str | Path) -> Path:
    """Where the kept fraud-exposure state (a local-push state) of a workspace lives."""
    return Path(workspace) / "state" / "push.npz"


def save_state(path: Path, state: Any, user_ids: np.ndarray, snapshot: int, config_hash: str) -> None:
    """Keep a push state for a store snapshot and configuration (written atomically)."""
    if state.extra:  # rows changed by new edges: fold them in before saving
        state.adjacency, state.extra = folded_adjacency(state), {}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    A = state.adjacency
    np.savez(
        tmp, indptr=A.indptr, indices=A.indices, data=A.data, shape=np.array(A.shape), p=state.p, r=state.r, seeds=state.seeds,
        alpha=np.array(state.alpha), eps=np.array(state.eps), user_ids=user_ids.astype(str), snapshot=np.array(snapshot),
        config_hash=np.array(config_hash),
    )
    tmp.replace(path)


def load_state(path: Path, snapshot: int, config_hash: str) -> tuple[Any, np.ndarray] | None:
    """The kept push state and its user ids, or None when none is kept for this snapshot and
    configuration."""
    import scipy.sparse as sp

    from graph.propagation.push import PushState

    if not path.exists():
        return None
    with np.load(path, allow_pickle=False) as z:
        if int(z["snapshot"]) != snapshot or str(z["config_hash"]) != config_hash:
            return None
        A = sp.csr_matrix((z["data"], z["indices"], z["indptr"]), shape=tuple(z["shape"]))
        state = PushState(
            adjacency=A, out_weight=np.asarray(A.sum(axis=1)).ravel(), seeds=z["seeds"], p=z["p"], r=z["r"],
            alpha=float(z["alpha"]), eps=float(z["eps"]),
        )
        return state, z["user_ids"]


def flag(
    store: GraphStore, settings: Settings, workspace: str | Path, user_id: str, label: str, *, severity: float = 1.0, top: int = 10,
    progress: Progress | None = None, audit_action: str = "flag", note: str = "",
) -> FlagUpdate:
    """Record a flag on a user and update the propagated fraud exposure incrementally.

    The exposure (personalized PageRank from every fraud flag over shared identifiers and
    relations) is kept in ``<workspace>/state/push.npz`` as a local-push state; the new flag is
    pushed from the user outwards, so only nearby scores are touched. The flag is written to
    the store too, so the next ``score`` includes it.
    """
    import time as _time

    from graph.projection import walk_matrix
    from graph.propagation.push import add_seed, push_state

    say = progress or (lambda _m: None)
    canonical = settings.label_map.get(label.strip().lower())
    if canonical is None:
        raise ParameterError(f"unknown flag label {label!r}; expected one of {', '.join(sorted(settings.label_map))}")
    if not (np.isfinite(severity) and 0 < severity <= 1):
        raise ParameterError(f"The 'severity' of a flag must be in (0, 1]. Got {severity!r} instead.")
    path = state_path(workspace)
    meta = store.metadata()
    snapshot = int(meta.get("snapshot", 0))
    loaded = load_state(path, snapshot, settings.config_hash())
    rebuilt = loaded is None
    if loaded is None:
        say("solving the exposure from scratch (no state kept for this data)")
        projection = _projection(store, settings)
        fraud = flag_vectors(store.read_table("flags"), projection).fraud
        if not (fraud > 0).any():
            raise NotFoundError("no user is flagged fraud yet: load a flags table before flagging incrementally")
        A = walk_matrix(projection, hub_exponent=settings.graph.hub_exponent, hub_exponents=settings.graph.hub_exponents)
        seeds = np.zeros(A.shape[0])
        seeds[: projection.n_users] = fraud
        state = push_state(A, seeds, alpha=settings.scoring.alpha, tol=1e-10)
        user_ids = projection.user_ids
    else:
        state, user_ids = loaded
    hits = np.flatnonzero(user_ids == user_id)
    if not hits.size:
        raise NotFoundError(f"unknown user {user_id!r}: not in the loaded graph")
    node = int(hits[0])
    target = severity if canonical == "fraud" else 0.0
    total_before = float(state.seeds.sum())
    t0 = _time.perf_counter()
    up = add_seed(state, node, target - float(state.seeds[node]))
    seconds = _time.perf_counter() - t0
    total_after = float(state.seeds.sum())
    if total_after > 0 and up.error_bound > REBUILD_AT * total_after:
        # residuals left by many updates add up: solve again once they could matter
        say("re-solving the exposure (the residual of past updates reached the limit)")
        state = push_state(state.adjacency if not state.extra else folded_adjacency(state), state.seeds, alpha=state.alpha, tol=1e-10)
        rebuilt = True
    users = up.nodes[up.nodes < len(user_ids)]
    delta = up.delta[up.nodes < len(user_ids)]
    after = state.p[users] / total_after if total_after > 0 else np.zeros(len(users))
    before = (state.p[users] - delta) / total_before if total_before > 0 else np.zeros(len(users))
    moved = pd.DataFrame({"user_id": user_ids[users].astype(str), "before": before, "after": after})
    moved["change"] = moved["after"] - moved["before"]
    moved = moved.reindex(moved["change"].abs().sort_values(ascending=False, kind="stable").index).head(top).reset_index(drop=True)
    # record the flag; the store's snapshot moves on, and the state is saved for the new one
    now = pd.Timestamp.now(tz="UTC").floor("s")
    source = "socialrisk flag" if audit_action == "flag" else f"socialrisk appeal {audit_action}" + (f": {note}" if note else "")
    record_flags(store, settings, workspace, [{
        "user_id": user_id, "label": label, "canonical": canonical, "severity": severity, "ts": now, "source": source,
        "action": audit_action, "note": note,
        "detail": {"users_moved": int((up.nodes < len(user_ids)).sum()), "error_bound": float(up.error_bound)},
    }])
    save_state(path, state, np.asarray(user_ids), int(store.metadata().get("snapshot", 0)), settings.config_hash())
    return FlagUpdate(
        user_id=user_id, label=canonical, moved=moved, n_moved=int(len(users)), pushes=up.pushes, error_bound=state.error_bound / max(total_after, 1e-300),
        rebuilt=rebuilt, seconds=seconds,
    )


# -- appeals ---------------------------------------------------------------------------------

#: Appeal actions an analyst can take, as written to the audit log.
APPEAL_ACTIONS = ("dispute", "withdraw", "clear_flag", "overturn_flag", "counter_evidence")


@dataclass(frozen=True)
class WhatIf:
    """The user's score if one of its links were ignored."""

    target: str
    other: str
    link: str
    risk: float
    credit_score: int
    decision: str


@dataclass(frozen=True)
class AppealView:
    """What an analyst needs to handle an appeal: the stored score and reasons, the paths behind
    the graph risk, what would change the decision, and the user's disputes and audit trail."""

    user_id: str
    score: pd.Series
    explanation: Explanation
    what_if: list[WhatIf]
    disputes: pd.DataFrame
    audit: list[Any]


def _score_row(frame: pd.DataFrame, user_id: str) -> pd.Series:
    row = frame.loc[frame["user_id"] == user_id]
    if row.empty:
        raise NotFoundError(f"unknown user {user_id!r}: not in the stored scores")
    return row.iloc[-1]


def _rescore(
    store: GraphStore, settings: Settings, workspace: str | Path, *, what_if: pd.DataFrame | None = None, progress: Progress | None = None
) -> ScoreResult:
    """Every user scored with the current model version on the graph as it stands (plus
    hypothetical disputes): features recomputed, the combination as fitted."""
    version = store.current_model()
    if version is None:
        raise NotFoundError("no model version yet: run 'socialrisk score' first")
    projection = store.projection(settings.graph, what_if=what_if)
    tables = store.read_tables()
    scorer = Scorer(tables, projection, graph_config=settings.graph, config=settings.scoring, progress=progress)
    combination = load_model(store, settings, workspace, version)
    return scorer.score(scorer.flags_from(tables.flags), combination=combination, progress=progress)


def _own_links(explanation: Explanation) -> list[tuple[str, str, str]]:
    """The user's own links on its explanation paths (the last hop of each), most important first."""
    seen: list[tuple[str, str, str]] = []
    for c in explanation.contributions:
        if not c.path:
            continue
        step = c.path[-1]
        if step.kind == "identifier" and step.ident:
            link = ("identifier", step.ident, step.via)
        else:
            link = ("relation", step.source, f"{step.via} relation with account {step.source}")
        if link[:2] not in [s[:2] for s in seen]:
            seen.append(link)
    return seen


def _flagged_identifiers(store: GraphStore, settings: Settings, user_id: str) -> list[tuple[str, str, str]]:
    """The user's links to shared identifiers that an account flagged fraud also uses."""
    from graph.explain import ident_label

    projection = store.projection(settings.graph)
    fraud = flag_vectors(store.read_table("flags"), projection).fraud > 0
    u = int(projection.index_of([user_id])[0])
    out = []
    for j in projection.incidence[u].indices.tolist():
        others = projection.incidence[:, j].nonzero()[0]
        if fraud[others[others != u]].any():
            key = str(projection.ident_keys[j])
            out.append(("identifier", key, ident_label(key)))
    return out


def appeal_view(store: GraphStore, settings: Settings, workspace: str | Path, user_id: str, *, top: int = 4) -> AppealView:
    """The stored score of ``user_id``, the paths behind its graph risk, and for each of its own
    links on those paths, then its links to identifiers a flagged account uses (at most ``top``
    in all), the score and decision it would have without it (all else as it stands, the
    current model version)."""
    scores, _ = store.read_result("scores")
    row = _score_row(scores, user_id)
    _, explanation, _ = explain(store, settings, user_id, top=10)
    links = _own_links(explanation)
    links += [link for link in _flagged_identifiers(store, settings, user_id) if link[:2] not in [k[:2] for k in links]]
    what_if = []
    for target, other, label in links[:top]:
        hypothetical = pd.DataFrame([{"user_id": user_id, "target": target, "other": other, "reason": "what-if", "weight": 0.0}])
        new = _score_row(_rescore(store, settings, workspace, what_if=hypothetical).scores, user_id)
        what_if.append(WhatIf(target, other, label, float(new["risk"]), int(new["credit_score"]), str(new["decision"])))
    disputes = store.disputes()
    return AppealView(
        user_id=user_id, score=row, explanation=explanation, what_if=what_if,
        disputes=disputes.loc[disputes["user_id"] == user_id].reset_index(drop=True), audit=store.read_audit(user_id),
    )


@dataclass(frozen=True)
class AppealOutcome:
    """An appeal action applied: the score before and after, and the exposure update."""

    user_id: str
    action: str
    before: pd.Series
    after: pd.Series
    moved: int
    error_bound: float | None


def _check_link(store: GraphStore, settings: Settings, user_id: str, target: str, other: str) -> None:
    projection = store.projection(settings.graph)
    u = int(projection.index_of([user_id])[0])
    if target == "identifier":
        j = np.flatnonzero(projection.ident_keys == other)
        if not j.size or projection.incidence[u, int(j[0])] == 0 and int(j[0]) not in projection.incidence[u].indices:
            raise NotFoundError(f"user {user_id!r} has no link to a shared identifier {other!r}")
    else:
        v = int(projection.index_of([other])[0])
        if not (projection.related[u, v] or projection.related[v, u]):
            raise NotFoundError(f"user {user_id!r} has no relation with user {other!r}")


def _dispute_exposure(store: GraphStore, settings: Settings, workspace: str | Path, user_id: str, target: str, other: str) -> tuple[int, float | None]:
    """Apply a dispute to the kept exposure state by local push (the disputed link's edges
    re-weighted); returns how many users moved and the error bound. Without a kept state (no
    ``flag`` since the last load) there is nothing to update."""
    from graph.projection import walk_matrix
    from graph.propagation.push import set_edge

    path = state_path(workspace)
    loaded = load_state(path, int(store.metadata().get("snapshot", 0)), settings.config_hash())
    if loaded is None:
        return 0, None
    state, user_ids = loaded
    projection = store.projection(settings.graph)  # disputes in force, the new one included
    W = walk_matrix(projection, hub_exponent=settings.graph.hub_exponent, hub_exponents=settings.graph.hub_exponents)
    u = int(projection.index_of([user_id])[0])
    if target == "identifier":
        v = projection.n_users + int(np.flatnonzero(projection.ident_keys == other)[0])
    else:
        v = int(projection.index_of([other])[0])
    moved: set[int] = set()
    for a, b in ((u, v), (v, u)):
        up = set_edge(state, a, b, float(W[a, b]))
        moved.update(up.nodes[up.nodes < len(user_ids)].tolist())
    save_state(path, state, np.asarray(user_ids), int(store.metadata().get("snapshot", 0)), settings.config_hash())
    return len(moved), state.error_bound / max(float(state.seeds.sum()), 1e-300)


def appeal(
    store: GraphStore,
    settings: Settings,
    workspace: str | Path,
    user_id: str,
    action: str,
    *,
    other: str | None = None,
    target: str = "identifier",
    reason: str = "other",
    note: str = "",
    progress: Progress | None = None,
) -> AppealOutcome:
    """Apply an analyst's appeal action to ``user_id`` and rescore with the current model version.

    Actions: ``dispute`` (the link to ``other`` is marked and weighted by
    ``settings.graph.dispute_weight(reason)``; it stays in the store), ``withdraw`` (a
    dispute), ``clear_flag`` and ``overturn_flag`` (the user's fraud flag is replaced by a
    benign one), ``counter_evidence`` (a benign flag with ``note`` as its evidence: trust that
    propagates to the user's neighbours). Each is appended to the audit log with the score
    before and after; the kept fraud exposure is updated by local push.
    """
    from graph.disputes import dispute_record

    if action not in APPEAL_ACTIONS:
        raise ParameterError(f"Unknown appeal action {action!r}; expected one of {', '.join(APPEAL_ACTIONS)}.")
    scores, _ = store.read_result("scores")
    before = _score_row(scores, user_id)
    moved, bound = 0, None
    if action in ("dispute", "withdraw"):
        if not other:
            raise ParameterError(f"'{action}' needs the link: an identifier key (kind:pseudonym) or, with target relation, a user id")
        if target not in ("identifier", "relation"):
            raise ParameterError(f"The 'target' of a dispute must be identifier or relation. Got {target!r} instead.")
        if action == "dispute":
            settings.graph.dispute_weight(reason)  # an unknown reason is refused before anything is written
            _check_link(store, settings, user_id, target, other)
        elif not ((store.disputes()[["user_id", "target", "other"]] == [user_id, target, other]).all(axis=1)).any():
            raise NotFoundError(f"no dispute of {user_id!r}'s {target} link to {other!r} is in force")
        store.append_audit([dispute_record(user_id, target, other, reason, note, withdraw=action == "withdraw")])
        store.mark_dispute(user_id, target, other, reason if action == "dispute" else None)
        moved, bound = _dispute_exposure(store, settings, workspace, user_id, target, other)
    else:
        label = "benign"
        update = flag(store, settings, workspace, user_id, label, top=0, progress=progress, audit_action=action, note=note)
        moved, bound = update.n_moved, update.error_bound
    result = _rescore(store, settings, workspace, progress=progress)
    fitted = load_model(store, settings, workspace, str(store.current_model()))
    written = _write_scores(store, settings, result, fitted)
    after = _score_row(written.scores, user_id)
    keep = ["risk", "credit_score", "decision", "reason_codes"]
    store.append_audit([{
        "action": "appeal_decision",
        "user_id": user_id,
        "before": {k: _plain_value(before.get(k)) for k in keep},
        "after": {k: _plain_value(after.get(k)) for k in keep},
        "detail": {"appeal_action": action, "other": other, "reason": reason if action == "dispute" else None, "note": note,
                   "model_version": fitted.version},
    }])
    return AppealOutcome(user_id=user_id, action=action, before=before, after=after, moved=moved, error_bound=bound)


def _plain_value(v: Any) -> Any:
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating,)):
        return float(v)
    return v


def audit_trail(store: GraphStore, user_id: str | None = None) -> list[Any]:
    """The audit entries of ``user_id`` (every entry when None), oldest first, chain verified."""
    return store.read_audit(user_id)


def forget(store: GraphStore, settings: Settings, user_id: str, *, note: str = "") -> dict[str, int]:
    """Erase a user's personal data (``GraphStore.forget_user``), stop serving its scores, and
    record the erasure in the audit log (what kinds of data and how much, never the data).

    The user id stays as a node where other users' relations point to it; its scores are
    removed from the stored result, and later ``score`` runs leave it out. The store keeps the
    id as a tombstone, so later loads set aside every row that names the user (counted as
    rejected, reason "erased user") instead of bringing its data back.
    """
    scores, meta = store.read_result("scores") if store.has_result("scores") else (None, {})
    removed = store.forget_user(user_id)
    if scores is not None:
        mine = scores["user_id"].astype(str) == user_id
        removed["scores"] = int(mine.sum())
        if mine.any():
            store.write_result("scores", scores.loc[~mine].reset_index(drop=True), meta=meta)
    store.append_audit([{
        "action": "forget", "user_id": user_id, "before": {"personal_data": True},
        "after": {"personal_data": False, "removed": removed, "tombstone": True}, "detail": {"note": note},
    }])
    return removed


def forgotten_users(store: GraphStore) -> set[str]:
    """Users erased by :func:`forget` (the store's tombstones, and the audit log for erasures
    made before stores kept tombstones): scoring leaves them out."""
    return set(store.erased_user_ids()) | {str(e.user_id) for e in store.read_audit() if e.action == "forget"}


# -- applicants and events between full scorings ---------------------------------------------------


@dataclass(frozen=True)
class ApplicationOutcome:
    """What ``score-application`` gives: the applicant's score as a full scoring would have
    written its row, the explanation, and the provenance."""

    row: dict[str, Any]
    explanation: list[dict[str, Any]]
    new: bool
    committed: bool
    ignored_features: list[str]
    model_version: str | None
    snapshot: int
    written: dict[str, int] | None = None


def applicant_scorer(store: GraphStore, settings: Settings, workspace: str | Path) -> tuple[Any, Any, dict[str, Any]]:
    """The live graph of the store's graph with the current model version, for applicants:
    ``(ApplicantScorer, ExplainContext, provenance)``.

    Raises
    ------
    NotFoundError
        The store holds no scoring yet (run ``socialrisk score`` first: the applicant is scored
        by the model version the population was scored with).
    """
    from graph.explain import ExplainContext
    from graph.live import LiveGraph
    from scoring.application import ApplicantScorer
    from scoring.features import user_columns

    meta = store.result_meta("scores")
    if meta is None:
        raise NotFoundError(f"{store}: no scores yet; applicants are scored by the model version of the last scoring: run 'socialrisk score' first")
    projection = _projection(store, settings)
    tables = store.read_tables()
    flags = flag_vectors(tables.flags, projection)
    live = LiveGraph(tables, projection, config=settings.graph, fraud=flags.fraud, benign=flags.benign, alpha=settings.scoring.alpha,
                     tol=settings.scoring.tol)
    version = meta.get("model_version")
    combination = load_model(store, settings, workspace, str(version)) if version else Combination(
        "scorecard", (), scorecard_weights=dict(settings.scoring.scorecard_weights))
    scorer = ApplicantScorer(live, user_columns(tables, projection), combination=combination, config=settings.scoring)
    context = ExplainContext(tables, projection, flags.fraud, hub_exponent=settings.graph.hub_exponent, hub_exponents=settings.graph.hub_exponents, alpha=settings.scoring.alpha)
    return scorer, context, {"model_version": version, "snapshot": int(store.metadata().get("snapshot", 0))}


def score_application(
    store: GraphStore, settings: Settings, workspace: str | Path, body: dict[str, Any], *, commit: bool = False, top: int = 5,
) -> ApplicationOutcome:
    """Score one application (the JSON of ``POST /v1/applications``) against the store's
    graph; with ``commit``, write its user, links and relations to the store (the next
    scoring includes them).

    Raises
    ------
    ParameterError, DataError
        A malformed application (the field, and what was expected).
    NotFoundError
        Relations to users the store does not know (listed), or no scoring yet.
    """
    from graph.explain import explain_placed
    from scoring.application import application_from_dict, canonical_frames

    app = application_from_dict(body)
    scorer, context, provenance = applicant_scorer(store, settings, workspace)
    key, _ = resolve_key(settings, workspace)
    links, relations = canonical_frames(app, key=key, normalisation=settings.normalise)
    now = pd.Timestamp.now(tz="UTC")
    if commit:
        links = links.assign(first_seen=links["first_seen"].fillna(now), last_seen=links["last_seen"].fillna(now))
        relations = relations.assign(ts=relations["ts"].fillna(now))
    out = scorer.score(app, links=links, relations=relations, commit=commit, explain=lambda placed: explain_placed(
        context, app.user_id, placed.in_edges, placed.node, node_users=scorer.live.node_users, state=scorer.live.states.get(("all", "fraud")),
        top=top))
    explanation = out.explanation
    written = None
    if commit:
        features = {k: v for k, v in app.features.items() if k in scorer.columns}
        users = pd.DataFrame([{"user_id": app.user_id, **features}])
        for c in users.columns:
            if c != "user_id":
                users[c] = pd.to_numeric(users[c], errors="coerce").astype("float64")
        counts = store.write_tables(Tables(users=users, links=links, relations=relations, flags=empty_tables().flags))
        written = {name: int(c.added) for name, c in counts.items()}
        store.append_audit([{"action": "application", "user_id": app.user_id, "before": {"snapshot": provenance["snapshot"]},
                             "after": {"snapshot": int(store.metadata().get("snapshot", 0)), "added": written},
                             "detail": {"via": "socialrisk score-application", "risk": out.row["risk"], "decision": out.row["decision"]}}])
    return ApplicationOutcome(row=out.row, explanation=explanation, new=out.new, committed=commit, ignored_features=out.ignored_features,
                              model_version=provenance["model_version"], snapshot=provenance["snapshot"], written=written)


def events_source(path: str | Path) -> Any:
    """What ``apply-events`` loads: a data directory as is, or a JSON file in the body format
    of ``POST /v1/events`` (``{"users": [...], "links": [...], "relations": [...]}``) turned
    into the loader's tables (identifier values are pseudonymised by the loader, as ever).

    Raises
    ------
    ParameterError
        A file that is not such JSON (what is wrong, where).
    """
    import json

    path = Path(path)
    if path.is_dir():
        return path
    try:
        body = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ParameterError(f"{path}: not a JSON events file ({exc}); expected {{\"users\": [...], \"links\": [...], \"relations\": [...]}} "
                             "or a data directory") from exc
    if not isinstance(body, dict) or not set(body) <= {"users", "links", "relations", "create_missing"}:
        raise ParameterError(f"{path}: expected a JSON object with users, links and relations lists")
    source: dict[str, pd.DataFrame] = {}
    users = body.get("users") or []
    if users:
        source["users"] = pd.DataFrame([{"user_id": u.get("user_id"), **(u.get("features") or {})} for u in users])
    for name, columns in (("links", ["user_id", "kind", "value", "first_seen", "last_seen", "weight"]), ("relations", ["src", "dst", "kind", "weight", "ts"])):
        rows = body.get(name) or []
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise ParameterError(f"{path}: '{name}' must be a list of objects")
        if rows:
            frame = pd.DataFrame(rows)
            source[name] = frame[[c for c in columns if c in frame] + [c for c in frame.columns if c not in columns]]
    if not source:
        raise ParameterError(f"{path}: no users, links or relations in it")
    return source
