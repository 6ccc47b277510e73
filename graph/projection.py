"""Project the stored tables once into sparse matrices, mapping ids to indices at the edge."""

from __future__ import annotations

import dataclasses
import os
import shutil
import threading
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import scipy.sparse as sp

from graph._csr import block_csr, scaled_transpose, sorted_csr, sum_with_transpose, walk_out_degree
from graph.config import GraphConfig
from graph.propagation.result import Transition
from loaders.errors import NotFoundError
from loaders.schema import Tables

__all__ = [
    "Projection", "EncodedGraph", "encode", "project", "project_encoded", "walk_matrix", "walk_transition", "save_projection", "load_projection",
    "save_encoded", "load_encoded", "shared_links", "SignedRelations", "signed_relations", "PROJECTION_FORMAT",
]


@dataclass(frozen=True)
class Projection:
    """The graph as sparse matrices over integer indices.

    Users are indexed ``0..n_users-1`` in :attr:`user_ids` order; shared identifiers
    (identifiers used by at least two users) ``0..n_idents-1`` in :attr:`ident_keys` order.

    Attributes
    ----------
    user_ids : ndarray of str
        Index to user id.
    ident_keys : ndarray of str
        Index to ``"kind:pseudonym"`` of each shared identifier.
    ident_kind : ndarray of int
        Code of each identifier's kind in :attr:`ident_kinds`.
    ident_kinds : tuple of str
    ident_degree : ndarray of int
        Number of users sharing each identifier.
    incidence : csr_matrix, shape (n_users, n_idents)
        Link weights (kind weight x link weight x time decay) of user-identifier pairs.
    relations_walk : csr_matrix, shape (n_users, n_users)
        Positive relations as risk flows along them (direction per kind applied), weighted.
    relations_pos, relations_neg : csr_matrix, shape (n_users, n_users)
        Transformed ``|weight|`` of positive and negative relations, stored ``src -> dst``.
    relations_count : dict of str to csr_matrix
        Number of relations per kind, ``src -> dst`` (self-relations left out).
    signed : SignedRelations
        Builds ``relations_pos``, ``relations_neg`` and ``relations_count`` when first used.
    n_self_relations : int
        Relations from a user to itself, kept in the store but not projected.
    walk_symmetric : bool
        Whether ``relations_walk`` equals its transpose (every kind walks both ways).
    """

    user_ids: np.ndarray
    ident_keys: np.ndarray
    ident_kind: np.ndarray
    ident_kinds: tuple[str, ...]
    ident_degree: np.ndarray
    incidence: sp.csr_matrix
    relations_walk: sp.csr_matrix
    signed: "SignedRelations" = dataclasses.field(repr=False, compare=False)
    n_self_relations: int = 0
    walk_symmetric: bool = False

    @property
    def relations_pos(self) -> sp.csr_matrix:
        return self.signed.get()[0]

    @property
    def relations_neg(self) -> sp.csr_matrix:
        return self.signed.get()[1]

    @property
    def relations_count(self) -> dict[str, sp.csr_matrix]:
        return self.signed.get()[2]

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_idents(self) -> int:
        return len(self.ident_keys)

    @cached_property
    def user_index(self) -> pd.Index:
        return pd.Index(self.user_ids)

    @cached_property
    def shared(self) -> sp.csr_matrix:
        """Binary user x shared-identifier matrix (1 where the user uses the identifier)."""
        return sp.csr_matrix((self.incidence > 0).astype(np.float64))

    @cached_property
    def related(self) -> sp.csr_matrix:
        """Binary user x user matrix: 1 where ``src`` has any relation of any kind to ``dst``."""
        n = self.n_users
        total = sum(self.relations_count.values(), sp.csr_matrix((n, n)))
        return sp.csr_matrix((total > 0).astype(np.float64))

    @cached_property
    def shared_kinds(self) -> tuple[tuple[str, np.ndarray], ...]:
        """``(kind, identifier columns)`` of each kind that has shared identifiers, by kind name.

        Feature columns and reasons are built kind by kind from this, so they do not depend on
        the order kinds were first seen in, nor on kinds that no two users share: every store
        gives the same columns for the same graph.
        """
        kinds = ((kind, np.flatnonzero(self.ident_kind == code)) for code, kind in enumerate(self.ident_kinds))
        return tuple(sorted(((k, cols) for k, cols in kinds if len(cols)), key=lambda kc: kc[0]))

    def index_of(self, user_ids: object) -> np.ndarray:
        """Indices of user ids; raises :class:`NotFoundError` naming the first unknown one."""
        ids = pd.Index(np.atleast_1d(np.asarray(user_ids, dtype=object)).astype(str))
        idx = self.user_index.get_indexer(ids)
        if (idx < 0).any():
            missing = ids[int(np.flatnonzero(idx < 0)[0])]
            raise NotFoundError(f"unknown user {missing!r}: not in the loaded graph")
        return idx

    def nbytes(self) -> int:
        """Memory held by the sparse matrices (the signed and count matrices once built)."""
        mats = [self.incidence, self.relations_walk]
        if self.signed.built:
            mats += [self.relations_pos, self.relations_neg, *self.relations_count.values()]
        return int(sum(m.data.nbytes + m.indices.nbytes + m.indptr.nbytes for m in mats))


