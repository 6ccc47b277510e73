"""Propagation as iterated DataFrame operations: the algorithms of :mod:`graph.propagation`.

Every algorithm here is the single-machine one's iteration, step for step: the same start,
the same update, the same stopping rule (the L1 change of every seed column below ``tol``,
the largest over columns), so that both stop at the same iteration and agree to rounding.

One iteration of ``x_{k+1} = clip(M x_k + b + e * d(x_k))`` is one Spark job:

1. the iterate (``node``, one column per seed vector) joins the cached edges (``src``,
   ``dst``, ``coef``) on ``node = src``, without a shuffle: both are hash-partitioned by node
   into ``spark.sql.shuffle.partitions`` parts;
2. the messages ``coef * x`` are summed per ``dst`` (partial sums before the shuffle, so a node
   with a million in-edges sends one row per partition), together with the constant term ``b``
   (restart, prior) and the previous iterate, which gives the L1 change of each column as an
   observed metric of the same job, with the dangling mass ``d`` that PageRank's next step
   needs;
3. the result is checkpointed (``localCheckpoint``, or a reliable checkpoint to
   ``SparkContext.setCheckpointDir``) every ``checkpoint_interval`` iterations, which cuts the
   lineage: without it the plan of iteration ``k`` holds ``k`` joins.

The iterate is sparse: a node without mass in any column has no row. Several problems
(seed sets, algorithms, graphs) run in one loop as separate column groups, each with its own
stopping rule: a group that has converged is set aside and leaves the loop, so each gets the
iteration count it would get alone, and ``k`` problems cost one loop, not ``k``.
"""

from __future__ import annotations

import itertools
import time
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame, Observation
from pyspark.sql import functions as F
from pyspark.sql import types as T

from graph.propagation.belief import NORMALIZATIONS
from loaders.errors import ParameterError

__all__ = [
    "Operator",
    "Problem",
    "SparkPropagationResult",
    "solve",
    "solve_loop",
    "pagerank_operator",
    "pagerank_problem",
    "belief_operator",
    "belief_problem",
    "spreading_operator",
    "spreading_problem",
    "personalized_pagerank",
    "belief_propagation",
    "label_spreading",
    "trustrank",
    "to_numpy",
]

#: Operators of one loop are told apart by the low bits of the node id.
_TAG_BITS = 3
_counter = itertools.count()


@dataclass(frozen=True)
class Operator:
    """A sparse linear map ``y_dst += coef * x_src`` over one node set.

    Attributes
    ----------
    edges : DataFrame
        ``src``, ``dst`` (long), ``coef`` (double), ``dst_dangling`` (boolean: the target has no
        out-weight, for PageRank's dangling mass; false for the other algorithms).
    out_degree : DataFrame or None
        ``node``, ``out``: weighted out-degree, to flag dangling seed nodes (PageRank only).
    """

    edges: DataFrame
    out_degree: DataFrame | None = None


@dataclass(frozen=True)
class Problem:
    """One fixed-point problem over an :class:`Operator`: ``x = clip(M x + b + e * d(x))``.

    Attributes
    ----------
    operator : str
        Key of the operator in the mapping given to :func:`solve`.
    columns : tuple of str
        Names of the value columns (one per seed vector).
    start, const : DataFrame
        ``node`` and the value columns: the first iterate and ``b``.
    extra : DataFrame or None
        ``node`` and the value columns: ``e``, multiplied by each column's dangling mass
        ``d(x)`` (the mass of the iterate on dangling nodes): where PageRank's dangling walkers
        restart.
    clip : tuple of float or None
        Bounds applied after each step.
    tol : float
        Stop when the L1 change of every column is below ``tol``.
    max_iter : int
    finish : callable or None
        Applied to the scores frame once solved (e.g. belief propagation's ``0.5 + p``).
    default : float
        The score of a node without a row in the result.
    """

    operator: str
    columns: tuple[str, ...]
    start: DataFrame
    const: DataFrame
    extra: DataFrame | None = None
    clip: tuple[float, float] | None = None
    tol: float = 1e-8
    max_iter: int = 1000
    finish: Callable[[DataFrame], DataFrame] | None = None
    default: float = 0.0


@dataclass(frozen=True)
class SparkPropagationResult:
    """Scores and convergence report of a propagation on Spark.

    Attributes
    ----------
    scores : DataFrame
        ``node`` and one column per seed vector; nodes without a row score :attr:`default`.
    n_iter : int
    converged : bool
    residual : float
        The last L1 change between iterations, largest over columns.
    default : float
    seconds : tuple of float
        Wall time of each iteration of the loop that solved it (shared with the problems
        solved in the same loop).
    """

    scores: DataFrame
    n_iter: int
    converged: bool
    residual: float
    default: float = 0.0
    seconds: tuple[float, ...] = field(default_factory=tuple)


