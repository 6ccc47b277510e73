"""Project the stored tables once into sparse matrices, mapping ids to indices at the edge."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import scipy.sparse as sp

from graph.config import GraphConfig
from loaders.errors import NotFoundError
from loaders.schema import Tables

__all__ = ["Projection", "project", "walk_matrix", "save_projection", "load_projection"]


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
    config = config or GraphConfig()
    # one factorisation of every user-id column: first-seen order (as Tables.all_user_ids),
    # and each edge's endpoints as codes, without a lookup per column
    rel = tables.relations
    links = tables.links
    (_, link_user, src, dst, _), uniques = _factorize(
        [tables.users["user_id"], links["user_id"], rel["src"], rel["dst"], tables.flags["user_id"]]
    )
    user_ids = uniques.astype(str)
    n = len(user_ids)
    as_of = _newest_time(tables)

    # -- identifiers: keep those shared by >= 2 users, below the hub limit ----------------------
    if len(links):
        # identifiers are (kind, ident) pairs: factorise each column, then the pair of codes
        (ident_code,), ident_values = _factorize([links["ident"]])
        kind_codes, kind_names = pd.factorize(links["kind"].astype("string"))
        kind_names = np.asarray(kind_names, dtype=object).astype(str)
        codes, first_row = _first_seen_codes(ident_code * len(kind_names) + kind_codes)
        rows = link_user
        degree_all = np.bincount(codes, minlength=len(first_row))
        keep_ident = degree_all >= 2
        if config.hub_max_degree is not None:
            keep_ident &= degree_all <= config.hub_max_degree
        new_code = np.full(len(first_row), -1, dtype=np.int64)
        new_code[keep_ident] = np.arange(int(keep_ident.sum()))
        cols = new_code[codes]
        mask = cols >= 0
        kind_w = np.array([config.link_weight(k) for k in kind_names], dtype=np.float64)
        w = kind_w[kind_codes] * links["weight"].fillna(1.0).to_numpy(dtype=np.float64)
        w *= _decay(links["last_seen"], as_of, config.half_life_days)
        n_idents = int(keep_ident.sum())
        incidence = sp.csr_matrix((w[mask], (rows[mask], cols[mask])), shape=(n, n_idents))
        incidence.sum_duplicates()
        kept_rows = first_row[keep_ident]
        ident_keys = np.array(
            [f"{k}:{i}" for k, i in zip(kind_names[kind_codes[kept_rows]].tolist(), ident_values[ident_code[kept_rows]].tolist())], dtype=str
        )
        if not len(ident_keys):
            ident_keys = np.zeros(0, dtype=str)
        ident_kind = kind_codes[kept_rows].astype(np.int64)
        ident_degree = np.diff(incidence.tocsc().indptr).astype(np.int64)
        ident_kinds = tuple(str(k) for k in kind_names)
    else:
        incidence = sp.csr_matrix((n, 0))
        ident_keys = np.zeros(0, dtype=str)
        ident_kind = np.zeros(0, dtype=np.int64)
        ident_degree = np.zeros(0, dtype=np.int64)
        ident_kinds = ()

    # -- relations --------------------------------------------------------------------------
    not_self = src != dst
    n_self = int((~not_self).sum())
    weight = rel["weight"].fillna(1.0).to_numpy(dtype=np.float64)
    magnitude = _transform(np.abs(weight), config.weight_transform)
    decay = _decay(rel["ts"], as_of, config.half_life_days)
    kind_codes, kind_names = pd.factorize(rel["kind"].astype("string"))
    kind_names = np.asarray(kind_names, dtype=object).astype(str)
    kind_mult = np.array([config.relation(k).weight for k in kind_names], dtype=np.float64)
    pos = not_self & (weight > 0)
    neg = not_self & (weight < 0)

    def mat(mask: np.ndarray, values: np.ndarray) -> sp.csr_matrix:
        m = sp.csr_matrix((values[mask], (src[mask], dst[mask])), shape=(n, n))
        m.sum_duplicates()
        return m

    relations_pos = mat(pos, magnitude * decay)
    relations_neg = mat(neg, magnitude * decay)
    walk_values = magnitude * decay * kind_mult[kind_codes]
    walk = sp.csr_matrix((n, n))
    counts: dict[str, sp.csr_matrix] = {}
    for code, kind in enumerate(kind_names):
        of_kind = kind_codes == code
        counts[str(kind)] = mat(not_self & of_kind, np.ones(len(rel)))
        forward = mat(pos & of_kind, walk_values)
        direction = config.relation(str(kind)).direction
        if direction == "forward":
            walk = walk + forward
        elif direction == "backward":
            walk = walk + forward.T
        else:
            walk = walk + forward + forward.T
    walk = sp.csr_matrix(walk)
    walk.eliminate_zeros()

    return Projection(
        user_ids=user_ids,
        ident_keys=ident_keys,
        ident_kind=ident_kind,
        ident_kinds=ident_kinds,
        ident_degree=ident_degree,
        incidence=incidence,
        relations_walk=walk,
        relations_pos=relations_pos,
        relations_neg=relations_neg,
        relations_count=counts,
        n_self_relations=n_self,
    )


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


def _newest_time(tables: Tables) -> pd.Timestamp | None:
    times = [tables.relations["ts"].max(), tables.links["last_seen"].max()]
    times = [t for t in times if t is not None and not pd.isna(t)]
    return max(times) if times else None


def _decay(times: pd.Series, as_of: pd.Timestamp | None, half_life_days: float | None) -> np.ndarray:
    if half_life_days is None or as_of is None or not len(times):
        return np.ones(len(times), dtype=np.float64)
    age = (as_of - times).dt.total_seconds().to_numpy(dtype=np.float64, na_value=0.0) / 86400.0
    return np.power(0.5, np.maximum(age, 0.0) / half_life_days)


def _transform(magnitude: np.ndarray, how: str) -> np.ndarray:
    if how == "log1p":
        return np.log1p(magnitude)
    if how == "unit":
        return np.ones_like(magnitude)
    return magnitude


def save_projection(projection: Projection, path: str | Path) -> None:
    """Write a projection to one uncompressed ``.npz`` file (atomically: a temporary file, then a rename)."""
    path = Path(path)
    arrays: dict[str, np.ndarray] = {
        "user_ids": projection.user_ids.astype(str),
        "ident_keys": projection.ident_keys.astype(str),
        "ident_kind": projection.ident_kind,
        "ident_kinds": np.array(projection.ident_kinds, dtype=str),
        "ident_degree": projection.ident_degree,
        "n_self_relations": np.array(projection.n_self_relations),
        "count_kinds": np.array(list(projection.relations_count), dtype=str),
    }
    matrices = {
        "incidence": projection.incidence,
        "relations_walk": projection.relations_walk,
        "relations_pos": projection.relations_pos,
        "relations_neg": projection.relations_neg,
        **{f"count_{i}": m for i, m in enumerate(projection.relations_count.values())},
    }
    for name, m in matrices.items():
        arrays[f"{name}.data"], arrays[f"{name}.indices"], arrays[f"{name}.indptr"] = m.data, m.indices, m.indptr
        arrays[f"{name}.shape"] = np.array(m.shape)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **arrays)
    tmp.replace(path)


def load_projection(path: str | Path) -> Projection:
    """Read a projection written by :func:`save_projection`."""
    with np.load(Path(path), allow_pickle=False) as z:

        def mat(name: str) -> sp.csr_matrix:
            return sp.csr_matrix((z[f"{name}.data"], z[f"{name}.indices"], z[f"{name}.indptr"]), shape=tuple(z[f"{name}.shape"]))

        kinds = [str(k) for k in z["count_kinds"]]
        return Projection(
            user_ids=z["user_ids"],
            ident_keys=z["ident_keys"],
            ident_kind=z["ident_kind"],
            ident_kinds=tuple(str(k) for k in z["ident_kinds"]),
            ident_degree=z["ident_degree"],
            incidence=mat("incidence"),
            relations_walk=mat("relations_walk"),
            relations_pos=mat("relations_pos"),
            relations_neg=mat("relations_neg"),
            relations_count={k: mat(f"count_{i}") for i, k in enumerate(kinds)},
            n_self_relations=int(z["n_self_relations"]),
        )
