"""The store connection and its health: connecting (and warming a server up before it takes
requests), marking the store down and up, probing it, the bounded store calls requests make,
and retiring a connection replaced on recovery.

Threads: ``monitor`` (:meth:`StoreConnection.monitor`) probes the store every
``health_seconds`` and reconnects on recovery; what the service does once the store answers
(reloading the scores, reading the graph) is the caller's, passed in as a callback. Store calls
run on the ``socialrisk-store`` pool, probes on ``socialrisk-probe``; the other threads (the
writer, refresh, warm-up) mark the store down here when a call of theirs fails.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import numpy as np

from graph.store import GraphStore
from loaders.errors import NotFoundError, SocialRiskError, StoreError, TransientStoreError
from socialrisk.service.errors import Unavailable
from socialrisk.service.metrics import Metrics

if TYPE_CHECKING:
    from socialrisk.service.scores import ScoreTable
    from socialrisk.settings import ServiceConfig

__all__ = ["StoreConnection"]

log = logging.getLogger("socialrisk.service")

#: Seconds a store connection replaced on recovery stays open for the calls still running on it.
RETIRE_SECONDS = 120.0
#: Store calls (Neo4j neighbourhoods) run at once, and the most running or waiting; more are
#: refused with 503 at once. Each call ends within ``store_timeout`` (the store is told the
#: deadline too), so at r calls/s about r x timeout are in flight when the store is slow: 16
#: covers 8/s at the default 2 s. With 8 the soak test saw a second-long pause of the server
#: refuse a call.
STORE_WORKERS = 8
STORE_CALLS = 16
#: Neighbourhood queries run on a (re)connected Neo4j before it takes requests, and the most
#: seconds they may take.
WARM_QUERIES = 40
WARM_SECONDS = 20.0



class StoreConnection:
    """The connection to the store the service uses, and whether the store answers.

    Parameters
    ----------
    store_kind : {"embedded", "neo4j"}
    workspace : path
    config : ServiceConfig
        ``health_seconds`` bounds each probe and sets the retry hint of a refusal.
    metrics : Metrics
    open_store : callable
        ``(kind, workspace) -> GraphStore``.
    stop : threading.Event
        Set when the service stops: the monitor ends, a warm-up stops early.
    table : callable
        ``() -> ScoreTable | None``: the served scores, whose users warm a server up and whose
        source says whether they are stale once the store is back.
    started : callable
        ``() -> bool``: whether the service has started (a recovery is logged only then).

    Attributes
    ----------
    store : GraphStore or None
        The connection in use; replaced by :meth:`probe` when a server comes back.
    store_ok : bool
    store_error : str or None
        Why the store is unavailable, while it is.
    """

    def __init__(
        self, store_kind: str, workspace: Path, config: ServiceConfig, metrics: Metrics, *,
        open_store: Callable[[str, str | Path], GraphStore], stop: threading.Event, table: Callable[[], ScoreTable | None],
        started: Callable[[], bool],
    ) -> None:
        self.store_kind = store_kind
        self.workspace = workspace
        self.config = config
        self.metrics = metrics
        self._open_store = open_store
        self._stop = stop
        self._table = table
        self._started = started
        self.store: GraphStore | None = None
        self.store_ok = False
        self.store_error: str | None = "not connected yet"
        self._store_pool = ThreadPoolExecutor(max_workers=STORE_WORKERS, thread_name_prefix="socialrisk-store")
        self._probe_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="socialrisk-probe")
        self._probe: Future[Any] | None = None
        self._inflight = threading.BoundedSemaphore(STORE_CALLS)

    def connect(self) -> None:
        """Open a connection and warm it up; :attr:`store` is replaced only when both succeed."""
        try:
            store = self._open_store(self.store_kind, self.workspace)
        except TransientStoreError as exc:
            self.mark_down("connect", exc)
            return
        try:
            self.warm_store(store)
        except TransientStoreError as exc:
            _close_quietly(store)  # its driver, or its pooled connections leak
            self.mark_down("connect", exc)
            return
        self.store = store
        self.mark_up()

    def warm_store(self, store: GraphStore) -> None:
        """Run the queries requests make before taking traffic: on a server just started, the
        first runs of a query (planning, a JVM not yet compiled, a cold page cache) take
        seconds, and requests arriving then filled the store's call slots and were refused
        (the soak test). Neighbourhoods of :data:`WARM_QUERIES` users spread over the table,
        for at most :data:`WARM_SECONDS`; ``/readyz`` stays 503 meanwhile."""
        helper = getattr(store, "neighbourhood_records", None)
        table = self._table()
        if self.store_kind != "neo4j" or helper is None or table is None or not len(table):
            return  # the embedded store answers neighbourhoods from the graph in memory
        picks = np.unique(np.linspace(0, len(table) - 1, WARM_QUERIES).astype(np.int64))
        deadline = time.monotonic() + WARM_SECONDS
        for row in picks.tolist():
            if time.monotonic() > deadline or self._stop.is_set():
                break
            try:
                helper(str(table.user_ids[row]), hops=2, limit=50)
            except NotFoundError:
                pass

    def mark_down(self, operation: str, exc: BaseException, *, store: GraphStore | None = None) -> None:
        """Report the store down after ``operation`` failed with ``exc``; when the failure came
        from ``store`` and the monitor has connected afresh since, it says nothing of the new
        connection, and only counts."""
        if store is not None and store is not self.store:
            self.metrics.store_errors.labels(operation).inc()
            return
        if self.store_ok:
            log.warning("store unavailable (%s): %s", operation, exc)
        self.store_ok = False
        self.store_error = str(exc) or type(exc).__name__
        self.metrics.store_errors.labels(operation).inc()
        self.metrics.store_up.set(0)
        self.metrics.stale.set(1)

    def mark_up(self) -> None:
        """Report the store reachable (logged when it was down after the service started)."""
        if not self.store_ok and self._started():
            log.warning("store reachable again")
        self.store_ok = True
        self.store_error = None
        self.metrics.store_up.set(1)
        table = self._table()
        self.metrics.stale.set(0 if table is not None and table.source == "store" else 1)

    def bolt_address(self) -> tuple[str, int] | None:
        """Host and port of a server store (``None`` for the embedded one)."""
        uri = getattr(self.store, "uri", None)
        if not uri:
            return None
        parsed = urlparse(str(uri))
        return parsed.hostname or "127.0.0.1", parsed.port or 7687

    def probe(self) -> bool:
        """Ask the store whether it answers (a socket connect first for Neo4j, then a metadata
        read), within ``health_seconds``; updates :attr:`store_ok`."""
        if self.store is None:
            self.connect()
            return self.store_ok
        address = self.bolt_address()
        if address is not None:
            try:
                with socket.create_connection(address, timeout=0.5):
                    pass
            except OSError as exc:
                self.mark_down("probe", exc)
                return False
        if self._probe is not None and not self._probe.done():
            self.mark_down("probe", TimeoutError("the previous probe has not returned"))
            return False
        if address is not None and not self.store_ok:
            # the server is back: connect afresh, since the old driver's pooled connections died
            # with it and each would cost a request a failed attempt and a retry
            old = self.store
            self.connect()
            if old is not None and old is not self.store:
                # calls already running on the old connection (a flag write takes seconds) finish
                # on it first: closed under them, the driver fails them with an error of its own
                retire = threading.Timer(RETIRE_SECONDS, _close_quietly, args=(old,))
                retire.daemon = True
                retire.start()
            if not self.store_ok:
                return False
        store = self.store
        self._probe = self._probe_pool.submit(store.metadata)
        try:
            self._probe.result(timeout=max(1.0, self.config.health_seconds))
        except FutureTimeout as exc:
            self.mark_down("probe", TimeoutError(f"no answer within {max(1.0, self.config.health_seconds):g} s"))
            del exc
            return False
        except (SocialRiskError, OSError) as exc:
            self.mark_down("probe", exc)
            return False
        self.mark_up()
        return True

    def _call_store(self, operation: str, fn: Callable[[GraphStore], Any], *, timeout: float) -> tuple[GraphStore, Future[Any]]:
        """Run ``fn(store)`` on the store pool; refused at once while the store is down or
        too many calls are already waiting on it. Returns the store called and the call."""
        store = self.store
        if store is None or not self.store_ok:
            raise Unavailable(f"the {self.store_kind} store is unavailable ({self.store_error}); retry later",
                              retry_after=2 * self.config.health_seconds)
        if not self._inflight.acquire(blocking=False):
            raise Unavailable(f"too many requests are waiting on the {self.store_kind} store; retry later", retry_after=1)

        def run() -> Any:
            try:
                return fn(store)
            except SocialRiskError:
                raise
            except Exception as exc:
                if store is not self.store:  # connected afresh meanwhile; the old connection may have been closed
                    raise TransientStoreError(f"the connection to the {self.store_kind} store was replaced during the call "
                                              f"({type(exc).__name__}: {exc}); retry") from exc
                raise
            finally:
                self._inflight.release()

        return store, self._store_pool.submit(run)

    async def store_call(self, operation: str, fn: Callable[[GraphStore], Any], *, timeout: float) -> Any:
        """:meth:`_call_store` awaited with a deadline: 503 (:class:`Unavailable`) when the
        store is down, fails transiently, or does not answer within ``timeout`` seconds."""
        store, future = self._call_store(operation, fn, timeout=timeout)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), timeout)
        except (asyncio.TimeoutError, TimeoutError):
            self.metrics.store_errors.labels(operation).inc()
            raise Unavailable(f"the {self.store_kind} store did not answer within {timeout:g} s; retry later",
                              retry_after=2 * self.config.health_seconds) from None
        except TransientStoreError as exc:
            self.mark_down(operation, exc, store=store)
            raise Unavailable(str(exc), retry_after=2 * self.config.health_seconds) from None
        except StoreError as exc:
            self.metrics.store_errors.labels(operation).inc()
            raise Unavailable(f"the {self.store_kind} store failed: {exc}", retry_after=2 * self.config.health_seconds) from None

    def monitor(self, answered: Callable[[bool], None]) -> None:
        """Probe the store every ``health_seconds`` until the service stops; after each probe
        the store answered, ``answered(was_ok)`` (``was_ok``: whether it answered the one before)."""
        while not self._stop.wait(self.config.health_seconds):
            try:
                was_ok = self.store_ok
                if not self.probe():
                    continue
                answered(was_ok)
            except Exception as exc:  # noqa: BLE001 - the monitor must outlive any one failure
                self.mark_down("monitor", exc)

    def close(self) -> None:
        """Refuse further store calls and probes, and close the connection."""
        self._store_pool.shutdown(wait=False, cancel_futures=True)
        self._probe_pool.shutdown(wait=False, cancel_futures=True)
        if self.store is not None:
            try:
                self.store.close()
            except Exception:  # noqa: BLE001 - closing a broken connection must not stop the shutdown
                pass


def _close_quietly(store: GraphStore) -> None:
    try:
        store.close()
    except Exception:  # noqa: BLE001 - a dead connection may fail to close; it is dropped anyway
        pass

