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

__all__ = ["chebyshev_step", "fused_step"]


@numba.njit(parallel=True, cache=True, nogil=True)
def fused_step(
    indptr: np.ndarray, indices: np.ndarray, data: np.ndarray, x: np.ndarray, y: np.ndarray, starts: np.ndarray, scale: float
) -> float:  # pragma: no cover - compiled; tested through personalized_pagerank
    """``y = scale * M x`` for CSR ``M``; returns ``sum |y - x|``. ``starts`` are the first rows of the
    blocks the threads take (and ``n`` last)."""
    n_blocks = len(starts) - 1
    partial = np.zeros(n_blocks)
    for b in numba.prange(n_blocks):
        acc = 0.0
        for i in range(starts[b], starts[b + 1]):
            s = 0.0
            k = np.uint64(indptr[i])
            end = np.uint64(indptr[i + 1])
            while k < end:
                s += data[k] * x[np.uint64(indices[k])]
                k += np.uint64(1)
            s *= scale
            y[i] = s
            acc += abs(s - x[i])
        partial[b] = acc
    return partial.sum()


@numba.njit(parallel=True, cache=True, nogil=True)
def chebyshev_step(
    indptr: np.ndarray, indices: np.ndarray, data: np.ndarray, x: np.ndarray, previous: np.ndarray, starts: np.ndarray,
    scale: float, omega: float,
) -> float:  # pragma: no cover - compiled; tested through personalized_pagerank
    """One Chebyshev step in one pass: ``y = scale * M x``, ``previous <- omega (y - previous)
    + previous`` (the next iterate, written over the one before ``x``); returns
    ``sum |y - x|``, the change a plain power step from ``x`` would make."""
    n_blocks = len(starts) - 1
    partial = np.zeros(n_blocks)
    for b in numba.prange(n_blocks):
        acc = 0.0
        for i in range(starts[b], starts[b + 1]):
            s = 0.0
            k = np.uint64(indptr[i])
            end = np.uint64(indptr[i + 1])
            while k < end:
                s += data[k] * x[np.uint64(indices[k])]
                k += np.uint64(1)
            s *= scale
            acc += abs(s - x[i])
            previous[i] = omega * (s - previous[i]) + previous[i]
        partial[b] = acc
    return partial.sum()
