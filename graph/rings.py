"""Rings by entity resolution: users joined, directly or in a chain, by shared identifiers."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

from graph.projection import Projection

__all__ = ["identifier_components", "ring_ids"]


def identifier_components(projection: Projection) -> tuple[np.ndarray, np.ndarray]:
    """Connected components of users over shared identifiers.

    Identifiers above the projection's hub limit are already left out, so a public Wi-Fi IP
    does not merge a whole city into one ring.

    Returns
    -------
    labels : ndarray of int, shape (n_users,)
        Component of each user.
    sizes : ndarray of int
        Users per component.
    """
    n, m = projection.n_users, projection.n_idents
    B = projection.shared
    graph = sp.bmat([[None, B], [B.T, None]], format="csr") if m else sp.csr_matrix((n, n))
    _, labels = connected_components(graph, directed=False)
    labels = labels[:n]
    _, labels = np.unique(labels, return_inverse=True)
    return labels, np.bincount(labels)


def ring_ids(projection: Projection) -> np.ndarray:
    """A ring id per user (``ring-<smallest member id>``), empty for users who share nothing.

    Examples
    --------
    Users sharing a device are one ring; a user alone has none (see the tests).
    """
    labels, sizes = identifier_components(projection)
    ids = projection.user_ids.astype(str)
    order = np.argsort(ids, kind="stable")
    first = np.full(len(sizes), -1, dtype=np.int64)
    # the smallest id of each component, found in one pass over the sorted ids
    seen = np.zeros(len(sizes), dtype=bool)
    for i in order.tolist():
        c = labels[i]
        if not seen[c]:
            seen[c] = True
            first[c] = i
    out = np.array([f"ring-{ids[first[c]]}" if sizes[c] > 1 else "" for c in labels.tolist()], dtype=object)
    return out
