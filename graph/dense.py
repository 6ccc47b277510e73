"""Dense blocks of a bipartite graph by FRAUDAR's camouflage-resistant greedy peeling."""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from loaders.errors import ParameterError

__all__ = ["DenseBlock", "camouflage_weights", "densest_block", "dense_blocks"]

#: Priorities are compared at this many decimals, so that equal degrees reached by different
#: sums (removal by removal, or all at once) tie and the lower index goes first.
_DECIMALS = 9
#: A later, smaller block must beat the best density by this relative margin to replace it.
_REL_TOL = 1e-12


@dataclass(frozen=True)
class DenseBlock:
    """A block of rows and columns found by greedy peeling.

    Attributes
    ----------
    rows, cols : ndarray of int
        Sorted row and column indices of the block.
    density : float
        FRAUDAR's average suspiciousness ``g = f / (len(rows) + len(cols))``, where ``f`` is the
        total weight of the edges between the block's rows and columns. 0 for an empty block.
    """

    rows: np.ndarray
    cols: np.ndarray
    density: float

    @property
    def size(self) -> int:
        return len(self.rows) + len(self.cols)


def camouflage_weights(matrix: sp.spmatrix, *, c: float = 5.0) -> sp.csr_matrix:
    """FRAUDAR's column weighting: edge ``(i, j)`` weighs ``1 / log(d_j + c)``.

    ``d_j`` is the number of rows linked to column ``j``. A fraudster can add edges to popular
    columns (a café's IP, a big merchant) to look normal, but those columns carry little weight,
    so the camouflage adds little to the density of a block that includes them [1]_.

    Parameters
    ----------
    matrix : sparse matrix, shape (n_rows, n_cols)
        Any non-zero entry is an edge; values are otherwise ignored.
    c : float
        Smoothing constant, > 0; the paper uses 5.

    Returns
    -------
    csr_matrix, shape (n_rows, n_cols)
        The weighted edges (explicit zeros removed).

    Raises
    ------
    ParameterError
        If ``c`` is not > 0.

    References
    ----------
    .. [1] B. Hooi, H. A. Song, A. Beutel, N. Shah, K. Shin, C. Faloutsos, "FRAUDAR: Bounding
       graph fraud in the face of camouflage", KDD 2016, section 4.3.

    Examples
    --------
    >>> import numpy as np, scipy.sparse as sp
    >>> W = camouflage_weights(sp.csr_matrix(np.array([[1, 1], [0, 1]])), c=np.e - 1)
    >>> W.toarray().round(3).tolist()  # column 0 has degree 1, column 1 degree 2
    [[1.0, 0.761], [0.0, 0.761]]
    """
    if not c > 0:
        raise ParameterError(f"The 'c' parameter of camouflage_weights must be > 0. Got {c!r} instead.")
    B = sp.csr_matrix(matrix, dtype=np.float64, copy=True)
    B.eliminate_zeros()
    B.data[:] = 1.0
    degree = np.bincount(B.indices, minlength=B.shape[1]).astype(np.float64)
    B.data = 1.0 / np.log(degree[B.indices] + c)
    return B