SignedMatrices = tuple[sp.csr_matrix, sp.csr_matrix, dict[str, sp.csr_matrix]]


class SignedRelations:
    """The relation matrices a random walk does not need (:attr:`Projection.relations_pos`,
    ``relations_neg``, ``relations_count``), built on first use, once, by any thread.

    A propagation reads only the walk matrices; building these too took as long as the rest
    of a projection at a million users.
    """

    def __init__(self, build: Callable[[], SignedMatrices] | None = None, *, matrices: SignedMatrices | None = None) -> None:
        if (build is None) == (matrices is None):
            raise ValueError("give either a builder or the matrices")
        self._build = build
        self._matrices = matrices
        self._lock = threading.Lock()

    @property
    def built(self) -> bool:
        return self._matrices is not None

    def get(self) -> SignedMatrices:
        if self._matrices is None:
            with self._lock:
                if self._matrices is None:
                    assert self._build is not None
                    self._matrices = self._build()
                    self._build = None  # its arrays are no longer needed
        return self._matrices


def _factorize(columns: list[pd.Series]) -> tuple[list[np.ndarray], np.ndarray]:
    """Codes of several string columns against one shared set of values, in first-seen order.

    Arrow's dictionary encoding over the columns end to end (a hash per value, no Python
    objects): the codes of each column, and the values as an object array.
    """
    chunks = []
    for column in columns:
        arr = pa.array(column.astype("string"), type=pa.large_string()) if not len(column) or column.dtype != "string" else pa.array(column)
        arr = arr.cast(pa.large_string())
        chunks.extend(arr.chunks if isinstance(arr, pa.ChunkedArray) else [arr])
    if not chunks:
        return [np.zeros(0, dtype=np.int64) for _ in columns], np.zeros(0, dtype=object)
    encoded = pc.dictionary_encode(pa.chunked_array(chunks, type=pa.large_string()))
    # chunks are encoded in order with one growing dictionary: the last one holds every value
    dictionary = encoded.chunks[-1].dictionary if encoded.num_chunks else pa.array([], type=pa.large_string())
    codes = np.concatenate([c.indices.to_numpy(zero_copy_only=False) for c in encoded.chunks]).astype(np.int64) if encoded.num_chunks else np.zeros(0, dtype=np.int64)
    out, start = [], 0
    for column in columns:
        out.append(codes[start : start + len(column)])
        start += len(column)
    return out, np.asarray(dictionary.to_numpy(zero_copy_only=False), dtype=object)


