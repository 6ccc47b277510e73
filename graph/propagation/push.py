"""Incremental personalized PageRank by local push: new flags, cleared flags and new edges
update the scores without a full recompute.

The state is the pair ``(p, r)`` of forward push (Andersen, Chung and Lang, FOCS 2006) for the
seed vector ``s`` (unnormalised seed weights), with the invariant

.. math:: p + \\beta r = \\beta s + \\alpha \\tilde P^T p, \\qquad \\beta = 1 - \\alpha,

where :math:`\\tilde P` is the row-normalised adjacency with a self-loop on every node without
out-edges (``dangling="self"`` in :func:`~graph.propagation.pagerank.personalized_pagerank`).
Then the exact scores are :math:`\\pi = p + \\mathrm{PPR}(r)`, so :math:`\\|\\pi - p\\|_1 \\le
\\|r\\|_1`: the residual's mass bounds the error, and every update reports it.

- a seed gains weight ``w``: ``r[u] += w``, then push;
- a seed loses it: ``r[u] -= w`` (residuals may be negative), then push;
- an edge ``u -> v`` appears, or changes weight (:func:`set_edge`; a disputed link is
  down-weighted or removed): row ``u`` of :math:`\\tilde P` changes, and the invariant is
  restored by ``r += (alpha / beta) * p[u] * (new row - old row)`` (Zhang, Lofgren and Goel,
  KDD 2016), then push.

Pushes run frontier by frontier, vectorised over every node whose residual exceeds ``eps``
times its out-degree (Andersen, Chung and Lang's rule: a hub is expanded only when it holds
enough to matter), so the work stays near the change.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp

from graph.propagation.pagerank import personalized_pagerank, transition_transpose
from loaders.errors import ParameterError

__all__ = [
    "PushState", "PushUpdate", "push_state", "add_seed", "add_edge", "set_edge", "set_edges", "edge_weight", "add_nodes", "reserve", "folded",
    "trial",
]


@dataclass
class PushState:
    """Scores kept current under local pushes (mutable: updates change it in place).

    Attributes
    ----------
    adjacency : csr_matrix, shape (n, n)
        Non-negative weights, ``adjacency[i, j]`` the weight of the step ``i -> j``.
    out_weight : ndarray, shape (n,)
        Row sums of ``adjacency`` (0 for dangling nodes).
    seeds : ndarray, shape (n,)
        Current (unnormalised) seed weights.
    p : ndarray, shape (n,)
        Estimated scores, in seed-weight units (they sum to about ``seeds.sum()``).
    r : ndarray, shape (n,)
        Residuals; ``abs(r).sum()`` bounds the L1 error of ``p``.
    alpha : float
        Probability of continuing the walk.
    eps : float
        Push threshold per unit of out-degree (seed-weight units).
    scale : ndarray
        Out-degree of each node (at least 1): the threshold is ``eps * scale``.
    extra : dict
        Rows changed by :func:`add_edge` (node -> (indices, weights)), read before
        ``adjacency``.
    """

    adjacency: sp.csr_matrix
    out_weight: np.ndarray
    seeds: np.ndarray
    p: np.ndarray
    r: np.ndarray
    alpha: float
    eps: float
    extra: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    scale: np.ndarray = field(default_factory=lambda: np.zeros(0))
    buffers: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    undo: "_Undo | None" = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.scale.shape != self.p.shape:
            # push threshold per node: eps times its out-degree (at least 1), so that a hub is
            # pushed only once it holds a share of mass worth its fan-out (Andersen et al.)
            scale = np.ones(self.p.shape[0])
            m = self.adjacency.shape[0]
            scale[:m] = np.maximum(np.diff(self.adjacency.indptr), 1)
            self.scale = scale

    @property
    def size(self) -> int:
        """Number of nodes (those of :attr:`adjacency`, then any added by :func:`add_nodes`)."""
        return int(self.p.shape[0])

    @property
    def error_bound(self) -> float:
        """L1 bound on the error of ``p`` against an exact solve."""
        return float(np.abs(self.r).sum())

    def scores(self) -> np.ndarray:
        """Scores normalised like :func:`personalized_pagerank` (summing to about 1)."""
        total = float(self.seeds.sum())
        return self.p / total if total > 0 else np.zeros_like(self.p)


@dataclass(frozen=True)
class PushUpdate:
    """What one update did.

    Attributes
    ----------
    nodes : ndarray of int
        Nodes whose score ``p`` changed, largest change first.
    delta : ndarray of float
        The change of ``p`` at each of them (seed-weight units).
    pushes : int
        Node pushes performed.
    error_bound : float
        ``abs(r).sum()`` after the update.
    """

    nodes: np.ndarray
    delta: np.ndarray
    pushes: int
    error_bound: float


def push_state(
    adjacency: sp.spmatrix, seeds: np.ndarray, *, alpha: float = 0.85, tol: float = 1e-10, eps: float = 1e-5, max_iter: int = 1000
) -> PushState:
    """Solve once (power iteration), then keep the solution as a push state.

    Parameters
    ----------
    adjacency : sparse matrix, shape (n, n)
        Non-negative edge weights.
    seeds : ndarray, shape (n,)
        Non-negative seed weights (need not sum to 1; at least one positive).
    alpha : float
        Probability of continuing the walk, in (0, 1).
    tol : float
        L1 tolerance of the initial solve (relative to the seed mass).
    eps : float
        Push threshold of later updates per unit of out-degree, in seed-weight units: a node is
        pushed while it holds more than ``eps * max(out-degree, 1)`` of residual, so a hub waits
        until its share is worth its fan-out. Smaller is more exact and touches more nodes;
        every update reports the bound.
    max_iter : int
        Iteration limit of the initial solve.

    Returns
    -------
    PushState
        With ``r`` the exact residual of the initial solution.

    References
    ----------
    .. [1] R. Andersen, F. Chung, K. Lang, "Local graph partitioning using PageRank vectors",
       FOCS 2006.
    .. [2] H. Zhang, P. Lofgren, A. Goel, "Approximate personalized PageRank on dynamic
       graphs", KDD 2016.

    Examples
    --------
    >>> import numpy as np, scipy.sparse as sp
    >>> A = sp.csr_matrix(np.array([[0, 1, 0], [1, 0, 1], [0, 1, 0]], dtype=float))
    >>> state = push_state(A, np.array([1.0, 0, 0]), alpha=0.5)
    >>> [round(float(v), 4) for v in state.scores()]  # 7/12, 4/12, 1/12
    [0.5833, 0.3333, 0.0833]
    """
    if not 0.0 < alpha < 1.0:
        raise ParameterError(f"The 'alpha' parameter of push_state must be in (0, 1). Got {alpha!r} instead.")
    if not eps > 0:
        raise ParameterError(f"The 'eps' parameter of push_state must be > 0. Got {eps!r} instead.")
    A = sp.csr_matrix(adjacency, dtype=np.float64)
    A.sum_duplicates()
    n = A.shape[0]
    s = np.asarray(seeds, dtype=np.float64).ravel()
    if s.shape != (n,):
        raise ParameterError(f"The 'seeds' of push_state must have {n} entries, one per node. Got shape {np.shape(seeds)} instead.")
    if not np.all(np.isfinite(s)) or (s < 0).any():
        raise ParameterError("The 'seeds' of push_state must be finite and >= 0.")
    total = float(s.sum())
    if total <= 0:
        raise ParameterError("push_state has no seed (all weights are 0): there is nothing to propagate. Flag at least one user.")
    transition = transition_transpose(A)
    solved = personalized_pagerank(A, s, alpha=alpha, tol=tol, max_iter=max_iter, transition=transition, dangling="self")
    p = solved.scores * total
    # exact residual of the invariant: r = s - (p - alpha P~^T p) / beta
    PT, dangling = transition
    spread = PT @ p
    spread[dangling] += p[dangling]
    r = s - (p - alpha * spread) / (1.0 - alpha)
    return PushState(adjacency=A, out_weight=np.asarray(A.sum(axis=1)).ravel(), seeds=s.copy(), p=p, r=r, alpha=alpha, eps=eps)


def add_seed(state: PushState, node: int, weight: float) -> PushUpdate:
    """Add ``weight`` to a node's seed weight (negative to clear a flag) and push.

    Raises
    ------
    ParameterError
        On a node out of range, a non-finite weight, or a seed weight that would fall below 0.
    """
    n = state.size
    if not 0 <= int(node) < n:
        raise ParameterError(f"The 'node' of add_seed must be in 0..{n - 1}. Got {node!r} instead.")
    if not np.isfinite(weight):
        raise ParameterError(f"The 'weight' of add_seed must be finite. Got {weight!r} instead.")
    if state.seeds[node] + weight < -1e-12:
        raise ParameterError(f"node {node} has seed weight {state.seeds[node]:g}; it cannot lose {-weight:g}")
    _log(state, "seeds", np.array([int(node)]))
    _log(state, "r", np.array([int(node)]))
    state.seeds[node] = max(state.seeds[node] + weight, 0.0)
    state.r[node] += weight
    return _push(state, np.array([int(node)]))


def add_edge(state: PushState, source: int, target: int, weight: float) -> PushUpdate:
    """Add ``weight`` to the edge ``source -> target`` (a new edge or a heavier one) and push.

    For an undirected relation call it once per direction.
    """
    if not (np.isfinite(weight) and weight > 0):
        raise ParameterError(f"The 'weight' of add_edge must be > 0. Got {weight!r} instead.")
    return set_edge(state, source, target, edge_weight(state, source, target) + weight)


def edge_weight(state: PushState, source: int, target: int) -> float:
    """Current weight of the edge ``source -> target`` (0 when there is none)."""
    _check_nodes(state, "edge_weight", source, target)
    idx, w = _row(state, int(source))
    return float(w[idx == int(target)].sum())


def set_edge(state: PushState, source: int, target: int, weight: float) -> PushUpdate:
    """Give the edge ``source -> target`` the weight ``weight`` (0 removes it: a disputed link
    ignored, or down-weighted with a smaller weight) and push.

    Row ``source`` of the transition changes; the invariant is restored by moving
    ``(alpha / beta) * p[source]`` of residual from the old row's targets to the new row's
    (Zhang, Lofgren and Goel, KDD 2016). A row left without weight becomes dangling (a
    self-loop, as :func:`push_state` treats dangling nodes).
    """
    _check_nodes(state, "set_edge", source, target)
    if not (np.isfinite(weight) and weight >= 0):
        raise ParameterError(f"The 'weight' of set_edge must be >= 0. Got {weight!r} instead.")
    return set_edges(state, np.array([int(source)]), np.array([int(target)]), np.array([float(weight)]))


def _check_nodes(state: PushState, where: str, source: int, target: int) -> None:
    n = state.size
    for name, v in (("source", source), ("target", target)):
        if not 0 <= int(v) < n:
            raise ParameterError(f"The '{name}' of {where} must be in 0..{n - 1}. Got {v!r} instead.")


def _row(state: PushState, u: int) -> tuple[np.ndarray, np.ndarray]:
    if u in state.extra:
        return state.extra[u]
    A = state.adjacency
    if u >= A.shape[0]:  # a node added since the solve, without edges yet
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    lo, hi = A.indptr[u], A.indptr[u + 1]
    return A.indices[lo:hi].astype(np.int64), A.data[lo:hi]


def _row_entries(indptr: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positions of the stored entries of ``rows`` of a CSR matrix, row after row, in one
    gather (no Python loop), and the number of entries of each row."""
    lo, hi = indptr[rows], indptr[rows + 1]
    counts = hi - lo
    return np.repeat(lo - np.cumsum(counts) + counts, counts) + np.arange(int(counts.sum())), counts