def _check_iteration(name: str, tol: float, max_iter: int) -> None:
    if not tol > 0:
        raise ParameterError(f"The 'tol' parameter of {name} must be > 0. Got {tol!r} instead.")
    if int(max_iter) < 1:
        raise ParameterError(f"The 'max_iter' parameter of {name} must be >= 1. Got {max_iter!r} instead.")


def _value_columns(frame: DataFrame) -> tuple[str, ...]:
    return tuple(c for c in frame.columns if c != "node")


# -- operators --------------------------------------------------------------------------------


def pagerank_operator(edges: DataFrame, *, alpha: float) -> Operator:
    """``alpha P^T`` of the row-normalised adjacency ``edges`` (``src``, ``dst``, ``w``).

    As :func:`graph.propagation.pagerank.transition_transpose`: ``coef = w * (1 / out(src))
    * alpha``, 0 out of nodes whose out-weight is not positive (dangling).
    """
    if not 0.0 < alpha < 1.0:
        raise ParameterError(f"The 'alpha' parameter of personalized_pagerank must be in (0, 1). Got {alpha!r} instead.")
    out = edges.groupBy(F.col("src").alias("node")).agg(F.sum("w").alias("out"))
    inv = F.when(F.col("out") > 0, F.lit(1.0) / F.col("out")).otherwise(F.lit(0.0))
    coef = edges.join(out.withColumnRenamed("node", "src"), "src").select("src", "dst", ((F.col("w") * inv) * F.lit(alpha)).alias("coef"))
    flagged = coef.join(out.select(F.col("node").alias("dst"), (F.col("out") > 0).alias("_live")), "dst", "left").select(
        "src", "dst", "coef", (~F.coalesce(F.col("_live"), F.lit(False))).alias("dst_dangling")
    )
    return Operator(edges=flagged, out_degree=out)


def _symmetrised(field: DataFrame) -> DataFrame:
    """``(A + A^T) / 2`` without the diagonal and without zeros, as ``a``, ``b``, ``w``."""
    halves = field.select(F.col("src").alias("a"), F.col("dst").alias("b"), (F.col("w") * F.lit(0.5)).alias("w")).union(
        field.select(F.col("dst").alias("a"), F.col("src").alias("b"), (F.col("w") * F.lit(0.5)).alias("w"))
    )
    summed = halves.groupBy("a", "b").agg(F.sum("w").alias("w"))
    return summed.where((F.col("a") != F.col("b")) & (F.col("w") != 0))


def belief_operator(field: DataFrame, *, coupling: float = 0.8, normalization: str = "degree") -> Operator:
    """``coupling * M`` of :func:`graph.propagation.belief._coupling_matrix` over ``field``
    (``src``, ``dst``, ``w``, signed)."""
    name = "belief_propagation"
    if not 0.0 < coupling < 1.0:
        raise ParameterError(f"The 'coupling' parameter of {name} must be in (0, 1). Got {coupling!r} instead.")
    if normalization not in NORMALIZATIONS:
        raise ParameterError(
            f"The 'normalization' parameter of {name} must be one of {', '.join(NORMALIZATIONS)}. Got {normalization!r} instead."
        )
    W = _symmetrised(field)
    degree = W.groupBy("a").agg(F.sum(F.abs("w")).alias("d"))
    if normalization == "max_degree":
        top = degree.agg(F.max("d")).first()
        scale = 1.0 / float(top[0]) if top is not None and top[0] else None
        coef = W.select("a", "b", ((F.col("w") * F.lit(scale)) * F.lit(coupling)).alias("coef")) if scale else W.select("a", "b", (F.col("w") * F.lit(coupling)).alias("coef"))
    else:
        coef = W.join(degree, "a").select("a", "b", ((F.col("w") * (F.lit(1.0) / F.col("d"))) * F.lit(coupling)).alias("coef"))
    # y_a += M_ab x_b: the message goes from b to a
    return Operator(edges=coef.select(F.col("b").alias("src"), F.col("a").alias("dst"), "coef", F.lit(False).alias("dst_dangling")))


def spreading_operator(field: DataFrame, *, alpha: float = 0.9) -> Operator:
    """``alpha D^-1/2 W D^-1/2`` of :func:`graph.propagation.spreading._normalized_adjacency`."""
    if not 0.0 < alpha < 1.0:
        raise ParameterError(f"The 'alpha' parameter of label_spreading must be in (0, 1). Got {alpha!r} instead.")
    W = _symmetrised(field)
    degree = W.groupBy("a").agg(F.sum("w").alias("d"))
    inv_sqrt = degree.select("a", F.when(F.col("d") > 0, F.lit(1.0) / F.sqrt("d")).otherwise(F.lit(0.0)).alias("s"))
    coef = (
        W.join(inv_sqrt, "a")
        .join(inv_sqrt.select(F.col("a").alias("b"), F.col("s").alias("t")), "b")
        .select("a", "b", (((F.col("s") * F.col("w")) * F.col("t")) * F.lit(alpha)).alias("coef"))
    )
    return Operator(edges=coef.select(F.col("b").alias("src"), F.col("a").alias("dst"), "coef", F.lit(False).alias("dst_dangling")))


