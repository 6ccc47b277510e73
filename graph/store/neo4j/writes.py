"""The Neo4j store's schema and writes: constraints, the MERGE queries and the batched writer."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from graph.store.merge import merge_table
from loaders.errors import StoreError
from loaders.load import WriteCounts
from loaders.schema import TABLE_NAMES, Tables

if TYPE_CHECKING:
    from graph.store.neo4j.store import Neo4jStore

__all__ = ["FORMAT_VERSION", "BATCH", "IDENTIFIER_LABELS", "RESERVED_USER_PROPERTIES", "SCHEMA", "MERGE_USERS", "FORGET_USER", "REMOVE_USER_PROPS", "MERGE_LINKS", "MERGE_LINKS_LABELLED", "MERGE_RELATIONS", "MERGE_RELATIONS_PLAIN", "MERGE_FLAGS", "ENSURE_USERS", "MARK_DISPUTE_LINK", "MARK_DISPUTE_RELATION", "READ_META", "READ_TOMBSTONES", "WRITE_META", "WRITE_RESULT_ROWS", "WRITE_RESULT_META", "READ_RESULT_META", "READ_RESULT_ROWS", "CLEAR_ALL", "CLEAR_BATCHES"]

FORMAT_VERSION = 1
BATCH = 10_000
#: Identifier kind -> second label. The only labels socialrisk ever writes besides
#: User, Identifier, Flag, SocialRiskMeta and Result.
IDENTIFIER_LABELS: dict[str, str] = {
    "device": "Device",
    "phone": "Phone",
    "card": "Card",
    "ip": "IP",
    "account": "Account",
    "email": "Email",
    "address": "Address",
}
RESERVED_USER_PROPERTIES = frozenset({"id", "_seq"})
_INTERNAL_REL = frozenset({"src", "dst", "kind", "weight", "ts", "_key", "_occ", "_seq"})

SCHEMA = (
    "CREATE CONSTRAINT socialrisk_user_id IF NOT EXISTS FOR (u:User) REQUIRE u.id IS UNIQUE",
    "CREATE CONSTRAINT socialrisk_identifier_key IF NOT EXISTS FOR (i:Identifier) REQUIRE i.key IS UNIQUE",
    "CREATE CONSTRAINT socialrisk_flag_key IF NOT EXISTS FOR (f:Flag) REQUIRE f.key IS UNIQUE",
    "CREATE CONSTRAINT socialrisk_result_name IF NOT EXISTS FOR (r:Result) REQUIRE r.name IS UNIQUE",
    "CREATE CONSTRAINT socialrisk_audit_seq IF NOT EXISTS FOR (a:AuditEntry) REQUIRE a.seq IS UNIQUE",
    # MERGE of the lock node is only race-free with a constraint: without one, two first appends
    # could each create an AuditHead and lock different nodes
    "CREATE CONSTRAINT socialrisk_audit_head_id IF NOT EXISTS FOR (h:AuditHead) REQUIRE h.id IS UNIQUE",
    "CREATE CONSTRAINT socialrisk_model_version IF NOT EXISTS FOR (m:ModelVersion) REQUIRE m.version IS UNIQUE",
    "CREATE CONSTRAINT socialrisk_tombstone_id IF NOT EXISTS FOR (t:Tombstone) REQUIRE t.id IS UNIQUE",
    "CREATE INDEX socialrisk_user_ring IF NOT EXISTS FOR (u:User) ON (u.ring_id)",
    # No index on RELATES(_key): with one, the planner seeks it for MERGE instead of expanding
    # between the two (already bound) users, and relation loading falls from ~20,000 to ~2,000 rows/s.
    "DROP INDEX socialrisk_relates_key IF EXISTS",
)

MERGE_USERS = """
UNWIND $rows AS row
MERGE (u:User {id: row.id})
SET u += row.props, u._seq = row.seq
"""
#: Erase a user's personal data: identifiers only it uses (with their links), and the given
#: properties (its features and per-user results); in the same transaction, leave the
#: tombstone that keeps later loads from bringing them back.
FORGET_USER = """
MATCH (u:User {id: $id})
MERGE (t:Tombstone {id: $id})
  ON CREATE SET t.at = datetime()
