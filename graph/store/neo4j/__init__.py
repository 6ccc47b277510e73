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

Modules
-------
- :mod:`~graph.store.neo4j.writes`: the schema (constraints), the ``MERGE`` queries and the
  batched writer of canonical tables.
- :mod:`~graph.store.neo4j.read`: reading the tables and the encoded graph back out, for the
  projection.
- :mod:`~graph.store.neo4j.queries`: neighbourhoods, paths and rings in Cypher, the audit log,
  the model registry.
- :mod:`~graph.store.neo4j.store`: :class:`Neo4jStore` itself (connection, metadata, results),
  made of the three above.
- :mod:`~graph.store.neo4j.bulk`: the first load of an empty database through
  ``neo4j-admin database import full``.

Every name is importable from ``graph.store.neo4j``.
"""

from __future__ import annotations

from graph.store.neo4j.bulk import (  # noqa: F401 - the package's names
    BULK_PENDING,
    DATABASE_CONTENTS,
    FINISH_BULK,
    BulkSink,
    ImportFiles,
    import_arguments,
    write_import_files,
)
from graph.store.neo4j.queries import (  # noqa: F401 - the package's names, as before the split
    CREATE_AUDIT_ENTRIES,
    CREATE_MODEL,
    DENSE_NEIGHBOURS,
    FIND_MODEL,
    IDENTIFIER_DEGREES,
    LIST_MODELS,
    LOCK_AUDIT_HEAD,
    NEIGHBOURHOOD_HOP,
    NEIGHBOURHOOD_START,
    READ_AUDIT,
    READ_AUDIT_LAST,
    READ_MODEL,
    REFRESH_NEIGHBOUR_LISTS,
    RELATION_KINDS,
    RING_MEMBERS,
    SHORTEST_PATHS,
)
from graph.store.neo4j.read import (  # noqa: F401 - the package's names, as before the split
    ENCODED_FLAGS,
    ENCODED_LINKS,
    PACKED_EDGES,
    PACKED_READ,
    ENCODED_RELATIONS,
    ENCODED_SHARED,
    ENCODED_USERS,
    FLAGGED_USERS,
    READ_LINKS_AMONG,
    READ_RELATIONS_AMONG,
    READ_USERS_AMONG,
    KNOWN_AMONG,
    NULL_MS,
    READ_FLAGS,
    READ_LINKS,
    READ_PARTS,
    READ_RELATIONS,
    READ_RELATIONS_PLAIN,
    READ_USER_IDS,
    READ_USER_NIDS,
    READ_USERS,
    StoredGraph,
    encode_stored,
)
from graph.store.neo4j.store import (  # noqa: F401 - the package's names, as before the split
    Neo4jStore,
)
from graph.store.neo4j.writes import (  # noqa: F401 - the package's names, as before the split
    BATCH,
    CLEAR_ALL,
    CLEAR_BATCHES,
    ENSURE_USERS,
    FORGET_USER,
    FORMAT_VERSION,
    IDENTIFIER_LABELS,
    MARK_DISPUTE_LINK,
    MARK_DISPUTE_RELATION,
    MERGE_FLAGS,
    MERGE_LINKS,
    MERGE_LINKS_LABELLED,
    MERGE_RELATIONS,
    MERGE_RELATIONS_PLAIN,
    MERGE_USERS,
    READ_META,
    READ_RESULT_META,
    READ_RESULT_ROWS,
    READ_TOMBSTONES,
    REMOVE_USER_PROPS,
    RESERVED_USER_PROPERTIES,
    SCHEMA,
    WRITE_META,
    WRITE_RESULT_META,
    WRITE_RESULT_ROWS,
)

__all__ = ["Neo4jStore", "IDENTIFIER_LABELS", "RESERVED_USER_PROPERTIES", "StoredGraph", "encode_stored"]
