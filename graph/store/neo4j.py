"""The Neo4j store: the graph in a Neo4j database, through the official driver.

Graph model
-----------
- ``(:User {id, _seq, <feature columns>})``, with the latest scores as properties (``risk``,
  ``credit_score``, ``decision``, ``reasons``...) so analysts can query them in Cypher.
- ``(:Identifier:<Kind> {key, kind, ident})``: one node per pseudonymised identifier, with a
  second label from a fixed vocabulary (``Device``, ``Phone``, ``Card``, ``IP``, ``Account``,
  ``Email``, ``Address``; other kinds carry only ``Identifier`` and their ``kind``).
- ``(:User)-[:USES {first_seen, last_seen, weight, _seq}]->(:Identifier)``.
- ``(:User)-[:RELATES {kind, weight, ts, _key, _occ, _seq, ...}]->(:User)``: one relationship
  type with ``kind`` as a property rather than one type per kind, because relation kinds are free
  text in the input: types would have to be made from data, and a fixed set of types keeps every
  query a constant.
- ``(:User)-[:HAS_FLAG]->(:Flag {label, severity, source, ts, _key, _occ, _seq})``: flags are
  nodes, so their provenance (source, time) stays with them and a user's history is kept.
- ``(:SocialRiskMeta {id: 'meta'})`` holds the snapshot counter (moved by every write that adds
  rows), the links snapshot (moved only by new links or relations and by erasures), the key
  fingerprint, the column lists and the current model version; ``(:Result {name})`` the provenance of each
  result written back.
- ``(:AuditEntry {seq, at, actor, action, user_id, before, after, detail, prev_hash, hash})``:
  the audit log (``before``/``after``/``detail`` as JSON text), only ever created, never
  changed; ``(:AuditHead {id: 'audit'})`` is the lock appenders take.
- ``(:ModelVersion {version, payload, meta, created_at})``: registered models (payload as a
  byte array, ``meta`` as JSON text).
- ``(:Tombstone {id, at})``: a user erased by ``forget_user``; loads skip its rows.

Every query is a module constant with ``$parameters``; labels come from the fixed vocabulary.
Writes are batched ``UNWIND ... MERGE`` in managed transactions (``execute_write``), which the
driver retries on transient errors; ``MERGE`` makes a retried batch harmless.
"""

from __future__ import annotations

import json
import logging
import threading
import zlib
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import pandas as pd

from graph.store._json import canonical_json
from graph.store.audit import AuditEntry, entry_from_dict, new_entries
from graph.store.base import GraphStore
from graph.store.models import check_model_payload, check_model_version, model_meta
from graph.store.merge import merge_table
from loaders.errors import ConfigError, NotFoundError, ParameterError, StoreError, TransientStoreError
from loaders.load import WriteCounts
from loaders.schema import TABLE_NAMES, Tables, empty_tables

#: Neo4j's epochMillis count from here.
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)

# The driver logs every retried transaction (a deadlock between the two writing sessions) as a
# warning; retries are expected and handled, so only errors are shown.
logging.getLogger("neo4j").setLevel(logging.ERROR)

__all__ = ["Neo4jStore", "IDENTIFIER_LABELS", "RESERVED_USER_PROPERTIES"]

