"""Compiled CSR assembly (numba) for projections: one pass over entries already in order.

scipy builds CSR from COO by sorting; the encoded graph keeps its entries sorted by
``(row, col)`` from load time, so a projection only has to select, merge repeats and count.
"""

from __future__ import annotations

import numba
import numpy as np
import scipy.sparse as sp

#: The kernels write into arrays numpy allocates: numpy asks the kernel for huge pages on
#: large arrays, where arrays allocated inside a kernel fault in one 4 KiB page at a time (at
#: 56 MB, 26 ms of faults against 6 ms).

__all__ = ["block_csr", "row_sums", "walk_out_degree", "scaled_transpose", "sorted_csr", "sum_with_transpose"]


@numba.njit(cache=True, nogil=True)
def _sorted_csr(
    rows: np.ndarray, cols: np.ndarray, values: np.ndarray, mask: np.ndarray, n_rows: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # pragma: no cover - compiled; tested through sorted_csr
    indptr = np.zeros(n_rows + 1, dtype=np.int64)
    m = 0
    last_r, last_c = -1, -1
    for i in range(len(rows)):
        if mask[i]:
            r, c = rows[i], cols[i]
            if r != last_r or c != last_c:
                m += 1
                indptr[r + 1] += 1
                last_r, last_c = r, c
    indices = np.empty(m, dtype=cols.dtype)
    data = np.empty(m, dtype=np.float64)
    k = -1
    last_r, last_c = -1, -1
    for i in range(len(rows)):
        if mask[i]:
            r, c = rows[i], cols[i]
            if r != last_r or c != last_c:
                k += 1
                indices[k] = c
                data[k] = values[i]
                last_r, last_c = r, c
            else:
                data[k] += values[i]
    for r in range(n_rows):
        indptr[r + 1] += indptr[r]
    return indptr, indices, data


def sorted_csr(rows: np.ndarray, cols: np.ndarray, values: np.ndarray, mask: np.ndarray, shape: tuple[int, int]) -> sp.csr_matrix:
    """CSR matrix of the entries selected by ``mask``, repeated ``(row, col)`` entries summed.

    Parameters
    ----------
    rows, cols : ndarray of int
        Entry coordinates, sorted by ``(row, col)`` (lexicographically).
    values : ndarray of float
    mask : ndarray of bool
        Which entries to keep.
    shape : tuple of int

    Returns
    -------
    csr_matrix
        With sorted indices and no repeated entries (zero-valued entries are kept).
    """
    if not (len(rows) == len(cols) == len(values) == len(mask)):
        raise ValueError("rows, cols, values and mask must have the same length")
    indptr, indices, data = _sorted_csr(rows, cols, np.asarray(values, dtype=np.float64), np.asarray(mask, dtype=np.bool_), int(shape[0]))
    index = np.int32 if max(shape) < np.iinfo(np.int32).max and len(data) < np.iinfo(np.int32).max else np.int64
    out = sp.csr_matrix((data, indices.astype(index, copy=False), indptr.astype(index, copy=False)), shape=shape)
    out.has_sorted_indices = True
    return out


@numba.njit(cache=True, nogil=True, inline="always")
def _claim(place: np.ndarray, c: int, at: int) -> int:  # pragma: no cover - compiled
    """Turn the per-block counts of column ``c`` (``place[:, c]``) into each block's first slot,
    blocks in order from ``at``; returns the slot after the last."""
    for b in range(place.shape[0]):
        count = place[b, c]
        place[b, c] = at
        at += count
    return at


@numba.njit(parallel=True, cache=True, nogil=True)
def _sum_with_transpose(
    rows: np.ndarray, cols: np.ndarray, values: np.ndarray, forward: np.ndarray, backward: np.ndarray, n: int,
    entry_starts: np.ndarray, row_ptr: np.ndarray, place: np.ndarray, bt_ptr: np.ndarray, bt_col: np.ndarray, bt_val: np.ndarray,
    room: np.ndarray, counts: np.ndarray, out_idx: np.ndarray, out_data: np.ndarray,
) -> None:  # pragma: no cover - compiled; tested through sum_with_transpose
    # The entries are cut in blocks at row boundaries, one per thread. Indices are read as
    # unsigned: numba otherwise checks every signed one for wrap-around.
    one = np.uint64(1)
    n_blocks = len(entry_starts) - 1
    # 1. per row: its entries and its forward ones (rows are disjoint between blocks); per
    #    block: its backward entries by column
    f_count = np.zeros(n, dtype=np.int64)
    for t in numba.prange(n_blocks):
        mine = place[t]
        for i in range(entry_starts[t], entry_starts[t + 1]):
            r = np.uint64(rows[i])
            row_ptr[r + one] += 1
            if forward[i]:
                f_count[r] += 1
            if backward[i]:
                mine[np.uint64(cols[i])] += 1
    # 2. offsets: the transposed backward entries of each column, block after block (each
    #    block's rows come before the next's, so every transposed row stays sorted), and the
    #    room each output row may need (its forward entries plus its transposed ones)
    for r in range(n):
        row_ptr[r + 1] += row_ptr[r]
        bt_ptr[r + 1] = _claim(place, r, bt_ptr[r])
        room[r + 1] = room[r] + f_count[r] + (bt_ptr[r + 1] - bt_ptr[r])
    # 3. the backward entries transposed, each block into its own slots
    for t in numba.prange(n_blocks):
        fill = place[t]
        for i in range(entry_starts[t], entry_starts[t + 1]):
            if backward[i]:
                c = np.uint64(cols[i])
                at = np.uint64(fill[c])
                bt_col[at] = rows[i]
                bt_val[at] = values[i]
                fill[c] += 1
    # 4. each row: merge its forward entries and its transposed backward ones into its room.
    #    Each side's repeats are summed first, then the two sums added, so that when forward
    #    and backward select the same entries the result equals its transpose to the last bit
    #    (a + b == b + a). Sums of zero (a kind weighted 0) are dropped, as eliminate_zeros would.
    past = np.int64(n)  # beyond every column
    for t in numba.prange(n_blocks):
        r_lo = np.int64(rows[entry_starts[t]]) if entry_starts[t] < len(rows) else n
        r_hi = np.int64(rows[entry_starts[t + 1]]) if entry_starts[t + 1] < len(rows) else n
        if t == 0:
            r_lo = 0
        for r in range(r_lo, r_hi):
            a, a_end = row_ptr[r], row_ptr[r + 1]
            b, b_end = bt_ptr[r], bt_ptr[r + 1]
            m = room[r]
            while True:
                while a < a_end and not forward[a]:
                    a += 1
                ca = np.int64(cols[a]) if a < a_end else past
                cb = np.int64(bt_col[b]) if b < b_end else past
                c = min(ca, cb)
                if c == past:
                    break
                f_sum = 0.0
                while a < a_end and (not forward[a] or cols[a] == c):
                    if forward[a]:
                        f_sum += values[a]
                    a += 1
                b_sum = 0.0
                while b < b_end and bt_col[b] == c:
                    b_sum += bt_val[b]
                    b += 1
                v = f_sum + b_sum
                if v != 0.0:
                    out_idx[m] = c
                    out_data[m] = v
                    m += 1
            counts[r] = m - room[r]


@numba.njit(parallel=True, cache=True, nogil=True)
def _compact(
    room: np.ndarray, counts: np.ndarray, indptr: np.ndarray, src_idx: np.ndarray, src_data: np.ndarray, idx: np.ndarray,
    data: np.ndarray, row_starts: np.ndarray,
) -> None:  # pragma: no cover - compiled; tested through sum_with_transpose
    for t in numba.prange(len(row_starts) - 1):
        for r in range(row_starts[t], row_starts[t + 1]):
            at = indptr[r]
            for k in range(room[r], room[r] + counts[r]):
                idx[at] = src_idx[k]
                data[at] = src_data[k]
                at += 1


def sum_with_transpose(
    rows: np.ndarray, cols: np.ndarray, values: np.ndarray, forward: np.ndarray, backward: np.ndarray, n: int
) -> sp.csr_matrix:
    """CSR of ``F + B.T`` over ``n x n``, where ``F`` holds the entries selected by ``forward``
    and ``B`` those selected by ``backward``; repeats summed, zero sums dropped.

    One compiled pass instead of two projections, a transposition and a sparse sum.

    Parameters
    ----------
    rows, cols : ndarray of int
        Entry coordinates in ``0..n-1``, sorted by ``(row, col)``.
    values : ndarray of float
    forward, backward : ndarray of bool
        Which entries go in as they are, and which transposed (an entry may do both).
    n : int

    Returns
    -------
    csr_matrix, shape (n, n)
        Sorted indices, no repeated entries, no explicit zeros.
    """
    if not (len(rows) == len(cols) == len(values) == len(forward) == len(backward)):
        raise ValueError("rows, cols, values, forward and backward must have the same length")
    if n >= np.iinfo(np.int32).max:  # beyond int32 indices: scipy's general path
        F = sorted_csr(rows, cols, values, forward, (n, n))
        out = sp.csr_matrix(F + sorted_csr(rows, cols, values, backward, (n, n)).T)
        out.eliminate_zeros()
        return out
    forward, backward = np.asarray(forward, dtype=np.bool_), np.asarray(backward, dtype=np.bool_)
    n, n_entries = int(n), len(rows)
    n_back = int(np.count_nonzero(backward))
    size = int(np.count_nonzero(forward)) + n_back
    # blocks of entries cut at row boundaries, one per thread
    parts = numba.get_num_threads() if n_entries >= _PARALLEL_MIN else 1
    cuts = np.searchsorted(rows, rows[np.linspace(0, n_entries, parts + 1)[1:-1].astype(np.int64)]) if n_entries else []
    entry_starts = np.unique(np.concatenate([[0], cuts, [n_entries]])).astype(np.int64)
    room, counts = np.zeros(n + 1, dtype=np.int64), np.zeros(n, dtype=np.int64)
    out_idx, out_data = np.empty(size, dtype=np.int32), np.empty(size)
    _sum_with_transpose(
        rows, cols, np.asarray(values, dtype=np.float64), forward, backward, n, entry_starts, np.zeros(n + 1, dtype=np.int64),
        np.zeros((max(len(entry_starts) - 1, 1), n), dtype=np.int64), np.zeros(n + 1, dtype=np.int64), np.empty(n_back, dtype=np.int32),
        np.empty(n_back), room, counts, out_idx, out_data,
    )
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    m = int(indptr[-1])
    if m < size:  # repeats merged or zeros dropped: close the gaps between rows
        idx, data = np.empty(m, dtype=np.int32), np.empty(m)
        row_starts = np.unique(np.searchsorted(indptr, np.linspace(0, m, parts + 1)).clip(0, n)).astype(np.int64)
        row_starts[0], row_starts[-1] = 0, n
        _compact(room, counts, indptr, out_idx, out_data, idx, data, row_starts)
        out_idx, out_data = idx, data
    out = sp.csr_matrix((out_data, out_idx, _index(indptr, n, m)), shape=(n, n))
    out.has_sorted_indices = True
    return out


@numba.njit(parallel=True, cache=True, nogil=True)
def _scaled_transpose(
    indptr: np.ndarray, indices: np.ndarray, data: np.ndarray, row_scale: np.ndarray, n_cols: int, starts: np.ndarray,
    out_ptr: np.ndarray, out_idx: np.ndarray, out_data: np.ndarray,
) -> None:  # pragma: no cover - compiled; tested through scaled_transpose
    # a counting sort by column, in parallel over blocks of rows: each block counts its
    # columns, then writes its entries of each column after those of the blocks before it,
    # so that every output row stays sorted
    n_blocks = len(starts) - 1
    place = np.zeros((n_blocks, n_cols), dtype=np.int64)
    for b in numba.prange(n_blocks):
        count = place[b]
        for k in range(indptr[starts[b]], indptr[starts[b + 1]]):
            count[np.uint64(indices[k])] += 1
    for c in range(n_cols):
        out_ptr[c + 1] = _claim(place, c, out_ptr[c])
    for b in numba.prange(n_blocks):
        fill = place[b]
        for r in range(starts[b], starts[b + 1]):
            s = row_scale[r]
            for k in range(indptr[r], indptr[r + 1]):
                c = np.uint64(indices[k])
                at = np.uint64(fill[c])
                out_idx[at] = r
                out_data[at] = data[k] * s
                fill[c] += 1


def scaled_transpose(matrix: sp.csr_matrix, row_scale: np.ndarray) -> sp.csr_matrix:
    """``(diag(row_scale) @ matrix).T`` as CSR with sorted indices, in one counting pass
    shared by the cores."""
    A = matrix if isinstance(matrix, sp.csr_matrix) else sp.csr_matrix(matrix)
    n_rows, n_cols = A.shape
    if max(A.shape) >= np.iinfo(np.int32).max:
        return sp.csr_matrix((sp.diags(row_scale) @ A).T)
    parts = numba.get_num_threads() if A.nnz >= _PARALLEL_MIN else 1
    cuts = np.searchsorted(A.indptr, np.linspace(0, A.nnz, parts + 1)[1:-1]) if parts > 1 else np.zeros(0, dtype=np.int64)
    starts = np.unique(np.concatenate([[0], np.clip(cuts, 0, n_rows), [n_rows]])).astype(np.int64)
    indptr, indices, data = np.zeros(n_cols + 1, dtype=np.int64), np.empty(A.nnz, dtype=np.int32), np.empty(A.nnz)
    _scaled_transpose(
        A.indptr, A.indices, np.asarray(A.data, dtype=np.float64), np.asarray(row_scale, dtype=np.float64), int(n_cols), starts,
        indptr, indices, data,
    )
    out = sp.csr_matrix((data, indices, _index(indptr, max(A.shape), len(data))), shape=(n_cols, n_rows))
    out.has_sorted_indices = True
    return out


#: Below this many entries one thread is faster than sharing a pass between several.
_PARALLEL_MIN = 500_000


@numba.njit(cache=True, nogil=True)
def _block_indptr(a_ptr: np.ndarray, b_ptr: np.ndarray, c_ptr: np.ndarray, indptr: np.ndarray) -> None:  # pragma: no cover - compiled
    n, m = len(a_ptr) - 1, len(c_ptr) - 1
    at = 0
    for r in range(n):
        at += (a_ptr[r + 1] - a_ptr[r]) + (b_ptr[r + 1] - b_ptr[r])
        indptr[r + 1] = at
    for r in range(m):
        at += c_ptr[r + 1] - c_ptr[r]
        indptr[n + r + 1] = at


@numba.njit(parallel=True, cache=True, nogil=True)
def _blocks(
    indptr: np.ndarray, a_ptr: np.ndarray, a_idx: np.ndarray, a_data: np.ndarray, b_ptr: np.ndarray, b_idx: np.ndarray,
    b_data: np.ndarray, c_ptr: np.ndarray, c_idx: np.ndarray, c_data: np.ndarray, left: np.ndarray, right: np.ndarray,
    bottom: np.ndarray, offset: int, starts: np.ndarray, indices: np.ndarray, data: np.ndarray,
) -> None:  # pragma: no cover - compiled; tested through block_csr
    # a scaling given as an empty array is the identity (no gather, no product)
    n = len(a_ptr) - 1
    by_left, by_right, by_bottom = len(left) > 0, len(right) > 0, len(bottom) > 0
    for t in numba.prange(len(starts) - 1):
        for r in range(starts[t], starts[t + 1]):
            at = indptr[r]
            if r < n:
                for k in range(a_ptr[r], a_ptr[r + 1]):
                    c = np.uint64(a_idx[k])
                    indices[at] = c
                    data[at] = a_data[k] * left[c] if by_left else a_data[k]
                    at += 1
                for k in range(b_ptr[r], b_ptr[r + 1]):
                    c = np.uint64(b_idx[k])
                    indices[at] = c + offset
                    data[at] = b_data[k] * right[c] if by_right else b_data[k]
                    at += 1
            else:
                s = bottom[r - n] if by_bottom else 1.0
                for k in range(c_ptr[r - n], c_ptr[r - n + 1]):
                    c = np.uint64(c_idx[k])
                    indices[at] = c
                    v = c_data[k] * s if by_bottom else c_data[k]
                    data[at] = v * left[c] if by_left else v
                    at += 1


def block_csr(
    top_left: sp.csr_matrix, top_right: sp.csr_matrix, bottom_left: sp.csr_matrix, *, left_scale: np.ndarray | None = None,
    right_scale: np.ndarray | None = None, bottom_row_scale: np.ndarray | None = None,
) -> sp.csr_matrix:
    """``[[A L, B R], [S C L, 0]]`` as CSR, for ``A, B, C`` = ``top_left, top_right,
    bottom_left`` and the diagonal scalings ``L`` (``left_scale``, of the left block's
    columns), ``R`` (``right_scale``) and ``S`` (``bottom_row_scale``); each is the identity
    when not given.

    The walk matrix over users then identifiers, and its transition matrix, in one pass over
    the entries shared by the cores, where ``scipy.sparse.bmat`` goes through COO and sorts.
    """
    n, k = top_left.shape[0], top_right.shape[1]
    m, size = bottom_left.shape[0], top_left.shape[1] + k
    nnz = top_left.nnz + top_right.nnz + bottom_left.nnz
    if max(size, n + m) >= np.iinfo(np.int32).max or nnz >= np.iinfo(np.int32).max:
        dl = sp.diags(np.ones(top_left.shape[1]) if left_scale is None else left_scale)
        dr = sp.diags(np.ones(k) if right_scale is None else right_scale)
        ds = sp.diags(np.ones(m) if bottom_row_scale is None else bottom_row_scale)
        return sp.csr_matrix(sp.bmat([[top_left @ dl, top_right @ dr], [ds @ bottom_left @ dl, None]], format="csr"))
    A, B, C = (x if isinstance(x, sp.csr_matrix) else sp.csr_matrix(x) for x in (top_left, top_right, bottom_left))
    for x in (A, B, C):
        if not x.has_sorted_indices:
            x.sort_indices()
    indptr = np.zeros(n + m + 1, dtype=np.int32)
    _block_indptr(A.indptr, B.indptr, C.indptr, indptr)
    parts = numba.get_num_threads() if nnz >= _PARALLEL_MIN else 1
    starts = np.unique(np.searchsorted(indptr, np.linspace(0, nnz, parts + 1)).clip(0, n + m)).astype(np.int64)
    starts[0], starts[-1] = 0, n + m

    def scale(x: np.ndarray | None) -> np.ndarray:
        return np.zeros(0) if x is None else np.asarray(x, dtype=np.float64)

    f64 = np.float64
    indices, data = np.empty(nnz, dtype=np.int32), np.empty(nnz)
    _blocks(
        indptr, A.indptr, A.indices, np.asarray(A.data, dtype=f64), B.indptr, B.indices, np.asarray(B.data, dtype=f64),
        C.indptr, C.indices, np.asarray(C.data, dtype=f64), scale(left_scale), scale(right_scale), scale(bottom_row_scale),
        int(top_left.shape[1]), starts, indices, data,
    )
    out = sp.csr_matrix((data, indices, indptr), shape=(n + m, size))
    out.has_sorted_indices = True
    return out


def _index(indptr: np.ndarray, size: int, nnz: int) -> np.ndarray:
    """``indptr`` as int32 when every index fits (scipy then keeps int32 indices too)."""
    small = size < np.iinfo(np.int32).max and nnz < np.iinfo(np.int32).max
    return indptr.astype(np.int32) if small else indptr


@numba.njit(parallel=True, cache=True, nogil=True)
def _row_sums(indptr: np.ndarray, data: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover - compiled; tested through row_sums
    for r in numba.prange(len(indptr) - 1):
        s = 0.0
        for k in range(indptr[r], indptr[r + 1]):
            s += data[k]
        out[r] = s


def row_sums(matrix: sp.csr_matrix) -> np.ndarray:
    """Sum of each row of a CSR matrix (``matrix.sum(axis=1)`` as a flat array, without the product)."""
    out = np.empty(matrix.shape[0])
    _row_sums(matrix.indptr, np.asarray(matrix.data, dtype=np.float64), out)
    return out


@numba.njit(parallel=True, cache=True, nogil=True)
def _walk_out_degree(
    r_ptr: np.ndarray, r_data: np.ndarray, i_ptr: np.ndarray, i_idx: np.ndarray, i_data: np.ndarray, damp: np.ndarray, out: np.ndarray
) -> None:  # pragma: no cover - compiled; tested through walk_out_degree
    for u in numba.prange(len(r_ptr) - 1):
        s = 0.0
        for k in range(r_ptr[u], r_ptr[u + 1]):
            s += r_data[k]
        for k in range(i_ptr[u], i_ptr[u + 1]):
            s += i_data[k] * damp[np.uint64(i_idx[k])]
        out[u] = s


def walk_out_degree(relations: sp.csr_matrix, incidence: sp.csr_matrix, damp: np.ndarray) -> np.ndarray:
    """Row sums of ``[relations, incidence @ diag(damp)]``: the users' weighted out-degrees in
    the walk matrix, summed in the order of its rows."""
    out = np.empty(relations.shape[0])
    f64 = np.float64
    _walk_out_degree(relations.indptr, np.asarray(relations.data, dtype=f64), incidence.indptr, incidence.indices,
                     np.asarray(incidence.data, dtype=f64), np.asarray(damp, dtype=f64), out)
    return out
