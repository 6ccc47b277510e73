"""The Neo4j store's reads of the canonical tables: columnar records, split by node."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from graph.projection import NAT, EncodedGraph, complete_arrays, load_encoded, save_encoded, shared_links
from graph.store.merge import row_hash
from loaders.errors import ParameterError, StoreError
from loaders.schema import TABLE_NAMES, Tables, empty_tables

__all__ = ["READ_PARTS", "READ_USERS", "NULL_MS", "READ_LINKS", "READ_RELATIONS", "READ_RELATIONS_PLAIN", "READ_USER_NIDS", "READ_FLAGS", "READ_USER_IDS", "KNOWN_AMONG",
           "ENCODED_USERS", "ENCODED_LINKS", "ENCODED_RELATIONS", "ENCODED_SHARED", "FLAGGED_USERS", "ENCODED_FLAGS",
           "READ_USERS_AMONG", "READ_LINKS_AMONG", "READ_RELATIONS_AMONG", "StoredGraph", "encode_stored"]

log = logging.getLogger(__name__)

#: Parts each big edge read is split into, one server thread each.
READ_PARTS = 2
READ_USERS = """
MATCH (u:User) WHERE u._seq IS NOT NULL
RETURN collect(u._seq) AS seq, collect(u.id) AS user_id, collect([c IN $columns | u[c]]) AS values
"""
#: Columnar reads: one record of parallel lists decodes far faster than one record per row.
#: ``collect`` drops nulls, so missing values travel as sentinels (NaN, or the smallest int64).
NULL_MS = -(2**63)
#: The two edge reads are split by source node (``id(u) % $parts = $part``) and run side by
#: side: each Cypher query runs on one server thread, and the server has a core per part.
#: Far ends go unlabelled: USES only ever ends at an identifier and RELATES at a user, and
#: checking the label costs a node read per edge.
READ_LINKS = """
MATCH (u:User) WHERE id(u) % $parts = $part
MATCH (u)-[r:USES]->(i)
RETURN collect(r._seq) AS seq, collect(id(u)) AS user_nid, collect(i.kind) AS kind, collect(i.ident) AS ident,
       collect(coalesce(r.first_seen.epochMillis, $null_ms)) AS first_seen,
       collect(coalesce(r.last_seen.epochMillis, $null_ms)) AS last_seen,
       collect(coalesce(r.weight, 0.0 / 0.0)) AS weight
"""
READ_RELATIONS = """
MATCH (a:User) WHERE id(a) % $parts = $part
MATCH (a)-[r:RELATES]->(b)
RETURN collect(r._seq) AS seq, collect(id(a)) AS src_nid, collect(id(b)) AS dst_nid, collect(r.kind) AS kind, collect(r.weight) AS weight,
       collect(coalesce(r.ts.epochMillis, $null_ms)) AS ts, collect(r._key) AS _key, collect(r._occ) AS _occ,
       collect([c IN $columns | r[c]]) AS values
"""
READ_RELATIONS_PLAIN = """
MATCH (a:User) WHERE id(a) % $parts = $part
MATCH (a)-[r:RELATES]->(b)
RETURN collect(r._seq) AS seq, collect(id(a)) AS src_nid, collect(id(b)) AS dst_nid, collect(r.kind) AS kind, collect(r.weight) AS weight,
       collect(coalesce(r.ts.epochMillis, $null_ms)) AS ts, collect(r._key) AS _key, collect(r._occ) AS _occ
"""
#: Internal node ids of every user, to turn the edges' endpoint ids into user ids client-side
#: (reading two id strings per edge on the server costs more than this one pass).
READ_USER_NIDS = "MATCH (u:User) RETURN collect(id(u)) AS nid, collect(u.id) AS id"
READ_FLAGS = """
MATCH (u:User)-[:HAS_FLAG]->(f:Flag)
RETURN u.id AS user_id, f.label AS label, f.severity AS severity, f.source AS source, f.ts.epochMillis AS ts,
       f._key AS _key, f._occ AS _occ