def densest_block(weights: sp.spmatrix) -> DenseBlock:
    """The densest block of a weighted bipartite graph, by greedy peeling (FRAUDAR).

    Rows and columns are the nodes. Starting from every node with an edge, the node whose edges
    to the remaining nodes weigh least is removed, one at a time, and the remaining set with the
    highest ``g = (total edge weight) / (number of nodes)`` is returned. A lazy min-heap keyed by
    the remaining weighted degree makes this ``O(|E| log |V|)``. The result is at least half as
    dense as the densest block (Theorem 1 of [1]_).

    Parameters
    ----------
    weights : sparse matrix, shape (n_rows, n_cols)
        Non-negative, finite edge weights, e.g. from :func:`camouflage_weights`.

    Returns
    -------
    DenseBlock
        Empty with density 0 when the graph has no edge. Ties between nodes of equal remaining
        degree are broken by index (rows before columns), and between equally dense blocks in
        favour of the larger one, so the result is deterministic.

    Raises
    ------
    ParameterError
        On a negative or non-finite weight.

    References
    ----------
    .. [1] B. Hooi, H. A. Song, A. Beutel, N. Shah, K. Shin, C. Faloutsos, "FRAUDAR: Bounding
       graph fraud in the face of camouflage", KDD 2016.
    .. [2] M. Charikar, "Greedy approximation algorithms for finding dense components in a
       graph", APPROX 2000.

    Examples
    --------
    Rows 0-2 all use columns 0 and 1 (6 edges over 5 nodes); row 3 hangs on column 2 alone.

    >>> import numpy as np, scipy.sparse as sp
    >>> A = sp.csr_matrix(np.array([[1, 1, 0], [1, 1, 0], [1, 1, 1], [0, 0, 1]], dtype=float))
    >>> block = densest_block(A)
    >>> block.rows.tolist(), block.cols.tolist(), round(block.density, 3)
    ([0, 1, 2], [0, 1], 1.2)
    """
    W = _checked(weights, "densest_block")
    n_rows = W.shape[0]
    order, n_active, best_removed, best = _peel(W)
    if n_active == 0:
        return DenseBlock(rows=np.zeros(0, dtype=np.int64), cols=np.zeros(0, dtype=np.int64), density=0.0)
    active = np.concatenate([np.diff(W.indptr) > 0, np.bincount(W.indices, minlength=W.shape[1]) > 0])
    active[np.asarray(order[:best_removed], dtype=np.int64)] = False
    nodes = np.flatnonzero(active)
    return DenseBlock(rows=nodes[nodes < n_rows], cols=nodes[nodes >= n_rows] - n_rows, density=best)


def dense_blocks(matrix: sp.spmatrix, *, k: int, c: float = 5.0) -> list[DenseBlock]:
    """The ``k`` densest blocks, one after another, each found once the earlier ones are removed.

    Edges are weighted once by :func:`camouflage_weights` over the whole graph; then
    :func:`densest_block` finds a block, its rows are removed (with all their edges), and the
    search repeats, as FRAUDAR does to find several frauds [1]_. Blocks are therefore disjoint in
    rows; a column may belong to several.

    Parameters
    ----------
    matrix : sparse matrix, shape (n_rows, n_cols)
        Any non-zero entry is an edge (rows: users; columns: what they use).
    k : int
        Number of blocks wanted, >= 1. Fewer are returned when the edges run out.
    c : float
        Smoothing constant of the column weights, > 0.

    Returns
    -------
    list of DenseBlock
        In the order found (usually, but not necessarily, of decreasing density).

    Raises
    ------
    ParameterError
        If ``k < 1`` or ``c <= 0``.

    References
    ----------
    .. [1] B. Hooi, H. A. Song, A. Beutel, N. Shah, K. Shin, C. Faloutsos, "FRAUDAR: Bounding
       graph fraud in the face of camouflage", KDD 2016.

    Examples
    --------
    Two separate blocks: rows 0-2 on columns 0-1, rows 3-4 on column 2.

    >>> import numpy as np, scipy.sparse as sp
    >>> A = sp.csr_matrix(np.array([[1, 1, 0], [1, 1, 0], [1, 1, 0], [0, 0, 1], [0, 0, 1]]))
    >>> [b.rows.tolist() for b in dense_blocks(A, k=3)]
    [[0, 1, 2], [3, 4]]
    """
    if int(k) != k or k < 1:
        raise ParameterError(f"The 'k' parameter of dense_blocks must be an integer >= 1. Got {k!r} instead.")
    W = camouflage_weights(matrix, c=c)
    blocks: list[DenseBlock] = []
    keep = np.ones(W.shape[0])
    for _ in range(int(k)):
        block = densest_block(W)
        if block.size == 0 or len(block.rows) == 0:
            break
        blocks.append(block)
        keep[block.rows] = 0.0
        W = sp.csr_matrix(sp.diags(keep) @ W)
        W.eliminate_zeros()
    return blocks


def _checked(weights: sp.spmatrix, caller: str) -> sp.csr_matrix:
    W = sp.csr_matrix(weights, dtype=np.float64, copy=True)
    W.sum_duplicates()
    if W.nnz and (not np.all(np.isfinite(W.data)) or W.data.min() < 0):
        raise ParameterError(f"The weights of {caller} must be finite and >= 0.")
    W.eliminate_zeros()
    return W


