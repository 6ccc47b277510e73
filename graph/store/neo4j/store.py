"""The Neo4j store: connection, metadata and results; reads, writes and queries come from the mixins."""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pandas as pd

from graph.store.base import GraphStore, wait_for_kept_projection
from graph.store.neo4j.bulk import BULK_PENDING, DATABASE_CONTENTS, FINISH_BULK
from graph.store.neo4j.queries import (
    DENSE_NEIGHBOURS,
    REFRESH_NEIGHBOUR_LISTS,
    _Queries,
)
from graph.store.neo4j.read import _Reads
from graph.store.neo4j.writes import (
    BATCH,
    CLEAR_ALL,
    CLEAR_BATCHES,
    FORGET_USER,
    FORMAT_VERSION,
    MARK_DISPUTE_LINK,
    MARK_DISPUTE_RELATION,
    READ_META,
    READ_RESULT_META,
    READ_RESULT_ROWS,
    READ_TOMBSTONES,
    RESERVED_USER_PROPERTIES,
    SCHEMA,
    WRITE_META,
    WRITE_RESULT_META,
    WRITE_RESULT_ROWS,
    _plain,
    _Writes,
)
from loaders.errors import ConfigError, NotFoundError, ParameterError, StoreError, TransientStoreError
from loaders.schema import Tables

__all__ = ["Neo4jStore"]

# The driver logs every retried transaction (a deadlock between the two writing sessions) as a
# warning; retries are expected and handled, so only errors are shown.
logging.getLogger("neo4j").setLevel(logging.ERROR)


class Neo4jStore(_Writes, _Reads, _Queries, GraphStore):
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
    cache_dir : str or Path, optional
        Where to keep the last encoded graph and projections read from this database (in a
        directory per graph, named by its ``store_id``), so that a propagation at an unchanged
        snapshot reads nothing from the server; None keeps nothing.
    packed_read : bool or None
        Read the graph's edges through the server's ``socialrisk.encodedEdges`` procedure
        (``neo4j/procedures``, installed by ``socialrisk neo4j start``): True requires it, False
        reads by Cypher, None (default) uses it where the server has it
        (:meth:`~graph.store.neo4j.read._Reads.packed_read`).
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
        cache_dir: str | Path | None = None,
        packed_read: bool | None = None,
    ) -> None:
        from neo4j import GraphDatabase

        self.uri = uri
        self.database = database
        self.batch_size = batch_size
        self.workers = workers
        self.progress = progress
        self._cache_root = None if cache_dir is None else Path(cache_dir)
        self._cache_seen: Path | None = None
        if packed_read not in (None, True, False):
            raise ParameterError(f"The 'packed_read' parameter of Neo4jStore must be True, False or None. Got {packed_read!r} instead.")
        self._packed_wanted = packed_read
        self._packed: bool | None = None
        # "label does not exist" notices on an empty database are not problems worth logging
        self._driver = GraphDatabase.driver(uri, auth=(user, password), notifications_min_severity="OFF")
        self._tables: Tables | None = None
        self._call(lambda: self._driver.verify_connectivity())
        self.ensure_schema()

    def ensure_schema(self) -> None:
        """Create the constraints and indexes socialrisk relies on (:data:`SCHEMA`) where missing."""
        for statement in SCHEMA:
            self._call(lambda s=statement: self._driver.execute_query(s, database_=self.database))

    # -- bulk first load ----------------------------------------------------------------------

    def database_contents(self) -> tuple[int, str | None]:
        """How many nodes the database holds, and when the unfinished bulk import it holds
        started (None: no unfinished import)."""
        record = self._read(DATABASE_CONTENTS)[0]
        return int(record["nodes"]), record["pending"]

    def finish_bulk_import(self) -> None:
        """End a bulk import (:mod:`graph.store.neo4j.bulk`): create the constraints, then let
        the graph be read. Until this runs the store refuses the database.

        The constraints' indexes are populated over millions of imported nodes: the statements
        run side by side, each on a session of its own, so the populations overlap."""
        with ThreadPoolExecutor(max_workers=4) as pool:
            for f in [pool.submit(self._call, lambda s=statement: self._driver.execute_query(s, database_=self.database),
                                  what="creating the constraints") for statement in SCHEMA]:
                f.result()
        self._call(lambda: self._driver.execute_query(FINISH_BULK, database_=self.database), what="finishing the bulk import")
        self._tables = None

    # -- plumbing ---------------------------------------------------------------------------

    def _call(self, fn: Callable[[], Any], *, what: str | None = None) -> Any:
        """Run ``fn`` (which uses the driver's managed transactions, retried by the driver on
        transient errors for up to its ``max_transaction_retry_time``) and turn what still
        fails into socialrisk's errors, on one line; ``what`` (``"writing result scores"``)
        says which step failed."""
        from neo4j.exceptions import (
            AuthError,
            ClientError,
            ServiceUnavailable,
            SessionExpired,
            TransientError,
        )

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

    @property  # type: ignore[override]
    def cache_dir(self) -> Path | None:
        """The directory of this graph's kept projections: ``cache_dir/<store_id>``, or None
        (no ``cache_dir`` given, or nothing loaded yet)."""
        if self._cache_root is None:
            return None
        store_id = self._meta().get("store_id")
        if not store_id:
            return None
        self._cache_seen = self._cache_root / str(store_id)
        return self._cache_seen

    def close(self) -> None:
        if self._cache_seen is not None:
            wait_for_kept_projection(self._cache_seen)
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
        if meta.get(BULK_PENDING):
            raise StoreError(
                f"Neo4j at {self.uri} holds a bulk import started at {meta[BULK_PENDING]} that did not finish: its graph may be "
                "incomplete and is not read. Run 'socialrisk load DATA_DIR --store neo4j --bulk' again (it imports afresh over it)."
            )
        for key in ("counts", "user_columns", "relation_columns"):
            if isinstance(meta.get(key), str):
                meta[key] = json.loads(meta[key])
        return meta

    def _write_meta(self, meta: dict[str, Any]) -> None:
        props = {k: (json.dumps(v) if isinstance(v, (dict, list)) else v) for k, v in meta.items()}
        store_id = uuid.uuid4().hex
        self._call(lambda: self._driver.execute_query(WRITE_META, props=props, store_id=store_id, database_=self.database))

    def metadata(self) -> dict[str, Any]:
        return self._meta()

    def _update_metadata(self, values: dict[str, Any]) -> None:
        self._write_meta({**values, "format_version": FORMAT_VERSION})

    def __str__(self) -> str:
        return self.uri

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
            meta["graph_snapshot"] = int(meta.get("graph_snapshot", 0)) + 1
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



def _one_line(text: Any) -> str:
    """A server message on one line (the CLI prints errors as one line)."""
    return " ".join(str(text or "").split())