ORDER BY f._seq
"""
#: The encoded read (:meth:`_Reads.encoded`): the graph as internal node ids and numbers, no
#: string per edge. Users once (their ids and users-table order), links and relations as node
#: ids in parts side by side, and the keys of the identifiers at least two users share (the
#: only ones a projection keeps).
ENCODED_USERS = "MATCH (u:User) RETURN collect(id(u)) AS nid, collect(u.id) AS id, collect(coalesce(u._seq, -1)) AS seq"
ENCODED_LINKS = """
MATCH (u:User) WHERE id(u) % $parts = $part
MATCH (u)-[r:USES]->(i)
RETURN collect(r._seq) AS seq, collect(id(u)) AS user, collect(id(i)) AS ident,
       collect(coalesce(r.weight, 0.0 / 0.0)) AS weight, collect(coalesce(r.last_seen.epochMillis, $null_ms)) AS seen
"""
ENCODED_RELATIONS = """
MATCH (a:User) WHERE id(a) % $parts = $part
MATCH (a)-[r:RELATES]->(b)
RETURN collect(r._seq) AS seq, collect(id(a)) AS src, collect(id(b)) AS dst, collect(r.kind) AS kind,
       collect(coalesce(r.weight, 0.0 / 0.0)) AS weight, collect(coalesce(r.ts.epochMillis, $null_ms)) AS ts
"""
ENCODED_SHARED = """
MATCH (i:Identifier) WHERE COUNT { (i)<-[:USES]-() } >= 2
RETURN collect(id(i)) AS nid, collect(i.kind) AS kind, collect(i.key) AS key
"""
#: The server-side read of the edges (``neo4j/procedures``), used where the server has it.
PACKED_READ = "socialrisk.encodedEdges"
HAS_PACKED_READ = "SHOW PROCEDURES YIELD name WHERE name = 'socialrisk.encodedEdges' RETURN count(*) AS n"
PACKED_EDGES = """
CALL socialrisk.encodedEdges($type, $part, $parts, $null_ms)
YIELD rows, seq, src, dst, weight, time, kind, kinds
RETURN seq, src, dst, weight, time, kind, kinds
"""
FLAGGED_USERS = "MATCH (u:User)-[:HAS_FLAG]->(f:Flag) RETURN collect(f._seq) AS seq, collect(u.id) AS user_id"
ENCODED_FLAGS = "MATCH (u:User)-[:HAS_FLAG]->(f:Flag) RETURN collect(f._seq) AS seq, collect(id(u)) AS user"
#: The stored rows an online load merges with (:meth:`_Reads._read_stored` with ``among``): those
#: of the users, links and relations it names, found through the indexes, rather than the whole
#: graph. Columns as the whole-table reads', with user ids in place of node ids.
READ_USERS_AMONG = """
UNWIND $ids AS id
MATCH (u:User {id: id}) WHERE u._seq IS NOT NULL
RETURN collect(u._seq) AS seq, collect(u.id) AS user_id, collect([c IN $columns | u[c]]) AS values
"""
#: Both ends are found through their index (the hints) and the link between them from the end
#: with fewer relationships (Expand(Into)): a hub identifier of thousands of users is never expanded.
READ_LINKS_AMONG = """
UNWIND $rows AS row
MATCH (u:User {id: row.user_id})-[r:USES]->(i:Identifier {key: row.key})
USING INDEX u:User(id)
USING INDEX i:Identifier(key)
RETURN collect(r._seq) AS seq, collect(u.id) AS user_id, collect(i.kind) AS kind, collect(i.ident) AS ident,
       collect(coalesce(r.first_seen.epochMillis, $null_ms)) AS first_seen,
       collect(coalesce(r.last_seen.epochMillis, $null_ms)) AS last_seen,
       collect(coalesce(r.weight, 0.0 / 0.0)) AS weight
"""
READ_RELATIONS_AMONG = """
UNWIND $rows AS row
MATCH (a:User {id: row.src})-[r:RELATES]->(b:User {id: row.dst})
USING INDEX a:User(id)
USING INDEX b:User(id)
WHERE r._key = row.key
RETURN collect(r._seq) AS seq, collect(a.id) AS src, collect(b.id) AS dst, collect(r.kind) AS kind, collect(r.weight) AS weight,
       collect(coalesce(r.ts.epochMillis, $null_ms)) AS ts, collect(r._key) AS _key, collect(r._occ) AS _occ,
       collect([c IN $columns | r[c]]) AS values