FORMAT_VERSION = 1
BATCH = 10_000
#: Parts each big edge read is split into, one server thread each.
READ_PARTS = 2
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
READ_USERS = """
MATCH (u:User) WHERE u._seq IS NOT NULL
RETURN collect(u._seq) AS seq, collect(u.id) AS user_id, collect([c IN $columns | u[c]]) AS values
"""
ENSURE_USERS = "UNWIND $rows AS row MERGE (:User {id: row})"
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
READ_META = "MATCH (m:SocialRiskMeta {id: 'meta'}) RETURN properties(m) AS meta"
READ_TOMBSTONES = "MATCH (t:Tombstone) RETURN collect(t.id) AS ids"
WRITE_META = "MERGE (m:SocialRiskMeta {id: 'meta'}) SET m += $props"
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
#: The latest flag of a user is the last of its flags by time (flags without one first), then
#: by stored order, as :func:`graph.neighbourhood.latest_flags` and the scoring read them.
#: One hop of a neighbourhood from a frontier of nodes: each node's first $limit neighbours
#: (shared identifiers first, then users by decreasing risk, then by name), with the
#: relationships to each folded per type, kind and direction. Identifiers used by one user
#: link nobody and are left out.
#:
#: Ranking a hub's neighbours reads the risk of every one of them (17,000 for a merchant-like
#: user), so a dense node keeps its ranked neighbours in ``_nb`` (element ids, written with the
#: scores by :data:`REFRESH_NEIGHBOUR_LISTS`), and a hop takes the first $limit of them. The
#: list is used only while it is current: written at the store's ``links_snapshot`` (which
#: links, relations and erasures move, and flags do not: a flag changes no neighbour's risk
#: until the scores are written again, and that rewrites the lists) and with the node's
#: relationship count unchanged; otherwise the hop ranks the neighbours itself. Both branches
#: give the same neighbours in the same order. :meth:`Neo4jStore.neighbourhood_records` reads
#: the returned columns by position: keep their order.
NEIGHBOURHOOD_HOP = """
MATCH (m:SocialRiskMeta {id: 'meta'})
WITH coalesce(m.links_snapshot, 0) AS snapshot
UNWIND range(0, size($frontier) - 1) AS fi
MATCH (x) WHERE elementId(x) = $frontier[fi]
WITH fi, x, x._nb IS NOT NULL AND x._nb_snapshot = snapshot AND x._nb_rels = COUNT { (x)-[:USES|RELATES]-() } AS listed
CALL (x, listed) {
  WITH x WHERE listed
  WITH x, x._nb[..$limit] AS nb
  UNWIND range(0, size(nb) - 1) AS k
  MATCH (n) WHERE elementId(n) = nb[k]
  CALL (x, n) {
    MATCH (x)-[r:USES|RELATES]-(n)
    RETURN collect(r) AS rels
  }
  WITH n, k, rels ORDER BY k
  RETURN collect([n, rels]) AS picked
UNION ALL
  WITH x WHERE NOT listed
  MATCH (x)-[r:USES|RELATES]-(n)
  WHERE n <> x
  WITH n, collect(r) AS rels
  WHERE n:User OR COUNT { (n)<-[:USES]-() } >= 2
  WITH n, rels ORDER BY CASE WHEN n:User THEN 1 ELSE 0 END, coalesce(n.risk, 0.0) DESC, coalesce(n.id, n.key) LIMIT $limit
  RETURN collect([n, rels]) AS picked
}
WITH fi, x, picked WHERE size(picked) > 0
UNWIND range(0, size(picked) - 1) AS ni
WITH fi, x, ni, picked[ni][0] AS n, picked[ni][1] AS rels
UNWIND rels AS r
WITH fi, x, ni, n, type(r) AS type, coalesce(r.kind, 'uses') AS kind, startNode(r) = x AS outgoing,
     sum(coalesce(r.weight, 1.0)) AS weight, count(r) AS count, max(coalesce(r.ts, r.last_seen)) AS ts
RETURN $frontier[fi] AS source, elementId(n) AS target, type, kind, outgoing, weight, count, ts.epochMillis AS ts_ms,
       CASE WHEN n:User THEN 'user' ELSE 'identifier' END AS node_type, coalesce(n.id, n.key) AS name,
       CASE WHEN n:User THEN null ELSE n.kind END AS ident_kind,
       CASE WHEN n:User THEN null ELSE COUNT { (n)<-[:USES]-() } END AS degree,
       CASE WHEN n:User THEN n.risk END AS risk, CASE WHEN n:User THEN n.credit_score END AS credit_score,
       CASE WHEN n:User THEN n.decision END AS decision,
       CASE WHEN n:User THEN COLLECT { MATCH (n)-[:HAS_FLAG]->(f:Flag) RETURN f.label ORDER BY f.ts IS NOT NULL, f.ts, f._seq }
            ELSE [] END AS flags
ORDER BY fi, ni
"""
#: Nodes with more relationships than this keep a ranked neighbour list for neighbourhoods.
DENSE_NEIGHBOURS = 64
#: The ranked neighbours of every dense node, up to 1,000 (the largest neighbourhood limit), in
#: the order :data:`NEIGHBOURHOOD_HOP` ranks them, stamped with the links snapshot and the node's
#: relationship count; lists of nodes no longer dense are dropped. Run after scores are written.
REFRESH_NEIGHBOUR_LISTS = """
MATCH (m:SocialRiskMeta {id: 'meta'})
WITH coalesce(m.links_snapshot, 0) AS snapshot
MATCH (x) WHERE (x:User OR x:Identifier)
WITH snapshot, x, COUNT { (x)-[:USES|RELATES]-() } AS rels
WHERE rels > $dense OR x._nb IS NOT NULL
CALL (x, rels, snapshot) {
  WITH x WHERE rels <= $dense
  REMOVE x._nb, x._nb_snapshot, x._nb_rels
  RETURN 0 AS listed
UNION ALL
  WITH x, rels, snapshot WHERE rels > $dense
  CALL (x) {
    MATCH (x)-[:USES|RELATES]-(n)
    WHERE n <> x
    WITH DISTINCT n
    WHERE n:User OR COUNT { (n)<-[:USES]-() } >= 2
    WITH n ORDER BY CASE WHEN n:User THEN 1 ELSE 0 END, coalesce(n.risk, 0.0) DESC, coalesce(n.id, n.key) LIMIT 1000
    RETURN collect(elementId(n)) AS nb
  }
  SET x._nb = nb, x._nb_snapshot = snapshot, x._nb_rels = rels
  RETURN 1 AS listed
}
RETURN sum(listed) AS listed
"""
NEIGHBOURHOOD_START = """
MATCH (u:User {id: $id})
RETURN elementId(u) AS eid, u.risk AS risk, u.credit_score AS credit_score, u.decision AS decision,
       COLLECT { MATCH (u)-[:HAS_FLAG]->(f:Flag) RETURN f.label ORDER BY f.ts IS NOT NULL, f.ts, f._seq } AS flags
"""
#: Shortest paths through identifiers and relations, as distinct sequences of nodes; the bound
#: must be a literal in Cypher, so paths are searched up to 12 steps and cut to $max_hops.
SHORTEST_PATHS = """
MATCH (a:User {id: $a}), (b:User {id: $b})
MATCH p = allShortestPaths((a)-[:USES|RELATES*..12]-(b))
WHERE length(p) <= $max_hops
WITH DISTINCT nodes(p) AS ns LIMIT $limit
RETURN [n IN ns | coalesce(n.id, n.key)] AS nodes,
       [n IN ns | CASE WHEN n:User THEN 'user' ELSE 'identifier' END] AS node_types
"""
#: The relation kinds between pairs of users (either direction), for the hops of a path.
RELATION_KINDS = """
UNWIND $pairs AS pair
MATCH (x:User {id: pair[0]})-[r:RELATES]-(y:User {id: pair[1]})
RETURN pair[0] AS a, pair[1] AS b, collect(DISTINCT r.kind) AS kinds
"""
IDENTIFIER_DEGREES = """
UNWIND $keys AS k
MATCH (i:Identifier {key: k})
RETURN k AS key, COUNT { (i)<-[:USES]-() } AS degree
"""
RING_MEMBERS = """
MATCH (u:User {id: $id}) WHERE u.ring_id IS NOT NULL AND u.ring_id <> ''
MATCH (m:User {ring_id: u.ring_id})
CALL (m, u) {
  MATCH (m)-[:USES]->(i:Identifier)<-[:USES]-(o:User)
  WHERE o <> m AND o.ring_id = u.ring_id
  RETURN collect(DISTINCT i.key) AS identifiers
}
RETURN m.id AS user_id, m.risk AS risk, m.credit_score AS credit_score, m.decision AS decision,
       COLLECT { MATCH (m)-[:HAS_FLAG]->(f:Flag) RETURN f.label ORDER BY f.ts IS NOT NULL, f.ts, f._seq } AS flags, identifiers
ORDER BY coalesce(m.risk, 0.0) DESC, m.id
"""
READ_USER_IDS = "MATCH (u:User) WITH u ORDER BY u._seq RETURN collect(u.id) AS ids"
KNOWN_AMONG = "UNWIND $ids AS id MATCH (u:User {id: id}) RETURN collect(id) AS ids"
CLEAR_ALL = "MATCH (n) CALL (n) { DETACH DELETE n } IN TRANSACTIONS OF $rows ROWS"
#: Nodes per transaction of each attempt to clear. The query runs in auto-commit transactions,
#: which the driver does not retry, and a batch of dense nodes can pass the server's memory limit
#: for a transaction; each attempt goes on from the batches the last one committed.
CLEAR_BATCHES = (10_000, 1_000, 100)
#: Setting a property on the singleton head takes its write lock until the transaction ends, so
#: appenders queue here and each reads the last entry the previous one committed.
LOCK_AUDIT_HEAD = "MERGE (h:AuditHead {id: 'audit'}) SET h.appends = coalesce(h.appends, 0) + 1"
READ_AUDIT_LAST = "MATCH (a:AuditEntry) RETURN properties(a) AS entry ORDER BY a.seq DESC LIMIT 1"
#: CREATE, not MERGE: entries are only ever appended, and the seq constraint refuses a duplicate.
CREATE_AUDIT_ENTRIES = "UNWIND $rows AS row CREATE (a:AuditEntry) SET a = row"
READ_AUDIT = "MATCH (a:AuditEntry) RETURN properties(a) AS entry ORDER BY a.seq"
FIND_MODEL = "MATCH (m:ModelVersion {version: $version}) RETURN m.version AS version"
CREATE_MODEL = "CREATE (:ModelVersion {version: $version, payload: $payload, meta: $meta, created_at: $created_at})"
READ_MODEL = "MATCH (m:ModelVersion {version: $version}) RETURN m.payload AS payload, m.meta AS meta"
LIST_MODELS = "MATCH (m:ModelVersion) RETURN m.version AS version, m.meta AS meta"