def _distinct(values: np.ndarray) -> np.ndarray:
    """Sorted distinct values (``np.unique``'s hash path is slow on large node ids)."""
    if values.size < 2:
        return values
    values = np.sort(values)
    return values[np.concatenate(([True], values[1:] != values[:-1]))]


def _push(state: PushState, start: np.ndarray, *, bound: bool = True) -> PushUpdate:
    A, r, p, deg = state.adjacency, state.r, state.p, state.out_weight
    alpha, beta = state.alpha, 1.0 - state.alpha
    seen = np.zeros(p.shape[0], dtype=bool)
    moved, before = [], []
    pushes = 0
    frontier = start[np.abs(r[start]) > state.eps * state.scale[start]]
    while frontier.size:
        pushes += int(frontier.size)
        vals = r[frontier].copy()
        _log(state, "r", frontier)
        _log(state, "p", frontier)
        r[frontier] = 0.0
        first = frontier[~seen[frontier]]
        seen[first] = True
        moved.append(first)
        before.append(p[first].copy())
        dangling = deg[frontier] <= 0
        # a dangling node keeps its walkers: all of the residual settles there
        p[frontier] += np.where(dangling, vals, beta * vals)
        live = ~dangling
        special = np.array([f in state.extra for f in frontier.tolist()]) if state.extra else np.zeros(frontier.size, dtype=bool)
        plain = live & ~special & (frontier < A.shape[0])
        targets = [np.zeros(0, dtype=np.int64)]
        if plain.any():
            nodes, v = frontier[plain], vals[plain]
            idx, counts = _row_entries(A.indptr, nodes)
            t = A.indices[idx]
            amounts = np.repeat(alpha * v / deg[nodes], counts) * A.data[idx]
            _log(state, "r", t)
            np.add.at(r, t, amounts)
            targets.append(t.astype(np.int64))
        for node, v in zip(frontier[live & special].tolist(), vals[live & special].tolist()):
            idx2, w2 = state.extra[node]
            _log(state, "r", idx2)
            np.add.at(r, idx2, alpha * v * w2 / deg[node])
            targets.append(idx2)
        cand = _distinct(np.concatenate(targets))
        frontier = cand[np.abs(r[cand]) > state.eps * state.scale[cand]]
    nodes = np.concatenate(moved).astype(np.int64) if moved else np.zeros(0, dtype=np.int64)
    delta = p[nodes] - (np.concatenate(before) if before else np.zeros(0))
    order = np.argsort(-np.abs(delta), kind="stable")
    return PushUpdate(nodes=nodes[order], delta=delta[order], pushes=pushes, error_bound=state.error_bound if bound else float("nan"))


