"""Propagation on Apache Spark: the projection and the iterations of :mod:`graph.propagation` as
DataFrame operations, for graphs past one machine (``socialrisk propagate --engine spark``).

Needs the optional ``spark`` extra (``pip install 'socialrisk[spark]'``); importing this package
without pyspark raises :class:`~loaders.errors.ConfigError` saying so. Nothing else in
socialrisk imports it unless the spark engine is asked for.

- :mod:`graph.spark.session`: the session and its settings, shuffle metrics (plumbing);
- :mod:`graph.spark.projection`: canonical tables to edge lists (the rules of
  :mod:`graph.projection`);
- :mod:`graph.spark.propagation`: personalized PageRank, TrustRank, belief propagation and
  label spreading as iterated joins and aggregations, several problems per loop.
"""

from graph.spark.session import require_pyspark

require_pyspark()

from graph.spark.projection import SparkGraph, SparkTables, flag_seeds, project, read_tables, tables_from_frames  # noqa: E402
from graph.spark.propagation import (  # noqa: E402
    Operator,
    Problem,
    SparkPropagationResult,
    belief_operator,
    belief_problem,
    belief_propagation,
    label_spreading,
    pagerank_operator,
    pagerank_problem,
    personalized_pagerank,
    solve,
    spreading_operator,
    spreading_problem,
    to_numpy,
    trustrank,
)
from graph.spark.session import ShuffleVolume, shuffle_volume, spark_session  # noqa: E402

__all__ = [
    "SparkGraph",
    "SparkTables",
    "read_tables",
    "tables_from_frames",
    "project",
    "flag_seeds",
    "Operator",
    "Problem",
    "SparkPropagationResult",
    "solve",
    "pagerank_operator",
    "pagerank_problem",
    "belief_operator",
    "belief_problem",
    "spreading_operator",
    "spreading_problem",
    "personalized_pagerank",
    "trustrank",
    "belief_propagation",
    "label_spreading",
    "to_numpy",
    "spark_session",
    "shuffle_volume",
    "ShuffleVolume",
    "require_pyspark",
]