"""
READ_USER_IDS = "MATCH (u:User) WITH u ORDER BY u._seq RETURN collect(u.id) AS ids"
KNOWN_AMONG = "UNWIND $ids AS id MATCH (u:User {id: id}) RETURN collect(id) AS ids"


class _Reads:
    """Reading the stored tables (mixed into :class:`Neo4jStore`)."""

    # set by Neo4jStore.__init__; the methods it defines (_read, _call, _write_batches, _meta) are used here
    uri: str
    database: str
    _driver: Any
    _tables: Tables | None
    cache_dir: Path | None
    _packed: bool | None
    _packed_wanted: bool | None

    # -- tables -----------------------------------------------------------------------------

    def known_user_ids(self) -> pd.Index:
        # one record holding a list: a record per user costs the driver far more than the query
        rows = self._read(READ_USER_IDS)
        return pd.Index(rows[0]["ids"] if rows else [], dtype="string")

    def known_among(self, user_ids: list[str]) -> set[str]:
        # one indexed lookup each, rather than every id
        if not user_ids:
            return set()
        rows = self._read(KNOWN_AMONG, ids=user_ids)
        return set(rows[0]["ids"]) if rows else set()

    def read_tables(self) -> Tables:
        if self._tables is None:
            self._tables = Tables(**self._read_stored(TABLE_NAMES))
        return self._tables

    def read_table(self, name: str) -> pd.DataFrame:
        if self._tables is not None:
            return getattr(self._tables, name)
        if name not in TABLE_NAMES:
            raise ParameterError(f"unknown table {name!r}; expected one of {', '.join(TABLE_NAMES)}")
        return self._read_stored((name,))[name]

    def _read_stored(
        self, names: Iterable[str], *, among: Tables | None = None, seqs: dict[str, np.ndarray] | None = None
    ) -> dict[str, pd.DataFrame]:
        """The stored tables named, read side by side (the two big edge reads in parts); the
        others are left out, so that a flags-only write does not read the whole graph.

        With ``among`` (the tables of a load), only the stored users, links and relations those
        tables name are read (their rows in stored order; flags are read whole); ``seqs`` then
        receives each table's stored sequence numbers, row for row."""
        names = set(names)
        meta = self._meta()
        base = empty_tables()
        user_columns: dict[str, str] = meta.get("user_columns", {})
        relation_columns: dict[str, str] = meta.get("relation_columns", {})

        relations_query = READ_RELATIONS if relation_columns else READ_RELATIONS_PLAIN
        fetched: dict[str, Any] = {}
        with ThreadPoolExecutor(max_workers=2 * READ_PARTS) as pool:
            parts: dict[str, list[Any]] = {}
            if among is not None:
                parts.update(self._submit_among(pool, names, among, user_columns, relation_columns))
            if "links" in names and among is None:
                parts["links"] = [pool.submit(self._read, READ_LINKS, null_ms=NULL_MS, parts=READ_PARTS, part=k) for k in range(READ_PARTS)]
            if "relations" in names and among is None:
                parts["relations"] = [
                    pool.submit(self._read, relations_query, columns=list(relation_columns), null_ms=NULL_MS, parts=READ_PARTS, part=k)
                    for k in range(READ_PARTS)
                ]
            futures = {}
            if "users" in names and among is None:
                futures["users"] = pool.submit(self._read, READ_USERS, columns=list(user_columns))
            if "flags" in names:
                futures["flags"] = pool.submit(self._read, READ_FLAGS)
            if parts and among is None:
                futures["nids"] = pool.submit(self._read, READ_USER_NIDS)
            fetched = {name: f.result() for name, f in futures.items()}
            for name, fs in parts.items():
                fetched[name] = [_concat_columns([f.result()[0] for f in fs])]
        if seqs is not None:
            for name in ("users", "links", "relations"):
                if name in fetched:
                    seqs[name] = np.sort(np.asarray(fetched[name][0]["seq"], dtype=np.int64), kind="stable")
        out: dict[str, pd.DataFrame] = {}
        if "users" in names:
            cols = _in_seq_order(fetched["users"][0])
            users = pd.DataFrame({"user_id": pd.Series(list(cols["user_id"]), dtype="string")})
            values = cols["values"]
            for j, (col, kind) in enumerate(user_columns.items()):
                column = [v[j] for v in values]
                users[col] = pd.Series(column, dtype="float64") if kind == "number" else pd.Series(column, dtype="string")
            out["users"] = users
        node_ids = _NodeIds(fetched["nids"][0]) if "nids" in fetched else None

        if "links" in names:
            cols = _in_seq_order(fetched["links"][0])
            if len(cols["kind"]):
                if "user_nid" in cols:
                    assert node_ids is not None
                    cols["user_id"] = node_ids.names(cols["user_nid"])
                out["links"] = pd.DataFrame(
                    {
                        "user_id": pd.Series(cols["user_id"], dtype="string"),
                        "kind": pd.Series(cols["kind"], dtype="string"),
                        "ident": pd.Series(cols["ident"], dtype="string"),
                        "first_seen": _times_columnar(cols["first_seen"]),
                        "last_seen": _times_columnar(cols["last_seen"]),
                        "weight": np.asarray(cols["weight"], dtype=np.float64),
                    }
                )
            else:
                out["links"] = base.links

        if "relations" in names:
            cols = _in_seq_order(fetched["relations"][0])
            if len(cols["kind"]):
                if "src_nid" in cols:
                    assert node_ids is not None
                    cols["src"] = node_ids.names(cols["src_nid"])
                    cols["dst"] = node_ids.names(cols["dst_nid"])
                relations = pd.DataFrame(
                    {
                        "src": pd.Series(cols["src"], dtype="string"),
                        "dst": pd.Series(cols["dst"], dtype="string"),
                        "kind": pd.Series(cols["kind"], dtype="string"),
                        "weight": np.asarray(cols["weight"], dtype=np.float64),
                        "ts": _times_columnar(cols["ts"]),
                    }
                )
                values = cols.get("values", [])
                for j, (col, kind) in enumerate(relation_columns.items()):
                    column = [v[j] for v in values]
                    relations[col] = pd.Series(column, dtype="float64") if kind == "number" else pd.Series(column, dtype="string")
                relations["_key"] = np.asarray(cols["_key"], dtype=np.int64).view(np.uint64)
                relations["_occ"] = np.asarray(cols["_occ"], dtype=np.int64)
                out["relations"] = relations
            else:
                out["relations"] = base.relations

        if "flags" in names:
            recs = fetched["flags"]
            if recs:
                flags = pd.DataFrame(
                    {
                        "user_id": pd.Series([r["user_id"] for r in recs], dtype="string"),
                        "label": pd.Series([r["label"] for r in recs], dtype="string"),
                        "severity": pd.Series([r["severity"] for r in recs], dtype="float64"),
                        "source": pd.Series([r["source"] for r in recs], dtype="string"),
                        "ts": _times([r["ts"] for r in recs]),
                    }
                )
                flags["_key"] = np.array([r["_key"] for r in recs], dtype=np.int64).view(np.uint64)
                flags["_occ"] = np.array([r["_occ"] for r in recs], dtype=np.int64)
                out["flags"] = flags
            else:
                out["flags"] = base.flags
        return out


    def _submit_among(
        self, pool: ThreadPoolExecutor, names: set[str], among: Tables, user_columns: dict[str, str], relation_columns: dict[str, str]
    ) -> dict[str, list[Any]]:
        """Submit the reads of the stored rows ``among``'s users, links and relations name."""
        parts: dict[str, list[Any]] = {}
        if "users" in names:
            ids = pd.unique(among.users["user_id"].astype(str)).tolist()
            parts["users"] = [pool.submit(self._read, READ_USERS_AMONG, ids=ids, columns=list(user_columns))]
        if "links" in names:
            links = among.links
            pairs = pd.DataFrame({"user_id": links["user_id"].astype(str), "key": links["kind"].astype(str) + ":" + links["ident"].astype(str)})
            rows = pairs.drop_duplicates().to_dict("records")
            parts["links"] = [pool.submit(self._read, READ_LINKS_AMONG, rows=rows, null_ms=NULL_MS)]
        if "relations" in names:
            rel = among.relations
            # the key each new row gets when merged (graph.store.merge): the stored rows of the same content
            key = row_hash(rel, sorted(c for c in rel.columns if not c.startswith("_"))).view(np.int64)
            wanted = pd.DataFrame({"src": rel["src"].astype(str).to_numpy(), "dst": rel["dst"].astype(str).to_numpy(), "key": key})
            rows = wanted.drop_duplicates().to_dict("records")
            parts["relations"] = [pool.submit(self._read, READ_RELATIONS_AMONG, rows=rows, null_ms=NULL_MS, columns=list(relation_columns))]
        return parts

    # -- the encoded graph, for projections -------------------------------------------------

    def stored_graph(self, *, parts: int = READ_PARTS) -> StoredGraph:
        """The stored graph as internal node ids (:class:`StoredGraph`): integers and numbers
        only, the two edge reads each split into ``parts`` read side by side.

        Parameters
        ----------
        parts : int
            Parts each edge read is split into (by source node), each on a session and a server
            thread of its own.
        """
        if not isinstance(parts, int) or parts < 1:
            raise ParameterError(f"The 'parts' parameter of stored_graph must be an integer >= 1. Got {parts!r} instead.")
        packed = self.packed_read()
        with ThreadPoolExecutor(max_workers=2 * parts + 3) as pool:
            if packed:
                links = [pool.submit(self._read_packed, "links", parts=parts, part=k) for k in range(parts)]
                rels = [pool.submit(self._read_packed, "relations", parts=parts, part=k) for k in range(parts)]
            else:
                links = [pool.submit(self._read, ENCODED_LINKS, null_ms=NULL_MS, parts=parts, part=k) for k in range(parts)]
                rels = [pool.submit(self._read, ENCODED_RELATIONS, null_ms=NULL_MS, parts=parts, part=k) for k in range(parts)]
            users = pool.submit(self._read, ENCODED_USERS)
            shared = pool.submit(self._read, ENCODED_SHARED)
            flags = pool.submit(self._read, ENCODED_FLAGS)
            if packed:
                lk = _concat_packed([f.result() for f in links])
                rl = _concat_packed([f.result() for f in rels])
            else:
                lk = _concat_columns([f.result()[0] for f in links])
                rl = _concat_columns([f.result()[0] for f in rels])
            us, sh, fl = users.result()[0], shared.result()[0], flags.result()[0]
        ints = lambda v: np.asarray(v, dtype=np.int64)  # noqa: E731
        floats = lambda v: np.asarray(v, dtype=np.float64)  # noqa: E731
        objects = lambda v: np.asarray(v, dtype=object)  # noqa: E731
        if packed:
            lk = {"seq": lk["seq"], "user": lk["src"], "ident": lk["dst"], "weight": lk["weight"], "seen": lk["time"]}
            rl = {**rl, "ts": rl["time"]}
        return StoredGraph(
            user_nid=ints(us["nid"]), user_id=objects(us["id"]), user_seq=ints(us["seq"]),
            link_seq=ints(lk["seq"]), link_user=ints(lk["user"]), link_ident=ints(lk["ident"]),
            link_weight=floats(lk["weight"]), link_seen=ints(lk["seen"]),
            rel_seq=ints(rl["seq"]), rel_src=ints(rl["src"]), rel_dst=ints(rl["dst"]), rel_kind=objects(rl["kind"]),
            rel_weight=floats(rl["weight"]), rel_ts=ints(rl["ts"]),
            flag_seq=ints(fl["seq"]), flag_user=ints(fl["user"]),
            shared_nid=ints(sh["nid"]), shared_kind=objects(sh["kind"]), shared_key=objects(sh["key"]),
        )

    def packed_read(self) -> bool:
        """Whether :meth:`stored_graph` reads the edges through the server's
        ``socialrisk.encodedEdges`` procedure (``neo4j/procedures``: each column of a batch one
        packed byte array) rather than by Cypher (one Bolt value per edge and column).

        Decided once per store by ``packed_read`` (:class:`Neo4jStore`): True requires the
        procedure, False never uses it, None uses it where the server has it and says so in the
        log where it has not.

        Raises
        ------
        StoreError
            ``packed_read=True`` and the server has no such procedure.
        """
        if self._packed is None:
            found = bool(self._read(HAS_PACKED_READ)[0]["n"])
            if self._packed_wanted is True and not found:
                raise StoreError(
                    f"Neo4j at {self.uri} has no procedure {PACKED_READ!r}, and packed_read=True requires it: put "
                    "socialrisk-neo4j-procedures.jar (built from neo4j/procedures by 'mvn package'; 'socialrisk neo4j start' "
                    "does it) into the server's plugins directory and restart it, or pass packed_read=None to read by Cypher."
                )
            if self._packed_wanted is None and not found:
                log.warning(
                    "Neo4j at %s has no procedure %s: the graph is read by Cypher, several times slower (docs/operations/neo4j.md says how "
                    "to install it; packed_read=False silences this)", self.uri, PACKED_READ,
                )
            self._packed = found and self._packed_wanted is not False
        return self._packed

    def _read_packed(self, table: str, *, parts: int, part: int) -> dict[str, np.ndarray]:
        """One part of one edge table through ``socialrisk.encodedEdges``, as arrays."""
        records = self._read(PACKED_EDGES, type=table, part=part, parts=parts, null_ms=NULL_MS)
        out: dict[str, list[np.ndarray]] = {k: [] for k in ("seq", "src", "dst", "weight", "time", "kind")}
        for rec in records:
            for k in ("seq", "src", "dst", "time"):
                out[k].append(np.frombuffer(rec[k], dtype="<i8"))
            out["weight"].append(np.frombuffer(rec["weight"], dtype="<f8"))
            if table == "relations":
                # codes are per batch: each batch's own kinds
                out["kind"].append(np.asarray(list(rec["kinds"]), dtype=object)[np.frombuffer(rec["kind"], dtype="<i4")])
        return {k: (np.concatenate(v) if v else np.empty(0, dtype=object if k == "kind" else np.float64 if k == "weight" else np.int64))
                for k, v in out.items()}

    def encoded(self) -> EncodedGraph:
        """The stored graph as integer codes (:class:`~graph.projection.EncodedGraph`).

        With a :attr:`cache_dir`, the last one read is kept there, keyed by the store's
        ``snapshot`` counter (moved by every write that adds rows) and ``graph_snapshot`` (moved
        only by new users, links or relations and by erasures): at the same snapshot it is read
        from disk, and after flags alone only the flagged users are read
        (:meth:`~graph.projection.EncodedGraph.with_users`). Otherwise the graph is read whole
        (:meth:`stored_graph`) and encoded (:func:`encode_stored`).
        """
        meta = self._meta()
        snapshot = int(meta.get("snapshot", 0))
        graph_snapshot = meta.get("graph_snapshot")
        root = self.cache_dir
        if root is None or not meta.get("counts"):
            return encode_stored(self.stored_graph())
        root = Path(root)
        path = root / f"encoded-{graph_snapshot}-{snapshot}"
        if complete_arrays(path):
            try:
                return load_encoded(path)[0]
            except (OSError, ValueError, KeyError) as exc:
                log.warning("the encoded graph kept in %s cannot be read (it is read from Neo4j again): %s", path, exc)
        base = [p for p in root.glob(f"encoded-{graph_snapshot}-*") if complete_arrays(p)] if graph_snapshot is not None else []
        encoded = None
        if base:
            try:
                # only flags were added since: the graph is the same, new flagged users join the end
                kept = load_encoded(base[0])[0]
                flags = _concat_columns([self._read(FLAGGED_USERS)[0]])
                order = np.argsort(np.asarray(flags["seq"], dtype=np.int64), kind="stable")
                encoded = kept.with_users(np.asarray(flags["user_id"], dtype=object)[order])
            except (OSError, ValueError, KeyError) as exc:
                log.warning("the encoded graph kept in %s cannot be read (it is read from Neo4j again): %s", base[0], exc)
        if encoded is None:
            encoded = encode_stored(self.stored_graph())
        try:
            save_encoded(encoded, path, snapshot=snapshot)
            for old in root.glob("encoded-*"):
                if old != path:
                    shutil.rmtree(old, ignore_errors=True)
        except OSError as exc:
            log.warning("the encoded graph could not be kept in %s (the next projection reads Neo4j again): %s", path, exc)
        return encoded


