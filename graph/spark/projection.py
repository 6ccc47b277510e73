"""The projection of :mod:`graph.projection`, as DataFrame operations over the canonical tables.

The same rules, expressed over DataFrames rather than shared code: past one machine the
projection itself has to be distributed, and :func:`graph.projection.project_encoded` is array
arithmetic over one process's memory. Each rule below names the line of
:func:`~graph.projection.project_encoded` or :func:`~graph.projection.walk_matrix` it mirrors;
``tests/spark/test_parity.py`` compares the two edge lists entry by entry.

Nodes get 64-bit ids: users ``2 * i`` and shared identifiers ``2 * j + 1``, with ``i`` and ``j``
from ``monotonically_increasing_id`` over the distinct names (checkpointed at once, because
those ids depend on partitioning and must not be recomputed differently).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from graph.config import GraphConfig
from loaders.errors import ParameterError

__all__ = ["SparkTables", "SparkGraph", "read_tables", "tables_from_frames", "project", "flag_seeds", "NS_PER_DAY"]

NS_PER_DAY = 86400e9
TABLES = ("users", "links", "relations", "flags")

#: Columns each canonical table contributes to the projection (times as int64 nanoseconds).
SCHEMAS: Mapping[str, T.StructType] = {
    "users": T.StructType([T.StructField("user_id", T.StringType())]),
    "links": T.StructType(
        [T.StructField(c, T.StringType()) for c in ("user_id", "kind", "ident")]
        + [T.StructField("last_seen", T.LongType()), T.StructField("weight", T.DoubleType())]
    ),
    "relations": T.StructType(
        [T.StructField(c, T.StringType()) for c in ("src", "dst", "kind")]
        + [T.StructField("weight", T.DoubleType()), T.StructField("ts", T.LongType())]
    ),
    "flags": T.StructType(
        [T.StructField("user_id", T.StringType()), T.StructField("label", T.StringType()), T.StructField("severity", T.DoubleType()),
         T.StructField("ts", T.LongType()), T.StructField("_order", T.LongType())]
    ),
}


@dataclass(frozen=True)
class SparkTables:
    """The canonical tables (``loaders.schema``), reduced to the columns the projection reads.

    Times are int64 nanoseconds since the epoch (null when missing); ``flags._order`` is the
    row's position in load order, which breaks ties between flags of the same time.
    """

    users: DataFrame
    links: DataFrame
    relations: DataFrame
    flags: DataFrame


@dataclass(frozen=True)
class SparkGraph:
    """The projected graph as edge lists.

    Attributes
    ----------
    users : DataFrame
        ``user_id``, ``node``: every user of any table (checkpointed).
    idents : DataFrame
        ``key`` (``"kind:pseudonym"``), ``node``, ``degree``: the shared identifiers kept
        (used by at least two link rows, at most ``hub_max_degree``), with the number of
        users linked to each.
    layers : dict of str to DataFrame
        The random-walk matrices of :func:`graph.projection.walk_matrix` as ``src``, ``dst``,
        ``w``: ``"lnk"`` (users and identifiers, hub-damped) and ``"rel"`` (relations), each
        present only when it has an entry (as ``graph.walks.Walks`` keeps them).
    fields : dict of str to DataFrame
        The weights the undirected propagations run on, ``src``, ``dst``, ``w``: the layers, and
        ``"rel_signed"`` (positive relations minus the negative ones both ways) when any
        relation is negative.
    negative : DataFrame
        ``src``, ``dst``, ``w``: transformed ``|weight|`` of negative relations.
    n_users, n_idents : int
    as_of : int or None
        Newest link or relation time (nanoseconds), the reference of time decay.
    """

    users: DataFrame
    idents: DataFrame
    layers: dict[str, DataFrame]
    fields: dict[str, DataFrame]
    negative: DataFrame
    n_users: int
    n_idents: int
    as_of: int | None
    counts: dict[str, int] = field(default_factory=dict)


def _nanoseconds(frame: DataFrame, column: str) -> Column:
    """A time column as int64 nanoseconds: as stored (Spark reads pandas' nanosecond times as
    integers with ``spark.sql.legacy.parquet.nanosAsLong``), or from a Spark timestamp."""
    if column not in frame.columns:
        return F.lit(None).cast(T.LongType())
    kind = frame.schema[column].dataType
    if isinstance(kind, (T.TimestampType, T.TimestampNTZType)):
        return (F.unix_micros(F.col(column).cast(T.TimestampType())) * F.lit(1000)).cast(T.LongType())
    if isinstance(kind, (T.LongType, T.IntegerType)):
        return F.col(column).cast(T.LongType())
    raise ParameterError(f"column {column!r} must hold times (a timestamp or int64 nanoseconds). Got {kind.simpleString()} instead.")


def _shape(name: str, frame: DataFrame) -> DataFrame:
    """The columns :data:`SCHEMAS` names, in order, typed; missing optional ones as null."""
    out: list[Column] = []
    for f in SCHEMAS[name].fields:
        if f.name == "_order":
            continue
        if f.name in ("last_seen", "ts"):
            out.append(_nanoseconds(frame, f.name).alias(f.name))
        elif f.name in frame.columns:
            out.append(F.col(f.name).cast(f.dataType).alias(f.name))
        else:
            out.append(F.lit(None).cast(f.dataType).alias(f.name))
    shaped = frame.select(*out)
    if name == "flags":
        # file order is load order: the id increases with it for a plain file read
        shaped = shaped.withColumn("_order", F.monotonically_increasing_id())
    return shaped


def read_tables(spark: SparkSession, paths: Mapping[str, str | Path | None]) -> SparkTables:
    """Read canonical tables from Parquet.

    Parameters
    ----------
    spark : SparkSession
    paths : mapping
        Table name (``users``, ``links``, ``relations``, ``flags``) to a Parquet file or
        directory (local, ``hdfs://``, ``s3a://``...); a table not named, or None, is empty.

    Returns
    -------
    SparkTables
    """
    unknown = sorted(set(paths) - set(TABLES))
    if unknown:
        raise ParameterError(f"Unknown table {unknown[0]!r}; expected any of {', '.join(TABLES)}.")
    frames = {}
    for name in TABLES:
        path = paths.get(name)
        frames[name] = spark.read.parquet(str(path)) if path is not None else None
    return tables_from_frames(spark, frames)


def tables_from_frames(spark: SparkSession, frames: Mapping[str, DataFrame | None]) -> SparkTables:
    """:class:`SparkTables` from DataFrames holding canonical columns (None: empty table)."""
    out = {}
    for name in TABLES:
        frame = frames.get(name)
        if frame is None:
            empty = SCHEMAS[name] if name != "flags" else T.StructType([f for f in SCHEMAS[name].fields])
            out[name] = spark.createDataFrame([], empty)
        else:
            required = {"users": ("user_id",), "links": ("user_id", "kind", "ident"), "relations": ("src", "dst", "kind"), "flags": ("user_id", "label")}[name]
            missing = [c for c in required if c not in frame.columns]
            if missing:
                raise ParameterError(f"The canonical {name} table has no {missing[0]!r} column; expected {', '.join(required)}.")
            out[name] = _shape(name, frame)
    return SparkTables(**out)


def _lookup(mapping: Mapping[str, float], default: float, column: str) -> Column:
    """``mapping.get(column, default)`` as a column expression."""
    if not mapping:
        return F.lit(float(default))
    pairs = [x for k, v in mapping.items() for x in (F.lit(str(k)), F.lit(float(v)))]
    return F.coalesce(F.create_map(*pairs)[F.col(column)], F.lit(float(default)))


def _decay(times: Column, as_of: int | None, half_life_days: float | None) -> Column:
    """``graph.projection._decay``: ``0.5 ** (max(age, 0) / half_life)``, age in days from ``as_of``; 1 when the time is missing."""
    if half_life_days is None or as_of is None:
        return F.lit(1.0)
    age = (F.lit(float(as_of)) - times.cast(T.DoubleType())) / F.lit(NS_PER_DAY)
    return F.when(times.isNull(), F.lit(1.0)).otherwise(F.pow(F.lit(0.5), F.greatest(age, F.lit(0.0)) / F.lit(float(half_life_days))))


def _transform(magnitude: Column, how: str) -> Column:
    if how == "log1p":
        return F.log1p(magnitude)
    if how == "unit":
        return F.lit(1.0)
    return magnitude


def _dispute_tables(spark: SparkSession, disputes: pd.DataFrame | None, config: GraphConfig) -> tuple[DataFrame | None, DataFrame | None]:
    """Products of dispute factors per link (``user_id``, ``key``) and per user pair (``a`` <= ``b``)."""
    if disputes is None or not len(disputes):
        return None, None
    weights = disputes["weight"] if "weight" in disputes else pd.Series(float("nan"), index=disputes.index)
    links, pairs = [], []
    for user, target, other, reason, weight in zip(disputes["user_id"], disputes["target"], disputes["other"], disputes["reason"], weights):
        f = float(weight) if pd.notna(weight) else config.dispute_weight(str(reason))
        if target == "identifier":
            links.append((str(user), str(other), f))
        else:
            a, b = sorted((str(user), str(other)))
            pairs.append((a, b, f))
    schema_l = T.StructType([T.StructField("user_id", T.StringType()), T.StructField("key", T.StringType()), T.StructField("f", T.DoubleType())])
    schema_p = T.StructType([T.StructField("a", T.StringType()), T.StructField("b", T.StringType()), T.StructField("f", T.DoubleType())])
    link_f = spark.createDataFrame(links, schema_l).groupBy("user_id", "key").agg(F.product("f").alias("factor")) if links else None
    pair_f = spark.createDataFrame(pairs, schema_p).groupBy("a", "b").agg(F.product("f").alias("factor")) if pairs else None
    return link_f, pair_f


def project(tables: SparkTables, config: GraphConfig | None = None, *, disputes: pd.DataFrame | None = None) -> SparkGraph:
    """Project the canonical tables under ``config`` into edge lists.

    Parameters
    ----------
    tables : SparkTables
    config : GraphConfig, optional
        Weights, directions, hub limit, hub damping (``hub_exponent``) and time decay.
    disputes : DataFrame, optional
        Disputed links in force (:func:`graph.disputes.active_disputes`), weighted as
        :func:`graph.projection.project_encoded` weights them.

    Returns
    -------
    SparkGraph
    """
    config = config or GraphConfig()
    spark = tables.users.sparkSession
    links, rel = tables.links, tables.relations

    # -- users: every id of any table (Tables.all_user_ids) ---------------------------------
    ids = (
        tables.users.select("user_id")
        .union(links.select("user_id"))
        .union(rel.select(F.col("src").alias("user_id")))
        .union(rel.select(F.col("dst").alias("user_id")))
        .union(tables.flags.select("user_id"))
        .where(F.col("user_id").isNotNull())
        .distinct()
    )
    users = ids.withColumn("node", F.monotonically_increasing_id() * F.lit(2)).localCheckpoint(eager=True)
    n_users = users.count()

    # -- as_of: the newest link or relation time (encode) ------------------------------------
    newest = links.agg(F.max("last_seen").alias("t")).union(rel.agg(F.max("ts").alias("t"))).agg(F.max("t")).first()
    as_of = None if newest is None or newest[0] is None else int(newest[0])
    link_f, pair_f = _dispute_tables(spark, disputes, config)

    # -- identifiers: (kind, ident) of >= 2 link rows (encode), <= hub_max_degree rows ---------
    keyed = links.withColumn("key", F.concat_ws(":", "kind", "ident"))
    rows = keyed.groupBy("key").agg(F.count(F.lit(1)).alias("rows"))
    kept = rows.where(F.col("rows") >= 2)
    if config.hub_max_degree is not None:
        kept = kept.where(F.col("rows") <= int(config.hub_max_degree))
    idents = kept.select("key").withColumn("node", F.monotonically_increasing_id() * F.lit(2) + F.lit(1)).localCheckpoint(eager=True)

    # incidence: kind weight x link weight x decay (x dispute factor), repeats summed
    w = _lookup(config.link_weights, config.default_link_weight, "kind") * F.coalesce(F.col("weight"), F.lit(1.0))
    w = w * _decay(F.col("last_seen"), as_of, config.half_life_days)
    inc = keyed.join(idents.withColumnRenamed("node", "i"), "key").join(users.withColumnRenamed("node", "u"), "user_id")
    if link_f is not None:
        inc = inc.join(F.broadcast(link_f), ["user_id", "key"], "left")
        w = w * F.coalesce(F.col("factor"), F.lit(1.0))
    incidence = inc.groupBy("u", "i").agg(F.sum(w).alias("w"))
    degree = incidence.groupBy("i").agg(F.count(F.lit(1)).alias("degree"))
    idents = idents.join(degree.withColumnRenamed("i", "node"), "node", "left").select("key", "node", F.coalesce("degree", F.lit(0)).alias("degree"))
    n_idents = idents.count()

    # walk_matrix, links layer: user -> identifier w * degree^-h, identifier -> user w
    # the exponent of the identifier's kind (the key's part before the first ':')
    exponent = _lookup(config.hub_exponents, config.hub_exponent, "kind")
    damp = F.pow(F.greatest(F.col("degree"), F.lit(1)).cast(T.DoubleType()), -exponent)
    with_degree = incidence.join(degree, "i")
    if config.hub_exponents:
        kinds = idents.select(F.col("node").alias("i"), F.substring_index(F.col("key"), ":", 1).alias("kind"))
        with_degree = with_degree.join(kinds, "i")
    lnk = with_degree.select(F.col("u").alias("src"), F.col("i").alias("dst"), (F.col("w") * damp).alias("w")).union(
        incidence.select(F.col("i").alias("src"), F.col("u").alias("dst"), F.col("w"))
    )

    # -- relations --------------------------------------------------------------------------
    ends = rel.join(users.select(F.col("user_id").alias("src"), F.col("node").alias("s")), "src").join(
        users.select(F.col("user_id").alias("dst"), F.col("node").alias("d")), "dst"
    )
    weight = F.coalesce(F.col("weight"), F.lit(1.0))
    values = _transform(F.abs(weight), config.weight_transform) * _decay(F.col("ts"), as_of, config.half_life_days)
    if pair_f is not None:
        ends = ends.join(
            F.broadcast(pair_f), (F.least("src", "dst") == F.col("a")) & (F.greatest("src", "dst") == F.col("b")), "left"
        )
        values = values * F.coalesce(F.col("factor"), F.lit(1.0))
    named = sorted(config.relation_kinds)
    mult = _lookup({k: v.weight for k, v in config.relation_kinds.items()}, config.default_relation.weight, "kind")

    def flows(*directions: str) -> Column:
        """Whether the kind's direction (config.relation(kind).direction) is one of ``directions``."""
        listed = [k for k in named if config.relation(k).direction in directions]
        out = F.col("kind").isin(listed) if listed else F.lit(False)
        if config.default_relation.direction in directions:
            out = (out | ~F.col("kind").isin(named)) if named else F.lit(True)
        return out

    not_self = F.col("s") != F.col("d")
    pos = not_self & (weight > 0)
    scored = ends.select(
        "s", "d", values.alias("v"), (values * mult).alias("walk"), pos.alias("pos"), (not_self & (weight < 0)).alias("neg"),
        flows("forward", "both").alias("fwd"), flows("backward", "both").alias("bwd"),
    )
    walk_parts = scored.where(F.col("pos") & F.col("fwd")).select(F.col("s").alias("src"), F.col("d").alias("dst"), F.col("walk").alias("w")).union(
        scored.where(F.col("pos") & F.col("bwd")).select(F.col("d").alias("src"), F.col("s").alias("dst"), F.col("walk").alias("w"))
    )
    # repeats summed; entries that sum to 0 dropped (walk.eliminate_zeros())
    walk = walk_parts.groupBy("src", "dst").agg(F.sum("w").alias("w")).where(F.col("w") != 0)
    negative = scored.where(F.col("neg")).groupBy(F.col("s").alias("src"), F.col("d").alias("dst")).agg(F.sum("v").alias("w"))

    # each is read several times (out-degrees, flags, symmetrisation): computed once
    lnk, walk, negative = (f.persist(StorageLevel.MEMORY_AND_DISK) for f in (lnk, walk, negative))
    layers: dict[str, DataFrame] = {}
    counts = {"lnk_edges": 0, "rel_edges": 0, "negative": 0}
    if n_idents:
        layers["lnk"] = lnk
        counts["lnk_edges"] = 2 * incidence.count()
    counts["rel_edges"] = walk.count()
    if counts["rel_edges"]:
        layers["rel"] = walk
    fields = dict(layers)
    counts["negative"] = negative.count()
    if counts["negative"]:
        positive = layers.get("rel", walk.limit(0))
        fields["rel_signed"] = positive.union(negative.select("src", "dst", (-F.col("w")).alias("w"))).union(
            negative.select(F.col("dst").alias("src"), F.col("src").alias("dst"), (-F.col("w")).alias("w"))
        )
    return SparkGraph(
        users=users, idents=idents, layers=layers, fields=fields, negative=negative, n_users=int(n_users), n_idents=int(n_idents),
        as_of=as_of, counts=counts,
    )


def flag_seeds(tables: SparkTables, users: DataFrame) -> DataFrame:
    """Each user's latest flag as seed weights: ``node``, ``fraud``, ``benign``.

    The rule of ``scoring.features.flag_vectors``: the latest flag by ``ts`` (missing first),
    then load order, wins; its ``severity`` (1 when missing, at least 1e-6) is the weight of a
    ``fraud`` seed, or of a ``benign`` seed for any other label. Users never flagged have no row.
    """
    flags = tables.flags.where(F.col("user_id").isNotNull())
    order = F.struct(F.col("ts").isNotNull(), F.coalesce(F.col("ts"), F.lit(0)), F.col("_order"))
    latest = flags.groupBy("user_id").agg(F.max_by(F.struct("label", "severity"), order).alias("flag"))
    weight = F.greatest(F.coalesce(F.col("flag.severity"), F.lit(1.0)), F.lit(1e-6))
    is_fraud = F.col("flag.label") == F.lit("fraud")
    return latest.join(users, "user_id").select(
        "node", F.when(is_fraud, weight).otherwise(F.lit(0.0)).alias("fraud"), F.when(~is_fraud, weight).otherwise(F.lit(0.0)).alias("benign")
    )
