"""Local views of the graph: a user's neighbourhood, shortest paths between two users, the
members of a ring and the subgraph they form.

Pure functions over a :class:`GraphIndex`, an adjacency index built once from the
:class:`~graph.projection.EncodedGraph` (the stored graph as integer codes). The encoded graph
rather than the projection, because an analyst looks at the graph as stored: relations keep
their kind, signed weight and time, and identifiers shared by more users than
``hub_max_degree`` (left out of propagation) are still there to see, with their degree.
Identifiers used by a single user link nobody and are not part of any view.

Every view comes as two frames with the columns of :data:`NODE_COLUMNS` and
:data:`EDGE_COLUMNS`, the same as :meth:`graph.store.neo4j.Neo4jStore.neighbourhood` returns,
so that what draws them does not care which store they came from:

- nodes: ``name`` (user id, or the identifier's ``kind:pseudonym`` key), ``node_type``
  (``user`` or ``identifier``), ``hop`` (edges from the start; each user-identifier and each
  user-user edge counts one), ``ident_kind`` (identifiers), ``degree`` (identifiers: users
  sharing it), ``risk``, ``credit_score``, ``decision`` (users, from the last scoring; missing
  when unscored), ``flag`` (the user's latest flag: ``fraud``, ``benign`` or empty) and
  ``fraud_flag`` (``flag == "fraud"``);
- edges: ``source``, ``target``, ``type`` (``USES`` from a user to an identifier, ``RELATES``
  from ``src`` to ``dst``), ``kind`` (``uses`` or the relation kind), ``weight`` (sum of the
  signed weights of the relations of that kind and direction; the link's weight for
  ``USES``), ``count`` (relations folded into the edge) and ``ts`` (latest relation time, or
  the link's last sighting; UTC).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from graph.projection import NAT, EncodedGraph
from loaders.errors import NotFoundError, ParameterError

__all__ = [
    "NODE_COLUMNS",
    "EDGE_COLUMNS",
    "GraphIndex",
    "UserAttributes",
    "graph_index",
    "user_attributes",
    "latest_flags",
    "neighbourhood",
    "shortest_paths",
    "ring_members",
    "subgraph",
    "node_frame",
    "edge_frame",
]

NODE_COLUMNS: tuple[str, ...] = (
    "name", "node_type", "hop", "ident_kind", "degree", "risk", "credit_score", "decision", "flag", "fraud_flag",
)
EDGE_COLUMNS: tuple[str, ...] = ("source", "target", "type", "kind", "weight", "count", "ts")


@dataclass(frozen=True)
class GraphIndex:
    """Adjacency of an encoded graph, for queries that touch a few nodes.

    Node ``i < n_users`` is user ``i`` of :attr:`user_ids`; node ``n_users + j`` is identifier
    ``j`` of :attr:`ident_keys` (every identifier used by at least two users, hubs included).

    Attributes
    ----------
    encoded : EncodedGraph
        The graph indexed. Its links are sorted by ``(user, identifier)`` and its relations by
        ``(src, dst)``.
    user_ptr : ndarray of int64, shape (n_users + 1,)
        The links of user ``u`` are rows ``user_ptr[u]:user_ptr[u + 1]`` of the encoded links.
    ident_ptr, ident_rows : ndarray of int64
        The links to identifier ``j`` are rows ``ident_rows[ident_ptr[j]:ident_ptr[j + 1]]``,
        by user.
    out_ptr : ndarray of int64, shape (n_users + 1,)
        The relations from user ``u`` are rows ``out_ptr[u]:out_ptr[u + 1]``, by ``dst``.
    in_ptr, in_rows : ndarray of int64
        The relations to user ``u`` are rows ``in_rows[in_ptr[u]:in_ptr[u + 1]]``, by ``src``.
    ident_degree : ndarray of int64
        Distinct users per identifier.
    """

    encoded: EncodedGraph
    user_ptr: np.ndarray
    ident_ptr: np.ndarray
    ident_rows: np.ndarray
    out_ptr: np.ndarray
    in_ptr: np.ndarray
    in_rows: np.ndarray
    ident_degree: np.ndarray

    @property
    def n_users(self) -> int:
        return len(self.encoded.user_ids)

    @property
    def n_idents(self) -> int:
        return len(self.encoded.ident_keys)

    @cached_property
    def user_index(self) -> pd.Index:
        return pd.Index(self.encoded.user_ids.astype(str))

    @cached_property
    def ident_index(self) -> pd.Index:
        return pd.Index(self.encoded.ident_keys.astype(str))

    @cached_property
    def ident_kind_names(self) -> np.ndarray:
        """The kind of each identifier, as a word (``device``)."""
        kinds = np.asarray(self.encoded.link_kinds, dtype=object)
        return kinds[self.encoded.ident_kind] if len(kinds) else np.zeros(0, dtype=object)

    @cached_property
    def adjacency(self) -> sp.csr_matrix:
        """Undirected 0/1 adjacency over users then identifiers (relations either way, links),
        self-relations left out: what shortest paths walk on."""
        e, n, m = self.encoded, self.n_users, self.n_idents
        keep = e.rel_src != e.rel_dst
        rows = np.concatenate([e.rel_src[keep], e.rel_dst[keep], e.link_user, n + e.link_ident.astype(np.int64)])
        cols = np.concatenate([e.rel_dst[keep], e.rel_src[keep], n + e.link_ident.astype(np.int64), e.link_user])
        A = sp.csr_matrix((np.ones(len(rows), dtype=np.int8), (rows, cols)), shape=(n + m, n + m))
        A.sum_duplicates()
        A.sort_indices()
        return A

    def user_code(self, user_id: str) -> int:
        """Index of a user id; :class:`NotFoundError` when the graph has no such user."""
        code = int(self.user_index.get_indexer([str(user_id)])[0])
        if code < 0:
            raise NotFoundError(f"unknown user {user_id!r}: not in the loaded graph")
        return code

    def name(self, node: int) -> str:
        n = self.n_users
        return str(self.encoded.user_ids[node]) if node < n else str(self.encoded.ident_keys[node - n])


def graph_index(encoded: EncodedGraph) -> GraphIndex:
    """Index an encoded graph for local queries (sorting its links by identifier and its
    relations by target, once).

    Parameters
    ----------
    encoded : EncodedGraph

    Returns
    -------
    GraphIndex
    """
    e = encoded
    n, m = len(e.user_ids), len(e.ident_keys)
    user_ptr = np.searchsorted(e.link_user, np.arange(n + 1)).astype(np.int64)
    ident_rows = np.lexsort((e.link_user, e.link_ident)).astype(np.int64)
    ident_ptr = np.concatenate([[0], np.cumsum(np.bincount(e.link_ident, minlength=m))]).astype(np.int64)
    out_ptr = np.searchsorted(e.rel_src, np.arange(n + 1)).astype(np.int64)
    in_rows = np.lexsort((e.rel_src, e.rel_dst)).astype(np.int64)
    in_ptr = np.concatenate([[0], np.cumsum(np.bincount(e.rel_dst, minlength=n))]).astype(np.int64)
    # a user may keep two link rows to one identifier: count distinct users
    pairs = np.unique(e.link_ident.astype(np.int64) * max(n, 1) + e.link_user.astype(np.int64))
    degree = np.bincount(pairs // max(n, 1), minlength=m).astype(np.int64)
    return GraphIndex(
        encoded=e, user_ptr=user_ptr, ident_ptr=ident_ptr, ident_rows=ident_rows, out_ptr=out_ptr, in_ptr=in_ptr, in_rows=in_rows,
        ident_degree=degree,
    )


def latest_flags(flags: pd.DataFrame) -> pd.Series:
    """Each flagged user's latest flag label (by ``ts``, missing times first, then stored
    order), as :func:`scoring.features.flag_vectors` reads them: a fraud flag cleared by a
    later benign one is benign."""
    if not len(flags):
        return pd.Series(dtype=object)
    ordered = flags.assign(_order=np.arange(len(flags))).sort_values(["ts", "_order"], na_position="first", kind="stable")
    latest = ordered.drop_duplicates("user_id", keep="last")
    return pd.Series(latest["label"].astype(str).to_numpy(), index=latest["user_id"].astype(str).to_numpy())


@dataclass(frozen=True)
class UserAttributes:
    """What views show of each user of a :class:`GraphIndex`, aligned with its users.

    ``risk`` and ``credit_score`` are NaN, ``decision`` None, for users without a stored
    score; ``flag`` is the latest flag label or ``""``.
    """

    risk: np.ndarray
    credit_score: np.ndarray
    decision: np.ndarray
    flag: np.ndarray


def user_attributes(index: GraphIndex, scores: pd.DataFrame | None, flags: pd.DataFrame) -> UserAttributes:
    """Align the stored scores (``user_id``, ``risk``, ``credit_score``, ``decision``; the
    last row of a user wins) and the latest flags with the users of ``index``."""
    ids = index.user_index
    n = len(ids)
    risk, credit, decision = np.full(n, np.nan), np.full(n, np.nan), np.full(n, None, dtype=object)
    if scores is not None and len(scores):
        s = scores.drop_duplicates("user_id", keep="last")
        at = ids.get_indexer(s["user_id"].astype(str))
        ok = at >= 0
        risk[at[ok]] = s["risk"].to_numpy(dtype=np.float64)[ok]
        if "credit_score" in s:
            credit[at[ok]] = pd.to_numeric(s["credit_score"], errors="coerce").to_numpy(dtype=np.float64)[ok]
        if "decision" in s:
            decision[at[ok]] = s["decision"].astype(object).to_numpy()[ok]
    flag = np.full(n, "", dtype=object)
    latest = latest_flags(flags)
    if len(latest):
        at = ids.get_indexer(latest.index)
        flag[at[at >= 0]] = latest.to_numpy()[at >= 0]
    return UserAttributes(risk=risk, credit_score=credit, decision=decision, flag=flag)


def _check_range(name: str, fn: str, value: int, lo: int, hi: int) -> None:
    if not isinstance(value, (int, np.integer)) or not lo <= int(value) <= hi:
        raise ParameterError(f"The '{name}' parameter of {fn} must be in {lo}..{hi}. Got {value!r} instead.")


def _node_record(index: GraphIndex, attrs: UserAttributes, node: int, hop: int) -> dict[str, Any]:
    n = index.n_users
    if node < n:
        flag = str(attrs.flag[node])
        return {
            "name": str(index.encoded.user_ids[node]), "node_type": "user", "hop": hop, "ident_kind": None, "degree": None,
            "risk": attrs.risk[node], "credit_score": attrs.credit_score[node], "decision": attrs.decision[node], "flag": flag,
            "fraud_flag": flag == "fraud",
        }
    j = node - n
    return {
        "name": str(index.encoded.ident_keys[j]), "node_type": "identifier", "hop": hop, "ident_kind": str(index.ident_kind_names[j]),
        "degree": int(index.ident_degree[j]), "risk": np.nan, "credit_score": np.nan, "decision": None, "flag": "", "fraud_flag": False,
    }


def node_frame(records: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """Nodes as a frame with :data:`NODE_COLUMNS` and fixed dtypes (both stores build theirs here)."""
    frame = pd.DataFrame(list(records), columns=list(NODE_COLUMNS))
    frame["hop"] = frame["hop"].astype(np.int64)
    frame["degree"] = pd.array([None if pd.isna(v) else int(v) for v in frame["degree"]], dtype="Int64")
    frame["risk"] = pd.to_numeric(frame["risk"], errors="coerce").astype(np.float64)
    frame["credit_score"] = pd.array([None if pd.isna(v) else int(v) for v in frame["credit_score"]], dtype="Int64")
    frame["decision"] = frame["decision"].astype(object).where(frame["decision"].notna(), None)
    frame["ident_kind"] = frame["ident_kind"].astype(object).where(frame["ident_kind"].notna(), None)
    frame["flag"] = frame["flag"].fillna("").astype(str)
    frame["fraud_flag"] = frame["fraud_flag"].astype(bool)
    return frame


def edge_frame(records: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """Edges as a frame with :data:`EDGE_COLUMNS` and fixed dtypes (``ts`` UTC, NaT where unknown)."""
    frame = pd.DataFrame(list(records), columns=list(EDGE_COLUMNS))
    frame["weight"] = frame["weight"].astype(np.float64)
    frame["count"] = frame["count"].astype(np.int64)
    frame["ts"] = pd.to_datetime(frame["ts"], utc=True).astype("datetime64[ns, UTC]")
    return frame


def _ts(ns: int) -> pd.Timestamp | None:
    return None if ns == NAT else pd.Timestamp(ns, unit="ns", tz="UTC")


def _rank(index: GraphIndex, attrs: UserAttributes, nodes: np.ndarray) -> np.ndarray:
    """``nodes`` in expansion order: identifiers first (by key), then users by decreasing risk
    (unscored as 0), then by id. Neo4j's neighbourhood query orders the same way."""
    n = index.n_users
    is_user = nodes < n
    risk = np.where(is_user, np.nan_to_num(attrs.risk[np.minimum(nodes, n - 1)] if n else 0.0, nan=0.0), 0.0)
    names = np.array([index.name(int(v)) for v in nodes], dtype=object)
    return nodes[np.lexsort((names, -risk, is_user.astype(np.int8)))]


