"""The spark engine of ``propagate`` and ``score`` (``--engine spark``): wiring, no math.

- ``propagate``: everything in Spark. The store's canonical tables are read from Parquet, projected
  (:mod:`graph.spark.projection`), the PageRank lifts of every layer solved in one loop
  (:mod:`graph.spark.propagation`), the exposure applied per partition with the same
  :func:`scoring.dimensions.graph_dimension` (``mapInPandas``), and the result written back.
- ``score``: the propagations in Spark, the rest on the driver. :class:`SparkWalks` stands in
  for :class:`scoring.features.Walks` inside the same :class:`scoring.pipeline.Scorer`: every
  PageRank lift, TrustRank, belief propagation and label spreading the scoring asks for is
  solved in Spark (all of them in one loop, set up before the scoring asks); the label-free
  features, the combination and the reasons are the single-machine code, unchanged.

Run as a script (``spark-submit .../spark_engine.py --tables DIR --out DIR``), it propagates a
directory of canonical Parquet tables on a cluster and writes the exposures as Parquet from the
executors; see ``docs/scaling.md``.

pyspark is imported only when one of these runs; without it they raise
:class:`~loaders.errors.ConfigError` with the command that installs it.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from graph.projection import Projection
from graph.store import EmbeddedStore, GraphStore
from loaders.errors import NotFoundError
from loaders.schema import TABLE_NAMES
from scoring.dimensions import graph_dimension
from scoring.features import Walks, crossfit_folds, crossfit_seeds, flag_vectors
from scoring.pipeline import ScoreResult
from socialrisk import workflow
from socialrisk.settings import Settings

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import DataFrame, SparkSession

    from graph.spark import SparkGraph, SparkPropagationResult

__all__ = ["open_spark", "table_paths", "export_tables", "propagation_frame", "propagate", "score", "SparkWalks", "main"]

Progress = Callable[[str], None]


def open_spark() -> "SparkSession":
    """The Spark session of the CLI: the active one, or a new one configured by the environment
    (``SOCIALRISK_SPARK_MASTER``, ``SOCIALRISK_SPARK_PARTITIONS``; default ``local[*]``)."""
    from graph.spark.session import spark_session

    return spark_session(app_name="socialrisk")


def export_tables(store: GraphStore, directory: str | Path) -> dict[str, str]:
    """Write the store's canonical tables as Parquet files (``<directory>/<table>.parquet``):
    the way from any store (Neo4j among them) to Spark."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, frame in store.read_tables():
        path = directory / f"{name}.parquet"
        frame.to_parquet(path, index=False)
        out[name] = str(path)
    return out


@contextlib.contextmanager
def table_paths(store: GraphStore) -> Iterator[dict[str, str]]:
    """The store's canonical tables as Parquet paths, for as long as the context lasts.

    The embedded store keeps them as Parquet already (the files its ``meta.json`` names); any
    other store is exported to a temporary directory first.
    """
    if isinstance(store, EmbeddedStore):
        meta = store.metadata()
        files = meta.get("files", {})
        paths = {}
        for name in TABLE_NAMES:
            path = store.workspace / files.get(name, f"graph/{name}.parquet")
            if path.exists():
                paths[name] = str(path)
        yield paths
        return
    with tempfile.TemporaryDirectory(prefix="socialrisk-spark-") as tmp:
        yield export_tables(store, tmp)


def _base_problem(graph: "SparkGraph", layer: str, alpha: float, tol: float) -> Any:
    """Global PageRank of a layer: the restart spread evenly over the users (``Walks``' baseline)."""
    from pyspark.sql import functions as F

    from graph.spark import pagerank_problem

    return pagerank_problem(f"ppr:{layer}", graph.users.select("node", F.lit(1.0).alias("s")), alpha=alpha, tol=tol)