def _first_seen_codes(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Codes of integer values in first-seen order, and the row where each value first appears."""
    codes, _ = pd.factorize(values, sort=False)
    first_row = np.full(int(codes.max()) + 1 if len(codes) else 0, len(codes), dtype=np.int64)
    np.minimum.at(first_row, codes, np.arange(len(codes)))
    return codes.astype(np.int64), first_row


@dataclass(frozen=True)
class EncodedGraph:
    """The stored tables reduced to what any projection needs, as integer codes.

    Strings are factorised once (at load time, by the stores that keep this); a projection
    under a configuration is then array arithmetic over these codes (:func:`project_encoded`).

    Attributes
    ----------
    user_ids : ndarray of str
        Users in first-seen order over users, links, relation ends and flags.
    as_of : int
        Newest link or relation time (nanoseconds since the epoch), the reference for time
        decay; ``NAT`` when no row has a time.
    link_user, link_ident, link_kind : ndarray of int32
        Links to identifiers used by at least two users, sorted by ``(user, ident)``: the user,
        the identifier (index into :attr:`ident_keys`) and the kind (into :attr:`link_kinds`).
        Links to identifiers of one user are never projected and are not kept.
    link_weight : ndarray of float64
        Link weight (1 where missing).
    link_seen : ndarray of int64
        ``last_seen`` in nanoseconds, ``NAT`` where missing.
    ident_keys : ndarray of str
        ``"kind:pseudonym"`` of each identifier used by at least two users, in first-seen order.
    ident_kind : ndarray of int32
        Kind code of each identifier.
    link_kinds : tuple of str
    rel_src, rel_dst, rel_kind : ndarray of int32
        Every relation, sorted by ``(src, dst)``; kind codes into :attr:`rel_kinds`.
    rel_weight : ndarray of float64
        Signed weight (1 where missing).
    rel_ts : ndarray of int64
        Time in nanoseconds, ``NAT`` where missing.
    rel_kinds : tuple of str
    """

    user_ids: np.ndarray
    as_of: int
    link_user: np.ndarray
    link_ident: np.ndarray
    link_kind: np.ndarray
    link_weight: np.ndarray
    link_seen: np.ndarray
    ident_keys: np.ndarray
    ident_kind: np.ndarray
    link_kinds: tuple[str, ...]
    rel_src: np.ndarray
    rel_dst: np.ndarray
    rel_kind: np.ndarray
    rel_weight: np.ndarray
    rel_ts: np.ndarray
    rel_kinds: tuple[str, ...]

    def with_users(self, user_ids: object) -> "EncodedGraph":
        """The same graph with any of ``user_ids`` not yet known appended (in first-seen order).

        New flags may name users that no other table has; they join the end of the order, as
        :meth:`loaders.schema.Tables.all_user_ids` puts them.
        """
        ids = pd.Index(pd.unique(np.asarray(user_ids, dtype=object).astype(str)))
        new = ids[pd.Index(self.user_ids).get_indexer(ids) < 0]
        if not len(new):
            return self
        return dataclasses.replace(self, user_ids=np.concatenate([self.user_ids.astype(object), np.asarray(new, dtype=object)]).astype(str))


#: Missing time in :class:`EncodedGraph` (pandas' NaT as int64).
NAT = np.iinfo(np.int64).min


def _nanoseconds(times: pd.Series) -> np.ndarray:
    values = pd.to_datetime(times, utc=True)
    out = values.to_numpy(dtype="datetime64[ns]").view(np.int64) if len(values) else np.zeros(0, dtype=np.int64)
    return np.asarray(out, dtype=np.int64)


def shared_links(codes: np.ndarray, n_idents: int, link_user: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Which identifiers a projection keeps, and the links to them.

    Parameters
    ----------
    codes : ndarray of int
        Each link's identifier, as first-seen codes ``0..n_idents-1``.
    n_idents : int
    link_user : ndarray of int
        Each link's user code.

    Returns
    -------
    shared : ndarray of bool
        Identifiers two links or more use (links are one per user and identifier, so two users).
    kept : ndarray of int
        Each link's identifier among the shared ones, in first-seen order; -1 where not shared.
    order : ndarray of int
        The links to shared identifiers, sorted by ``(user, identifier)``.
    """
    shared = np.bincount(codes, minlength=n_idents) >= 2
    new_code = np.full(n_idents, -1, dtype=np.int64)
    new_code[shared] = np.arange(int(shared.sum()))
    kept = new_code[codes]
    keep = np.flatnonzero(kept >= 0)
    return shared, kept, keep[np.lexsort((kept[keep], link_user[keep]))]


def encode(tables: Tables) -> EncodedGraph:
    """Factorise the canonical tables into an :class:`EncodedGraph`.

    Parameters
    ----------
    tables : Tables

    Returns
    -------
    EncodedGraph
    """
    # one factorisation of every user-id column: first-seen order (as Tables.all_user_ids),
    # and each edge's endpoints as codes, without a lookup per column
    rel = tables.relations
    links = tables.links
    (_, link_user, src, dst, _), uniques = _factorize(
        [tables.users["user_id"], links["user_id"], rel["src"], rel["dst"], tables.flags["user_id"]]
    )
    seen = _nanoseconds(links["last_seen"])
    ts = _nanoseconds(rel["ts"])
    times = np.concatenate([seen[seen != NAT], ts[ts != NAT]])
    as_of = int(times.max()) if len(times) else NAT

    # identifiers are (kind, ident) pairs: factorise each column, then the pair of codes; keep
    # those of at least two users
    if len(links):
        (ident_code,), ident_values = _factorize([links["ident"]])
        kind_codes, kind_names = pd.factorize(links["kind"].astype("string"))
        kind_names = np.asarray(kind_names, dtype=object).astype(str)
        codes, first_row = _first_seen_codes(ident_code * len(kind_names) + kind_codes)
        shared, cols, order = shared_links(codes, len(first_row), link_user)
        kept_rows = first_row[shared]
        ident_keys = np.array(
            [f"{k}:{i}" for k, i in zip(kind_names[kind_codes[kept_rows]].tolist(), ident_values[ident_code[kept_rows]].tolist())], dtype=str
        ) if len(kept_rows) else np.zeros(0, dtype=str)
        link_weight = links["weight"].fillna(1.0).to_numpy(dtype=np.float64)
        link_part = dict(
            link_user=link_user[order].astype(np.int32), link_ident=cols[order].astype(np.int32),
            link_kind=kind_codes[order].astype(np.int32), link_weight=link_weight[order], link_seen=seen[order],
            ident_keys=ident_keys, ident_kind=kind_codes[kept_rows].astype(np.int32), link_kinds=tuple(kind_names.tolist()),
        )
    else:
        empty_i, empty_f = np.zeros(0, dtype=np.int32), np.zeros(0, dtype=np.float64)
        link_part = dict(
            link_user=empty_i, link_ident=empty_i, link_kind=empty_i, link_weight=empty_f, link_seen=np.zeros(0, dtype=np.int64),
            ident_keys=np.zeros(0, dtype=str), ident_kind=empty_i, link_kinds=(),
        )

    rel_kind, rel_kinds = pd.factorize(rel["kind"].astype("string"))
    order = np.lexsort((dst, src))
    return EncodedGraph(
        user_ids=uniques.astype(str),
        as_of=as_of,
        rel_src=src[order].astype(np.int32),
        rel_dst=dst[order].astype(np.int32),
        rel_kind=rel_kind[order].astype(np.int32),
        rel_weight=rel["weight"].fillna(1.0).to_numpy(dtype=np.float64)[order],
        rel_ts=ts[order],
        rel_kinds=tuple(str(k) for k in rel_kinds),
        **link_part,
    )


def project(tables: Tables, config: GraphConfig | None = None) -> Projection:
    """Build the sparse projection of the canonical tables.

    Parameters
    ----------
    tables : Tables
        Canonical tables from a store.
    config : GraphConfig, optional
        Weights, directions, hub limit and time decay.

    Returns
    -------
    Projection
    """
    return project_encoded(encode(tables), config)


def project_encoded(encoded: EncodedGraph, config: GraphConfig | None = None, *, disputes: pd.DataFrame | None = None) -> Projection:
    """The sparse projection of an :class:`EncodedGraph` under ``config``.

    Parameters
    ----------
    encoded : EncodedGraph
    config : GraphConfig, optional
        Weights, directions, hub limit and time decay.
    disputes : DataFrame, optional
        Disputed links (:func:`graph.disputes.active_disputes`): each is weighted by
        ``config.dispute_weight(reason)``, or by its ``weight`` column where one is given (a
        what-if); links of users or identifiers no longer in the graph are skipped.

    Returns
    -------
    Projection
    """
    config = config or GraphConfig()
    e = encoded
    n = len(e.user_ids)

    # -- identifiers: those shared by >= 2 users (all kept ones), below the hub limit -------
    degree_all = np.bincount(e.link_ident, minlength=len(e.ident_keys))
    keep_ident = np.ones(len(e.ident_keys), dtype=bool)
    if config.hub_max_degree is not None:
        keep_ident &= degree_all <= config.hub_max_degree
    new_code = np.full(len(e.ident_keys), -1, dtype=np.int64)
    new_code[keep_ident] = np.arange(int(keep_ident.sum()))
    cols = new_code[e.link_ident]
    mask = cols >= 0
    kind_w = np.array([config.link_weight(k) for k in e.link_kinds], dtype=np.float64)
    w = kind_w[e.link_kind] * e.link_weight
    w *= _decay(e.link_seen, e.as_of, config.half_life_days)
    n_idents = int(keep_ident.sum())
    link_factor, rel_factor = _dispute_factors(e, config, disputes)
    if link_factor is not None:
        w *= link_factor
    incidence = sorted_csr(e.link_user, cols, w, mask, (n, n_idents))
    ident_degree = np.bincount(incidence.indices, minlength=n_idents).astype(np.int64)

    # -- relations: the walk now (forward relations as stored plus backward ones transposed,
    # one compiled pass); the signed and count matrices when first used ---------------------
    rel = _relation_values(e, config, rel_factor)
    forward = np.zeros(len(e.rel_src), dtype=bool)
    backward = np.zeros(len(e.rel_src), dtype=bool)
    for code, kind in enumerate(e.rel_kinds):
        direction = config.relation(kind).direction
        if direction in ("forward", "both"):
            forward |= e.rel_kind == code
        if direction in ("backward", "both"):
            backward |= e.rel_kind == code
    kind_mult = np.array([config.relation(k).weight for k in e.rel_kinds], dtype=np.float64)
    pos = rel.not_self & (e.rel_weight > 0)
    forward &= pos
    backward &= pos
    walk = sum_with_transpose(e.rel_src, e.rel_dst, rel.values * kind_mult[e.rel_kind], forward, backward, n)
    # every relation walked both ways: F + F.T, equal to its transpose to the last bit (a + b == b + a)
    symmetric = bool(np.array_equal(forward, backward))

    return Projection(
        user_ids=e.user_ids,
        ident_keys=e.ident_keys[keep_ident],
        ident_kind=e.ident_kind[keep_ident].astype(np.int64),
        ident_kinds=tuple(e.link_kinds),
        ident_degree=ident_degree,
        incidence=incidence,
        relations_walk=walk,
        signed=SignedRelations(lambda: _signed_matrices(e, rel)),
        n_self_relations=int((~rel.not_self).sum()),
        walk_symmetric=symmetric,
    )


@dataclass(frozen=True)
class _RelationValues:
    not_self: np.ndarray
    values: np.ndarray  # transformed |weight| x time decay x dispute factor


def _relation_values(e: EncodedGraph, config: GraphConfig, rel_factor: np.ndarray | None) -> _RelationValues:
    magnitude = _transform(np.abs(e.rel_weight), config.weight_transform)
    values = magnitude * _decay(e.rel_ts, e.as_of, config.half_life_days)
    if rel_factor is not None:
        values *= rel_factor
    return _RelationValues(not_self=e.rel_src != e.rel_dst, values=values)


def _signed_matrices(e: EncodedGraph, rel: _RelationValues) -> SignedMatrices:
    """:attr:`Projection.relations_pos`, ``relations_neg`` and ``relations_count``."""
    src, dst, n = e.rel_src, e.rel_dst, len(e.user_ids)
    wanted = {"pos": (rel.not_self & (e.rel_weight > 0), rel.values), "neg": (rel.not_self & (e.rel_weight < 0), rel.values)}
    ones = np.ones(len(src))
    for code, kind in enumerate(e.rel_kinds):
        wanted[f"count:{kind}"] = (rel.not_self & (e.rel_kind == code), ones)
    # each matrix is one compiled pass that releases the GIL: build them side by side
    with ThreadPoolExecutor(max_workers=min(len(wanted), os.cpu_count() or 1)) as pool:
        futures = {name: pool.submit(sorted_csr, src, dst, v, m, (n, n)) for name, (m, v) in wanted.items()}
        built = {name: f.result() for name, f in futures.items()}
    return built["pos"], built["neg"], {kind: built[f"count:{kind}"] for kind in e.rel_kinds}


def signed_relations(encoded: EncodedGraph, config: GraphConfig | None = None, *, disputes: pd.DataFrame | None = None) -> SignedMatrices:
    """The signed and count relation matrices of :func:`project_encoded` alone: positive and
    negative relation weights and the number of relations per kind, ``src -> dst``."""
    config = config or GraphConfig()
    _, rel_factor = _dispute_factors(encoded, config, disputes)
    return _signed_matrices(encoded, _relation_values(encoded, config, rel_factor))


def _dispute_factors(
    e: EncodedGraph, config: GraphConfig, disputes: pd.DataFrame | None
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Weight factors of links and relations under the disputes (None where none applies)."""
    if disputes is None or not len(disputes):
        return None, None
    users = pd.Index(e.user_ids).get_indexer(disputes["user_id"].astype(str))
    link_factor = rel_factor = None
    idents = pd.Index(e.ident_keys)
    weights = disputes["weight"] if "weight" in disputes else pd.Series(np.nan, index=disputes.index)
    for u, target, other, reason, weight in zip(users, disputes["target"], disputes["other"], disputes["reason"], weights):
        # a hypothetical dispute may name its weight; a recorded one is weighted by its reason
        f = float(weight) if pd.notna(weight) else config.dispute_weight(str(reason))
        if u < 0:
            continue
        if target == "identifier":
            i = idents.get_indexer([str(other)])[0]
            if i < 0:
                continue
            lo, hi = np.searchsorted(e.link_user, [u, u + 1])  # links are sorted by user
            rows = lo + np.flatnonzero(e.link_ident[lo:hi] == i)
            link_factor = np.ones(len(e.link_user)) if link_factor is None else link_factor
            link_factor[rows] *= f
        else:
            v = pd.Index(e.user_ids).get_indexer([str(other)])[0]
            if v < 0:
                continue
            rows = np.flatnonzero(((e.rel_src == u) & (e.rel_dst == v)) | ((e.rel_src == v) & (e.rel_dst == u)))
            rel_factor = np.ones(len(e.rel_src)) if rel_factor is None else rel_factor
            rel_factor[rows] *= f
    return link_factor, rel_factor


def walk_matrix(
    projection: Projection,
    *,
    hub_exponent: float = 1.0,
    hub_exponents: Mapping[str, float] | None = None,
    links: bool = True,
    relations: bool = True,
) -> sp.csr_matrix:
    """Weighted adjacency over users then identifiers, ready for a random walk.

    Node ``i < n_users`` is user ``i``; node ``n_users + j`` is shared identifier ``j``.
    A user steps to identifier ``j`` with weight ``w * degree_j ** -hub_exponent`` and the
    identifier steps back to each of its users with weight ``w``, so a walk crossing a hub
    is both unlikely and spread thin.

    Parameters
    ----------
    projection : Projection
    hub_exponent : float
        Damping exponent for identifier degree (0 = none).
    hub_exponents : mapping of str to float, optional
        Exponent of some identifier kinds instead of ``hub_exponent``
        (``GraphConfig.hub_exponents``).
    links, relations : bool
        Which layers to include: shared identifiers, user-to-user relations.

    Returns
    -------
    csr_matrix, shape (n_users + n_idents, n_users + n_idents)
    """
    n, m = projection.n_users, projection.n_idents
    rel = projection.relations_walk if relations else sp.csr_matrix((n, n))
    if links and m:
        back = scaled_transpose(projection.incidence, np.ones(n))
        return block_csr(rel, projection.incidence, back, right_scale=_hub_damping(projection, hub_exponent, hub_exponents))
    if not m:
        return sp.csr_matrix(rel)
    # the identifiers stay as nodes without edges, so that node numbers do not depend on the layer
    rel = sp.csr_matrix(rel)
    indptr = np.concatenate([rel.indptr, np.full(m, rel.indptr[-1], dtype=rel.indptr.dtype)])
    return sp.csr_matrix((rel.data, rel.indices, indptr), shape=(n + m, n + m))


def walk_transition(
    projection: Projection,
    *,
    hub_exponent: float = 1.0,
    hub_exponents: Mapping[str, float] | None = None,
    links: bool = True,
    relations: bool = True,
) -> Transition:
    """``transition_transpose(walk_matrix(projection, ...))``, assembled from the blocks.

    ``P.T = W.T D^-1`` of the walk matrix ``W = [[R, I H], [I.T, 0]]`` (``H``: the hub
    damping) is ``[[R.T D_u^-1, I D_i^-1], [H I.T D_u^-1, 0]]``: when every relation kind
    walks both ways ``R.T`` is ``R`` and no transposition of the large block is needed, only
    the small one of the incidence.

    Returns
    -------
    Transition
        ``(PT, dangling)``: the transpose of the row-stochastic transition matrix (rows of
        dangling nodes of ``W`` are all zero in ``W``, so their columns are here) and the mask
        of nodes without out-edges; ``reversible`` when ``S W`` is symmetric for the diagonal
        ``S`` = (1 for users, the hub damping for identifiers), that is when ``R`` is.

    See Also
    --------
    graph.propagation.transition_transpose : the same from any adjacency matrix.
    """
    n, m = projection.n_users, projection.n_idents
    R = projection.relations_walk if relations else sp.csr_matrix((n, n))
    RT = R if projection.walk_symmetric or not relations else scaled_transpose(R, np.ones(n))
    with_links = links and m > 0
    inc = projection.incidence if with_links else sp.csr_matrix((n, m))
    damp = _hub_damping(projection, hub_exponent, hub_exponents)
    out_user = walk_out_degree(R, inc, damp)
    out_ident = np.bincount(inc.indices, weights=inc.data, minlength=m) if with_links else np.zeros(m)
    degree = np.concatenate([out_user, out_ident])
    dangling = degree <= 0
    inv = np.divide(1.0, degree, out=np.zeros_like(degree), where=~dangling)
    back = scaled_transpose(inc, np.ones(n))
    PT = block_csr(RT, inc, back, left_scale=inv[:n], right_scale=inv[n:], bottom_row_scale=damp)
    # S W is symmetric for S = diag(1 for users, damping for identifiers) when R is: the walk
    # is then reversible (real eigenvalues), which Chebyshev acceleration needs
    return Transition(PT, dangling, reversible=projection.walk_symmetric or not relations)


def _hub_damping(projection: Projection, hub_exponent: float, hub_exponents: Mapping[str, float] | None = None) -> np.ndarray:
    """``degree ** -exponent`` of each identifier, the exponent of its kind."""
    exponent: float | np.ndarray = hub_exponent
    if hub_exponents:
        by_kind = np.array([float(hub_exponents.get(k, hub_exponent)) for k in projection.ident_kinds] or [hub_exponent])
        exponent = by_kind[projection.ident_kind] if projection.n_idents else np.zeros(0)
    return np.power(np.maximum(projection.ident_degree, 1).astype(np.float64), -exponent)


def _decay(times: np.ndarray, as_of: int, half_life_days: float | None) -> np.ndarray:
    """``0.5 ** (age / half_life)`` of nanosecond times against ``as_of``; 1 where the time is missing."""
    if half_life_days is None or as_of == NAT or not len(times):
        return np.ones(len(times), dtype=np.float64)
    age = np.where(times == NAT, 0.0, (as_of - times.astype(np.float64)) / 86400e9)
    return np.power(0.5, np.maximum(age, 0.0) / half_life_days)


def _transform(magnitude: np.ndarray, how: str) -> np.ndarray:
    if how == "log1p":
        return np.log1p(magnitude)
    if how == "unit":
        return np.ones_like(magnitude)
    return magnitude


def save_arrays(arrays: Mapping[str, np.ndarray], path: str | Path) -> None:
    """Write named arrays to the directory ``path``, one ``.npy`` file each.

    Plain ``.npy`` files are written at the speed of a copy (a zip archive checksums every byte,
    five times slower at a million users) and read back memory-mapped (:func:`load_arrays`). The
    directory is written beside ``path`` and renamed into place, its ``complete`` marker last,
    so a reader sees all of it or none.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}-{threading.get_ident()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        for name, array in arrays.items():
            np.save(tmp / f"{name}.npy", array, allow_pickle=False)
        (tmp / "complete").touch()  # the last file: a directory without it was cut short
        if path.exists():
            shutil.rmtree(path)
        tmp.rename(path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


#: Saved arrays larger than this are memory-mapped when read (a ``.npy`` header is 128 bytes).
_MAP_MIN_BYTES = 1 << 20


def complete_arrays(path: str | Path) -> bool:
    """Whether ``path`` holds arrays written whole by :func:`save_arrays`."""
    return (Path(path) / "complete").exists()


def load_arrays(path: str | Path, names: Iterable[str]) -> dict[str, np.ndarray]:
    """Read arrays written by :func:`save_arrays`: small ones into memory, large ones
    memory-mapped copy-on-write (pages are read as they are used; writes to the arrays stay
    private to the process).

    Raises
    ------
    FileNotFoundError
        ``path`` is not complete, or lacks one of ``names``.
    """
    path = Path(path)
    if not complete_arrays(path):
        raise FileNotFoundError(f"{path} was not written whole (no 'complete' marker)")
    out = {}
    for name in names:
        file = path / f"{name}.npy"
        # an empty array cannot be mapped, and small ones are not worth it
        mapped = np.load(file, mmap_mode="c" if file.stat().st_size > _MAP_MIN_BYTES else None, allow_pickle=False)
        out[name] = np.asarray(mapped)  # a plain ndarray over the same pages
    return out


_MATRICES = ("incidence", "relations_walk")
#: What :func:`save_projection` writes; a change here makes caches of other versions unreadable
#: to this one and the reverse, so stores key their caches by it.
PROJECTION_FORMAT = 2


def save_projection(projection: Projection, path: str | Path) -> None:
    """Write a projection to the directory ``path`` (:func:`save_arrays`)."""
    arrays: dict[str, np.ndarray] = {
        "user_ids": projection.user_ids.astype(str),
        "ident_keys": projection.ident_keys.astype(str),
        "ident_kind": projection.ident_kind,
        "ident_kinds": np.array(projection.ident_kinds, dtype=str),
        "ident_degree": projection.ident_degree,
        "n_self_relations": np.array(projection.n_self_relations),
    }
    matrices = {name: getattr(projection, name) for name in _MATRICES}
    if projection.signed.built:  # unbuilt, they are built again where they are used
        matrices.update(relations_pos=projection.relations_pos, relations_neg=projection.relations_neg)
        matrices.update({f"count_{i}": m for i, m in enumerate(projection.relations_count.values())})
        arrays["count_kinds"] = np.array(list(projection.relations_count), dtype=str)
    else:
        arrays["count_kinds"] = np.zeros(0, dtype=str)
    arrays["signed"] = np.array(projection.signed.built)
    arrays["walk_symmetric"] = np.array(projection.walk_symmetric)
    for name, m in matrices.items():
        arrays[f"{name}.data"], arrays[f"{name}.indices"], arrays[f"{name}.indptr"] = m.data, m.indices, m.indptr
        arrays[f"{name}.shape"] = np.array(m.shape)
    save_arrays(arrays, path)


def load_projection(path: str | Path, *, signed: Callable[[], SignedMatrices] | None = None) -> Projection:
    """Read a projection written by :func:`save_projection` (:func:`load_arrays`).

    ``signed`` builds the signed and count matrices when the projection was saved before they
    were (:class:`SignedRelations`); without it such a projection cannot give them.
    """
    plain = load_arrays(path, ["user_ids", "ident_keys", "ident_kind", "ident_kinds", "ident_degree", "n_self_relations", "count_kinds"])
    kinds = [str(k) for k in plain["count_kinds"]]
    # projections saved by earlier versions have no "signed" marker and hold all the matrices
    saved_signed = not (Path(path) / "signed.npy").exists() or bool(load_arrays(path, ["signed"])["signed"])

    def mat(name: str) -> sp.csr_matrix:
        z = load_arrays(path, [f"{name}.{part}" for part in ("data", "indices", "indptr", "shape")])
        return sp.csr_matrix((z[f"{name}.data"], z[f"{name}.indices"], z[f"{name}.indptr"]), shape=tuple(z[f"{name}.shape"]))

    return Projection(
        user_ids=plain["user_ids"],
        ident_keys=plain["ident_keys"],
        ident_kind=plain["ident_kind"],
        ident_kinds=tuple(str(k) for k in plain["ident_kinds"]),
        ident_degree=plain["ident_degree"],
        **{name: mat(name) for name in _MATRICES},
        signed=(SignedRelations(matrices=(mat("relations_pos"), mat("relations_neg"), {k: mat(f"count_{i}") for i, k in enumerate(kinds)}))
                if saved_signed else SignedRelations(signed or _not_saved(path))),
        n_self_relations=int(plain["n_self_relations"]),
        walk_symmetric=(Path(path) / "walk_symmetric.npy").exists() and bool(load_arrays(path, ["walk_symmetric"])["walk_symmetric"]),
    )


def _not_saved(path: str | Path) -> Callable[[], SignedMatrices]:
    def fail() -> SignedMatrices:
        raise FileNotFoundError(f"the projection in {path} was saved without its signed and count matrices; read it with a builder for them")

    return fail


def save_encoded(encoded: EncodedGraph, path: str | Path, *, snapshot: int) -> None:
    """Write an encoded graph to the directory ``path`` (:func:`save_arrays`), tagged with the
    store snapshot it was made from."""
    arrays = {f.name: getattr(encoded, f.name) for f in dataclasses.fields(encoded)}
    arrays["as_of"] = np.array(encoded.as_of, dtype=np.int64)
    arrays["link_kinds"] = np.array(encoded.link_kinds, dtype=str)
    arrays["rel_kinds"] = np.array(encoded.rel_kinds, dtype=str)
    arrays["snapshot"] = np.array(snapshot, dtype=np.int64)
    save_arrays(arrays, path)


def load_encoded(path: str | Path) -> tuple[EncodedGraph, int]:
    """Read an encoded graph written by :func:`save_encoded` (or, from workspaces of earlier
    versions, one ``.npz`` file), and the snapshot it was made from."""
    names = [f.name for f in dataclasses.fields(EncodedGraph)] + ["snapshot"]
    if Path(path).is_dir():
        values = load_arrays(path, names)
    else:
        with np.load(Path(path), allow_pickle=False) as z:
            values = {name: z[name] for name in names}
    snapshot = int(values.pop("snapshot"))
    values["as_of"] = int(values["as_of"])
    values["link_kinds"] = tuple(str(k) for k in values["link_kinds"])
    values["rel_kinds"] = tuple(str(k) for k in values["rel_kinds"])
    return EncodedGraph(**values), snapshot  # type: ignore[arg-type]
