"""Rings: groups of users that act together, found three ways and ranked by their risk.

- ``components``: entity resolution, users joined directly or in a chain by shared identifiers;
- ``communities``: Louvain communities of the graph of users, shared identifiers and relations;
- ``dense``: the densest blocks of users x shared identifiers, by FRAUDAR's greedy peeling.

Each kind gives *ring labels*: one integer per user, ``-1`` for a user in no ring.
:func:`rank_rings` turns labels into a table an analyst can read.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

from graph.dense import camouflage_weights, dense_blocks
from graph.explain import ident_label
from graph.projection import Projection
from loaders.errors import ParameterError

__all__ = [
    "RING_KINDS",
    "RING_COLUMNS",
    "identifier_components",
    "ring_ids",
    "component_rings",
    "community_rings",
    "dense_rings",
    "ring_labels",
    "rank_rings",
]

#: The kinds of ring :func:`ring_labels` can find.
RING_KINDS: tuple[str, ...] = ("components", "communities", "dense")

#: Columns of the table returned by :func:`rank_rings`.
RING_COLUMNS: tuple[str, ...] = (
    "rank",
    "ring_id",
    "size",
    "risk_mass",
    "mean_risk",
    "max_risk",
    "density",
    "fraud",
    "benign",
    "n_identifiers",
    "members",
    "identifiers",
    "identifier_keys",
    "fraud_members",
    "benign_members",
)


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


def component_rings(projection: Projection) -> np.ndarray:
    """Ring labels from :func:`identifier_components`: components of two users or more.

    Parameters
    ----------
    projection : Projection

    Returns
    -------
    ndarray of int, shape (n_users,)
        Ring of each user, numbered from 0 in the order of their first member; -1 for a user
        who shares no identifier with anyone.

    Examples
    --------
    >>> from graph.projection import project
    >>> from loaders import read_tables
    >>> import pandas as pd
    >>> links = pd.DataFrame({"user_id": ["a", "b", "c", "d"], "kind": "device", "value": ["D1", "D1", "D2", "D3"]})
    >>> p = project(read_tables({"links": links}, key=b"doctest-key-0123456789"))
    >>> dict(zip(p.user_ids.tolist(), component_rings(p).tolist()))
    {'a': 0, 'b': 0, 'c': -1, 'd': -1}
    """
    labels, sizes = identifier_components(projection)
    return _compact(np.where(sizes[labels] >= 2, labels, -1))


def community_rings(
    projection: Projection,
    *,
    seed: int,
    resolution: float = 1.0,
    relations: bool = True,
) -> np.ndarray:
    """Ring labels from Louvain communities of users, shared identifiers and relations.

    The graph has a node per user and per shared identifier (hubs above the hub limit are
    already out): an edge joins a user to each identifier it shares, and two users with a
    relation of any kind, in either direction. Identifiers stay nodes, so one shared by ``d``
    users costs ``d`` edges, not ``d^2``. Louvain [1]_ groups the nodes to maximise modularity;
    each community with two users or more is a ring. Unlike connected components, a chain of
    households joined through one café IP splits into its households.

    The communities come from networkx's ``louvain_communities``: networkx is already a
    dependency, is pure Python (nothing to compile), BSD-licensed, widely used and tested, and
    takes an explicit ``seed``. (Its ``leiden_communities`` only dispatches to optional
    backends; ``leidenalg`` would add a compiled, GPL-licensed dependency.) The sparse matrix
    becomes a networkx graph inside this function only, and the result comes back as labels.

    Parameters
    ----------
    projection : Projection
    seed : int
        Seed of Louvain's random node order; the same seed and graph give the same rings.
    resolution : float
        Modularity resolution, > 0: above 1 favours smaller communities, below 1 larger ones.
    relations : bool
        Whether user-to-user relations are edges (otherwise shared identifiers only).

    Returns
    -------
    ndarray of int, shape (n_users,)
        Ring of each user, numbered from 0 in the order of their first member; -1 for a user
        whose community holds no other user.

    Raises
    ------
    ParameterError
        If ``resolution`` is not > 0.

    References
    ----------
    .. [1] V. D. Blondel, J.-L. Guillaume, R. Lambiotte, E. Lefebvre, "Fast unfolding of
       communities in large networks", J. Stat. Mech. P10008, 2008.

    Examples
    --------
    >>> from graph.projection import project
    >>> from loaders import read_tables
    >>> import pandas as pd
    >>> links = pd.DataFrame({"user_id": ["a", "b", "c", "d"], "kind": "device", "value": ["D1", "D1", "D2", "D2"]})
    >>> p = project(read_tables({"links": links}, key=b"doctest-key-0123456789"))
    >>> dict(zip(p.user_ids.tolist(), community_rings(p, seed=0).tolist()))
    {'a': 0, 'b': 0, 'c': 1, 'd': 1}
    """
    if not resolution > 0:
        raise ParameterError(f"The 'resolution' parameter of community_rings must be > 0. Got {resolution!r} instead.")
    n, m = projection.n_users, projection.n_idents
    users = _symmetric(projection.related) if relations else sp.csr_matrix((n, n))
    adjacency = sp.csr_matrix(sp.bmat([[users, projection.shared], [projection.shared.T, None]], format="csr")) if m else users
    labels = _louvain(adjacency, seed=seed, resolution=resolution)[:n]
    sizes = np.bincount(labels[labels >= 0], minlength=1)
    return _compact(np.where((labels >= 0) & (sizes[np.maximum(labels, 0)] >= 2), labels, -1))


def dense_rings(projection: Projection, *, k: int, c: float = 5.0, relations: bool = False) -> np.ndarray:
    """Ring labels from the ``k`` densest blocks of users x shared identifiers (FRAUDAR).

    See :func:`graph.dense.dense_blocks`: edges to an identifier shared by ``d`` users weigh
    ``1 / log(d + c)``, so a fraud ring that also uses popular identifiers to look normal is
    still found in the densest block; the block's users are removed and the search repeats.
    A block may gather several groups that are each dense but share nothing (greedy peeling
    keeps them together when they are about equally dense), so each connected part of a block
    with two users or more is a ring of its own.

    Parameters
    ----------
    projection : Projection
    k : int
        Number of blocks to find, >= 1.
    c : float
        Smoothing constant of the column weights, > 0 (5 in the paper).
    relations : bool
        Also count user-to-user relations as columns (user ``j``'s column holds the users with a
        relation to or from ``j``). Off by default: friends who all know one another form dense
        blocks too, while sharing devices, phones and cards is what rings do.

    Returns
    -------
    ndarray of int, shape (n_users,)
        Ring of each user, in the order the blocks were found (the first block's parts first),
        then of their first member; -1 for users in no ring.

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
    a and b share three devices; c shares one of them and d and e one more device.

    >>> from graph.projection import project
    >>> from loaders import read_tables
    >>> import pandas as pd
    >>> links = pd.DataFrame({"user_id": list("aaabbbcde"), "kind": "device", "value": ["D1", "D2", "D3"] * 2 + ["D1", "D4", "D4"]})
    >>> p = project(read_tables({"links": links}, key=b"doctest-key-0123456789"))
    >>> dict(zip(p.user_ids.tolist(), dense_rings(p, k=1).tolist()))
    {'a': 0, 'b': 0, 'c': -1, 'd': -1, 'e': -1}
    """
    matrix = projection.shared
    if relations:
        matrix = sp.hstack([matrix, _symmetric(projection.related)], format="csr")
    n = projection.n_users
    labels = np.full(n, -1, dtype=np.int64)
    next_label = 0
    for block in dense_blocks(matrix, k=k, c=c):
        inner = sp.csr_matrix(matrix[block.rows][:, block.cols])
        r = len(block.rows)
        _, part = connected_components(sp.bmat([[None, inner], [inner.T, None]], format="csr"), directed=False)
        part = _compact(part[:r])
        sizes = np.bincount(part)
        keep = sizes[part] >= 2
        labels[block.rows[keep]] = next_label + _compact(np.where(keep, part, -1))[keep]
        next_label = int(labels.max()) + 1
    return labels


def ring_labels(projection: Projection, *, kind: str, k: int = 10, seed: int = 0) -> np.ndarray:
    """Ring labels of the named kind.

    Parameters
    ----------
    projection : Projection
    kind : {"components", "communities", "dense"}
        :func:`component_rings`, :func:`community_rings` or :func:`dense_rings`.
    k : int
        Blocks to find for ``dense`` (ignored otherwise).
    seed : int
        Louvain's seed for ``communities`` (ignored otherwise).

    Returns
    -------
    ndarray of int, shape (n_users,)
        -1 for users in no ring.

    Raises
    ------
    ParameterError
        On an unknown kind.
    """
    if kind == "components":
        return component_rings(projection)
    if kind == "communities":
        return community_rings(projection, seed=seed)
    if kind == "dense":
        return dense_rings(projection, k=k)
    raise ParameterError(f"The 'kind' parameter of ring_labels must be one of {', '.join(RING_KINDS)}. Got {kind!r} instead.")


def rank_rings(
    projection: Projection,
    labels: np.ndarray,
    risk: np.ndarray,
    *,
    fraud: np.ndarray | None = None,
    benign: np.ndarray | None = None,
    top: int | None = None,
    c: float = 5.0,
) -> pd.DataFrame:
    """Rings ranked by risk mass, with their members, shared identifiers and flags.

    Parameters
    ----------
    projection : Projection
    labels : ndarray of int, shape (n_users,)
        Ring of each user, -1 for none (from :func:`ring_labels`).
    risk : ndarray of float, shape (n_users,)
        Risk score of each user (finite, e.g. the ``risk`` column of the scores).
    fraud, benign : ndarray of bool, shape (n_users,), optional
        Users whose latest flag is confirmed fraud, or benign. Default: none.
    top : int, optional
        Keep the ``top`` rings with the most risk mass (all by default).
    c : float
        Smoothing constant of the identifier weights used for ``density``.

    Returns
    -------
    DataFrame
        One row per ring (:data:`RING_COLUMNS`), by decreasing ``risk_mass``, then size, then id:

        - ``rank`` (1 = most risk), ``ring_id`` (``ring-<smallest member id>``), ``size``
          (members);
        - ``risk_mass``: sum of the members' risk; ``mean_risk``, ``max_risk``;
        - ``density``: FRAUDAR's ``g`` of the block formed by the members and the identifiers
          at least two of them share, edges to an identifier of ``d`` users weighing
          ``1 / log(d + c)``: weighted links over members plus identifiers (0 for a ring
          held together by relations only);
        - ``fraud``, ``benign``: members flagged so; ``n_identifiers``: identifiers shared by
          two members or more;
        - ``members`` (by decreasing risk, then id), ``identifiers`` (short labels such as
          ``device d-3f9a``, most shared first), ``identifier_keys`` (the same, as pseudonymised
          ``kind:digest`` keys), ``fraud_members``, ``benign_members``: lists.

    Raises
    ------
    ParameterError
        On arrays of the wrong length, a non-finite risk, or ``top < 1``.

    Examples
    --------
    Two rings: a and b (risk 0.9 + 0.1) share a device, c and d (0.6 + 0.6) another. The
    second ring holds more risk, though its riskiest member is less risky.

    >>> import numpy as np, pandas as pd
    >>> from graph.projection import project
    >>> from loaders import read_tables
    >>> links = pd.DataFrame({"user_id": ["a", "b", "c", "d"], "kind": "device", "value": ["D1", "D1", "D2", "D2"]})
    >>> p = project(read_tables({"links": links}, key=b"doctest-key-0123456789"))
    >>> table = rank_rings(p, component_rings(p), np.array([0.9, 0.1, 0.6, 0.6]), fraud=np.array([1, 0, 0, 0]))
    >>> print(table[["rank", "ring_id", "size", "risk_mass", "fraud", "members"]].to_string(index=False))
     rank ring_id  size  risk_mass  fraud members
        1  ring-c     2        1.2      0  [c, d]
        2  ring-a     2        1.0      1  [a, b]
    """
    n = projection.n_users
    labels = _vector(labels, n, "labels").astype(np.int64)
    risk = _vector(risk, n, "risk").astype(np.float64)
    if not np.all(np.isfinite(risk)):
        raise ParameterError("The 'risk' of rank_rings must be finite for every user (use 0 for users without a score).")
    fraud = np.zeros(n, dtype=bool) if fraud is None else _vector(fraud, n, "fraud").astype(bool)
    benign = np.zeros(n, dtype=bool) if benign is None else _vector(benign, n, "benign").astype(bool)
    if top is not None and (int(top) != top or top < 1):
        raise ParameterError(f"The 'top' parameter of rank_rings must be an integer >= 1. Got {top!r} instead.")
    if labels.min(initial=-1) < -1:
        raise ParameterError("The 'labels' of rank_rings must be -1 (no ring) or a ring number >= 0.")

    members = np.flatnonzero(labels >= 0)
    n_rings = int(labels.max(initial=-1)) + 1
    ring_of = labels[members]
    size = np.bincount(ring_of, minlength=n_rings)
    present = np.flatnonzero(size > 0)
    if len(present) == 0:
        return pd.DataFrame({col: pd.Series(dtype=object) for col in RING_COLUMNS})

    mass = np.bincount(ring_of, weights=risk[members], minlength=n_rings)
    peak = np.full(n_rings, -np.inf)
    np.maximum.at(peak, ring_of, risk[members])
    n_fraud = np.bincount(ring_of, weights=fraud[members], minlength=n_rings).astype(np.int64)
    n_benign = np.bincount(ring_of, weights=benign[members], minlength=n_rings).astype(np.int64)

    # membership (rings x users); identifiers used by two members or more are the ring's
    P = sp.csr_matrix((np.ones(len(members)), (ring_of, members)), shape=(n_rings, n))
    uses = sp.csr_matrix(P @ projection.shared)
    shared_by = uses.multiply(uses >= 2).tocsr()
    shared_by.eliminate_zeros()
    weighted = sp.csr_matrix(P @ camouflage_weights(projection.shared, c=c))
    links = np.asarray(weighted.multiply(shared_by > 0).sum(axis=1)).ravel()
    n_idents = np.diff(shared_by.indptr)
    density = links / (size + n_idents)

    # ring id: the smallest member id, in string order
    ids = projection.user_ids.astype(str)
    by_id = members[np.argsort(ids[members], kind="stable")]
    first = np.full(n_rings, -1, dtype=np.int64)
    first[labels[by_id][::-1]] = by_id[::-1]
    ring_id = np.array([f"ring-{ids[i]}" if i >= 0 else "" for i in first.tolist()], dtype=object)

    order = sorted(present.tolist(), key=lambda r: (-mass[r], -size[r], ring_id[r]))
    if top is not None:
        order = order[: int(top)]

    # member lists for the rings kept: by decreasing risk, then id
    kept = np.isin(labels, order)
    idx = np.flatnonzero(kept)
    idx = idx[np.lexsort((ids[idx], -risk[idx], labels[idx]))]
    grouped: dict[int, np.ndarray] = {}
    if len(idx):
        bounds = np.flatnonzero(np.diff(labels[idx])) + 1
        for part in np.split(idx, bounds):
            grouped[int(labels[part[0]])] = part
    keys = projection.ident_keys.astype(str)
    rows = []
    for rank, r in enumerate(order, start=1):
        who = grouped[r]
        lo, hi = shared_by.indptr[r], shared_by.indptr[r + 1]
        cols, counts = shared_by.indices[lo:hi], shared_by.data[lo:hi]
        short = [ident_label(k) for k in keys[cols].tolist()]
        ident_order = sorted(range(len(cols)), key=lambda t: (-counts[t], short[t], keys[cols[t]]))
        rows.append(
            {
                "rank": rank,
                "ring_id": ring_id[r],
                "size": int(size[r]),
                "risk_mass": float(mass[r]),
                "mean_risk": float(mass[r] / size[r]),
                "max_risk": float(peak[r]),
                "density": float(density[r]),
                "fraud": int(n_fraud[r]),
                "benign": int(n_benign[r]),
                "n_identifiers": int(n_idents[r]),
                "members": ids[who].tolist(),
                "identifiers": [short[t] for t in ident_order],
                "identifier_keys": [str(keys[cols[t]]) for t in ident_order],
                "fraud_members": ids[who[fraud[who]]].tolist(),
                "benign_members": ids[who[benign[who]]].tolist(),
            }
        )
    return pd.DataFrame(rows, columns=list(RING_COLUMNS))


def _vector(values: np.ndarray, n: int, name: str) -> np.ndarray:
    array = np.asarray(values)
    if array.shape != (n,):
        raise ParameterError(f"The '{name}' of rank_rings must have one value per user ({n}). Got shape {array.shape} instead.")
    return array


def _symmetric(matrix: sp.csr_matrix) -> sp.csr_matrix:
    """Binary, symmetric: 1 where either direction has an edge."""
    both = sp.csr_matrix(matrix + matrix.T)
    both.data[:] = 1.0
    both.eliminate_zeros()
    return both


def _compact(labels: np.ndarray) -> np.ndarray:
    """Renumber rings 0, 1, ... in the order of their first member; -1 stays -1."""
    out = np.full(len(labels), -1, dtype=np.int64)
    inside = labels >= 0
    if inside.any():
        _, first = np.unique(labels[inside], return_index=True)
        rank = np.empty(len(first), dtype=np.int64)
        rank[np.argsort(first, kind="stable")] = np.arange(len(first))
        _, inverse = np.unique(labels[inside], return_inverse=True)
        out[inside] = rank[inverse]
    return out


def _louvain(adjacency: sp.csr_matrix, *, seed: int, resolution: float) -> np.ndarray:
    """Louvain community of each node of a symmetric adjacency; -1 for nodes without an edge.

    The only place where the graph becomes a networkx object.
    """
    import networkx as nx

    n = adjacency.shape[0]
    linked = np.flatnonzero(np.diff(adjacency.indptr) > 0)
    labels = np.full(n, -1, dtype=np.int64)
    if len(linked) == 0:
        return labels
    sub = sp.csr_matrix(adjacency[linked][:, linked])
    graph = nx.from_scipy_sparse_array(sub, edge_attribute="weight")
    communities = nx.community.louvain_communities(graph, weight="weight", resolution=resolution, seed=seed)
    for i, nodes in enumerate(communities):
        labels[linked[np.fromiter(nodes, dtype=np.int64, count=len(nodes))]] = i
    return labels
