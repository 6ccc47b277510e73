"""Compiled kernels for the propagation loops (numba), where scipy has no fused operation.

One power-iteration step of personalized PageRank reads the matrix once and writes the new
vector once: ``y = M x`` and ``sum |y - x|`` in the same pass over the rows, in parallel over
blocks of rows. scipy's products need the residual as separate passes over the vectors; on a
memory-bound machine those passes are a third of the cost of an iteration. The restart, non-zero
only at the seeds, is added to those few rows afterwards (:mod:`graph.propagation.pagerank`)
rather than read as a dense vector on every row.

Indices are read as unsigned: numba wraps negative indices around (``x[-1]``), a compare and
branch on every gather of a signed index; unsigned ones have none, and the inner loop then
runs faster than scipy's own compiled product.
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["fused_step"]


@numba.njit(cache=True, nogil=True, inline="always")
def _row_product(indptr: np.ndarray, indices: np.ndarray, data: np.ndarray, x: np.ndarray, i: int) -> float:  # pragma: no cover - compiled
    """Row ``i`` of ``M x`` for CSR ``M`` (inlined into the kernels that call it)."""
    s = 0.0
    k = np.uint64(indptr[i])
    end = np.uint64(indptr[i + 1])
    while k < end:
        s += data[k] * x[np.uint64(indices[k])]
        k += np.uint64(1)
    return s


@numba.njit(parallel=True, cache=True, nogil=True)
def fused_step(
    indptr: np.ndarray, indices: np.ndarray, data: np.ndarray, x: np.ndarray, out: np.ndarray, starts: np.ndarray, scale: float,
    omega: float,
) -> float:  # pragma: no cover - compiled; tested through personalized_pagerank
    """One step in one pass over CSR ``M``: ``y = scale * M x``, written to ``out`` when
    ``omega`` is 1 (a power step), or ``out <- omega (y - out) + out`` otherwise (a Chebyshev
    step, ``out`` holding the iterate before ``x``). Returns ``sum |y - x|``, the change a power
    step from ``x`` makes. ``starts`` are the first rows of the blocks the threads take (and
    ``n`` last)."""
    n_blocks = len(starts) - 1
    partial = np.zeros(n_blocks)
    power = omega == 1.0
    for b in numba.prange(n_blocks):
        acc = 0.0
        for i in range(starts[b], starts[b + 1]):
            s = scale * _row_product(indptr, indices, data, x, i)
            acc += abs(s - x[i])
            out[i] = s if power else omega * (s - out[i]) + out[i]
        partial[b] = acc
    return partial.sum()