def _neighbours(index: GraphIndex, node: int) -> np.ndarray:
    """Distinct neighbours of a node (users then identifiers as node codes), any order."""
    e, n = index.encoded, index.n_users
    if node >= n:
        j = node - n
        users: np.ndarray = np.unique(e.link_user[index.ident_rows[index.ident_ptr[j] : index.ident_ptr[j + 1]]].astype(np.int64))
        return users
    idents = n + e.link_ident[index.user_ptr[node] : index.user_ptr[node + 1]].astype(np.int64)
    out = e.rel_dst[index.out_ptr[node] : index.out_ptr[node + 1]].astype(np.int64)
    inc = e.rel_src[index.in_rows[index.in_ptr[node] : index.in_ptr[node + 1]]].astype(np.int64)
    found: np.ndarray = np.unique(np.concatenate([idents, out, inc]))
    others: np.ndarray = found[found != node]
    return others


def _edges_between(index: GraphIndex, a: int, b: int) -> list[dict[str, Any]]:
    """The edges between two nodes, relations folded per kind and direction."""
    e, n = index.encoded, index.n_users
    if a >= n or b >= n:
        user, node = (a, b) if a < n else (b, a)
        lo, hi = index.user_ptr[user], index.user_ptr[user + 1]
        rows = lo + np.flatnonzero(e.link_ident[lo:hi] == node - n)
        return [{
            "source": str(e.user_ids[user]), "target": str(e.ident_keys[node - n]), "type": "USES", "kind": "uses",
            "weight": float(e.link_weight[rows].sum()), "count": int(len(rows)), "ts": _ts(int(e.link_seen[rows].max())),
        }] if len(rows) else []
    out = []
    for src, dst in ((a, b), (b, a)):
        lo, hi = index.out_ptr[src], index.out_ptr[src + 1]
        r0, r1 = lo + np.searchsorted(e.rel_dst[lo:hi], [dst, dst + 1])
        rows = np.arange(r0, r1)
        for code in np.unique(e.rel_kind[rows]).tolist():
            mine = rows[e.rel_kind[rows] == code]
            out.append({
                "source": str(e.user_ids[src]), "target": str(e.user_ids[dst]), "type": "RELATES", "kind": str(e.rel_kinds[code]),
                "weight": float(e.rel_weight[mine].sum()), "count": int(len(mine)), "ts": _ts(int(e.rel_ts[mine].max())),
            })
    return out


