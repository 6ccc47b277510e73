"""The Neo4j store's query helpers: neighbourhoods, paths and rings in Cypher, the audit log and the model registry."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any

import pandas as pd

from graph.store._json import canonical_json
from graph.store.audit import AuditEntry, entry_from_dict, new_entries
from graph.store.models import check_model_payload, check_model_version, model_meta
from loaders.errors import NotFoundError, ParameterError, StoreError
from loaders.schema import Tables

__all__ = ["NEIGHBOURHOOD_HOP", "DENSE_NEIGHBOURS", "REFRESH_NEIGHBOUR_LISTS", "NEIGHBOURHOOD_START", "SHORTEST_PATHS", "RELATION_KINDS", "IDENTIFIER_DEGREES", "RING_MEMBERS", "LOCK_AUDIT_HEAD", "READ_AUDIT_LAST", "CREATE_AUDIT_ENTRIES", "READ_AUDIT", "FIND_MODEL", "CREATE_MODEL", "READ_MODEL", "LIST_MODELS"]

#: Neo4j's epochMillis count from here.
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


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


class _Queries:
    """Queries for analysts and the service, audit log, model registry (mixed into :class:`Neo4jStore`)."""

    # set by Neo4jStore.__init__; the methods it defines (_read, _call, _write_batches, _meta) are used here
    uri: str
    database: str
    _driver: Any
    _tables: Tables | None

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


