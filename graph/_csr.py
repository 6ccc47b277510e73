"""Compiled CSR assembly (numba) for projections: one pass over entries already in order.

scipy builds CSR from COO by sorting; the encoded graph keeps its entries sorted by
``(row, col)`` from load time, so a projection only has to select, merge repeats and count.
"""

from __future__ import annotations

import numba
import numpy as np
import scipy.sparse as sp

__all__ = ["sorted_csr"]


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