# -- problems ---------------------------------------------------------------------------------


def _column_sums(frame: DataFrame, columns: Sequence[str]) -> list[float]:
    row = frame.agg(*[F.sum(c).alias(c) for c in columns], *[F.min(c).alias(f"_min_{c}") for c in columns]).first()
    sums = [float(row[c]) if row is not None and row[c] is not None else 0.0 for c in columns]
    lows = [float(row[f"_min_{c}"]) if row is not None and row[f"_min_{c}"] is not None else 0.0 for c in columns]
    if any(not np.isfinite(v) for v in sums) or any(v < 0 for v in lows):
        raise ParameterError("The 'seeds' of personalized_pagerank must be finite and >= 0.")
    return sums


def pagerank_problem(operator: str, seeds: DataFrame, *, alpha: float, tol: float = 1e-10, max_iter: int = 500) -> Problem:
    """Personalized PageRank from ``seeds`` (``node`` and one column of weights per seed vector).

    Each column is normalised to sum 1 (:func:`graph.propagation.pagerank.personalized_pagerank`):
    ``x = alpha P^T x + (1 - alpha) s + alpha s d(x)``, starting from ``s``.
    """
    _check_iteration("personalized_pagerank", tol, max_iter)
    if not 0.0 < alpha < 1.0:
        raise ParameterError(f"The 'alpha' parameter of personalized_pagerank must be in (0, 1). Got {alpha!r} instead.")
    columns = _value_columns(seeds)
    mass = _column_sums(seeds, columns)
    for j, m in enumerate(mass):
        if m <= 0:
            raise ParameterError(
                f"Seed vector {j} of personalized_pagerank has no seed (all weights are 0): there is nothing to propagate. Flag at least one user."
            )
    S = seeds.select("node", *[(F.coalesce(F.col(c), F.lit(0.0)) / F.lit(m)).alias(c) for c, m in zip(columns, mass)])
    return Problem(
        operator=operator, columns=columns, start=S,
        const=S.select("node", *[(F.lit(1.0 - alpha) * F.col(c)).alias(c) for c in columns]),
        extra=S.select("node", *[(F.lit(alpha) * F.col(c)).alias(c) for c in columns]),
        tol=tol, max_iter=int(max_iter),
    )


def _seed_union(fraud: DataFrame | None, benign: DataFrame | None, name: str) -> tuple[DataFrame, tuple[str, ...]]:
    """One frame with ``f_<c>`` and ``b_<c>`` per seed column (0 where a side has no row)."""
    given = [s for s in (fraud, benign) if s is not None]
    if not given:
        raise ParameterError(f"{name} got no fraud_seeds and no benign_seeds: there is no evidence to propagate. Flag at least one user.")
    columns = _value_columns(given[0])
    for s in given:
        if _value_columns(s) != columns:
            raise ParameterError(f"The 'fraud_seeds' and 'benign_seeds' of {name} must have the same columns. Got {_value_columns(s)} and {columns} instead.")
    parts = []
    for side, s in (("f", fraud), ("b", benign)):
        if s is None:
            continue
        other = "b" if side == "f" else "f"
        parts.append(s.select("node", *[F.col(c).cast(T.DoubleType()).alias(f"{side}_{c}") for c in columns], *[F.lit(0.0).alias(f"{other}_{c}") for c in columns]))
    both = parts[0] if len(parts) == 1 else parts[0].unionByName(parts[1])
    both = both.groupBy("node").agg(*[F.sum(f"{s}_{c}").alias(f"{s}_{c}") for s in ("f", "b") for c in columns])
    return both, columns


def _check_seed_bounds(both: DataFrame, columns: Sequence[str], name: str, upper: float | None) -> None:
    """Seeds finite in [0, upper], and every column with some evidence (``_require_evidence``)."""
    aggs = []
    for c in columns:
        aggs += [F.min(F.least(f"f_{c}", f"b_{c}")).alias(f"lo_{c}"), F.max(F.greatest(f"f_{c}", f"b_{c}")).alias(f"hi_{c}")]
    row = both.agg(*aggs).first()
    for j, c in enumerate(columns):
        lo = row[f"lo_{c}"] if row is not None else None
        hi = row[f"hi_{c}"] if row is not None else None
        if lo is not None and (not np.isfinite(lo) or lo < 0 or not np.isfinite(hi) or (upper is not None and hi > upper)):
            expected = f"in [0, {upper:g}]" if upper is not None else ">= 0"
            raise ParameterError(f"The seeds of {name} must be finite weights {expected}.")
        if hi is None or hi <= 0:
            where = f"Seed column {j} of {name} has" if len(columns) > 1 else f"{name} got"
            raise ParameterError(f"{where} no fraud and no benign seed (all weights are 0): there is no evidence to propagate. Flag at least one user.")


