"""Project the stored tables once into sparse matrices, mapping ids to indices at the edge."""

from __future__ import annotations

import dataclasses
import os
import shutil
import threading
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import scipy.sparse as sp

from graph._csr import sorted_csr
from graph.config import GraphConfig
from loaders.errors import NotFoundError
from loaders.schema import Tables

__all__ = [
    "Projection", "EncodedGraph", "encode", "project", "project_encoded", "walk_matrix", "save_projection", "load_projection",
    "save_encoded", "load_encoded",
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
    n_self_relations : int
        Relations from a user to itself, kept in the store but not projected.
    """

    user_ids: np.ndarray
    ident_keys: np.ndarray
    ident_kind: np.ndarray
    ident_kinds: tuple[str, ...]
    ident_degree: np.ndarray
    incidence: sp.csr_matrix
    relations_walk: sp.csr_matrix
    relations_pos: sp.csr_matrix
    relations_neg: sp.csr_matrix
    relations_count: dict[str, sp.csr_matrix]
    n_self_relations: int

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

    def index_of(self, user_ids: object) -> np.ndarray:
        """Indices of user ids; raises :class:`NotFoundError` naming the first unknown one."""
        ids = pd.Index(np.atleast_1d(np.asarray(user_ids, dtype=object)).astype(str))
        idx = self.user_index.get_indexer(ids)
        if (idx < 0).any():
            missing = ids[int(np.flatnonzero(idx < 0)[0])]
            raise NotFoundError(f"unknown user {missing!r}: not in the loaded graph")
        return idx

    def nbytes(self) -> int:
        """Memory held by the sparse matrices."""
        mats = [self.incidence, self.relations_walk, self.relations_pos, self.relations_neg, *self.relations_count.values()]
        return int(sum(m.data.nbytes + m.indices.nbytes + m.indptr.nbytes for m in mats))


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
        shared = np.bincount(codes, minlength=len(first_row)) >= 2
        new_code = np.full(len(first_row), -1, dtype=np.int64)
        new_code[shared] = np.arange(int(shared.sum()))
        cols = new_code[codes]
        keep = np.flatnonzero(cols >= 0)
        order = keep[np.lexsort((cols[keep], link_user[keep]))]
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

    # -- relations (sorted by (src, dst)) ---------------------------------------------------
    src, dst = e.rel_src, e.rel_dst
    not_self = src != dst
    magnitude = _transform(np.abs(e.rel_weight), config.weight_transform)
    values = magnitude * _decay(e.rel_ts, e.as_of, config.half_life_days)
    if rel_factor is not None:
        values *= rel_factor
    kind_mult = np.array([config.relation(k).weight for k in e.rel_kinds], dtype=np.float64)
    pos = not_self & (e.rel_weight > 0)
    neg = not_self & (e.rel_weight < 0)

    walk_values = values * kind_mult[e.rel_kind]
    forward = np.zeros(len(src), dtype=bool)
    backward = np.zeros(len(src), dtype=bool)
    ones = np.ones(len(src))
    wanted = {"pos": (pos, values), "neg": (neg, values)}
    for code, kind in enumerate(e.rel_kinds):
        of_kind = e.rel_kind == code
        wanted[f"count:{kind}"] = (not_self & of_kind, ones)
        direction = config.relation(kind).direction
        if direction in ("forward", "both"):
            forward |= of_kind
        if direction in ("backward", "both"):
            backward |= of_kind
    wanted["forward"] = (pos & forward, walk_values)
    wanted["backward"] = (pos & backward, walk_values)
    # each matrix is one compiled pass that releases the GIL: build them side by side
    with ThreadPoolExecutor(max_workers=min(len(wanted), os.cpu_count() or 1)) as pool:
        futures = {name: pool.submit(sorted_csr, src, dst, v, m, (n, n)) for name, (m, v) in wanted.items()}
        built = {name: f.result() for name, f in futures.items()}
    relations_pos, relations_neg = built["pos"], built["neg"]
    counts = {kind: built[f"count:{kind}"] for kind in e.rel_kinds}
    walk = built["forward"] + built["backward"].T.tocsr()
    walk = sp.csr_matrix(walk)
    walk.eliminate_zeros()

    return Projection(
        user_ids=e.user_ids,
        ident_keys=e.ident_keys[keep_ident],
        ident_kind=e.ident_kind[keep_ident].astype(np.int64),
        ident_kinds=tuple(e.link_kinds),
        ident_degree=ident_degree,
        incidence=incidence,
        relations_walk=walk,
        relations_pos=relations_pos,
        relations_neg=relations_neg,
        relations_count=counts,
        n_self_relations=int((~not_self).sum()),
    )


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
    links, relations : bool
        Which layers to include: shared identifiers, user-to-user relations.

    Returns
    -------
    csr_matrix, shape (n_users + n_idents, n_users + n_idents)
    """
    n, m = projection.n_users, projection.n_idents
    blocks_top = []
    rel = projection.relations_walk if relations else sp.csr_matrix((n, n))
    if links and m:
        damp = np.power(np.maximum(projection.ident_degree, 1).astype(np.float64), -hub_exponent)
        to_ident = sp.csr_matrix(projection.incidence @ sp.diags(damp))
        blocks_top = [[rel, to_ident], [projection.incidence.T, None]]
        return sp.csr_matrix(sp.bmat(blocks_top, format="csr"))
    return sp.csr_matrix(sp.bmat([[rel, None], [None, sp.csr_matrix((m, m))]], format="csr")) if m else sp.csr_matrix(rel)


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


_MATRICES = ("incidence", "relations_walk", "relations_pos", "relations_neg")


def save_projection(projection: Projection, path: str | Path) -> None:
    """Write a projection to the directory ``path`` (:func:`save_arrays`)."""
    arrays: dict[str, np.ndarray] = {
        "user_ids": projection.user_ids.astype(str),
        "ident_keys": projection.ident_keys.astype(str),
        "ident_kind": projection.ident_kind,
        "ident_kinds": np.array(projection.ident_kinds, dtype=str),
        "ident_degree": projection.ident_degree,
        "n_self_relations": np.array(projection.n_self_relations),
        "count_kinds": np.array(list(projection.relations_count), dtype=str),
    }
    matrices = {name: getattr(projection, name) for name in _MATRICES}
    matrices.update({f"count_{i}": m for i, m in enumerate(projection.relations_count.values())})
    for name, m in matrices.items():
        arrays[f"{name}.data"], arrays[f"{name}.indices"], arrays[f"{name}.indptr"] = m.data, m.indices, m.indptr
        arrays[f"{name}.shape"] = np.array(m.shape)
    save_arrays(arrays, path)


def load_projection(path: str | Path) -> Projection:
    """Read a projection written by :func:`save_projection` (:func:`load_arrays`)."""
    plain = load_arrays(path, ["user_ids", "ident_keys", "ident_kind", "ident_kinds", "ident_degree", "n_self_relations", "count_kinds"])
    kinds = [str(k) for k in plain["count_kinds"]]

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
        relations_count={k: mat(f"count_{i}") for i, k in enumerate(kinds)},
        n_self_relations=int(plain["n_self_relations"]),
    )


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