WITH u
OPTIONAL MATCH (u)-[:USES]->(i:Identifier)
WHERE COUNT { (i)<-[:USES]-() } = 1
WITH u, collect(i) AS own
FOREACH (i IN own | DETACH DELETE i)
WITH u, size(own) AS links, size([k IN $drop WHERE u[k] IS NOT NULL]) AS values
FOREACH (k IN $drop | SET u[k] = null)
RETURN links, values
"""
REMOVE_USER_PROPS = """
UNWIND $rows AS row
MATCH (u:User {id: row.id})
FOREACH (k IN row.drop | SET u[k] = null)
"""
MERGE_LINKS = """
UNWIND $rows AS row
MATCH (u:User {id: row.user_id})
MERGE (i:Identifier {key: row.key})
  ON CREATE SET i.kind = row.kind, i.ident = row.ident
MERGE (u)-[r:USES]->(i)
SET r.first_seen = CASE WHEN row.first_seen IS NULL THEN null ELSE datetime.fromepochmillis(row.first_seen) END, r.last_seen = CASE WHEN row.last_seen IS NULL THEN null ELSE datetime.fromepochmillis(row.last_seen) END,
    r.weight = row.weight, r._seq = row.seq
"""
#: Links to identifiers of a vocabulary kind: the same merge, setting the second label on
#: creation. One constant per label, because Cypher cannot take a label as a parameter.
MERGE_LINKS_LABELLED: dict[str, str] = {
    label: MERGE_LINKS.replace("ON CREATE SET i.kind", "ON CREATE SET i:%s, i.kind" % label)
    for label in IDENTIFIER_LABELS.values()
}
MERGE_RELATIONS = """
UNWIND $rows AS row
MATCH (a:User {id: row.src})
MATCH (b:User {id: row.dst})
MERGE (a)-[r:RELATES {_key: row.key, _occ: row.occ}]->(b)
SET r.kind = row.kind, r.weight = row.weight, r._seq = row.seq,
    r.ts = CASE WHEN row.ts IS NULL THEN null ELSE datetime.fromepochmillis(row.ts) END, r += row.attrs
"""
#: Without extra columns: no ``r += row.attrs``, whose read/set conflict makes the planner
#: materialise every row of the batch first (an Eager operator).
MERGE_RELATIONS_PLAIN = MERGE_RELATIONS.replace(", r += row.attrs", "")
MERGE_FLAGS = """
UNWIND $rows AS row
MATCH (u:User {id: row.user_id})
MERGE (f:Flag {key: row.fkey})
SET f.label = row.label, f.severity = row.severity, f.source = row.source, f._key = row.key, f._occ = row.occ,
    f._seq = row.seq, f.ts = CASE WHEN row.ts IS NULL THEN null ELSE datetime.fromepochmillis(row.ts) END