def belief_problem(
    operator: str, *, fraud_seeds: DataFrame | None = None, benign_seeds: DataFrame | None = None, theta: float = 0.4,
    tol: float = 1e-8, max_iter: int = 1000,
) -> Problem:
    """Linearised belief propagation (:func:`graph.propagation.belief.belief_propagation`):
    ``p = clip(q + c M p, -1/2, 1/2)`` from ``p = q = theta (f - b)``; scores ``0.5 + p``."""
    name = "belief_propagation"
    if not 0.0 < theta <= 0.5:
        raise ParameterError(f"The 'theta' parameter of {name} must be in (0, 0.5]. Got {theta!r} instead.")
    _check_iteration(name, tol, max_iter)
    both, columns = _seed_union(fraud_seeds, benign_seeds, name)
    _check_seed_bounds(both, columns, name, 1.0)
    q = both.select("node", *[(F.lit(theta) * (F.col(f"f_{c}") - F.col(f"b_{c}"))).alias(c) for c in columns])

    def finish(scores: DataFrame) -> DataFrame:
        return scores.select("node", *[(F.lit(0.5) + F.col(c)).alias(c) for c in columns])

    return Problem(operator=operator, columns=columns, start=q, const=q, clip=(-0.5, 0.5), tol=tol, max_iter=int(max_iter), finish=finish, default=0.5)


def spreading_problem(
    operator: str, *, fraud_seeds: DataFrame | None = None, benign_seeds: DataFrame | None = None, alpha: float = 0.9,
    prior: float = 0.5, tol: float = 1e-8, max_iter: int = 1000,
) -> Problem:
    """Label spreading (:func:`graph.propagation.spreading.label_spreading`): ``F = alpha S F +
    (1 - alpha) Y`` from ``F = Y`` over the fraud and benign columns; scores ``F_f / (F_f + F_b)``.
    ``alpha`` must be the one the operator was made with (:func:`spreading_operator`)."""
    name = "label_spreading"
    if not 0.0 <= prior <= 1.0:
        raise ParameterError(f"The 'prior' parameter of {name} must be in [0, 1]. Got {prior!r} instead.")
    _check_iteration(name, tol, max_iter)
    both, columns = _seed_union(fraud_seeds, benign_seeds, name)
    _check_seed_bounds(both, columns, name, None)
    Y = both.select("node", *[F.col(f"{s}_{c}").alias(f"{s}_{c}") for s in ("f", "b") for c in columns])
    value_columns = tuple(f"{s}_{c}" for s in ("f", "b") for c in columns)

    def finish(scores: DataFrame) -> DataFrame:
        out = []
        for c in columns:
            f, b = F.coalesce(F.col(f"f_{c}"), F.lit(0.0)), F.coalesce(F.col(f"b_{c}"), F.lit(0.0))
            out.append(F.when(f + b > 0, f / (f + b)).otherwise(F.lit(float(prior))).alias(c))
        return scores.select("node", *out)

    return Problem(
        operator=operator, columns=value_columns, start=Y,
        const=Y.select("node", *[(F.lit(1.0 - alpha) * F.col(c)).alias(c) for c in value_columns]),
        tol=tol, max_iter=int(max_iter), finish=finish, default=float(prior),
    )


# -- the loop ---------------------------------------------------------------------------------


def _tagged(column: str, tag: int) -> Column:
    return F.shiftleft(F.col(column), _TAG_BITS) + F.lit(tag)


def _release(frame: DataFrame | None) -> None:
    """Free the blocks of a checkpointed (or persisted) iterate that nothing reads any more.

    A local checkpoint's blocks are otherwise freed only when the driver's JVM garbage
    collects the RDD; this reaches it through the JVM (classic PySpark only)."""
    if frame is None:
        return
    frame.unpersist(blocking=False)
    try:
        plan = frame._jdf.queryExecution().analyzed()  # noqa: SLF001 - no public handle on a checkpoint's RDD
        if plan.getClass().getSimpleName() == "LogicalRDD":
            plan.rdd().unpersist(False)
    except Exception:  # noqa: BLE001 - Spark Connect has no JVM handle: the cleaner frees it later
        pass


def _materialise(frame: DataFrame, *, checkpoint: bool, reliable: bool) -> DataFrame:
    """Compute ``frame`` once (running its observations) and keep it: checkpointed, which cuts
    its lineage, or persisted."""
    if checkpoint:
        return frame.checkpoint(eager=True) if reliable else frame.localCheckpoint(eager=True)
    kept = frame.persist(StorageLevel.MEMORY_AND_DISK)
    kept.count()
    return kept