def _exposure_per_partition(layers: tuple[str, ...]) -> Callable[[Iterator[pd.DataFrame]], Iterator[pd.DataFrame]]:
    """A ``mapInPandas`` function adding ``<layer>_exposure`` with :func:`graph_dimension`."""

    def apply(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for batch in batches:
            for layer in layers:
                batch[f"{layer}_exposure"] = graph_dimension(
                    batch[f"{layer}_lift_fraud"].to_numpy(dtype=np.float64), batch[f"{layer}_lift_benign"].to_numpy(dtype=np.float64)
                )
            yield batch

    return apply


def propagation_frame(
    spark: "SparkSession",
    paths: Mapping[str, str],
    settings: Settings,
    *,
    disputes: pd.DataFrame | None = None,
    checkpoint_interval: int = 1,
    progress: Progress | None = None,
) -> tuple["DataFrame", dict[str, Any]]:
    """What ``propagate`` computes, as a Spark DataFrame: per user the PageRank lift from the
    fraud and from the benign seeds on each layer, and the layer's exposure.

    Parameters
    ----------
    spark : SparkSession
    paths : mapping
        Canonical tables as Parquet (:func:`table_paths`).
    settings : Settings
    disputes : DataFrame, optional
        Disputed links in force.
    checkpoint_interval : int
    progress : callable, optional

    Returns
    -------
    DataFrame, dict
        ``user_id``, then ``<layer>_lift_fraud``, ``<layer>_lift_benign``, ``<layer>_exposure``
        per layer (``lnk``, ``rel``); and what was solved (users, identifiers, layers,
        iterations, seconds per iteration).

    Raises
    ------
    NotFoundError
        When no user is flagged fraud.
    """
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    from graph.spark import flag_seeds, pagerank_operator, pagerank_problem, project, read_tables, solve

    say = progress or (lambda _m: None)
    cfg = settings.scoring
    say("projecting the graph (spark)")
    tables = read_tables(spark, paths)
    graph = project(tables, settings.graph, disputes=disputes)
    if not graph.n_users:
        raise NotFoundError("the store holds no users yet; run 'socialrisk load DATA_DIR' first")
    seeds = flag_seeds(tables, graph.users).localCheckpoint(eager=True)
    counts = seeds.agg(F.sum((F.col("fraud") > 0).cast("int")).alias("f"), F.sum((F.col("benign") > 0).cast("int")).alias("b")).first()
    n_fraud = int(counts["f"] or 0) if counts is not None else 0
    n_benign = int(counts["b"] or 0) if counts is not None else 0
    if not n_fraud:
        raise NotFoundError("no user is flagged fraud: there is no risk to propagate. Load a flags table with label=fraud.")
    layers = tuple(graph.layers)
    operators = {f"ppr:{layer}": pagerank_operator(graph.layers[layer], alpha=cfg.alpha) for layer in layers}
    problems = {}
    for layer in layers:
        problems[f"base:{layer}"] = _base_problem(graph, layer, cfg.alpha, cfg.tol)
        problems[f"fraud:{layer}"] = pagerank_problem(f"ppr:{layer}", seeds.where(F.col("fraud") > 0).select("node", F.col("fraud").alias("s")), alpha=cfg.alpha, tol=cfg.tol)
        if n_benign:
            problems[f"benign:{layer}"] = pagerank_problem(f"ppr:{layer}", seeds.where(F.col("benign") > 0).select("node", F.col("benign").alias("s")), alpha=cfg.alpha, tol=cfg.tol)
    say("propagating (spark)")
    solved = solve(operators, problems, checkpoint_interval=checkpoint_interval, progress=lambda m: say(f"propagating (spark): {m}"))
    frame = graph.users.select("user_id", "node")
    out_cols = []
    for layer in layers:
        base = solved[f"base:{layer}"].scores.select("node", F.col("s").alias(f"_base_{layer}"))
        frame = frame.join(base, "node", "left")
        for side in ("fraud", "benign"):
            name = f"{layer}_lift_{side}"
            if f"{side}:{layer}" in solved:
                part = solved[f"{side}:{layer}"].scores.select("node", F.col("s").alias(f"_{name}"))
                frame = frame.join(part, "node", "left")
                lift = F.coalesce(F.col(f"_{name}"), F.lit(0.0)) / F.col(f"_base_{layer}")
            else:
                lift = F.lit(0.0)
            frame = frame.withColumn(name, lift.cast(T.DoubleType()))
            out_cols.append(name)
    frame = frame.select("user_id", *out_cols)
    schema = T.StructType(
        [T.StructField("user_id", T.StringType())]
        + [T.StructField(c, T.DoubleType()) for c in out_cols]
        + [T.StructField(f"{layer}_exposure", T.DoubleType()) for layer in layers]
    )
    frame = frame.mapInPandas(_exposure_per_partition(layers), schema)
    ordered = ["user_id"] + [c for layer in layers for c in (f"{layer}_lift_fraud", f"{layer}_lift_benign", f"{layer}_exposure")]
    # one loop per layer, side by side: the longest one is the propagation's wall time
    seconds = max((r.seconds for r in solved.values()), key=len) if solved else ()
    meta = {
        "engine": "spark",
        "users": graph.n_users,
        "shared_identifiers": graph.n_idents,
        "layers": list(layers),
        "walk_entries": {layer: int(graph.counts[f"{layer}_edges"]) for layer in layers},
        "iterations": {k: v.n_iter for k, v in solved.items()},
        "converged": {k: v.converged for k, v in solved.items()},
        "seconds_per_iteration": float(np.mean(seconds)) if seconds else None,
        "loop_iterations": len(seconds),
    }
    return frame.select(*ordered), meta


def propagate(
    store: GraphStore, settings: Settings, *, spark: "SparkSession | None" = None, progress: Progress | None = None
) -> workflow.PropagationSummary:
    """``workflow.propagate`` on Spark: the same ``propagation`` result, computed from the store's
    canonical Parquet tables by :func:`propagation_frame` and written back to the store."""
    from graph.spark.session import quiet_pandas_warning

    spark = spark or open_spark()
    quiet_pandas_warning()
    with table_paths(store) as paths:
        frame, meta = propagation_frame(spark, paths, settings, disputes=store.disputes(), progress=progress)
        table = frame.toArrow()
    result = table.to_pandas()
    meta = {**workflow._provenance(store, settings, meta)}  # noqa: SLF001 - the same provenance as the single engine
    store.write_result("propagation", result, meta=meta)
    return workflow.PropagationSummary(frame=result, meta=meta)


# -- scoring ----------------------------------------------------------------------------------


def _digest(kind: str, where: str, *matrices: np.ndarray) -> tuple[str, str, str]:
    h = hashlib.sha256()
    for m in matrices:
        a = np.ascontiguousarray(m, dtype=np.float64)
        h.update(str(a.shape).encode())
        h.update(a.tobytes())
    return kind, where, h.hexdigest()


class SparkWalks(Walks):
    """:class:`scoring.features.Walks` whose propagations run in Spark.

    The operators live in Spark (``graph``, from the same canonical tables); ``layers`` keeps
    each layer's size and global PageRank (the lift baseline) as ``Walks`` does, with an empty
    transition matrix: nothing reads it, since :meth:`lifts`, :meth:`solve_trust` and
    :meth:`solve_field` are the ones that solve (the loop over layers and methods is
    :meth:`scoring.features.Walks.propagation_features`, shared). ``prefetch`` seed matrices (:func:`scoring.features.crossfit_seeds`: the
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
        """:meth:`scoring.features.Walks.field_name` over the fields held in Spark."""
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
                    _base_problem(self.graph, where, self.alpha, self.tol) if kind == "base"
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
        """:meth:`scoring.features.Walks.solve_trust`, solved in Spark (TrustRank is PageRank
        from the benign seeds)."""
        return self._solved(_digest("ppr", layer, benign), ("ppr", layer, benign))

    def solve_field(self, field: str, method: str, fraud: np.ndarray, benign: np.ndarray) -> tuple[np.ndarray, bool]:
        """:meth:`scoring.features.Walks.solve_field`, solved in Spark."""
        kind = {"belief_propagation": "bp", "label_spreading": "ls"}[method]
        return self._solved(_digest(kind, field, fraud, benign), (kind, field, (fraud, benign)))


def score(
    store: GraphStore,
    settings: Settings,
    *,
    workspace: str | Path,
    model: str | None = None,
    spark: "SparkSession | None" = None,
    progress: Progress | None = None,
) -> ScoreResult:
    """``workflow.score`` with every propagation solved in Spark (:class:`SparkWalks`)."""
    from graph.spark import project, read_tables
    from graph.spark.session import quiet_pandas_warning

    spark = spark or open_spark()
    quiet_pandas_warning()
    say = progress or (lambda _m: None)
    cfg = settings.scoring
    with table_paths(store) as paths:
        say("projecting the graph (spark)")
        graph = project(read_tables(spark, paths), settings.graph, disputes=store.disputes())

        def walks(projection: Projection) -> Walks:
            flags = flag_vectors(store.read_table("flags"), projection)
            folds = crossfit_folds(flags, n_folds=cfg.crossfit_folds, seed=cfg.seed)
            return SparkWalks(
                projection, graph, alpha=cfg.alpha, tol=cfg.tol, propagation=cfg.propagation, prefetch=crossfit_seeds(flags, folds), progress=say
            )

        return workflow.score(store, settings, workspace=workspace, model=model, progress=progress, walks=walks)


# -- spark-submit -----------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Propagate a directory of canonical Parquet tables and write the exposures as Parquet.

    ``--tables DIR`` holds ``users``, ``links``, ``relations`` and ``flags`` as ``<name>.parquet``
    files or directories (an embedded workspace's ``graph/`` files, an export of any store by
    :func:`export_tables`, or the same tables written by another job); ``--out DIR`` receives
    one Parquet dataset written by the executors.
    """
    from socialrisk.settings import load_settings

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--tables", required=True, help="directory of canonical Parquet tables (any Hadoop file system URL)")
    parser.add_argument("--out", required=True, help="where to write the propagation result (Parquet)")
    parser.add_argument("--config", default=None, help="socialrisk TOML configuration")
    parser.add_argument("--checkpoint-interval", type=int, default=1)
    parser.add_argument("--checkpoint-dir", default=None, help="reliable checkpoints here (else local checkpoints)")
    args = parser.parse_args(argv)
    spark = open_spark()
    if args.checkpoint_dir:
        spark.sparkContext.setCheckpointDir(args.checkpoint_dir)
    settings = load_settings(args.config)
    base = args.tables.rstrip("/")
    fs_paths = {name: f"{base}/{name}.parquet" for name in TABLE_NAMES}
    existing = {}
    jvm = spark.sparkContext._jvm  # noqa: SLF001 - Hadoop's file system, to skip absent tables
    conf = spark.sparkContext._jsc.hadoopConfiguration()  # noqa: SLF001
    for name, path in fs_paths.items():
        p = jvm.org.apache.hadoop.fs.Path(path)
        if p.getFileSystem(conf).exists(p):
            existing[name] = path
    frame, meta = propagation_frame(spark, existing, settings, progress=lambda m: print(m, file=sys.stderr))
    frame.write.mode("overwrite").parquet(args.out)
    print({k: v for k, v in meta.items() if k != "converged"})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
