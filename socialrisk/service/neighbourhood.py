"""A user's bounded neighbourhood from the sparse projection (the embedded store's answer to
what :meth:`graph.store.neo4j.Neo4jStore.neighbourhood` asks Neo4j).

Same semantics: nodes are users and shared identifiers; a hop is one user-identifier link or
one user-user relation; from each node at most ``limit`` neighbours are expanded, riskiest
first (identifiers count as risk 0), ties by name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from graph.projection import Projection
from loaders.errors import NotFoundError, ParameterError

__all__ = ["NeighbourIndex", "neighbourhood"]


@dataclass(frozen=True)
class NeighbourIndex:
    """Adjacency of a projection in the shapes a neighbourhood walk reads, built once.

    Node ``i < n_users`` is user ``i``; node ``n_users + j`` is shared identifier ``j``.
    """

    projection: Projection
    to_ident: sp.csr_matrix
    to_user: sp.csr_matrix
    rel_out: dict[str, sp.csr_matrix]
    rel_in: dict[str, sp.csr_matrix]

    @classmethod
    def build(cls, projection: Projection) -> "NeighbourIndex":
        inc = sp.csr_matrix(projection.incidence)
        return cls(
            projection=projection,
            to_ident=inc,
            to_user=sp.csr_matrix(inc.T),
            rel_out={k: sp.csr_matrix(m) for k, m in projection.relations_count.items()},
            rel_in={k: sp.csr_matrix(m.T) for k, m in projection.relations_count.items()},
        )

    def name(self, node: int) -> str:
        n = self.projection.n_users
        return str(self.projection.user_ids[node]) if node < n else str(self.projection.ident_keys[node - n])


def _row(m: sp.csr_matrix, i: int) -> tuple[np.ndarray, np.ndarray]:
    lo, hi = m.indptr[i], m.indptr[i + 1]
    return m.indices[lo:hi], m.data[lo:hi]


def neighbourhood(
    index: NeighbourIndex,
    user_id: str,
    *,
    hops: int,
    limit: int,
    user_risk: Callable[[np.ndarray], np.ndarray],
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The user's neighbourhood up to ``hops`` steps, at most ``limit`` neighbours per node.

    Parameters
    ----------
    index : NeighbourIndex
    user_id : str
    hops : int
        Steps from the user, 1..4.
    limit : int
        Neighbours expanded per node, 1..1000, riskiest first.
    user_risk : callable
        Risk of users given their indices (NaN where unknown); orders the neighbours.

    Returns
    -------
    nodes : list of dict
        ``name``, ``node_type`` (``user``/``identifier``), ``hop``, ``ident_kind``.
    edges : list of dict
        ``source``, ``target``, ``type`` (``USES``/``RELATES``), ``kind`` (``uses`` or the
        relation kind), ``weight`` (link weight; for relations the number of that kind), ``ts``
        (None: the projection keeps no times).
    """
    if not 1 <= hops <= 4:
        raise ParameterError(f"The 'hops' parameter of neighbourhood must be in 1..4. Got {hops!r} instead.")
    if not 1 <= limit <= 1000:
        raise ParameterError(f"The 'limit' parameter of neighbourhood must be in 1..1000. Got {limit!r} instead.")
    p = index.projection
    n = p.n_users
    start = int(p.user_index.get_indexer([user_id])[0])
    if start < 0:
        raise NotFoundError(f"unknown user {user_id!r}: not in the loaded graph")
    nodes = [{"name": user_id, "node_type": "user", "hop": 0, "ident_kind": None}]
    seen = {start}
    edges: list[dict[str, Any]] = []
    edge_keys: set[tuple[str, str, str, str]] = set()
    frontier = [start]
    for hop in range(1, hops + 1):
        nxt: list[int] = []
        for x in frontier:
            # (neighbour node, source name, target name, type, kind, weight) of every incident edge
            cand: list[tuple[int, int, int, str, str, float]] = []
            if x < n:
                idx, w = _row(index.to_ident, x)
                cand += [(n + int(j), x, n + int(j), "USES", "uses", float(v)) for j, v in zip(idx, w)]
                for kind, m in index.rel_out.items():
                    idx, w = _row(m, x)
                    cand += [(int(j), x, int(j), "RELATES", kind, float(v)) for j, v in zip(idx, w)]
                for kind, m in index.rel_in.items():
                    idx, w = _row(m, x)
                    cand += [(int(j), int(j), x, "RELATES", kind, float(v)) for j, v in zip(idx, w)]
            else:
                idx, w = _row(index.to_user, x - n)
                cand += [(int(j), int(j), x, "USES", "uses", float(v)) for j, v in zip(idx, w)]
            if not cand:
                continue
            others = np.array([c[0] for c in cand], dtype=np.int64)
            risk = np.zeros(len(others))
            users = others < n
            if users.any():
                risk[users] = np.nan_to_num(user_risk(others[users]), nan=0.0)
            names = [index.name(int(o)) for o in others]
            order = sorted(range(len(cand)), key=lambda k: (-risk[k], names[k]))[:limit]
            for k in order:
                other, a, b, typ, kind, weight = cand[k]
                if other not in seen:
                    seen.add(other)
                    nxt.append(other)
                    nodes.append({
                        "name": names[k], "node_type": "user" if other < n else "identifier", "hop": hop,
                        "ident_kind": None if other < n else str(p.ident_kinds[int(p.ident_kind[other - n])]),
                    })
                key = (index.name(a), index.name(b), typ, kind)
                if key not in edge_keys:
                    edge_keys.add(key)
                    edges.append({"source": key[0], "target": key[1], "type": typ, "kind": kind, "weight": weight, "ts": None})
        frontier = nxt
        if not frontier:
            break
    return nodes, edges