def solve(
    operators: Mapping[str, Operator],
    problems: Mapping[str, Problem],
    *,
    checkpoint_interval: int = 1,
    reliable: bool = False,
    progress: Callable[[str], None] | None = None,
    concurrent: bool = True,
) -> dict[str, SparkPropagationResult]:
    """Solve several fixed-point problems over several operators.

    The problems over one operator share one loop (their columns ride on the same messages);
    each operator's loop runs in its own driver thread, so Spark schedules their jobs side by
    side (``concurrent=False`` runs them one after the other).

    Parameters
    ----------
    operators : mapping of str to Operator
    problems : mapping of str to Problem
        Each over one of ``operators``; each stops by its own rule.
    checkpoint_interval, reliable, progress
        See :func:`solve_loop`.
    concurrent : bool

    Returns
    -------
    dict of str to SparkPropagationResult
    """
    for name, p in problems.items():
        if p.operator not in operators:
            raise ParameterError(f"Problem {name!r} runs over operator {p.operator!r}, which is not given; expected one of {', '.join(operators)}.")
    groups: dict[str, dict[str, Problem]] = {}
    for name, p in problems.items():
        groups.setdefault(p.operator, {})[name] = p

    def run(op: str) -> dict[str, SparkPropagationResult]:
        say = (lambda m: progress(f"{op}: {m}")) if progress is not None else None
        return solve_loop({op: operators[op]}, groups[op], checkpoint_interval=checkpoint_interval, reliable=reliable, progress=say)

    out: dict[str, SparkPropagationResult] = {}
    if concurrent and len(groups) > 1:
        with ThreadPoolExecutor(max_workers=len(groups), thread_name_prefix="socialrisk-spark") as pool:
            for part in pool.map(run, list(groups)):
                out.update(part)
    else:
        for op in groups:
            out.update(run(op))
    return {name: out[name] for name in problems}


