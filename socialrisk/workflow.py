"""The steps behind the commands, wired from the libraries. No math lives here."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from graph.explain import Explanation, explain_user
from graph.projection import Projection, project
from graph.store import EmbeddedStore, GraphStore
from loaders.errors import ConfigError, NotFoundError
from loaders.load import LoadReport, load, read_tables
from loaders.pseudonym import key_fingerprint, new_key, parse_key
from loaders.schema import Tables
from scoring.dimensions import graph_dimension
from scoring.evaluate import EvaluationReport, evaluate
from scoring.features import Walks, flag_vectors
from scoring.pipeline import MODEL_VERSION, ScoreResult, Scorer
from socialrisk.settings import ENV_KEY, Settings, resolve_key

__all__ = [
    "STORES",
    "open_store",
    "load_into",
    "propagate",
    "score",
    "explain",
    "evaluate_dir",
    "PropagationSummary",
]

STORES = ("embedded", "neo4j")
Progress = Callable[[str], None]
Notice = Callable[[str], None]


def open_store(kind: str, workspace: str | Path) -> GraphStore:
    """Open the named store over ``workspace``."""
    if kind == "embedded":
        return EmbeddedStore(workspace)
    if kind == "neo4j":
        return open_neo4j()
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
) -> LoadReport:
    """Load a data directory into the store, binding the pseudonymisation key to it."""
    key, message = resolve_key(settings, workspace)
    if message and notice:
        notice(message)
    store.bind_key(key_fingerprint(key))
    if progress is not None and hasattr(store, "progress"):
        # stores that write in batches (Neo4j) report each batch on the same progress line
        store.progress = lambda table, done, total: progress(f"writing {table}: {done:,} / {total:,} rows")
    return load(source, store, key=key, label_map=settings.label_map, progress=progress)


def _provenance(store: GraphStore, settings: Settings, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    meta = store.metadata()
    out = {
        "model_version": MODEL_VERSION,
        "config_hash": settings.config_hash(),
        "snapshot": meta.get("snapshot", 0),
    }
    out.update(extra or {})
    return out


def _projection(store: GraphStore, settings: Settings) -> tuple[Tables, Projection]:
    tables = store.read_tables()
    if not len(tables.all_user_ids()):
        raise NotFoundError("the store holds no users yet; run 'socialrisk load DATA_DIR' first")
    return tables, project(tables, settings.graph)


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
    tables, projection = _projection(store, settings)
    flags = flag_vectors(tables.flags, projection)
    if not (flags.fraud > 0).any():
        raise NotFoundError("no user is flagged fraud: there is no risk to propagate. Load a flags table with label=fraud.")
    say("propagating")
    walks = Walks(projection, hub_exponent=settings.graph.hub_exponent, alpha=settings.scoring.alpha, tol=settings.scoring.tol)
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


def score(store: GraphStore, settings: Settings, *, progress: Progress | None = None) -> ScoreResult:
    """Score every user in the store and keep the scores with their provenance."""
    say = progress or (lambda _m: None)
    say("projecting the graph")
    tables, projection = _projection(store, settings)
    scorer = Scorer(tables, projection, graph_config=settings.graph, config=settings.scoring, progress=progress)
    result = scorer.score(scorer.flags_from(tables.flags), progress=progress)
    meta = _provenance(store, settings, dict(result.meta))
    store.write_result("scores", result.scores, meta=meta)
    return ScoreResult(
        scores=result.scores, features=result.features, combination=result.combination, contributions=result.contributions, meta=meta
    )


def explain(store: GraphStore, settings: Settings, user_id: str, *, top: int = 5) -> tuple[pd.Series, Explanation, dict[str, Any]]:
    """A user's stored score and the flagged accounts and paths behind its graph risk."""
    scores, meta = store.read_result("scores")
    row = scores.loc[scores["user_id"] == user_id]
    if row.empty:
        raise NotFoundError(f"unknown user {user_id!r}: not in the stored scores")
    tables, projection = _projection(store, settings)
    flags = flag_vectors(tables.flags, projection)
    explanation = explain_user(
        tables, projection, user_id, flags.fraud, hub_exponent=settings.graph.hub_exponent, alpha=settings.scoring.alpha, top=top
    )
    return row.iloc[0], explanation, meta


def evaluate_dir(
    source: str | Path,
    settings: Settings,
    *,
    train_frac: float,
    repeats: int,
    seed: int,
    progress: Progress | None = None,
    repeat_progress: Callable[[int, int], None] | None = None,
) -> EvaluationReport:
    """The contract's evaluation of a data directory, in memory (nothing is written)."""
    import os

    # Pseudonyms only need to be consistent within this run; use the configured key when there is one.
    configured = os.environ.get(ENV_KEY) or settings.config_key
    key = parse_key(configured) if configured else parse_key(new_key())
    tables = read_tables(source, key=key, label_map=settings.label_map, progress=progress)
    projection = project(tables, settings.graph)
    scorer = Scorer(tables, projection, graph_config=settings.graph, config=settings.scoring, progress=progress)
    report = evaluate(scorer, train_frac=train_frac, repeats=repeats, seed=seed, progress=repeat_progress)
    return report