def neighbourhood(
    index: GraphIndex, attrs: UserAttributes, user_id: str, *, hops: int = 2, limit: int = 50
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A user's neighbourhood up to ``hops`` edges away, expanding at most ``limit``
    neighbours per node.

    Breadth first from the user: each node of the frontier is joined to its first ``limit``
    neighbours (shared identifiers first, then users by decreasing risk, then by name; a
    neighbour already seen still takes a place), which join the view; those not seen before
    make the next frontier. A hub identifier is so expanded into its riskiest users only.

    Parameters
    ----------
    index : GraphIndex
    attrs : UserAttributes
        Risk, scores and flags of the index's users (:func:`user_attributes`).
    user_id : str
    hops : int
        Edges from the user, 1 to 4: ``hops=2`` reaches the users that share an identifier
        with the user, its relation partners and theirs.
    limit : int
        Neighbours expanded per node, 1 to 1000.

    Returns
    -------
    nodes, edges : DataFrame
        :data:`NODE_COLUMNS` (the user first, then by hop) and :data:`EDGE_COLUMNS`.

    Raises
    ------
    NotFoundError
        The graph has no such user.
    ParameterError
        ``hops`` or ``limit`` out of range.

    Examples
    --------
    On the tests' tiny graph, ``a`` shares device DEV-1 with ``f1``: one hop to the device,
    two to ``f1`` (see ``tests/graph/test_neighbourhood.py``).
    """
    _check_range("hops", "neighbourhood", hops, 1, 4)
    _check_range("limit", "neighbourhood", limit, 1, 1000)
    start = index.user_code(user_id)
    hop_of = {start: 0}
    nodes = [_node_record(index, attrs, start, 0)]
    edges: dict[tuple[str, str, str, str], dict[str, Any]] = {}
    frontier = [start]
    for hop in range(1, hops + 1):
        nxt = []
        for x in frontier:
            for v in _rank(index, attrs, _neighbours(index, x))[:limit].tolist():
                if v not in hop_of:
                    hop_of[v] = hop
                    nodes.append(_node_record(index, attrs, v, hop))
                    nxt.append(v)
                for edge in _edges_between(index, x, v):
                    edges.setdefault((edge["source"], edge["target"], edge["type"], edge["kind"]), edge)
        frontier = nxt
        if not frontier:
            break
    return node_frame(nodes), edge_frame(edges.values())


def subgraph(
    index: GraphIndex, attrs: UserAttributes, user_ids: Iterable[str], *, identifiers: Iterable[str] | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The users given, the identifiers at least two of them share (or those given), and every
    edge among them: a ring as a graph.

    Parameters
    ----------
    index, attrs
        As for :func:`neighbourhood`.
    user_ids : iterable of str
    identifiers : iterable of str, optional
        ``kind:pseudonym`` keys to show; default: every identifier two of the users share.
        Keys the graph does not hold are skipped.

    Returns
    -------
    nodes, edges : DataFrame
        As :func:`neighbourhood`'s, ``hop`` 0 throughout.
    """
    e, n = index.encoded, index.n_users
    users = np.unique(index.user_index.get_indexer([str(u) for u in user_ids]))
    if (users < 0).any():
        missing = [u for u in user_ids if index.user_index.get_indexer([str(u)])[0] < 0][0]
        raise NotFoundError(f"unknown user {missing!r}: not in the loaded graph")
    rows = np.concatenate([np.arange(index.user_ptr[u], index.user_ptr[u + 1]) for u in users.tolist()] or [np.zeros(0, np.int64)])
    if identifiers is None:
        pairs = np.unique(e.link_ident[rows].astype(np.int64) * max(n, 1) + e.link_user[rows].astype(np.int64))
        counts = np.bincount(pairs // max(n, 1), minlength=index.n_idents)
        idents = np.flatnonzero(counts >= 2)
    else:
        at = index.ident_index.get_indexer([str(k) for k in identifiers])
        idents = np.unique(at[at >= 0])
    members = set(users.tolist())
    keep = np.concatenate([users, n + idents])
    nodes = [_node_record(index, attrs, int(v), 0) for v in keep.tolist()]
    edges: dict[tuple[str, str, str, str], dict[str, Any]] = {}
    wanted = set(idents.tolist())
    for u in users.tolist():
        lo, hi = index.user_ptr[u], index.user_ptr[u + 1]
        for j in sorted(set(e.link_ident[lo:hi].tolist()) & wanted):
            for edge in _edges_between(index, u, n + j):
                edges.setdefault((edge["source"], edge["target"], edge["type"], edge["kind"]), edge)
        for v in _neighbours(index, u).tolist():
            if v < n and v in members and v > u:
                for edge in _edges_between(index, u, v):
                    edges.setdefault((edge["source"], edge["target"], edge["type"], edge["kind"]), edge)
    return node_frame(nodes), edge_frame(edges.values())


def _hop_label(index: GraphIndex, a: int, b: int) -> str:
    """What joins two consecutive nodes of a path: ``uses``, or the relation kinds between
    the two users (either way), sorted and joined by ``+``."""
    kinds = sorted({edge["kind"] for edge in _edges_between(index, a, b)})
    return "+".join(kinds)


def shortest_paths(index: GraphIndex, a: str, b: str, *, max_hops: int = 8, limit: int = 5) -> list[dict[str, list[Any]]]:
    """The shortest paths between two users through shared identifiers and relations (either
    direction), at most ``max_hops`` edges long.

    Breadth first from ``a`` until ``b`` is reached, then the paths are read back from ``b``
    along nodes one step nearer ``a`` each time, in order of the nodes' names.

    Parameters
    ----------
    index : GraphIndex
    a, b : str
        User ids.
    max_hops : int
        Longest path searched, 1 to 12 edges (a user-identifier edge counts one).
    limit : int
        At most this many paths (>= 1).

    Returns
    -------
    list of dict
        Each ``{"nodes": [...], "node_types": [...], "edges": [...], "degrees": [...]}``: the
        names from ``a`` to ``b``, ``user`` or ``identifier`` for each, what joins each pair
        (``uses``, or the relation kinds joined by ``+``), and the users sharing each
        identifier (None for users). Sorted by the names along the path; empty when ``b`` is
        more than ``max_hops`` away or ``a == b``.

    Raises
    ------
    NotFoundError
        Either user is not in the graph.
    ParameterError
        ``max_hops`` or ``limit`` out of range.
    """
    _check_range("max_hops", "shortest_paths", max_hops, 1, 12)
    if not isinstance(limit, (int, np.integer)) or limit < 1:
        raise ParameterError(f"The 'limit' parameter of shortest_paths must be an integer >= 1. Got {limit!r} instead.")
    s, t = index.user_code(a), index.user_code(b)
    if s == t:
        return []
    A = index.adjacency
    dist = np.full(A.shape[0], -1, dtype=np.int64)
    dist[s] = 0
    frontier = np.array([s])
    d = 0
    while frontier.size and dist[t] < 0 and d < max_hops:
        d += 1
        starts, ends = A.indptr[frontier], A.indptr[frontier + 1]
        nxt = np.unique(np.concatenate([A.indices[lo:hi] for lo, hi in zip(starts.tolist(), ends.tolist())]) if len(frontier) else np.zeros(0, np.int64))
        nxt = nxt[dist[nxt] < 0]
        dist[nxt] = d
        frontier = nxt
    if dist[t] < 0:
        return []

    def back(path: list[int], out: list[list[int]]) -> None:
        if len(out) >= limit:
            return
        v = path[-1]
        if v == s:
            out.append(path[::-1])
            return
        prev = A.indices[A.indptr[v] : A.indptr[v + 1]]
        prev = prev[dist[prev] == dist[v] - 1]
        for w in sorted(prev.tolist(), key=index.name):
            back(path + [int(w)], out)

    found: list[list[int]] = []
    back([t], found)
    n = index.n_users
    paths: list[dict[str, list[Any]]] = []
    for nodes in found:
        paths.append({
            "nodes": [index.name(v) for v in nodes],
            "node_types": ["user" if v < n else "identifier" for v in nodes],
            "edges": [_hop_label(index, x, y) for x, y in zip(nodes, nodes[1:])],
            "degrees": [None if v < n else int(index.ident_degree[v - n]) for v in nodes],
        })
    return sorted(paths, key=lambda p: p["nodes"])


def ring_members(index: GraphIndex, attrs: UserAttributes, members: Iterable[str]) -> pd.DataFrame:
    """The members of a ring, riskiest first (then by id), each with the identifiers it shares
    with another member.

    Parameters
    ----------
    index, attrs
        As for :func:`neighbourhood`.
    members : iterable of str
        The ring's user ids (the users with the same ``ring_id`` in the scores).

    Returns
    -------
    DataFrame
        ``user_id``, ``risk``, ``credit_score``, ``decision``, ``flag``, ``fraud_flag``,
        ``identifiers`` (sorted ``kind:pseudonym`` keys).
    """
    e, n = index.encoded, index.n_users
    users = np.unique(index.user_index.get_indexer([str(u) for u in members]))
    users = users[users >= 0]
    rows = np.concatenate([np.arange(index.user_ptr[u], index.user_ptr[u + 1]) for u in users.tolist()] or [np.zeros(0, np.int64)])
    pairs = np.unique(e.link_ident[rows].astype(np.int64) * max(n, 1) + e.link_user[rows].astype(np.int64))
    shared = set(np.flatnonzero(np.bincount(pairs // max(n, 1), minlength=index.n_idents) >= 2).tolist())
    out = []
    for u in users.tolist():
        lo, hi = index.user_ptr[u], index.user_ptr[u + 1]
        keys = sorted({str(e.ident_keys[j]) for j in e.link_ident[lo:hi].tolist() if j in shared})
        flag = str(attrs.flag[u])
        out.append({
            "user_id": str(e.user_ids[u]), "risk": attrs.risk[u],
            "credit_score": None if np.isnan(attrs.credit_score[u]) else int(attrs.credit_score[u]), "decision": attrs.decision[u],
            "flag": flag, "fraud_flag": flag == "fraud", "identifiers": keys,
        })
    frame = pd.DataFrame(out, columns=["user_id", "risk", "credit_score", "decision", "flag", "fraud_flag", "identifiers"])
    if len(frame):
        frame = frame.assign(_r=frame["risk"].fillna(0.0)).sort_values(["_r", "user_id"], ascending=[False, True], kind="stable")
        frame = frame.drop(columns="_r").reset_index(drop=True)
    frame["credit_score"] = pd.array(frame["credit_score"].tolist(), dtype="Int64")
    return frame