def solve_loop(
    operators: Mapping[str, Operator],
    problems: Mapping[str, Problem],
    *,
    checkpoint_interval: int = 1,
    reliable: bool = False,
    progress: Callable[[str], None] | None = None,
) -> dict[str, SparkPropagationResult]:
    """Solve several fixed-point problems in one loop (one Spark job per iteration).

    Problems over different operators may share the loop too (node ids carry the operator in
    their low 3 bits), but then every message carries every column: :func:`solve` gives each
    operator its own loop instead.

    Parameters
    ----------
    operators : mapping of str to Operator
        At most 8.
    problems : mapping of str to Problem
        Each over one of ``operators``; each stops by its own rule.
    checkpoint_interval : int
        Checkpoint the iterate every this many iterations (the others persist it); 1 cuts the
        lineage at every step, which costs nothing extra here because each iterate is stored
        once either way.
    reliable : bool
        Reliable checkpoints (to the directory set by ``SparkContext.setCheckpointDir``, which
        survive the loss of an executor) instead of local ones.
    progress : callable, optional
        Called with a line after each iteration.

    Returns
    -------
    dict of str to SparkPropagationResult
    """
    if not problems:
        return {}
    if len(operators) > 1 << _TAG_BITS:
        raise ParameterError(f"solve runs at most {1 << _TAG_BITS} operators in one loop. Got {len(operators)} instead.")
    if int(checkpoint_interval) < 1:
        raise ParameterError(f"The 'checkpoint_interval' parameter of solve must be >= 1. Got {checkpoint_interval!r} instead.")
    for name, p in problems.items():
        if p.operator not in operators:
            raise ParameterError(f"Problem {name!r} runs over operator {p.operator!r}, which is not given; expected one of {', '.join(operators)}.")
    first = next(iter(operators.values())).edges
    spark = first.sparkSession
    parts = int(spark.conf.get("spark.sql.shuffle.partitions") or "200")
    tags = {name: i for i, name in enumerate(operators)}
    say = progress or (lambda _m: None)

    # every operator's edges in one table, node ids tagged, hash-partitioned by source like
    # the iterate (so the join does not move the edges)
    edges = None
    for name, op in operators.items():
        t = tags[name]
        part = op.edges.select(_tagged("src", t).alias("src"), _tagged("dst", t).alias("dst"), "coef", "dst_dangling")
        edges = part if edges is None else edges.union(part)
    assert edges is not None
    # checkpointed rather than cached: each step's plan then holds a leaf, not the projection's
    # whole plan (which the SQL UI would keep a copy of per step)
    edges = _materialise(edges.repartition(parts, "src"), checkpoint=True, reliable=reliable)

    names = list(problems)
    cols = {n: [f"c{i}_{j}" for j in range(len(problems[n].columns))] for i, n in enumerate(names)}
    # each operator's out-degrees, computed once: every problem's constant, extra and start
    # frames join them, and left as a plan each join computed them again from the projection
    # (at a million users, minutes of setup for each)
    degrees = {name: op.out_degree.localCheckpoint(eager=True) for name, op in operators.items() if op.out_degree is not None}

    def flagged(frame: DataFrame, problem: Problem, renamed: list[str]) -> DataFrame:
        """A problem's per-node frame with tagged ids, internal column names and the dangling flag."""
        t = tags[problem.operator]
        out_degree = degrees.get(problem.operator)
        f = frame.select("node", *[F.col(c).cast(T.DoubleType()).alias(r) for c, r in zip(problem.columns, renamed)])
        if out_degree is not None:
            f = f.join(out_degree, "node", "left").withColumn("flag", ~F.coalesce(F.col("out") > 0, F.lit(False))).drop("out")
        else:
            f = f.withColumn("flag", F.lit(False))
        return f.withColumn("node", _tagged("node", t))

    # constant terms of every problem in one frame: b_<c> (and e_<c> for PageRank) per column
    every = [x for n in names for x in cols[n]]
    none = F.lit(None).cast(T.DoubleType())
    const_all: DataFrame | None = None
    starts = []
    for n in names:
        p = problems[n]
        c = flagged(p.const, p, [f"b_{x}" for x in cols[n]])
        if p.extra is not None:
            e = flagged(p.extra, p, [f"e_{x}" for x in cols[n]]).drop("flag")
            c = c.join(e, "node", "full_outer").select(
                "node", F.coalesce("flag", F.lit(False)).alias("flag"),
                *[F.coalesce(F.col(f"b_{x}"), F.lit(0.0)).alias(f"b_{x}") for x in cols[n]],
                *[F.coalesce(F.col(f"e_{x}"), F.lit(0.0)).alias(f"e_{x}") for x in cols[n]],
            )
        have = set(c.columns)
        c = c.select("node", "flag", *[(F.col(f"{k}_{x}") if f"{k}_{x}" in have else none.alias(f"{k}_{x}")) for k in ("b", "e") for x in every])
        const_all = c if const_all is None else const_all.unionByName(c)
        starts.append(flagged(p.start, p, cols[n]))
    assert const_all is not None
    const_all = const_all.localCheckpoint(eager=True)

    def widen(frame: DataFrame, have: list[str], wanted: list[str]) -> DataFrame:
        return frame.select("node", "flag", *[F.col(x) if x in have else none.alias(x) for x in wanted])

    start = widen(starts[0], cols[names[0]], every)
    for n, s in zip(names[1:], starts[1:]):
        start = start.unionByName(widen(s, cols[n], every))
    obs = Observation(f"socialrisk-start-{next(_counter)}")
    start = start.groupBy("node").agg(F.max("flag").alias("flag"), *[F.sum(x).alias(x) for x in every])
    start = start.observe(obs, *[F.coalesce(F.sum(F.when(F.col("flag"), F.col(x))), F.lit(0.0)).alias(f"g_{x}") for x in every])
    x = _materialise(start, checkpoint=True, reliable=reliable)
    mass = {c: float(obs.get[f"g_{c}"]) for c in every}
    for degree in degrees.values():  # the constant terms and the start are materialised: no longer read
        _release(degree)

    # each step is one SQL statement over temporary views (one call into the JVM, where the
    # DataFrame API would make hundreds)
    view = f"socialrisk_loop_{next(_counter)}"
    edges.createOrReplaceTempView(f"{view}_e")
    const_all.createOrReplaceTempView(f"{view}_c")
    active = list(names)
    done: dict[str, SparkPropagationResult] = {}
    seconds: list[float] = []
    kept: list[DataFrame] = []  # persisted iterates since the last checkpoint
    previous: DataFrame | None = x  # the last checkpointed iterate
    zero = F.lit(0.0)
    try:
        for it in itertools.count(1):
            t0 = time.perf_counter()
            live = [c for n in active for c in cols[n]]
            live_tags = sorted({tags[problems[n].operator] for n in active})
            x.createOrReplaceTempView(f"{view}_x")
            # the dangling masses enter as data, not literals: the generated code is then the
            # same from one step to the next (compiled once, not once per step)
            masses = [mass[c] for n in active if problems[n].extra is not None for c in cols[n]]
            if masses:
                spark.createDataFrame([tuple(masses)], ", ".join(f"`g_{c}` double" for n in active if problems[n].extra is not None for c in cols[n])).createOrReplaceTempView(f"{view}_g")
            step = spark.sql(_step_sql(view, live, [problems[n] for n in active], [cols[n] for n in active], live_tags, len(tags)))
            obs = Observation(f"socialrisk-step-{next(_counter)}")
            step = step.observe(
                obs,
                *[F.coalesce(F.sum(F.abs(F.coalesce(F.col(c), zero) - F.coalesce(F.col(f"o_{c}"), zero))), zero).alias(f"r_{c}") for c in live],
                *[F.coalesce(F.sum(F.when(F.col("flag"), F.col(c))), zero).alias(f"g_{c}") for c in live],
            )
            nxt = step.where(_any_value(live)).select("node", "flag", *live)
            checkpoint = it % int(checkpoint_interval) == 0
            nxt = _materialise(nxt, checkpoint=checkpoint, reliable=reliable)
            metrics = obs.get
            residual = {c: float(metrics[f"r_{c}"]) for c in live}
            mass = {c: float(metrics[f"g_{c}"]) for c in live}
            if checkpoint:
                for frame in reversed(kept):  # newest first: nothing cached depends on what goes
                    _release(frame)
                kept = []
                _release(previous)
                previous = nxt
            else:
                kept.append(nxt)
            x = nxt
            seconds.append(time.perf_counter() - t0)
            finished = []
            for n in active:
                p = problems[n]
                r = max(residual[c] for c in cols[n])
                if r < p.tol or it >= p.max_iter:
                    finished.append((n, r, r < p.tol))
            say(f"iteration {it}: {len(active)} problem(s) left, largest change {max(residual.values()):.3g}")
            for n, r, ok in finished:
                p = problems[n]
                mine = x.where(_any_value(cols[n])).where(F.col("node") % F.lit(1 << _TAG_BITS) == F.lit(tags[p.operator]))
                mine = mine.select(F.shiftright(F.col("node"), _TAG_BITS).alias("node"), *[F.coalesce(F.col(c), zero).alias(o) for c, o in zip(cols[n], p.columns)])
                scores = p.finish(mine) if p.finish is not None else mine
                done[n] = SparkPropagationResult(
                    scores=scores.localCheckpoint(eager=True), n_iter=it, converged=ok, residual=r, default=p.default, seconds=tuple(seconds)
                )
                active.remove(n)
            if not active:
                break
            if finished:
                remaining = [c for n in active for c in cols[n]]
                x = x.where(_any_value(remaining)).select("node", "flag", *remaining)
    finally:
        for name in ("e", "c", "x", "g"):
            spark.catalog.dropTempView(f"{view}_{name}")
        for frame in kept:
            _release(frame)
        _release(previous)
        _release(edges)
        _release(const_all)
    for n in names:  # every result carries the whole loop's timings
        r = done[n]
        done[n] = SparkPropagationResult(r.scores, r.n_iter, r.converged, r.residual, r.default, tuple(seconds))
    return done


