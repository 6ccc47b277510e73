"""What the service keeps of the graph in memory: the projection, the fraud exposure as a
local-push state, the explanation context and the neighbour index, read once from the store.

Built in the background at start-up (seconds on a million users) and again when the store's
graph changes under the service (a load, or an appeal that rescored it).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from graph.explain import ExplainContext
from graph.projection import Projection, walk_matrix
from graph.propagation.push import PushState, add_seed, push_state
from graph.store import GraphStore
from loaders.errors import NotFoundError
from loaders.schema import Tables
from scoring.features import flag_vectors
from socialrisk import workflow
from socialrisk.service.incremental import ExposureMap, exposure_shift, fit_exposure_map
from graph.neighbourhood import GraphIndex, graph_index
from socialrisk.service.scores import FlagEvent, ScoreTable
from socialrisk.settings import Settings

__all__ = ["GraphView", "FlagEffect"]


@dataclass(frozen=True)
class FlagEffect:
    """A flag pushed through the exposure state."""

    event: FlagEvent
    users_moved: int
    pushes: int
    error_bound: float
    needs_resolve: bool = False


class GraphView:
    """The graph in memory, and the fraud exposure kept current under new flags.

    Attributes
    ----------
    snapshot : int
        The store snapshot this view was read at; moved on by the service's own flag writes.
    """

    def __init__(
        self, *, projection: Projection, tables: Tables, state: PushState | None, state_users: np.ndarray, snapshot: int,
        settings: Settings, graph_map: ExposureMap, risk_map: ExposureMap, neighbours: GraphIndex | None,
    ) -> None:
        self.projection = projection
        self.tables = tables
        self.state = state
        self.state_users = state_users
        self.node_of = {str(u): i for i, u in enumerate(state_users.tolist())}
        self.n_users = len(state_users)
        self.snapshot = snapshot
        self.settings = settings
        self.graph_map = graph_map
        self.risk_map = risk_map
        self.neighbours = neighbours
        fraud = flag_vectors(tables.flags, projection).fraud
        self.explainer = ExplainContext(tables, projection, fraud, hub_exponent=settings.graph.hub_exponent, hub_exponents=settings.graph.hub_exponents, alpha=settings.scoring.alpha)
        self.lock = threading.Lock()
        self._rows: tuple[int, np.ndarray] | None = None

    # -- building --------------------------------------------------------------------------------

    @classmethod
    def build(cls, store: GraphStore, settings: Settings, workspace: str | Path, table: ScoreTable, *, neighbours: bool) -> "GraphView":
        """Read the graph, take the kept exposure state of this snapshot (or solve it and keep
        it for the next start and for ``socialrisk flag``), and fit the exposure maps."""
        snapshot = int(store.metadata().get("snapshot", 0))
        projection = store.projection(settings.graph)
        if not projection.n_users:
            raise NotFoundError(f"{store}: the store holds no users; run 'socialrisk load DATA_DIR' first")
        tables = store.read_tables()
        # the state file's helpers are workflow's (shared with 'socialrisk flag')
        path = workflow.state_path(workspace)
        loaded = workflow.load_state(path, snapshot, settings.config_hash())
        state: PushState | None
        if loaded is not None and len(loaded[1]) == projection.n_users:
            state, users = loaded
        else:
            users = np.asarray(projection.user_ids)
            state = cls._solve(projection, tables, settings)
            if state is not None:
                workflow.save_state(path, state, users, snapshot, settings.config_hash())
        graph_map, risk_map = cls._maps(state, users, table)
        return cls(
            projection=projection, tables=tables, state=state, state_users=np.asarray(users).astype(str), snapshot=snapshot,
            settings=settings, graph_map=graph_map, risk_map=risk_map, neighbours=graph_index(store.encoded()) if neighbours else None,
        )

    @staticmethod
    def _solve(projection: Projection, tables: Tables, settings: Settings, fraud: np.ndarray | None = None) -> PushState | None:
        if fraud is None:
            fraud = flag_vectors(tables.flags, projection).fraud
        if not (fraud > 0).any():
            return None  # nothing to propagate yet; the first fraud flag solves
        A = walk_matrix(projection, hub_exponent=settings.graph.hub_exponent, hub_exponents=settings.graph.hub_exponents)
        seeds = np.zeros(A.shape[0])
        seeds[: projection.n_users] = fraud
        return push_state(A, seeds, alpha=settings.scoring.alpha, tol=1e-10)

    @staticmethod
    def _maps(state: PushState | None, users: np.ndarray, table: ScoreTable) -> tuple[ExposureMap, ExposureMap]:
        if state is None:
            flat = ExposureMap(np.array([0.0]), np.array([0.0]))
            return flat, flat
        rows = np.array([table.index.get(str(u), -1) for u in np.asarray(users).tolist()], dtype=np.int64)
        ok = rows >= 0
        exposure = state.p[: len(users)][ok]
        unflagged = table.flag[rows[ok]] != "fraud"
        graph_map = fit_exposure_map(exposure[unflagged], table.graph_risk[rows[ok]][unflagged])
        risk_map = fit_exposure_map(exposure[unflagged], table.risk[rows[ok]][unflagged])
        return graph_map, risk_map

    # -- flags -----------------------------------------------------------------------------------

    def apply(self, flag_id: str, user_id: str, label: str, severity: float) -> FlagEffect:
        """Push a new or cleared flag through the exposure state; the event says how served
        scores move (:meth:`ScoreTable.apply`)."""
        node = self.node_of.get(user_id)
        if node is None:
            raise NotFoundError(f"unknown user {user_id!r}: not in the loaded graph")
        target = severity if label == "fraud" else 0.0
        with self.lock:
            if self.state is None:
                if target <= 0:
                    event = FlagEvent(flag_id, user_id, label, severity, np.zeros(0, dtype=object), np.zeros(0), float("nan"))
                    return FlagEffect(event, 0, 0, 0.0)
                fraud = np.zeros(self.n_users)
                fraud[node] = target
                self.state = self._solve(self.projection, self.tables, self.settings, fraud)
                assert self.state is not None
                p = self.state.p[: self.n_users]
                moved = np.flatnonzero(p > 0)
                before, after = np.zeros(len(moved)), p[moved]
                pushes, bound = 0, self.state.error_bound
            else:
                up = add_seed(self.state, node, target - float(self.state.seeds[node]))
                users = up.nodes < self.n_users
                moved, delta = up.nodes[users], up.delta[users]
                after = self.state.p[moved]
                before = after - delta
                pushes, bound = up.pushes, up.error_bound
            self.explainer.seeds[node] = target
            if label == "fraud":
                self.explainer.flagged_on[user_id] = pd.Timestamp.now(tz="UTC").strftime("%Y-%m-%d")
            own = moved == node
            own_after = float(self.state.p[node]) if self.state is not None else 0.0
            shift = exposure_shift(self.graph_map, before[~own], after[~own])
            # the event is kept until a scoring includes the flag: only the users whose graph risk
            # moves (a flag's push touches a large share of the graph, mostly where the map is flat),
            # their ids in one array rather than a Python string each
            felt = shift != 0
            event = FlagEvent(
                flag_id=flag_id, user_id=user_id, label=label, severity=severity,
                moved=self.state_users[moved[~own][felt]], shift=shift[felt],
                cleared_risk=float(self.risk_map(np.array([own_after]))[0]),
            )
            total = float(self.state.seeds.sum()) if self.state is not None else 0.0
        # residuals of many updates add up: past workflow's limit the state is solved again, in the
        # background (:meth:`resolve`, about a second on a million users), not in this request
        resolve = total > 0 and bound > workflow.REBUILD_AT * total
        return FlagEffect(event, users_moved=int(len(moved)), pushes=pushes, error_bound=bound / max(total, 1e-300), needs_resolve=resolve)

    def resolve(self) -> None:
        """Solve the exposure again from the current seeds, then carry over the flags applied
        while it solved (their seeds are pushed on the new state)."""
        with self.lock:
            if self.state is None:
                return
            state = self.state
            adjacency = workflow.folded_adjacency(state) if state.extra else state.adjacency
            seeds = state.seeds.copy()
        fresh = push_state(adjacency, seeds, alpha=state.alpha, tol=1e-10)
        with self.lock:
            if self.state is not state:
                return
            changed = np.flatnonzero(self.state.seeds != seeds)
            for node in changed.tolist():
                add_seed(fresh, node, float(self.state.seeds[node] - fresh.seeds[node]))
            self.state = fresh

    def replay_seed(self, user_id: str, label: str, severity: float) -> None:
        """Set a user's seed without touching served scores (flags accepted before this view
        was read and not yet in the store)."""
        node = self.node_of.get(user_id)
        if node is None or self.state is None:
            return
        target = severity if label == "fraud" else 0.0
        with self.lock:
            add_seed(self.state, node, target - float(self.state.seeds[node]))
            self.explainer.seeds[node] = target

    # -- reading ---------------------------------------------------------------------------------

    def rows_in(self, table: ScoreTable) -> np.ndarray:
        """Row of each projection user in ``table`` (-1 where it has no score)."""
        cached = self._rows
        if cached is not None and cached[0] == id(table):
            return cached[1]
        rows = np.array([table.index.get(str(u), -1) for u in self.projection.user_ids.tolist()], dtype=np.int64)
        self._rows = (id(table), rows)
        return rows

    def explain(self, user_id: str, *, top: int) -> Any:
        """The flagged accounts behind a user's exposure (:meth:`ExplainContext.explain`).

        Not under :attr:`lock`: an explanation takes tens of milliseconds to seconds when the
        machine is busy, and flags, which take the lock, queued behind them (the soak test saw
        flags wait seconds). It reads the seeds a flag sets only as a copy of the entries it
        needs, and a flag date by key; a flag applied meanwhile shows in the next explanation."""
        return self.explainer.explain(user_id, top=top)
