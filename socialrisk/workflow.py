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
from graph.rings import RING_KINDS, rank_rings, ring_labels
from graph.store import EmbeddedStore, GraphStore
from loaders.errors import ConfigError, NotFoundError, ParameterError
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
    "rings",
    "evaluate_dir",
    "PropagationSummary",
    "flag",
    "FlagUpdate",
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
    projection = _projection(store, settings)
    tables = store.read_tables()
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
    projection = _projection(store, settings)
    tables = store.read_tables()
    flags = flag_vectors(tables.flags, projection)
    explanation = explain_user(
        tables, projection, user_id, flags.fraud, hub_exponent=settings.graph.hub_exponent, alpha=settings.scoring.alpha, top=top
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
    pushes: int
    error_bound: float
    rebuilt: bool
    seconds: float


#: Re-solve the kept state when the error bound of the updates since the last solve passes this
#: share of the seed mass (L1).
REBUILD_AT = 0.01


def _folded(state: Any) -> Any:
    import scipy.sparse as sp

    A = sp.lil_matrix(state.adjacency)
    for u, (idx, w) in state.extra.items():
        A.rows[u], A.data[u] = idx.tolist(), w.tolist()
    return sp.csr_matrix(A)


def _state_path(workspace: str | Path) -> Path:
    return Path(workspace) / "state" / "push.npz"


def _save_state(path: Path, state: Any, user_ids: np.ndarray, snapshot: int, config_hash: str) -> None:
    import scipy.sparse as sp

    if state.extra:  # rows changed by new edges: fold them in before saving
        state.adjacency, state.extra = _folded(state), {}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    A = state.adjacency
    np.savez(
        tmp, indptr=A.indptr, indices=A.indices, data=A.data, shape=np.array(A.shape), p=state.p, r=state.r, seeds=state.seeds,
        alpha=np.array(state.alpha), eps=np.array(state.eps), user_ids=user_ids.astype(str), snapshot=np.array(snapshot),
        config_hash=np.array(config_hash),
    )
    tmp.replace(path)


def _load_state(path: Path, snapshot: int, config_hash: str) -> tuple[Any, np.ndarray] | None:
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
    progress: Progress | None = None,
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
    path = _state_path(workspace)
    meta = store.metadata()
    snapshot = int(meta.get("snapshot", 0))
    loaded = _load_state(path, snapshot, settings.config_hash())
    rebuilt = loaded is None
    if loaded is None:
        say("solving the exposure from scratch (no state kept for this data)")
        projection = _projection(store, settings)
        fraud = flag_vectors(store.read_table("flags"), projection).fraud
        if not (fraud > 0).any():
            raise NotFoundError("no user is flagged fraud yet: load a flags table before flagging incrementally")
        A = walk_matrix(projection, hub_exponent=settings.graph.hub_exponent)
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
        state = push_state(state.adjacency if not state.extra else _folded(state), state.seeds, alpha=state.alpha, tol=1e-10)
        rebuilt = True
    users = up.nodes[up.nodes < len(user_ids)]
    delta = up.delta[up.nodes < len(user_ids)]
    after = state.p[users] / total_after if total_after > 0 else np.zeros(len(users))
    before = (state.p[users] - delta) / total_before if total_before > 0 else np.zeros(len(users))
    moved = pd.DataFrame({"user_id": user_ids[users].astype(str), "before": before, "after": after})
    moved["change"] = moved["after"] - moved["before"]
    moved = moved.reindex(moved["change"].abs().sort_values(ascending=False, kind="stable").index).head(top).reset_index(drop=True)
    # record the flag; the store's snapshot moves on, and the state is saved for the new one
    key, _ = resolve_key(settings, workspace)
    now = pd.Timestamp.now(tz="UTC").floor("s")
    flags = pd.DataFrame({"user_id": [user_id], "label": [label], "severity": [severity], "source": ["socialrisk flag"], "ts": [now]})
    load({"flags": flags}, store, key=key, label_map=settings.label_map)
    _save_state(path, state, np.asarray(user_ids), int(store.metadata().get("snapshot", 0)), settings.config_hash())
    return FlagUpdate(
        user_id=user_id, label=canonical, moved=moved, pushes=up.pushes, error_bound=state.error_bound / max(total_after, 1e-300),
        rebuilt=rebuilt, seconds=seconds,
    )