class _NodeIds:
    """Internal node id -> user id, by binary search over the sorted ids."""

    def __init__(self, record: Any) -> None:
        nid = np.asarray(record["nid"], dtype=np.int64)
        order = np.argsort(nid)
        self.nid = nid[order]
        self.ids = np.asarray(record["id"], dtype=object)[order]

    def names(self, nids: list[int]) -> np.ndarray:
        pos = np.searchsorted(self.nid, np.asarray(nids, dtype=np.int64))
        return self.ids[pos]


def _concat_columns(records: list[Any]) -> dict[str, list[Any]]:
    """Columns of several columnar reads of the same query, end to end."""
    out: dict[str, list[Any]] = {k: list(v) for k, v in dict(records[0]).items()}
    for rec in records[1:]:
        for k, v in dict(rec).items():
            out[k].extend(v)
    return out


def _concat_packed(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Columns of several parts of a packed read, end to end."""
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def _in_seq_order(record: Any) -> dict[str, list[Any]]:
    """Columns of a columnar read, reordered by ``seq`` (sorting here is cheaper than in Cypher)."""
    cols = dict(record)
    order = np.argsort(np.asarray(cols.pop("seq"), dtype=np.int64), kind="stable")
    if len(order) and (np.diff(order) == 1).all():
        return cols
    out = {}
    for k, v in cols.items():
        column = np.empty(len(v), dtype=object)
        column[:] = v  # element-wise: values may themselves be lists
        out[k] = column[order]
    return out


def _times_columnar(values: list[int]) -> pd.Series:
    ms = np.asarray(values, dtype=np.int64)
    out = pd.Series(pd.to_datetime(np.where(ms == NULL_MS, 0, ms), unit="ms", utc=True)).astype("datetime64[ns, UTC]")
    out[ms == NULL_MS] = pd.NaT
    return out


def _times(values: Iterable[int | None]) -> pd.Series:
    return pd.to_datetime(pd.Series(list(values), dtype="Int64"), unit="ms", utc=True).astype("datetime64[ns, UTC]")


@dataclass(frozen=True)
class StoredGraph:
    """The stored graph as Neo4j's internal node ids, as :meth:`_Reads.stored_graph` reads it.

    Every array of a table is in the order the server sent it; ``*_seq`` is each row's place in
    its canonical table. Times are milliseconds since the epoch (:data:`NULL_MS` where missing),
    weights NaN where missing.

    Attributes
    ----------
    user_nid, user_id, user_seq : ndarray
        Every :User node: its node id, its id, and its row in the users table (-1: a user known
        only from links, relations or flags).
    link_seq, link_user, link_ident, link_weight, link_seen : ndarray
        Every ``USES`` relationship: row, user node, identifier node, weight, ``last_seen``.
    rel_seq, rel_src, rel_dst, rel_kind, rel_weight, rel_ts : ndarray
        Every ``RELATES`` relationship (``rel_kind`` as text).
    flag_seq, flag_user : ndarray
        Every flag's row and its user node.
    shared_nid, shared_kind, shared_key : ndarray
        The identifiers used by at least two users: node id, kind and key (``kind:pseudonym``).
    """

    user_nid: np.ndarray
    user_id: np.ndarray
    user_seq: np.ndarray
    link_seq: np.ndarray
    link_user: np.ndarray
    link_ident: np.ndarray
    link_weight: np.ndarray
    link_seen: np.ndarray
    rel_seq: np.ndarray
    rel_src: np.ndarray
    rel_dst: np.ndarray
    rel_kind: np.ndarray
    rel_weight: np.ndarray
    rel_ts: np.ndarray
    flag_seq: np.ndarray
    flag_user: np.ndarray
    shared_nid: np.ndarray
    shared_kind: np.ndarray
    shared_key: np.ndarray


def _ms_to_ns(ms: np.ndarray) -> np.ndarray:
    out = ms.astype(np.int64) * 1_000_000
    out[ms == NULL_MS] = NAT
    return out


def _lookup(keys: np.ndarray, values: np.ndarray, wanted: np.ndarray) -> np.ndarray:
    """``values`` of ``wanted`` keys, by binary search over the sorted ``keys``."""
    order = np.argsort(keys, kind="stable")
    return values[order][np.searchsorted(keys[order], wanted)]


def encode_stored(stored: StoredGraph) -> EncodedGraph:
    """The :class:`~graph.projection.EncodedGraph` of a graph read as node ids: the same codes
    and order as :func:`graph.projection.encode` gives for the tables it holds (link kinds are
    numbered in first-seen order over the links it keeps).

    Parameters
    ----------
    stored : StoredGraph

    Returns
    -------
    EncodedGraph
    """
    lo = np.argsort(stored.link_seq, kind="stable")
    ro = np.argsort(stored.rel_seq, kind="stable")
    fo = np.argsort(stored.flag_seq, kind="stable")
    in_users = stored.user_seq >= 0
    table_users = stored.user_nid[in_users][np.argsort(stored.user_seq[in_users], kind="stable")]
    link_user, link_ident = stored.link_user[lo], stored.link_ident[lo]
    src, dst = stored.rel_src[ro], stored.rel_dst[ro]
    # users in first-seen order over the users table, links, relation sources, targets and flags
    every = np.concatenate([table_users, link_user, src, dst, stored.flag_user[fo]]).astype(np.int64)
    codes, user_nids = pd.factorize(every)
    n_t, n_l, n_r = len(table_users), len(link_user), len(src)
    user_code = codes[n_t : n_t + n_l]
    src_code, dst_code = codes[n_t + n_l : n_t + n_l + n_r], codes[n_t + n_l + n_r : n_t + n_l + 2 * n_r]
    user_ids = _lookup(stored.user_nid.astype(np.int64), stored.user_id, np.asarray(user_nids, dtype=np.int64))

    seen = _ms_to_ns(stored.link_seen[lo])
    ts = _ms_to_ns(stored.rel_ts[ro])
    times = np.concatenate([seen[seen != NAT], ts[ts != NAT]])
    as_of = int(times.max()) if len(times) else NAT

    # identifiers in first-seen order over the links; those of two users or more are kept
    ident_code, ident_nids = pd.factorize(link_ident.astype(np.int64))
    shared, cols, order = shared_links(ident_code, len(ident_nids), user_code)
    kept_nids = np.asarray(ident_nids, dtype=np.int64)[shared]
    shared_nid = stored.shared_nid.astype(np.int64)
    if len(kept_nids):
        ident_keys = _lookup(shared_nid, stored.shared_key, kept_nids).astype(str)
        kind_of_ident = _lookup(shared_nid, stored.shared_kind, kept_nids)
        kind_codes, kind_names = pd.factorize(pd.Series(kind_of_ident, dtype=object).astype(str))
        link_kinds = tuple(str(k) for k in kind_names)
    else:
        ident_keys, kind_codes, link_kinds = np.zeros(0, dtype=str), np.zeros(0, dtype=np.int64), ()
    link_weight = stored.link_weight[lo].astype(np.float64)
    link_weight = np.where(np.isnan(link_weight), 1.0, link_weight)
    rel_weight = stored.rel_weight[ro].astype(np.float64)
    rel_weight = np.where(np.isnan(rel_weight), 1.0, rel_weight)
    rel_kind, rel_kinds = pd.factorize(pd.Series(stored.rel_kind[ro], dtype=object).astype(str))
    rorder = np.lexsort((dst_code, src_code))
    return EncodedGraph(
        user_ids=np.asarray(user_ids, dtype=object).astype(str),
        as_of=as_of,
        link_user=user_code[order].astype(np.int32),
        link_ident=cols[order].astype(np.int32),
        link_kind=np.asarray(kind_codes, dtype=np.int64)[cols[order]].astype(np.int32),
        link_weight=link_weight[order],
        link_seen=seen[order],
        ident_keys=ident_keys,
        ident_kind=np.asarray(kind_codes, dtype=np.int32),
        link_kinds=link_kinds,
        rel_src=src_code[rorder].astype(np.int32),
        rel_dst=dst_code[rorder].astype(np.int32),
        rel_kind=rel_kind[rorder].astype(np.int32),
        rel_weight=rel_weight[rorder],
        rel_ts=ts[rorder],
        rel_kinds=tuple(str(k) for k in rel_kinds),
    )