def _peel(W: sp.csr_matrix) -> tuple[list[int], int, int, float]:
    """Greedy peeling with a lazy heap.

    Nodes are rows ``0..n_rows-1`` then columns ``n_rows + j``. Returns the removal order, the
    number of nodes with an edge, how many removals give the densest set, and its density.
    """
    n_rows, n_cols = W.shape
    csc = W.tocsc()
    row_ptr, row_idx, row_w = W.indptr.tolist(), W.indices.tolist(), W.data.tolist()
    col_ptr, col_idx, col_w = csc.indptr.tolist(), csc.indices.tolist(), csc.data.tolist()
    degree = np.concatenate([np.asarray(W.sum(axis=1)).ravel(), np.asarray(W.sum(axis=0)).ravel()])
    has_edge = np.concatenate([np.diff(W.indptr) > 0, np.diff(csc.indptr) > 0])
    priority: list[float] = degree.tolist()
    heap = [(round(priority[v], _DECIMALS), v) for v in np.flatnonzero(has_edge).tolist()]
    heapq.heapify(heap)
    removed = bytearray(n_rows + n_cols)
    remaining = len(heap)
    n_active = remaining
    if n_active == 0:
        return [], 0, 0, 0.0
    mass = float(W.data.sum())
    best, best_removed = mass / remaining, 0
    order: list[int] = []
    while remaining > 1:
        key, v = heapq.heappop(heap)
        if removed[v] or key != round(priority[v], _DECIMALS):
            continue  # removed already, or a stale entry (its degree has dropped since)
        removed[v] = 1
        order.append(v)
        mass -= priority[v]
        remaining -= 1
        if v < n_rows:
            lo, hi, idx, wts, offset = row_ptr[v], row_ptr[v + 1], row_idx, row_w, n_rows
        else:
            j = v - n_rows
            lo, hi, idx, wts, offset = col_ptr[j], col_ptr[j + 1], col_idx, col_w, 0
        for p in range(lo, hi):
            u = idx[p] + offset
            if not removed[u]:
                priority[u] -= wts[p]
                heapq.heappush(heap, (round(priority[u], _DECIMALS), u))
        density = mass / remaining
        if density > best * (1.0 + _REL_TOL):
            best, best_removed = density, len(order)
    return order, n_active, best_removed, best


def _peel_reference(weights: sp.spmatrix) -> tuple[list[int], int, int, float]:
    """The same greedy peeling on a dense array, recomputing every degree at each step.

    ``O(|V|^2 |E|)``: only for checking :func:`_peel` on tiny graphs.
    """
    A = _checked(weights, "_peel_reference").toarray()
    n_rows, n_cols = A.shape
    alive_r = A.sum(axis=1) > 0
    alive_c = A.sum(axis=0) > 0
    n_active = int(alive_r.sum() + alive_c.sum())
    if n_active == 0:
        return [], 0, 0, 0.0
    best = A.sum() / n_active
    best_removed = 0
    order: list[int] = []
    for step in range(1, n_active):
        sub = A * np.outer(alive_r, alive_c)
        deg = np.concatenate([sub.sum(axis=1), sub.sum(axis=0)])
        alive = np.concatenate([alive_r, alive_c])
        candidates = [(round(float(deg[v]), _DECIMALS), v) for v in np.flatnonzero(alive).tolist()]
        _, v = min(candidates)
        order.append(v)
        if v < n_rows:
            alive_r[v] = False
        else:
            alive_c[v - n_rows] = False
        density = float((A * np.outer(alive_r, alive_c)).sum()) / (n_active - step)
        if density > best * (1.0 + _REL_TOL):
            best, best_removed = density, step
    return order, n_active, best_removed, float(best)


def _densest_exhaustive(weights: sp.spmatrix) -> DenseBlock:
    """The exactly densest block, trying every set of rows and columns (tiny graphs only)."""
    A = _checked(weights, "_densest_exhaustive").toarray()
    rows = np.flatnonzero(A.sum(axis=1) > 0).tolist()
    cols = np.flatnonzero(A.sum(axis=0) > 0).tolist()
    best = DenseBlock(rows=np.zeros(0, dtype=np.int64), cols=np.zeros(0, dtype=np.int64), density=0.0)
    for nr in range(1, len(rows) + 1):
        for R in itertools.combinations(rows, nr):
            for nc in range(1, len(cols) + 1):
                for C in itertools.combinations(cols, nc):
                    density = float(A[np.ix_(R, C)].sum()) / (nr + nc)
                    if density > best.density * (1.0 + _REL_TOL):
                        best = DenseBlock(rows=np.array(R, dtype=np.int64), cols=np.array(C, dtype=np.int64), density=density)
    return best
