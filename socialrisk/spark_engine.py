"""The spark engine of ``propagate`` and ``score`` (``--engine spark``): wiring, no math.

- ``propagate``: everything in Spark. The store's canonical tables are read from Parquet, projected
  (:mod:`graph.spark.projection`), the PageRank lifts of every layer solved in one loop
  (:mod:`graph.spark.propagation`), the exposure applied per partition with the same
  :func:`scoring.dimensions.graph_dimension` (``mapInPandas``), and the result written back.
- ``score``: the propagations in Spark, the rest on the driver. :class:`graph.spark.walks.SparkWalks` stands in
  for :class:`graph.walks.Walks` inside the same :class:`scoring.pipeline.Scorer`: every
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
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from graph.projection import Projection
from graph.spark.tables import export_tables, table_paths
from graph.spark.walks import SparkWalks, base_problem
from graph.store import GraphStore
from graph.walks import Walks
from loaders.errors import NotFoundError
from loaders.schema import TABLE_NAMES
from scoring.dimensions import graph_dimension
from scoring.features import crossfit_folds, crossfit_seeds, flag_vectors
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
        problems[f"base:{layer}"] = base_problem(graph, layer, cfg.alpha, cfg.tol)
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