# -- growth and trials --------------------------------------------------------------------------

_ARRAYS = ("p", "r", "seeds", "scale", "out_weight")


def reserve(state: PushState, k: int) -> None:
    """Make room for ``k`` more nodes, so that :func:`add_nodes` of up to ``k`` copies nothing.

    The node arrays are views of larger buffers; growing past them copies each array once
    into a buffer a quarter larger (amortised: a committed applicant a second does not copy
    the million-node arrays each time). Not allowed inside :func:`trial`.
    """
    if state.undo is not None:
        raise ParameterError("reserve() inside a trial: reserve the room before the trial starts.")
    n = state.size
    for name in _ARRAYS:
        buf = state.buffers.get(name)
        arr = getattr(state, name)
        if buf is not None and buf.shape[0] >= n + k and np.shares_memory(buf, arr):
            continue
        new = np.zeros(max(n + k, n + n // 4 + 1024))
        new[:n] = arr
        state.buffers[name] = new
        setattr(state, name, new[:n])


def add_nodes(state: PushState, k: int) -> int:
    """Append ``k`` nodes without edges or seeds (score 0, residual 0); returns the first new
    index. Give them edges with :func:`set_edge` or :func:`add_edge`, seeds with
    :func:`add_seed`."""
    if k < 0:
        raise ParameterError(f"The 'k' of add_nodes must be >= 0. Got {k!r} instead.")
    n = state.size
    if k == 0:
        return n
    room = all(name in state.buffers and state.buffers[name].shape[0] >= n + k and np.shares_memory(state.buffers[name], getattr(state, name))
               for name in _ARRAYS)
    if not room:
        reserve(state, k)
    if state.undo is not None:
        state.undo.sizes.append(n)
    for name in _ARRAYS:
        view = state.buffers[name][: n + k]
        view[n:] = 1.0 if name == "scale" else 0.0
        setattr(state, name, view)
    return n


@dataclass
class _Undo:
    values: list[tuple[str, np.ndarray, np.ndarray]] = field(default_factory=list)
    extra: list[tuple[int, Any]] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)


def _log(state: PushState, name: str, idx: np.ndarray) -> None:
    if state.undo is not None and len(idx):
        arr = getattr(state, name)
        idx = np.asarray(idx, dtype=np.int64)
        state.undo.values.append((name, idx, arr[idx].copy()))


@contextmanager
def trial(state: PushState, *, room: int = 0) -> Iterator[PushState]:
    """Changes made to ``state`` inside the block are undone when it ends: a what-if.

    Updates inside (:func:`add_nodes`, :func:`set_edge`, :func:`add_seed`...) run as usual and
    their results can be read; on exit every value they changed is put back, so the state is
    as before, bit for bit. The cost is a copy of what each update touches.

    Parameters
    ----------
    state : PushState
    room : int
        Nodes the trial may add (reserved first with :func:`reserve`, so nothing is reallocated inside).

    Examples
    --------
    >>> import numpy as np, scipy.sparse as sp
    >>> A = sp.csr_matrix(np.array([[0, 1.0], [1.0, 0]]))
    >>> state = push_state(A, np.array([1.0, 0.0]), alpha=0.5, eps=1e-12)
    >>> before = state.p.copy()
    >>> with trial(state, room=1):
    ...     u = add_nodes(state, 1)
    ...     _ = add_edge(state, 1, u, 1.0); _ = add_edge(state, u, 1, 1.0)
    ...     print(round(float(state.p[u]), 4) > 0)
    True
    >>> bool(np.array_equal(state.p, before)) and state.size == 2
    True
    """
    if state.undo is not None:
        raise ParameterError("trial() inside a trial: trials do not nest.")
    if room:
        reserve(state, room)
    log = _Undo()
    state.undo = log
    try:
        yield state
    finally:
        state.undo = None
        for name, idx, old in reversed(log.values):
            getattr(state, name)[idx] = old
        for u, row in reversed(log.extra):
            if row is None:
                state.extra.pop(u, None)
            else:
                state.extra[u] = row
        if log.sizes:
            n = log.sizes[0]
            for name in _ARRAYS:
                setattr(state, name, state.buffers[name][:n])


def set_edges(state: PushState, sources: np.ndarray, targets: np.ndarray, weights: np.ndarray, *, bound: bool = True) -> PushUpdate:
    """Give each edge ``sources[k] -> targets[k]`` the weight ``weights[k]`` (0 removes it),
    then push once from every node the changes touched.

    The same as :func:`set_edge` edge after edge, with a single push at the end: placing a
    node with a dozen edges costs one push, not a dozen. A pair given twice takes its last
    weight. ``bound=False`` leaves :attr:`PushUpdate.error_bound` NaN (summing every residual
    costs more than the push on a million nodes).
    """
    sources = np.asarray(sources, dtype=np.int64)
    targets = np.asarray(targets, dtype=np.int64)
    weights = np.asarray(weights, dtype=np.float64)
    if not (sources.shape == targets.shape == weights.shape):
        raise ParameterError("set_edges needs as many sources, targets and weights.")
    if len(sources) == 0:
        return PushUpdate(np.zeros(0, dtype=np.int64), np.zeros(0), 0, state.error_bound)
    n = state.size
    if sources.min() < 0 or targets.min() < 0 or sources.max() >= n or targets.max() >= n:
        raise ParameterError(f"set_edges: every node must be in 0..{n - 1}.")
    if not (np.all(np.isfinite(weights)) and (weights >= 0).all()):
        raise ParameterError("set_edges: every weight must be finite and >= 0.")
    touched = []
    order = np.argsort(sources, kind="stable")
    sources, targets, weights = sources[order], targets[order], weights[order]
    starts = np.flatnonzero(np.concatenate(([True], sources[1:] != sources[:-1])))
    ends = np.append(starts[1:], len(sources))
    coef_scale = state.alpha / (1.0 - state.alpha)
    for a, b in zip(starts.tolist(), ends.tolist()):
        u = int(sources[a])
        idx, w = _row(state, u)
        old_total = float(state.out_weight[u])
        old_idx, old_p = (np.array([u]), np.array([1.0])) if old_total <= 0 else (idx, w / old_total)
        new = dict(zip(idx.tolist(), w.tolist()))
        for v, wt in zip(targets[a:b].tolist(), weights[a:b].tolist()):
            new[v] = wt
        items = [(v, wt) for v, wt in new.items() if wt > 0]
        nidx = np.array([v for v, _ in items], dtype=np.int64)
        nw = np.array([wt for _, wt in items], dtype=np.float64)
        if state.undo is not None:
            state.undo.extra.append((u, state.extra.get(u)))
            _log(state, "scale", np.array([u]))
            _log(state, "out_weight", np.array([u]))
        state.extra[u] = (nidx, nw)
        state.scale[u] = max(nidx.size, 1)
        state.out_weight[u] = float(nw.sum())
        new_idx, new_p = (np.array([u]), np.array([1.0])) if state.out_weight[u] <= 0 else (nidx, nw / state.out_weight[u])
        coef = coef_scale * state.p[u]
        if coef != 0.0:
            _log(state, "r", old_idx)
            _log(state, "r", new_idx)
            np.subtract.at(state.r, old_idx, coef * old_p)
            np.add.at(state.r, new_idx, coef * new_p)
        touched += [old_idx, new_idx]
    return _push(state, _distinct(np.concatenate(touched)), bound=bound)


def folded(state: PushState) -> sp.csr_matrix:
    """The state's adjacency as it is now: the rows changed since the solve (:attr:`PushState.extra`)
    folded in, and the nodes added since (:func:`add_nodes`) as rows and columns, in one sparse
    assembly (no per-row Python loop over the base rows)."""
    A = sp.csr_matrix(state.adjacency)
    size, n0 = state.size, A.shape[0]
    keep = np.ones(n0)
    changed = np.array(sorted(u for u in state.extra if u < n0), dtype=np.int64)
    keep[changed] = 0.0
    base = sp.coo_matrix(sp.diags(keep) @ A)
    rows = [base.row.astype(np.int64)]
    cols = [base.col.astype(np.int64)]
    vals = [base.data]
    for u, (idx, w) in state.extra.items():
        rows.append(np.full(len(idx), u, dtype=np.int64))
        cols.append(np.asarray(idx, dtype=np.int64))
        vals.append(np.asarray(w, dtype=np.float64))
    out = sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(size, size))
    out.sum_duplicates()
    return out