class Neo4jStore(GraphStore):
    """Graph store in a Neo4j database (5.x).

    Parameters
    ----------
    uri : str
        Bolt URI, e.g. ``bolt://127.0.0.1:7687``.
    user, password : str
        Credentials.
    database : str
        Database name (``neo4j`` on Community edition).
    batch_size : int
        Rows per write transaction.
    workers : int
        Sessions writing batches side by side.
    progress : callable, optional
        Called with ``(table, rows_done, rows_total)`` while writing.
    """

    def __init__(
        self,
        uri: str,
        *,
        user: str = "neo4j",
        password: str,
        database: str = "neo4j",
        batch_size: int = BATCH,
        workers: int = 2,
        progress: Callable[[str, int, int], None] | None = None,
    ) -> None:
        from neo4j import GraphDatabase

        self.uri = uri
        self.database = database
        self.batch_size = batch_size
        self.workers = workers
        self.progress = progress
        # "label does not exist" notices on an empty database are not problems worth logging
        self._driver = GraphDatabase.driver(uri, auth=(user, password), notifications_min_severity="OFF")
        self._tables: Tables | None = None
        self._call(lambda: self._driver.verify_connectivity())
        for statement in SCHEMA:
            self._call(lambda s=statement: self._driver.execute_query(s, database_=self.database))

    # -- plumbing ---------------------------------------------------------------------------

    def _call(self, fn: Callable[[], Any], *, what: str | None = None) -> Any:
        """Run ``fn`` (which uses the driver's managed transactions, retried by the driver on
        transient errors for up to its ``max_transaction_retry_time``) and turn what still
        fails into socialrisk's errors, on one line; ``what`` (``"writing result scores"``)
        says which step failed."""
        from neo4j.exceptions import AuthError, ClientError, ServiceUnavailable, SessionExpired, TransientError

        step = f" while {what}" if what else ""
        try:
            return fn()
        except AuthError as exc:
            raise ConfigError(f"Neo4j at {self.uri} refused the credentials (set SOCIALRISK_NEO4J_PASSWORD)") from exc
        except TransientError as exc:
            raise TransientStoreError(
                f"Neo4j at {self.uri} kept failing with a transient error{step} after retries ({exc.code}): {_one_line(exc.message)}; try again"
            ) from exc
        except (ServiceUnavailable, SessionExpired) as exc:
            raise TransientStoreError(
                f"cannot reach Neo4j at {self.uri}{step} ({exc.__class__.__name__}); start it with 'socialrisk neo4j start' or check SOCIALRISK_NEO4J_URI"
            ) from exc
        except ClientError as exc:
            if "TransactionTimedOut" in str(exc.code):
                raise StoreError(f"Neo4j at {self.uri} ended a query{step} at its timeout: {_one_line(exc.message)}") from exc
            raise StoreError(f"Neo4j at {self.uri} rejected a query{step}: {_one_line(exc.message)}") from exc

    def _read(self, query: str, **params: Any) -> list[Any]:
        def work(tx: Any) -> list[Any]:
            return list(tx.run(query, **params))

        def run() -> list[Any]:
            with self._driver.session(database=self.database, fetch_size=50_000) as session:
                return session.execute_read(work)

        return self._call(run)

    def _write_batches(
        self, table: str, query: str, rows: list[Any], *, partition: str | None = None, offset: int = 0, total: int | None = None
    ) -> None:
        """Write ``rows`` in batches, one managed transaction each, on ``workers`` sessions.

        Batches are independent (every row carries its own ``_seq``), so they may commit in any
        order; two sessions keep the server busy while the client packs the next batch. Rows are
        split between sessions by ``row[partition]`` (an identifier key, a source user), so the
        sessions rarely lock the same node; a deadlock that still happens surfaces as a
        transient error, which ``execute_write`` retries.
        """
        if not rows:
            return

        def work(tx: Any, batch: list[Any]) -> None:
            tx.run(query, rows=batch).consume()

        if self.workers > 1 and partition is not None and len(rows) > self.batch_size:
            parts: list[list[Any]] = [[] for _ in range(self.workers)]
            for row in rows:
                parts[zlib.crc32(str(row[partition]).encode()) % self.workers].append(row)
            per_worker = [[p[i : i + self.batch_size] for i in range(0, len(p), self.batch_size)] for p in parts]
        else:
            flat = [rows[start : start + self.batch_size] for start in range(0, len(rows), self.batch_size)]
            per_worker = [flat[w :: self.workers] for w in range(self.workers)] if self.workers > 1 else [flat]
        batches = [b for part in per_worker for b in part]
        done = [0]
        lock = threading.Lock()

        def run_batches(mine: list[list[Any]]) -> None:
            with self._driver.session(database=self.database) as session:
                for batch in mine:
                    session.execute_write(work, batch)
                    with lock:
                        done[0] += len(batch)
                        if self.progress:
                            self.progress(table, offset + done[0], len(rows) if total is None else total)

        what = f"writing {table}"
        if self.workers <= 1 or len(batches) == 1:
            self._call(lambda: run_batches(batches), what=what)
            return
        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            futures = [pool.submit(self._call, lambda part=part: run_batches(part), what=what) for part in per_worker if part]
            for f in futures:
                f.result()

    def close(self) -> None:
        self._driver.close()

    def clear(self) -> None:
        """Delete every node and relationship in the database (tests and benchmarks), retrying
        a transient failure with smaller batches (:data:`CLEAR_BATCHES`) after a pause."""
        def run(rows: int) -> None:
            with self._driver.session(database=self.database) as session:
                session.run(CLEAR_ALL, rows=rows).consume()

        for attempt, rows in enumerate(CLEAR_BATCHES, start=1):
            try:
                self._call(lambda: run(rows), what="clearing the database")
                break
            except TransientStoreError:
                if attempt == len(CLEAR_BATCHES):
                    raise
                time.sleep(0.5 * attempt)
        self._tables = None

    # -- metadata ---------------------------------------------------------------------------

    def _meta(self) -> dict[str, Any]:
        records = self._read(READ_META)
        if not records:
            return {"format_version": FORMAT_VERSION, "snapshot": 0}
        meta = dict(records[0]["meta"])
        meta.pop("id", None)
        for key in ("counts", "user_columns", "relation_columns"):
            if isinstance(meta.get(key), str):
                meta[key] = json.loads(meta[key])
        return meta

    def _write_meta(self, meta: dict[str, Any]) -> None:
        props = {k: (json.dumps(v) if isinstance(v, (dict, list)) else v) for k, v in meta.items()}
        self._call(lambda: self._driver.execute_query(WRITE_META, props=props, database_=self.database))

    def metadata(self) -> dict[str, Any]:
        return self._meta()

    def _update_metadata(self, values: dict[str, Any]) -> None:
        self._write_meta({**values, "format_version": FORMAT_VERSION})

    def __str__(self) -> str:
        return self.uri

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

    def _read_stored(self, names: Iterable[str]) -> dict[str, pd.DataFrame]:
        """The stored tables named, read side by side (the two big edge reads in parts); the
        others are left out, so that a flags-only write does not read the whole graph."""
        names = set(names)
        meta = self._meta()
        base = empty_tables()
        user_columns: dict[str, str] = meta.get("user_columns", {})
        relation_columns: dict[str, str] = meta.get("relation_columns", {})

        relations_query = READ_RELATIONS if relation_columns else READ_RELATIONS_PLAIN
        fetched: dict[str, Any] = {}
        with ThreadPoolExecutor(max_workers=2 * READ_PARTS) as pool:
            parts: dict[str, list[Any]] = {}
            if "links" in names:
                parts["links"] = [pool.submit(self._read, READ_LINKS, null_ms=NULL_MS, parts=READ_PARTS, part=k) for k in range(READ_PARTS)]
            if "relations" in names:
                parts["relations"] = [
                    pool.submit(self._read, relations_query, columns=list(relation_columns), null_ms=NULL_MS, parts=READ_PARTS, part=k)
                    for k in range(READ_PARTS)
                ]
            futures = {}
            if "users" in names:
                futures["users"] = pool.submit(self._read, READ_USERS, columns=list(user_columns))
            if "flags" in names:
                futures["flags"] = pool.submit(self._read, READ_FLAGS)
            if parts:
                futures["nids"] = pool.submit(self._read, READ_USER_NIDS)
            fetched = {name: f.result() for name, f in futures.items()}
            for name, fs in parts.items():
                fetched[name] = [_concat_columns([f.result()[0] for f in fs])]
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
            if len(cols["user_nid"]):
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
            if len(cols["src_nid"]):
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

    def write_tables(self, tables: Tables) -> dict[str, WriteCounts]:
        meta = self._meta()
        # only the tables this load adds to are read and merged: a flag does not read the graph
        given = [name for name, new in tables if len(new)]
        stored = self._read_stored(given) if meta.get("counts") else None
        counts: dict[str, WriteCounts] = {}
        merged_all: dict[str, pd.DataFrame] = {}
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
                merged_all[name] = merged
                n_old = 0 if old is None else len(old)
                if name == "users":
                    jobs = self._user_jobs(merged, new, meta, fresh_only=old is None)
                elif name == "links":
                    jobs = self._link_jobs(merged, new, fresh_only=old is None)
                elif name == "relations":
                    jobs = self._relation_jobs(merged.iloc[n_old:], n_old, meta)
                else:
                    jobs = self._flag_jobs(merged.iloc[n_old:], n_old)
                for job in jobs:
                    writer.submit(job)
            writer.submit(_Job("users", [(ENSURE_USERS, missing)]))
        meta["counts"] = {n: len(merged_all[n]) if n in merged_all else (meta.get("counts") or {}).get(n, 0) for n in TABLE_NAMES}
        if any(c.added for c in counts.values()):
            meta["snapshot"] = int(meta.get("snapshot", 0)) + 1
            if counts["links"].added or counts["relations"].added:
                meta["links_snapshot"] = int(meta.get("links_snapshot", 0)) + 1
            meta["updated_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        meta["format_version"] = FORMAT_VERSION
        self._write_meta(meta)
        self._tables = None
        return counts

    def _user_jobs(self, merged: pd.DataFrame, new: pd.DataFrame, meta: dict[str, Any], *, fresh_only: bool) -> list[_Job]:
        columns: dict[str, str] = dict(meta.get("user_columns", {}))
        for col in merged.columns:
            if col == "user_id":
                continue
            if col in RESERVED_USER_PROPERTIES or col.startswith("_"):
                raise StoreError(f"users column {col!r} clashes with a property socialrisk keeps on :User nodes; rename it")
            columns.setdefault(col, "number" if pd.api.types.is_numeric_dtype(merged[col]) else "text")
        meta["user_columns"] = columns
        touched = np.ones(len(merged), dtype=bool) if fresh_only else merged["user_id"].isin(new["user_id"]).to_numpy()
        seqs = np.flatnonzero(touched).tolist()
        frame = merged.loc[touched]
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
        for i, (uid, seq) in enumerate(zip(ids, seqs)):
            props = {c: col[i] for c, col in values if col[i] is not None}
            rows.append({"id": uid, "seq": seq, "props": props})
        return [_Job("users", [(MERGE_USERS, rows)], partition="id")]

    def _link_jobs(self, merged: pd.DataFrame, new: pd.DataFrame, *, fresh_only: bool) -> list[_Job]:
        if not len(new):
            return []
        if fresh_only:
            touched = np.ones(len(merged), dtype=bool)
        else:
            key = merged["user_id"].astype(str) + "\x1f" + merged["kind"].astype(str) + "\x1f" + merged["ident"].astype(str)
            new_key = new["user_id"].astype(str) + "\x1f" + new["kind"].astype(str) + "\x1f" + new["ident"].astype(str)
            touched = key.isin(new_key).to_numpy()
        first = _millis(merged["first_seen"])
        last = _millis(merged["last_seen"])
        weight = merged["weight"].to_numpy(dtype=np.float64)
        kinds = merged["kind"].astype(str).to_numpy()
        idents = merged["ident"].astype(str).to_numpy()
        users = merged["user_id"].astype(str).to_numpy()
        by_kind: dict[str, list[dict[str, Any]]] = {}
        for i in np.flatnonzero(touched).tolist():
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
                    "seq": i,
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

    # -- query helpers for analysts and the service ------------------------------------------

    def neighbourhood(
        self, user_id: str, *, hops: int = 2, limit: int = 50, timeout: float | None = None
    ) -> tuple[pd.DataFrame, pd.DataFrame]:
        """The user's neighbourhood up to ``hops`` edges away (a user-identifier and a user-user
        edge each count one), expanding at most ``limit`` neighbours per node: shared identifiers
        first, then users by decreasing risk, then by name.

        The same frames as the embedded store's (:func:`graph.neighbourhood.neighbourhood`).
        With ``timeout`` (seconds), the server ends the transaction past it and the driver
        retries a failure only within it, rather than for its default 30 s: a caller with a
        deadline (the service) gets its answer or an error in about that time.

        Returns
        -------
        nodes : DataFrame
            :data:`graph.neighbourhood.NODE_COLUMNS`: ``name`` (user id or identifier key),
            ``node_type``, ``hop``, ``ident_kind``, ``degree``, ``risk``, ``credit_score``,
            ``decision``, ``flag`` (latest), ``fraud_flag``.
        edges : DataFrame
            :data:`graph.neighbourhood.EDGE_COLUMNS`: ``source``, ``target`` (names), ``type``
            (USES/RELATES), ``kind``, ``weight`` and ``count`` (relations folded per kind and
            direction), ``ts``.
        """
        from graph.neighbourhood import edge_frame, node_frame

        nodes, edges = self.neighbourhood_records(user_id, hops=hops, limit=limit, timeout=timeout)
        return node_frame(nodes), edge_frame(edges)

    def neighbourhood_records(
        self, user_id: str, *, hops: int = 2, limit: int = 50, timeout: float | None = None
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """:meth:`neighbourhood` as plain records (one dict per node and per edge, the frames'
        columns as keys), without building frames: what the service serves from, where the
        frames cost as much as the query."""
        if not isinstance(hops, int) or not 1 <= hops <= 4:
            raise ParameterError(f"The 'hops' parameter of neighbourhood must be in 1..4. Got {hops!r} instead.")
        if not isinstance(limit, int) or not 1 <= limit <= 1000:
            raise ParameterError(f"The 'limit' parameter of neighbourhood must be in 1..1000. Got {limit!r} instead.")
        if timeout is not None and not timeout > 0:
            raise ParameterError(f"The 'timeout' parameter of neighbourhood must be > 0 seconds. Got {timeout!r} instead.")

        def latest(flags: list[str] | None) -> str:
            return str(flags[-1]) if flags else ""

        def work(tx: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
            start = tx.run(NEIGHBOURHOOD_START, id=user_id).single()
            if start is None:
                return [], []
            names = {start["eid"]: user_id}
            flag = latest(start["flags"])
            nodes = [{"name": user_id, "node_type": "user", "hop": 0, "ident_kind": None, "degree": None, "risk": start["risk"],
                      "credit_score": start["credit_score"], "decision": start["decision"], "flag": flag, "fraud_flag": flag == "fraud"}]
            edges: dict[tuple[str, str, str, str], dict[str, Any]] = {}
            frontier = [start["eid"]]
            for hop in range(1, hops + 1):
                nxt = []
                # records unpacked by position (the RETURN order of NEIGHBOURHOOD_HOP): reading
                # them by key cost more than the rest of the loop
                for (source, target, type_, kind, outgoing, weight, count, ts_ms, node_type, name, ident_kind, degree, risk,
                     credit_score, decision, flags) in tx.run(NEIGHBOURHOOD_HOP, frontier=frontier, limit=limit):
                    if target not in names:
                        names[target] = name
                        nxt.append(target)
                        flag = latest(flags)
                        nodes.append({"name": name, "node_type": node_type, "hop": hop, "ident_kind": ident_kind, "degree": degree,
                                      "risk": risk, "credit_score": credit_score, "decision": decision, "flag": flag,
                                      "fraud_flag": flag == "fraud"})
                    a, b = names[source], names[target]
                    src, dst = (a, b) if outgoing else (b, a)
                    key = (src, dst, type_, kind)
                    if key not in edges:
                        # a datetime, not a pd.Timestamp: a third of the cost, thousands of times a request
                        edges[key] = {"source": src, "target": dst, "type": type_, "kind": kind, "weight": weight, "count": count,
                                      "ts": None if ts_ms is None else _EPOCH + timedelta(milliseconds=ts_ms)}
                frontier = nxt
                if not frontier:
                    break
            return nodes, list(edges.values())

        bounded: Any = work
        session_config: dict[str, Any] = {}
        if timeout is not None:
            from neo4j import unit_of_work

            bounded = unit_of_work(timeout=timeout)(work)
            session_config["max_transaction_retry_time"] = timeout

        def run() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
            with self._driver.session(database=self.database, **session_config) as session:
                return session.execute_read(bounded)

        nodes, edges = self._call(run)
        if not nodes:
            raise NotFoundError(f"unknown user {user_id!r}: not in the graph at {self.uri}")
        return nodes, edges

    def shortest_paths(self, a: str, b: str, *, max_hops: int = 8, limit: int = 5) -> list[dict[str, list[Any]]]:
        """Shortest paths between two users through identifiers and relations.

        Each path is ``{"nodes": [...], "node_types": [...], "edges": [...], "degrees": [...]}``
        as :func:`graph.neighbourhood.shortest_paths` gives them (``edges``: ``uses`` or the
        relation kinds between the two users joined by ``+``; ``degrees``: users sharing each
        identifier), sorted by the names along the path; empty when none is within
        ``max_hops`` (at most 12) or ``a == b``.
        """
        if not isinstance(max_hops, int) or not 1 <= max_hops <= 12:
            raise ParameterError(f"The 'max_hops' parameter of shortest_paths must be in 1..12. Got {max_hops!r} instead.")
        if not isinstance(limit, int) or limit < 1:
            raise ParameterError(f"The 'limit' parameter of shortest_paths must be an integer >= 1. Got {limit!r} instead.")
        known = {r["id"] for r in self._read("UNWIND $ids AS id MATCH (u:User {id: id}) RETURN u.id AS id", ids=[a, b])}
        for uid in (a, b):
            if uid not in known:
                raise NotFoundError(f"unknown user {uid!r}: not in the graph at {self.uri}")
        if a == b:
            return []
        records = self._read(SHORTEST_PATHS, a=a, b=b, max_hops=max_hops, limit=limit)
        paths = [(list(r["nodes"]), list(r["node_types"])) for r in records]
        pairs = sorted({(n[i], n[i + 1]) for n, t in paths for i in range(len(n) - 1) if t[i] == t[i + 1] == "user"})
        kinds = {(r["a"], r["b"]): "+".join(sorted(r["kinds"])) for r in self._read(RELATION_KINDS, pairs=[list(p) for p in pairs])} if pairs else {}
        keys = sorted({x for n, t in paths for x, k in zip(n, t) if k == "identifier"})
        degrees = {r["key"]: int(r["degree"]) for r in self._read(IDENTIFIER_DEGREES, keys=keys)} if keys else {}
        out = [
            {
                "nodes": n, "node_types": t,
                "edges": ["uses" if "identifier" in (t[i], t[i + 1]) else kinds.get((n[i], n[i + 1]), "") for i in range(len(n) - 1)],
                "degrees": [degrees.get(x) if k == "identifier" else None for x, k in zip(n, t)],
            }
            for n, t in paths
        ]
        return sorted(out, key=lambda p: p["nodes"])

    def ring_members(self, user_id: str) -> pd.DataFrame:
        """Members of the user's ring (users joined by shared identifiers, as of the last
        ``score``), riskiest first, with the ring's identifiers each member uses (sorted keys)
        and its latest flag. Empty when the user is in no ring."""
        if not self._read("MATCH (u:User {id: $id}) RETURN u.id AS id", id=user_id):
            raise NotFoundError(f"unknown user {user_id!r}: not in the graph at {self.uri}")
        rows = []
        for r in self._read(RING_MEMBERS, id=user_id):
            flag = str(r["flags"][-1]) if r["flags"] else ""
            rows.append({"user_id": r["user_id"], "risk": r["risk"], "credit_score": r["credit_score"], "decision": r["decision"],
                         "flag": flag, "fraud_flag": flag == "fraud", "identifiers": sorted(r["identifiers"])})
        frame = pd.DataFrame(rows, columns=["user_id", "risk", "credit_score", "decision", "flag", "fraud_flag", "identifiers"])
        frame["credit_score"] = pd.array([None if pd.isna(v) else int(v) for v in frame["credit_score"]], dtype="Int64")
        return frame

    # -- results ----------------------------------------------------------------------------

    def mark_dispute(self, user_id: str, target: str, other: str, reason: str | None) -> None:
        query = MARK_DISPUTE_LINK if target == "identifier" else MARK_DISPUTE_RELATION
        self._call(lambda: self._driver.execute_query(query, user_id=user_id, other=other, reason=reason, database_=self.database))

    def erased_user_ids(self) -> frozenset[str]:
        return frozenset(str(u) for u in self._read(READ_TOMBSTONES)[0]["ids"])

    def forget_user(self, user_id: str) -> dict[str, int]:
        meta = self._meta()
        if not self.known_among([user_id]):
            raise NotFoundError(f"unknown user {user_id!r}: not in the graph at {self.uri}")
        results = self._read("MATCH (r:Result) RETURN r.properties AS properties")
        drop = sorted(set(meta.get("user_columns", {})) | {p for r in results for p in (r["properties"] or [])})
        rec = self._call(lambda: self._driver.execute_query(FORGET_USER, id=user_id, drop=drop, database_=self.database)).records[0]
        removed = {"links": int(rec["links"]), "feature_values": int(rec["values"])}
        # the user's risk is gone, so the neighbour lists that rank it are stale either way
        meta["links_snapshot"] = int(meta.get("links_snapshot", 0)) + 1
        if removed["links"]:
            meta["snapshot"] = int(meta.get("snapshot", 0)) + 1
            meta["updated_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self._write_meta(meta)
        self._tables = None
        return removed

    def write_result(self, name: str, frame: pd.DataFrame, *, meta: dict[str, Any]) -> None:
        """Write a per-user result onto the :User nodes; ``scores`` columns keep their names
        (``u.risk``), other results are prefixed (``u.propagation_lnk_exposure``)."""
        columns = [c for c in frame.columns if c != "user_id"]
        properties = [c if name == "scores" else f"{name}_{c}" for c in columns]
        store_meta = self._meta()
        for p in properties:
            if p in RESERVED_USER_PROPERTIES or p.startswith("_") or p in store_meta.get("user_columns", {}):
                raise StoreError(f"result column {p!r} clashes with a property already kept on :User nodes")
        ids = frame["user_id"].astype(str).to_numpy()
        values = {p: frame[c].to_numpy(dtype=object) for c, p in zip(columns, properties)}
        rows = [{"id": ids[i], "props": {p: _plain(v[i]) for p, v in values.items()}} for i in range(len(frame))]
        self._write_batches(f"result {name}", WRITE_RESULT_ROWS, rows)
        if name == "scores":
            # the risks that rank neighbourhoods have changed: re-rank the hubs' neighbours
            self._call(lambda: self._driver.execute_query(REFRESH_NEIGHBOUR_LISTS, dense=DENSE_NEIGHBOURS, database_=self.database))
        full = dict(meta)
        full.setdefault("snapshot", store_meta.get("snapshot", 0))
        full.setdefault("written_at", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        dtypes = {c: ("number" if pd.api.types.is_numeric_dtype(frame[c]) else "text") for c in columns}
        self._call(
            lambda: self._driver.execute_query(
                WRITE_RESULT_META, name=name, meta=json.dumps(full, default=str), columns=json.dumps(dtypes),
                properties=properties, database_=self.database,
            )
        )

    def result_meta(self, name: str) -> dict[str, Any] | None:
        recs = self._read(READ_RESULT_META, name=name)
        return dict(json.loads(recs[0]["meta"])) if recs else None

    def read_result(self, name: str) -> tuple[pd.DataFrame, dict[str, Any]]:
        recs = self._read(READ_RESULT_META, name=name)
        if not recs:
            raise NotFoundError(f"{self.uri}: no '{name}' result yet; run the step that computes it first")
        meta = json.loads(recs[0]["meta"])
        dtypes: dict[str, str] = json.loads(recs[0]["columns"])
        properties = list(recs[0]["properties"])
        rows = self._read(READ_RESULT_ROWS, probe=properties[0], properties=properties)
        frame = pd.DataFrame({"user_id": pd.Series([r["user_id"] for r in rows], dtype="string")})
        for j, (col, kind) in enumerate(dtypes.items()):
            values = [r["values"][j] for r in rows]
            if kind == "number":
                frame[col] = pd.to_numeric(pd.Series(values, dtype="object"))
            else:
                frame[col] = pd.Series(["" if v is None else v for v in values], dtype="object")
        return frame, meta

    def has_result(self, name: str) -> bool:
        return bool(self._read(READ_RESULT_META, name=name))

    # -- audit log ----------------------------------------------------------------------------

    def append_audit(self, records: list[dict[str, Any]]) -> list[AuditEntry]:
        records = list(records)
        if not records:
            return []
        new_entries(None, records)  # refuse malformed records before touching the database

        def work(tx: Any) -> list[AuditEntry]:
            # one transaction: lock, read the last entry, create after it. A retry by the driver
            # runs all of it again from a fresh read, so seq and hashes stay gap-free.
            tx.run(LOCK_AUDIT_HEAD).consume()
            last = tx.run(READ_AUDIT_LAST).single()
            previous = _audit_entry(last["entry"], where=f"{self.uri}: last audit entry") if last is not None else None
            entries = new_entries(previous, records)
            tx.run(CREATE_AUDIT_ENTRIES, rows=[_audit_properties(e) for e in entries]).consume()
            return entries

        def run() -> list[AuditEntry]:
            with self._driver.session(database=self.database) as session:
                return session.execute_write(work)

        result: list[AuditEntry] = self._call(run)
        return result

    def _audit_entries(self) -> list[AuditEntry]:
        return [_audit_entry(r["entry"], where=f"{self.uri}: audit entry") for r in self._read(READ_AUDIT)]

    # -- model registry -----------------------------------------------------------------------

    def write_model(self, version: str, payload: bytes, meta: dict[str, Any]) -> None:
        from neo4j.exceptions import ConstraintError

        full = model_meta(version, payload, meta)
        exists = StoreError(
            f"{self.uri}: model version {version} is already registered, and versions are never overwritten; "
            "register the new model under a new version (graph.store.models.new_model_version)"
        )

        def work(tx: Any) -> None:
            if tx.run(FIND_MODEL, version=version).single() is not None:
                raise exists
            tx.run(
                CREATE_MODEL, version=version, payload=bytes(payload), meta=json.dumps(full, sort_keys=True),
                created_at=full["created_at"],
            ).consume()

        def run() -> None:
            with self._driver.session(database=self.database) as session:
                try:
                    session.execute_write(work)
                except ConstraintError as exc:  # another writer registered it first
                    raise exists from exc

        self._call(run)

    def read_model(self, version: str) -> tuple[bytes, dict[str, Any]]:
        check_model_version(version)
        records = self._read(READ_MODEL, version=version)
        if not records:
            raise NotFoundError(f"{self.uri}: no model version {version!r} is registered (list_models shows those that are)")
        meta = _model_meta_json(records[0]["meta"], version=version, uri=self.uri)
        payload = records[0]["payload"]
        if not isinstance(payload, (bytes, bytearray)):
            raise StoreError(f"{self.uri}: the payload of model {version} is not a byte array; the registry was edited")
        check_model_payload(version, bytes(payload), meta, source=self.uri)
        return bytes(payload), meta

    def _model_metas(self) -> list[dict[str, Any]]:
        return [_model_meta_json(r["meta"], version=r["version"], uri=self.uri) for r in self._read(LIST_MODELS)]


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


def _audit_properties(entry: AuditEntry) -> dict[str, Any]:
    """An entry as node properties: the dicts as canonical JSON text (Neo4j has no maps as
    property values); a None user_id is simply absent."""
    props = entry.to_dict()
    for name in ("before", "after", "detail"):
        props[name] = canonical_json(props[name])
    return props


def _audit_entry(props: dict[str, Any], *, where: str) -> AuditEntry:
    """An entry from its node's properties (the inverse of :func:`_audit_properties`)."""
    data = dict(props)
    data.setdefault("user_id", None)
    where = f"{where} {data.get('seq', '?')}"
    for name in ("before", "after", "detail"):
        text = data.get(name)
        if isinstance(text, str):
            try:
                data[name] = json.loads(text)
            except ValueError as exc:
                raise StoreError(f"{where}: '{name}' is not JSON ({exc}); the entry was edited") from exc
    return entry_from_dict(data, where=where)


def _model_meta_json(text: Any, *, version: str, uri: str) -> dict[str, Any]:
    try:
        meta = json.loads(text)
    except (TypeError, ValueError) as exc:
        raise StoreError(f"{uri}: the metadata of model {version} is not JSON ({exc}); the registry was edited") from exc
    if not isinstance(meta, dict):
        raise StoreError(f"{uri}: the metadata of model {version} must be a JSON object; the registry was edited")
    return meta


def _one_line(text: Any) -> str:
    """A server message on one line (the CLI prints errors as one line)."""
    return " ".join(str(text or "").split())


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