def _any_value(columns: Sequence[str], prefix: str = "") -> str:
    """SQL: some of ``columns`` is not null. One ``coalesce``, not a chain of ``OR``: Catalyst's
    constraint inference grows with the square of such chains, which wide iterates make long."""
    names = [f"{prefix}`{c}`" for c in columns]
    return f"{names[0]} IS NOT NULL" if len(names) == 1 else f"COALESCE({', '.join(names)}) IS NOT NULL"


def _double(value: float) -> str:
    """A double literal of SQL that reads back as exactly ``value``."""
    return f"CAST('{float(value)!r}' AS DOUBLE)"


def _step_sql(view: str, live: list[str], problems: list[Problem], columns: list[list[str]], live_tags: list[int], n_tags: int) -> str:
    """One iteration of :func:`solve` as SQL: messages, previous iterate and constant terms summed
    per node, then clipped; ``o_<c>`` keeps the previous value for the change."""
    null = "CAST(NULL AS DOUBLE)"
    new_msg = ", ".join(f"e.coef * x.`{c}` AS `n_{c}`" for c in live)
    no_old = ", ".join(f"{null} AS `o_{c}`" for c in live)
    no_new = ", ".join(f"{null} AS `n_{c}`" for c in live)
    old = ", ".join(f"x.`{c}` AS `o_{c}`" for c in live)
    const_terms = []
    for p, cs in zip(problems, columns):
        for c in cs:
            term = f"c.`b_{c}`" if p.extra is None else f"c.`b_{c}` + c.`e_{c}` * g.`g_{c}`"
            const_terms.append(f"{term} AS `n_{c}`")
    edge_filter = "" if len(live_tags) == n_tags else f" WHERE (e.src & {(1 << _TAG_BITS) - 1}) IN ({', '.join(map(str, live_tags))})"
    const_filter = _any_value([f"b_{c}" for c in live], "c.")
    g_join = f" CROSS JOIN {view}_g g" if any(p.extra is not None for p in problems) else ""
    sums = ", ".join([f"SUM(`n_{c}`) AS `n_{c}`" for c in live] + [f"SUM(`o_{c}`) AS `o_{c}`" for c in live])
    bounded = []
    for p, cs in zip(problems, columns):
        for c in cs:
            v = f"`n_{c}`"
            if p.clip is not None:
                v = f"CASE WHEN {v} IS NULL THEN NULL ELSE LEAST(GREATEST({v}, {_double(p.clip[0])}), {_double(p.clip[1])}) END"
            bounded.append(f"{v} AS `{c}`")
    return f"""
SELECT node, flag, {', '.join(bounded)}, {', '.join(f'`o_{c}`' for c in live)} FROM (
  SELECT node, MAX(flag) AS flag, {sums} FROM (
    SELECT /*+ SHUFFLE_HASH(x) */ e.dst AS node, e.dst_dangling AS flag, {new_msg}, {no_old}
      FROM {view}_x x JOIN (SELECT * FROM {view}_e e{edge_filter}) e ON x.node = e.src
    UNION ALL
    SELECT x.node, x.flag, {no_new}, {old} FROM {view}_x x
    UNION ALL
    SELECT c.node, c.flag, {', '.join(const_terms)}, {no_old} FROM {view}_c c{g_join} WHERE {const_filter}
  ) GROUP BY node
)"""


# -- one algorithm at a time, as graph.propagation ---------------------------------------------


