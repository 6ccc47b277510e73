"""The Spark engine of the scoring features: :class:`SparkWalks`, the
:class:`graph.walks.Walks` whose propagations run in Spark.

Every PageRank lift, TrustRank, belief propagation and label spreading the scoring asks for is
solved in Spark (all of them in one loop, set up before the scoring asks); the loop over layers
and methods is :func:`graph.walks.propagation_features`, shared with the single-machine engine.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from graph.projection import Projection
from graph.walks import Walks
from loaders.errors import NotFoundError

if TYPE_CHECKING:  # pragma: no cover
    from graph.spark import SparkGraph, SparkPropagationResult

__all__ = ["SparkWalks", "base_problem"]

Progress = Callable[[str], None]


def base_problem(graph: "SparkGraph", layer: str, alpha: float, tol: float) -> Any:
    """Global PageRank of a layer: the restart spread evenly over the users (``Walks``' baseline)."""
    from pyspark.sql import functions as F

    from graph.spark import pagerank_problem

    return pagerank_problem(f"ppr:{layer}", graph.users.select("node", F.lit(1.0).alias("s")), alpha=alpha, tol=tol)


def _digest(kind: str, where: str, *matrices: np.ndarray) -> tuple[str, str, str]:
    h = hashlib.sha256()
    for m in matrices:
        a = np.ascontiguousarray(m, dtype=np.float64)
        h.update(str(a.shape).encode())
        h.update(a.tobytes())
    return kind, where, h.hexdigest()


class SparkWalks(Walks):
    """:class:`graph.walks.Walks` whose propagations run in Spark.

    The operators live in Spark (``graph``, from the same canonical tables); ``layers`` keeps
    each layer's size and global PageRank (the lift baseline) as ``Walks`` does, with an empty
    transition matrix: nothing reads it, since :meth:`lifts`, :meth:`solve_trust` and
    :meth:`solve_field` are the ones that solve (the loop over layers and methods is
    :meth:`graph.walks.Walks.propagation_features`, shared). ``prefetch`` seed matrices (:func:`scoring.features.crossfit_seeds`: the
    ones the scoring will ask for, set up front) are solved in
    the loop that solves the baselines, every algorithm of ``propagation`` on every layer
    included; anything else asked is solved when asked.

    Parameters
    ----------
    projection : Projection
        The driver's projection (for the user order the scoring uses).
    graph : SparkGraph
    alpha, tol : float
        PageRank damping and tolerance (``ScoringConfig.alpha`` and ``tol``).
    propagation : tuple of str
        Optional propagations to set up (``ScoringConfig.propagation``).
    prefetch : tuple of ndarray, optional
        The fraud and benign seed matrices the scoring will ask for.
    checkpoint_interval : int
    progress : callable, optional
    """

    def __init__(
        self,
        projection: Projection,
        graph: "SparkGraph",
        *,
        alpha: float,
        tol: float,
        propagation: tuple[str, ...] = (),
        prefetch: tuple[np.ndarray, np.ndarray] | None = None,
        checkpoint_interval: int = 1,
        progress: Progress | None = None,
    ) -> None:
        # no Walks.__init__: its operators and solves are single-machine ones
        self.projection = projection
        self.alpha = alpha
        self.tol = tol
        self.graph = graph
        self.checkpoint_interval = checkpoint_interval
        self._say = progress or (lambda _m: None)
        self.last_seconds: tuple[float, ...] = ()
        users = graph.users.select("user_id", "node").toArrow()
        where = pd.Index(users.column("user_id").to_numpy(zero_copy_only=False).astype(str)).get_indexer(np.asarray(projection.user_ids).astype(str))
        if (where < 0).any():
            missing = np.asarray(projection.user_ids)[int(np.flatnonzero(where < 0)[0])]
            raise NotFoundError(f"user {missing!r} of the store's projection is not in the tables Spark read; the store changed during the run")
        self.nodes = users.column("node").to_numpy()[where].astype(np.int64)
        self._cache: dict[tuple[str, str, str], tuple[np.ndarray, bool]] = {}
        n = projection.n_users
        size = n + (graph.n_idents if graph.n_idents else 0)
        requests: dict[tuple[str, str, str], tuple[str, str, Any]] = {}
        for layer in graph.layers:
            requests[("base", layer, "")] = ("base", layer, None)
        if prefetch is not None:
            F_, B_ = prefetch
            for layer in graph.layers:
                for M in (F_, B_):
                    live = np.flatnonzero(M.sum(axis=0) > 0)
                    if len(live):
                        requests[_digest("ppr", layer, M[:, live])] = ("ppr", layer, M[:, live])
            for method in propagation:
                for key, request in self._method_requests(method, F_, B_):
                    requests[key] = request
        self._run(requests)
        empty = (sp.csr_matrix((0, 0)), np.zeros(0, dtype=bool))
        self.layers = {layer: (size if layer == "lnk" or graph.n_idents else n, empty, self._cache[("base", layer, "")][0][:, 0]) for layer in graph.layers}
        self.fields = {}

    # -- what is solved ---------------------------------------------------------------------

    def field_name(self, layer: str, method: str) -> str | None:
        """:meth:`graph.walks.Walks.field_name` over the fields held in Spark."""
        if layer == "rel" and method == "belief_propagation" and "rel_signed" in self.graph.fields:
            return "rel_signed"
        return layer if layer in self.graph.fields else None

    def _method_requests(self, method: str, F_: np.ndarray, B_: np.ndarray) -> list[tuple[tuple[str, str, str], tuple[str, str, Any]]]:
        out = []
        if method == "trustrank":
            live = np.flatnonzero((B_ > 0).any(axis=0))
            if len(live):
                for layer in ("lnk", "rel"):
                    if layer in self.graph.layers:
                        out.append((_digest("ppr", layer, B_[:, live]), ("ppr", layer, B_[:, live])))
            return out
        kind = {"belief_propagation": "bp", "label_spreading": "ls"}[method]
        live = np.flatnonzero((F_ > 0).any(axis=0) | (B_ > 0).any(axis=0))
        if not len(live):
            return out
        f, b = F_[:, live], B_[:, live]
        if kind == "bp":
            f, b = np.minimum(f, 1.0), np.minimum(b, 1.0)
        for layer in ("lnk", "rel"):
            where = self.field_name(layer, method)
            if where is not None:
                out.append((_digest(kind, where, f, b), (kind, where, (f, b))))
        return out

    def _seed_frame(self, M: np.ndarray, prefix: str = "s") -> "DataFrame":
        import pyarrow as pa

        from graph.spark.session import quiet_pandas_warning

        quiet_pandas_warning()
        rows = np.flatnonzero((M != 0).any(axis=1))
        data = {"node": pa.array(self.nodes[rows], type=pa.int64())}
        for j in range(M.shape[1]):
            data[f"{prefix}{j}"] = pa.array(M[rows, j], type=pa.float64())
        return self.graph.users.sparkSession.createDataFrame(pa.table(data))

    def _run(self, requests: Mapping[tuple[str, str, str], tuple[str, str, Any]]) -> None:
        """Solve every request not cached yet, in one Spark loop."""
        from graph.spark import (
            belief_operator,
            belief_problem,
            pagerank_operator,
            pagerank_problem,
            solve,
            spreading_operator,
            spreading_problem,
            to_numpy,
        )

        todo = {k: v for k, v in requests.items() if k not in self._cache}
        if not todo:
            return
        operators: dict[str, Any] = {}
        problems: dict[str, Any] = {}
        names: dict[str, tuple[str, str, str]] = {}
        for i, (key, (kind, where, seeds)) in enumerate(todo.items()):
            name = f"p{i}"
            names[name] = key
            if kind in ("base", "ppr"):
                op = f"ppr:{where}"
                if op not in operators:
                    operators[op] = pagerank_operator(self.graph.layers[where], alpha=self.alpha)
                problems[name] = (
                    base_problem(self.graph, where, self.alpha, self.tol) if kind == "base"
                    else pagerank_problem(op, self._seed_frame(seeds), alpha=self.alpha, tol=self.tol)
                )
            elif kind == "bp":
                op = f"bp:{where}"
                if op not in operators:
                    operators[op] = belief_operator(self.graph.fields[where])
                f, b = seeds
                problems[name] = belief_problem(op, fraud_seeds=self._seed_frame(f), benign_seeds=self._seed_frame(b), tol=self.tol)
            else:
                op = f"ls:{where}"
                if op not in operators:
                    operators[op] = spreading_operator(self.graph.fields[where])
                f, b = seeds
                problems[name] = spreading_problem(op, fraud_seeds=self._seed_frame(f), benign_seeds=self._seed_frame(b), tol=self.tol)
        self._say(f"propagating in spark: {len(problems)} problem(s) over {len(operators)} operator(s)")
        solved: dict[str, "SparkPropagationResult"] = solve(
            operators, problems, checkpoint_interval=self.checkpoint_interval, progress=lambda m: self._say(f"spark: {m}")
        )
        for name, result in solved.items():
            values = to_numpy(result, self.nodes)  # the seed columns, in order
            self._cache[names[name]] = (values, result.converged)
            self.last_seconds = result.seconds

    def _solved(self, key: tuple[str, str, str], request: tuple[str, str, Any]) -> tuple[np.ndarray, bool]:
        if key not in self._cache:
            self._run({key: request})
        return self._cache[key]

    # -- what the scoring asks --------------------------------------------------------------

    def lifts(self, name: str, seeds: np.ndarray, *, kind: str = "") -> np.ndarray:
        """PPR from each seed column divided by the global PageRank (1 = average exposure)."""
        n = self.projection.n_users
        out = np.zeros((n, seeds.shape[1]))
        live = np.flatnonzero(seeds.sum(axis=0) > 0)
        if len(live):
            M = seeds[:, live]
            scores, _ = self._solved(_digest("ppr", name, M), ("ppr", name, M))
            out[:, live] = scores / self.layers[name][2][:, None]
        return out

    def solve_trust(self, layer: str, benign: np.ndarray) -> tuple[np.ndarray, bool]:
        """:meth:`graph.walks.Walks.solve_trust`, solved in Spark (TrustRank is PageRank
        from the benign seeds)."""
        return self._solved(_digest("ppr", layer, benign), ("ppr", layer, benign))

    def solve_field(self, field: str, method: str, fraud: np.ndarray, benign: np.ndarray) -> tuple[np.ndarray, bool]:
        """:meth:`graph.walks.Walks.solve_field`, solved in Spark."""
        kind = {"belief_propagation": "bp", "label_spreading": "ls"}[method]
        return self._solved(_digest(kind, field, fraud, benign), (kind, field, (fraud, benign)))