MERGE (u)-[:HAS_FLAG]->(f)
"""
#: Users of the users table carry ``_seq``; users known only from links, relations or flags do not.
ENSURE_USERS = "UNWIND $rows AS row MERGE (:User {id: row})"
#: A disputed link stays in the graph, marked with the dispute's reason and audit entry (null: withdrawn).
MARK_DISPUTE_LINK = """
MATCH (u:User {id: $user_id})-[r:USES]->(i:Identifier {key: $other})
SET r.disputed = $reason, r.disputed_at = CASE WHEN $reason IS NULL THEN null ELSE datetime() END
RETURN count(r) AS marked
"""
MARK_DISPUTE_RELATION = """
MATCH (u:User {id: $user_id})-[r:RELATES]-(o:User {id: $other})
SET r.disputed = $reason, r.disputed_at = CASE WHEN $reason IS NULL THEN null ELSE datetime() END
RETURN count(r) AS marked
"""
READ_META = "MATCH (m:SocialRiskMeta {id: 'meta'}) RETURN properties(m) AS meta"
READ_TOMBSTONES = "MATCH (t:Tombstone) RETURN collect(t.id) AS ids"
#: The metadata node; ``store_id`` is set once, when it is created, and names this graph's kept
#: projections (a database emptied and loaded again is another graph).
WRITE_META = "MERGE (m:SocialRiskMeta {id: 'meta'}) ON CREATE SET m.store_id = $store_id SET m += $props"
WRITE_RESULT_ROWS = """
UNWIND $rows AS row
MATCH (u:User {id: row.id})
SET u += row.props
"""
WRITE_RESULT_META = "MERGE (r:Result {name: $name}) SET r.meta = $meta, r.columns = $columns, r.properties = $properties"
READ_RESULT_META = "MATCH (r:Result {name: $name}) RETURN r.meta AS meta, r.columns AS columns, r.properties AS properties"
READ_RESULT_ROWS = """
MATCH (u:User) WHERE u[$probe] IS NOT NULL
RETURN u.id AS user_id, [c IN $properties | u[c]] AS values ORDER BY u._seq
"""
CLEAR_ALL = "MATCH (n) CALL (n) { DETACH DELETE n } IN TRANSACTIONS OF $rows ROWS"
#: Nodes per transaction of each attempt to clear. The query runs in auto-commit transactions,
#: which the driver does not retry, and a batch of dense nodes can pass the server's memory limit
#: for a transaction; each attempt goes on from the batches the last one committed.
CLEAR_BATCHES = (10_000, 1_000, 100)


@dataclass(frozen=True)
class _Job:
    """Rows of one table to write: one or more ``(query, rows)`` segments, one after another."""

    table: str
    segments: list[tuple[str, list[Any]]]
    partition: str | None = None

    @property
    def rows(self) -> int:
        return sum(len(rows) for _, rows in self.segments)


class _Writer:
    """Runs write jobs in submission order on one background thread, while the caller
    prepares the next ones.

    Order matters (users before the links that MATCH them), and tables written side by side
    lock the same users and deadlock, so there is one thread; each job still writes on the
    store's worker sessions. After a failure the remaining jobs are dropped and the first
    error is raised when the block exits.
    """

    def __init__(self, store: Neo4jStore) -> None:
        self.store = store
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="socialrisk-writer")
        self.futures: list[Any] = []
        self.failed = threading.Event()

    def submit(self, job: _Job) -> None:
        if not job.rows:
            return

        def run() -> None:
            if self.failed.is_set():
                return
            try:
                offset = 0
                for query, rows in job.segments:
                    self.store._write_batches(job.table, query, rows, partition=job.partition, offset=offset, total=job.rows)
                    offset += len(rows)
            except BaseException:
                self.failed.set()
                raise

        self.futures.append(self.pool.submit(run))

    def __enter__(self) -> _Writer:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is not None:
            self.failed.set()
        self.pool.shutdown(wait=True)
        if exc_type is None:
            for f in self.futures:
                f.result()




def _plain(value: Any) -> Any:
    """A value the driver can send: numpy scalars to Python, NaN/NA to None."""
    if value is None or value is pd.NA:
        return None
    if isinstance(value, (float, np.floating)):
        return None if np.isnan(value) else float(value)
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    return value if isinstance(value, (str, int)) else str(value)


def _millis(series: pd.Series) -> list[int | None]:
    missing = series.isna().to_numpy()
    if not len(series):
        return []
    naive = series.dt.tz_convert("UTC").dt.tz_localize(None) if getattr(series.dt, "tz", None) is not None else series
    ns = naive.to_numpy(dtype="datetime64[ns]").view(np.int64)
    return [None if m else int(v // 1_000_000) for v, m in zip(ns.tolist(), missing.tolist())]




class _Writes:
    """Merging canonical tables into the database (mixed into :class:`Neo4jStore`)."""

    # set by Neo4jStore.__init__; the methods it defines (_read, _call, _write_batches, _meta) are used here
    uri: str
    database: str
    _driver: Any
    _tables: Tables | None

    def write_tables(self, tables: Tables) -> dict[str, WriteCounts]:
        """Merge the tables in (:func:`graph.store.merge.merge_table`), writing only the rows
        they add or change.

        Only what this load merges with is read: the stored rows of the users, links and
        relations it names (through the indexes), and the flags; an empty database reads
        nothing. Rows keep their stored sequence numbers, new ones follow the table's count.
        """
        meta = self._meta()
        # only the tables this load adds to are read and merged: a flag does not read the graph
        given = [name for name, new in tables if len(new)]
        seqs: dict[str, np.ndarray] = {}
        stored = self._read_stored(given, among=tables, seqs=seqs) if meta.get("counts") else None
        stored_counts = dict(meta.get("counts") or {})
        counts: dict[str, WriteCounts] = {}
        totals: dict[str, int] = {}
        # every user first (users-table rows with their properties, then the rest bare), so
        # links, relations and flags can MATCH their endpoints
        named = tables.all_user_ids().astype(str).tolist()
        known = self.known_among(named) if stored is not None else set()
        known.update(tables.users["user_id"].astype(str).tolist())
        missing = [u for u in named if u not in known]
        # One writer thread runs the write jobs in order while this thread prepares the next
        # table's rows: the client's packing overlaps the server's merging.
        with _Writer(self) as writer:
            for name, new in tables:
                if name == "links":
                    writer.submit(_Job("users", [(ENSURE_USERS, missing)]))
                    missing = []
                if name not in given:
                    counts[name] = WriteCounts(added=0, unchanged=0)
                    continue
                old = stored.get(name) if stored is not None else None
                if old is not None and not len(old):
                    old = None
                merged, count = merge_table(name, old, new)
                counts[name] = count
                n_old = 0 if old is None else len(old)
                # new rows go after the table's last row: its count, or past the rows a load
                # stopped half-way wrote beyond it (read here as stored rows)
                stored_seq = seqs.get(name, np.zeros(0, dtype=np.int64))[:n_old]
                before = int(stored_counts.get(name, 0)) if stored is not None else 0
                if name == "flags":
                    before = n_old  # flags are read whole
                elif len(stored_seq):
                    before = max(before, int(stored_seq.max()) + 1)
                totals[name] = before + len(merged) - n_old
                if name in ("users", "links"):
                    # merged: the stored rows read (same order), then the new ones after the table's end
                    row_seqs = np.concatenate([stored_seq, before + np.arange(len(merged) - n_old, dtype=np.int64)])
                    jobs = self._user_jobs(merged, meta, row_seqs) if name == "users" else self._link_jobs(merged, row_seqs)
                elif name == "relations":
                    jobs = self._relation_jobs(merged.iloc[n_old:], before, meta)
                else:
                    jobs = self._flag_jobs(merged.iloc[n_old:], n_old)
                for job in jobs:
                    writer.submit(job)
            writer.submit(_Job("users", [(ENSURE_USERS, missing)]))
        meta["counts"] = {n: totals[n] if n in totals else int(stored_counts.get(n, 0)) for n in TABLE_NAMES}
        if any(c.added for c in counts.values()):
            meta["snapshot"] = int(meta.get("snapshot", 0)) + 1
            if counts["links"].added or counts["relations"].added:
                meta["links_snapshot"] = int(meta.get("links_snapshot", 0)) + 1
            if counts["users"].added or counts["links"].added or counts["relations"].added:
                # the encoded graph changes; after flags alone it only gains the flagged users
                meta["graph_snapshot"] = int(meta.get("graph_snapshot", 0)) + 1
            meta["updated_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        meta["format_version"] = FORMAT_VERSION
        self._write_meta(meta)
        self._tables = None
        return counts

    def _user_jobs(self, merged: pd.DataFrame, meta: dict[str, Any], seqs: np.ndarray) -> list[_Job]:
        """Every merged users row (each one this load names), with its sequence number."""
        columns: dict[str, str] = dict(meta.get("user_columns", {}))
        for col in merged.columns:
            if col == "user_id":
                continue
            if col in RESERVED_USER_PROPERTIES or col.startswith("_"):
                raise StoreError(f"users column {col!r} clashes with a property socialrisk keeps on :User nodes; rename it")
            columns.setdefault(col, "number" if pd.api.types.is_numeric_dtype(merged[col]) else "text")
        meta["user_columns"] = columns
        frame = merged
        ids = frame["user_id"].astype(str).tolist()
        # column by column: numbers as floats (NaN left out), text as str (NA left out)
        values = []
        for c in frame.columns:
            if c == "user_id":
                continue
            column = frame[c]
            if pd.api.types.is_numeric_dtype(column):
                arr = column.to_numpy(dtype=np.float64)
                values.append((c, [None if v != v else v for v in arr.tolist()]))
            else:
                values.append((c, [None if v is None or v is pd.NA else str(v) for v in column.astype(object).tolist()]))
        rows = []
        for i, (uid, seq) in enumerate(zip(ids, seqs.tolist())):
            props = {c: col[i] for c, col in values if col[i] is not None}
            rows.append({"id": uid, "seq": seq, "props": props})
        return [_Job("users", [(MERGE_USERS, rows)], partition="id")]

    def _link_jobs(self, merged: pd.DataFrame, seqs: np.ndarray) -> list[_Job]:
        """Every merged links row (each one this load names), with its sequence number."""
        if not len(merged):
            return []
        first = _millis(merged["first_seen"])
        last = _millis(merged["last_seen"])
        weight = merged["weight"].to_numpy(dtype=np.float64)
        kinds = merged["kind"].astype(str).to_numpy()
        idents = merged["ident"].astype(str).to_numpy()
        users = merged["user_id"].astype(str).to_numpy()
        by_kind: dict[str, list[dict[str, Any]]] = {}
        seq_list = seqs.tolist()
        for i in range(len(merged)):
            kind = kinds[i]
            by_kind.setdefault(kind, []).append(
                {
                    "user_id": users[i],
                    "kind": kind,
                    "ident": idents[i],
                    "key": f"{kind}:{idents[i]}",
                    "first_seen": first[i],
                    "last_seen": last[i],
                    "weight": None if np.isnan(weight[i]) else float(weight[i]),
                    "seq": seq_list[i],
                }
            )
        segments = []
        for kind, rows in by_kind.items():
            label = IDENTIFIER_LABELS.get(kind)
            segments.append((MERGE_LINKS_LABELLED[label] if label else MERGE_LINKS, rows))
        return [_Job("links", segments, partition="key")]

    def _relation_jobs(self, fresh: pd.DataFrame, offset: int, meta: dict[str, Any]) -> list[_Job]:
        columns: dict[str, str] = dict(meta.get("relation_columns", {}))
        extra = [c for c in fresh.columns if c not in _INTERNAL_REL]
        for col in extra:
            columns.setdefault(col, "number" if pd.api.types.is_numeric_dtype(fresh[col]) else "text")
        meta["relation_columns"] = columns
        if not len(fresh):
            return []
        src = fresh["src"].astype(str).to_numpy()
        dst = fresh["dst"].astype(str).to_numpy()
        kind = fresh["kind"].astype(str).to_numpy()
        weight = fresh["weight"].to_numpy(dtype=np.float64).tolist()
        ts = _millis(fresh["ts"])
        key = fresh["_key"].to_numpy(dtype=np.uint64).view(np.int64).tolist()
        occ = fresh["_occ"].to_numpy(dtype=np.int64).tolist()
        extras = {c: fresh[c].to_numpy(dtype=object) for c in extra}
        rows = []
        for i in range(len(fresh)):
            attrs = {c: _plain(v[i]) for c, v in extras.items()}
            rows.append(
                {
                    "src": src[i], "dst": dst[i], "kind": kind[i], "weight": weight[i], "ts": ts[i],
                    "key": key[i], "occ": occ[i], "seq": offset + i,
                    "attrs": {k: v for k, v in attrs.items() if v is not None},
                }
            )
        return [_Job("relations", [(MERGE_RELATIONS if extra else MERGE_RELATIONS_PLAIN, rows)], partition="src")]

    def _flag_jobs(self, fresh: pd.DataFrame, offset: int) -> list[_Job]:
        if not len(fresh):
            return []
        ts = _millis(fresh["ts"])
        key = fresh["_key"].to_numpy(dtype=np.uint64).view(np.int64).tolist()
        users = fresh["user_id"].astype(str).to_numpy()
        labels = fresh["label"].astype(str).to_numpy()
        severity = fresh["severity"].to_numpy(dtype=np.float64).tolist()
        source = fresh["source"].fillna("").astype(str).to_numpy()
        occ = fresh["_occ"].to_numpy(dtype=np.int64).tolist()
        rows = []
        for i in range(len(fresh)):
            rows.append(
                {
                    "user_id": users[i], "label": labels[i], "severity": severity[i], "source": source[i],
                    "ts": ts[i], "key": key[i], "occ": occ[i], "fkey": f"{key[i]}:{occ[i]}", "seq": offset + i,
                }
            )
        return [_Job("flags", [(MERGE_FLAGS, rows)], partition="user_id")]