def personalized_pagerank(
    edges: DataFrame, seeds: DataFrame, *, alpha: float = 0.85, tol: float = 1e-10, max_iter: int = 500, checkpoint_interval: int = 1
) -> SparkPropagationResult:
    r"""Personalized PageRank on Spark: :func:`graph.propagation.personalized_pagerank`'s iteration.

    Parameters
    ----------
    edges : DataFrame
        ``src``, ``dst``, ``w``: non-negative weights of the steps ``src -> dst``.
    seeds : DataFrame
        ``node`` and one column of non-negative restart weights per seed vector; each column
        is normalised to sum 1. Nodes without a row have weight 0.
    alpha : float
        Probability of continuing the walk at each step, in (0, 1).
    tol : float
        Stop when the L1 change of every column between iterations is below ``tol``.
    max_iter : int
    checkpoint_interval : int
        See :func:`solve`.

    Returns
    -------
    SparkPropagationResult
        ``scores``: ``node`` and the seed columns, each summing to 1; nodes that no walk
        reaches have no row (score 0).

    Examples
    --------
    >>> # doctest: +SKIP
    >>> edges = spark.createDataFrame([(0, 1, 1.0), (1, 0, 1.0), (1, 2, 1.0), (2, 1, 1.0)], "src long, dst long, w double")
    >>> r = personalized_pagerank(edges, spark.createDataFrame([(0, 1.0)], "node long, s double"), alpha=0.5)
    >>> sorted((row.node, round(row.s, 4)) for row in r.scores.collect())  # 7/12, 4/12, 1/12
    [(0, 0.5833), (1, 0.3333), (2, 0.0833)]
    """
    problem = pagerank_problem("g", seeds, alpha=alpha, tol=tol, max_iter=max_iter)
    return solve({"g": pagerank_operator(edges, alpha=alpha)}, {"p": problem}, checkpoint_interval=checkpoint_interval)["p"]


def trustrank(
    edges: DataFrame, *, benign_seeds: DataFrame, alpha: float = 0.85, tol: float = 1e-10, max_iter: int = 500, checkpoint_interval: int = 1
) -> SparkPropagationResult:
    """TrustRank on Spark: personalized PageRank restarting at the benign seeds
    (:func:`graph.propagation.trustrank`)."""
    return personalized_pagerank(edges, benign_seeds, alpha=alpha, tol=tol, max_iter=max_iter, checkpoint_interval=checkpoint_interval)


def belief_propagation(
    field: DataFrame, *, fraud_seeds: DataFrame | None = None, benign_seeds: DataFrame | None = None, theta: float = 0.4,
    coupling: float = 0.8, normalization: str = "degree", tol: float = 1e-8, max_iter: int = 1000, checkpoint_interval: int = 1,
) -> SparkPropagationResult:
    """Linearised belief propagation on Spark (:func:`graph.propagation.belief_propagation`).

    ``field`` is ``src``, ``dst``, ``w`` (signed, symmetrised here); the seeds are ``node`` and
    one column per seed set, weights in [0, 1], the same columns on both sides. ``scores``:
    ``0.5 + p``; nodes without a row score 0.5.
    """
    problem = belief_problem("g", fraud_seeds=fraud_seeds, benign_seeds=benign_seeds, theta=theta, tol=tol, max_iter=max_iter)
    op = belief_operator(field, coupling=coupling, normalization=normalization)
    return solve({"g": op}, {"p": problem}, checkpoint_interval=checkpoint_interval)["p"]


def label_spreading(
    field: DataFrame, *, fraud_seeds: DataFrame | None = None, benign_seeds: DataFrame | None = None, alpha: float = 0.9,
    prior: float = 0.5, tol: float = 1e-8, max_iter: int = 1000, checkpoint_interval: int = 1,
) -> SparkPropagationResult:
    """Label spreading on Spark (:func:`graph.propagation.label_spreading`); nodes without a
    row score ``prior``."""
    problem = spreading_problem("g", fraud_seeds=fraud_seeds, benign_seeds=benign_seeds, alpha=alpha, prior=prior, tol=tol, max_iter=max_iter)
    return solve({"g": spreading_operator(field, alpha=alpha)}, {"p": problem}, checkpoint_interval=checkpoint_interval)["p"]


def to_numpy(result: SparkPropagationResult, nodes: np.ndarray, columns: Sequence[str] | None = None) -> np.ndarray:
    """The scores of ``nodes`` (in that order) as an array of shape ``(len(nodes), k)``;
    :attr:`SparkPropagationResult.default` where a node has no row."""
    columns = list(columns) if columns is not None else [c for c in result.scores.columns if c != "node"]
    table = result.scores.select("node", *columns).toArrow()
    ids = table.column("node").to_numpy()
    out = np.full((len(nodes), len(columns)), float(result.default))
    if len(ids):
        where = pd.Index(ids).get_indexer(np.asarray(nodes, dtype=np.int64))
        hit = where >= 0
        for j, c in enumerate(columns):
            values = table.column(c).to_numpy(zero_copy_only=False)
            out[hit, j] = values[where[hit]]
    return out
