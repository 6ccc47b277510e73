"""The service's moving parts: the store connection and its health, the served scores, the graph
in memory, the flag journal and the one thread that writes to the store.

Threads (all daemons, stopped by :meth:`ServiceRuntime.stop`):

- ``monitor``: probes the store every ``health_seconds`` and reconnects on recovery. Requests
  never wait for it, and it waits for nothing slow: each probe is bounded in time.
- ``refresh``: started by the monitor (one at a time) on recovery and every ``refresh_seconds``;
  reloads scores written by a new scoring, and rebuilds the graph view when the store's graph
  changed under the service. It waits for a flag write in progress, so it is not the monitor's
  own work: the health would stop while the writer is slow or stuck on a dying store.
- ``writer``: writes accepted flags to the store in acceptance order (batched), then runs
  queued appeals; retries while the store is down, so nothing accepted is dropped.
- ``warm-up``: reads the graph (:class:`~socialrisk.service.graphview.GraphView`) in the
  background; flags and explanations answer 503 until it is there, enrich never waits for it.
"""

from __future__ import annotations

import asyncio
import collections
import ctypes
import ctypes.util
import fcntl
import gc
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import numpy as np
import orjson
import pandas as pd

from graph.store import GraphStore
from loaders.errors import ConfigError, DataError, NotFoundError, ParameterError, SocialRiskError, StoreError, TransientStoreError
from scoring.config import DIMENSIONS
from scoring.credit import credit_score, decide
from socialrisk import workflow
from socialrisk.service.applications import ApplicationDesk
from socialrisk.service.errors import Unavailable
from socialrisk.service.graphview import GraphView
from socialrisk.service.journal import FlagJournal
from socialrisk.service.metrics import Metrics
from graph.neighbourhood import UserAttributes, neighbourhood as graph_neighbourhood
from socialrisk.service.scores import FlagEvent, ScoreTable, load_cache, save_cache
from socialrisk.settings import Settings

__all__ = ["ServiceRuntime", "Unavailable"]

log = logging.getLogger("socialrisk.service")

#: Flags written to the store in one load at most.
WRITE_BATCH = 500
#: Appeal outcomes and flag statuses kept for GET (oldest dropped first).
KEEP_STATUSES = 10_000
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


class ServiceRuntime:
    """Everything the HTTP handlers call. Handlers stay thin; this wires the libraries.

    Parameters
    ----------
    settings : Settings
    store_kind : {"embedded", "neo4j"}
    workspace : path
        The workspace ``load``/``score`` used; the service keeps its journal, cache and lock in
        ``<workspace>/service/``.
    metrics : Metrics, optional
    open_store : callable, optional
        ``(kind, workspace) -> GraphStore``; :func:`socialrisk.workflow.open_store` by default.
    """

    def __init__(
        self, settings: Settings, store_kind: str, workspace: str | Path, *, metrics: Metrics | None = None,
        open_store: Callable[[str, str | Path], GraphStore] | None = None,
    ) -> None:
        if store_kind not in workflow.STORES:
            raise ConfigError(f"Unknown store {store_kind!r}; expected one of {', '.join(workflow.STORES)}.")
        self.settings = settings
        self.config = settings.service
        self.store_kind = store_kind
        self.workspace = Path(workspace)
        self.folder = self.workspace / "service"
        self.metrics = metrics or Metrics()
        self._open_store = open_store or workflow.open_store
        self.store: GraphStore | None = None
        self.store_ok = False
        self.store_error: str | None = "not connected yet"
        self.table: ScoreTable | None = None
        self.model: dict[str, Any] = {"loaded": False, "version": None, "error": "not checked yet"}
        self.graph: GraphView | None = None
        self.graph_status = "not started"
        self.events: list[FlagEvent] = []
        self.flag_status: collections.OrderedDict[str, dict[str, Any]] = collections.OrderedDict()
        self.appeals: collections.OrderedDict[str, dict[str, Any]] = collections.OrderedDict()
        self.started = False
        self._stop = threading.Event()
        self._queue: collections.deque[dict[str, Any]] = collections.deque()
        self._queue_cv = threading.Condition()
        self._flag_lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._warm_lock = threading.Lock()
        self._warming = False
        self._threads: list[threading.Thread] = []
        self._store_pool = ThreadPoolExecutor(max_workers=STORE_WORKERS, thread_name_prefix="socialrisk-store")
        self._probe_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="socialrisk-probe")
        self._live_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="socialrisk-live")
        self._probe: Future[Any] | None = None
        self._inflight = threading.BoundedSemaphore(STORE_CALLS)
        self._lock_fd: int | None = None
        self._last_refresh = 0.0
        self._refreshing: threading.Thread | None = None
        self._own_writes: dict[int, int] = {}  # store snapshot before -> after each flag write of this service
        self._write_failing = False
        self.journal = FlagJournal(self.folder / "flags.jsonl")
        self.desk = ApplicationDesk(settings, self.workspace, self.folder)
        self.combination: Any = None
        risk = self.config.neutral_risk or settings.scoring.prior_fraud_rate or 0.05
        score = int(credit_score(np.array([risk]))[0])
        self._neutral = {
            "risk": float(risk), "graph_risk": 0.0, "credit_score": score,
            "decision": str(decide(np.array([score]), approve_at=settings.scoring.approve_at, review_at=settings.scoring.review_at)[0]),
        }

    # -- life cycle ------------------------------------------------------------------------------

    def start(self) -> None:
        """Take the workspace, connect, load the scores and start the threads.

        Raises
        ------
        ConfigError
            Another service holds this workspace, or the store is misconfigured.
        NotFoundError
            The store is reachable but holds no scores (run ``socialrisk score`` first).
        """
        if self.started:
            return
        self._take_workspace()
        try:
            self._connect()
            self._load_scores(initial=True)
            if self.store_ok and self.store is not None:
                self._check_model()
                try:
                    self._warm_store(self.store)
                except TransientStoreError as exc:
                    self._mark_down("warm_store", exc)
        except BaseException:
            self._release_workspace()
            raise
        pending = self.journal.pending()
        for record in pending:
            self._note_flag(record["flag_id"], {"flag_id": record["flag_id"], "user_id": record["user_id"], "label": record["canonical"],
                                                "persisted": False, "failed": None, "snapshot": None})
            self._enqueue({"kind": "flag", "record": record, "replay": True})
        self.metrics.flags_pending.set(len(pending))
        events = self.desk.journal.pending()
        for record in events:
            self._enqueue({"kind": "event", "record": record, "replay": True})
        self.desk.pending = len(events)
        settle_heap()
        self.started = True
        for name, target in (("monitor", self._monitor), ("writer", self._writer)):
            t = threading.Thread(target=target, name=f"socialrisk-{name}", daemon=True)
            t.start()
            self._threads.append(t)
        self.warm_up()

    def stop(self, *, drain_seconds: float = 10.0) -> None:
        """Stop the threads. Flags not yet written stay in the journal for the next start."""
        if not self.started:
            return
        deadline = time.monotonic() + drain_seconds
        while self._queue and time.monotonic() < deadline and self.store_ok and not self._write_failing:
            time.sleep(0.05)
        self._stop.set()
        with self._queue_cv:
            self._queue_cv.notify_all()
        for t in self._threads:
            # a write in progress is let finish: after stop() nothing more is written
            t.join(timeout=60.0 if t.name == "socialrisk-writer" else 1.0)
        self._store_pool.shutdown(wait=False, cancel_futures=True)
        self._probe_pool.shutdown(wait=False, cancel_futures=True)
        self._live_pool.shutdown(wait=False, cancel_futures=True)
        if self.store is not None:
            try:
                self.store.close()
            except Exception:  # noqa: BLE001 - closing a broken connection must not stop the shutdown
                pass
        self._release_workspace()
        self.started = False

    def _take_workspace(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.folder / "serve.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ConfigError(
                f"{self.folder / 'serve.lock'}: another 'socialrisk serve' is running on this workspace; stop it, or serve another workspace"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._lock_fd = fd

    def _release_workspace(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # -- the store and its health ----------------------------------------------------------------

    def _connect(self) -> None:
        try:
            store = self._open_store(self.store_kind, self.workspace)
        except TransientStoreError as exc:
            self._mark_down("connect", exc)
            return
        try:
            self._warm_store(store)
        except TransientStoreError as exc:
            _close_quietly(store)  # its driver, or its pooled connections leak
            self._mark_down("connect", exc)
            return
        self.store = store
        self._mark_up()

    def _warm_store(self, store: GraphStore) -> None:
        """Run the queries requests make before taking traffic: on a server just started, the
        first runs of a query (planning, a JVM not yet compiled, a cold page cache) take
        seconds, and requests arriving then filled the store's call slots and were refused
        (the soak test). Neighbourhoods of :data:`WARM_QUERIES` users spread over the table,
        for at most :data:`WARM_SECONDS`; ``/readyz`` stays 503 meanwhile."""
        helper = getattr(store, "neighbourhood_records", None)
        table = self.table
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

    def _mark_down(self, operation: str, exc: BaseException, *, store: GraphStore | None = None) -> None:
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

    def _mark_up(self) -> None:
        if not self.store_ok and self.started:
            log.warning("store reachable again")
        self.store_ok = True
        self.store_error = None
        self.metrics.store_up.set(1)
        self.metrics.stale.set(0 if self.table is not None and self.table.source == "store" else 1)

    def _bolt_address(self) -> tuple[str, int] | None:
        uri = getattr(self.store, "uri", None)
        if not uri:
            return None
        parsed = urlparse(str(uri))
        return parsed.hostname or "127.0.0.1", parsed.port or 7687

    def probe(self) -> bool:
        """Ask the store whether it answers (a socket connect first for Neo4j, then a metadata
        read), within ``health_seconds``; updates :attr:`store_ok`."""
        if self.store is None:
            self._connect()
            return self.store_ok
        address = self._bolt_address()
        if address is not None:
            try:
                with socket.create_connection(address, timeout=0.5):
                    pass
            except OSError as exc:
                self._mark_down("probe", exc)
                return False
        if self._probe is not None and not self._probe.done():
            self._mark_down("probe", TimeoutError("the previous probe has not returned"))
            return False
        if address is not None and not self.store_ok:
            # the server is back: connect afresh, since the old driver's pooled connections died
            # with it and each would cost a request a failed attempt and a retry
            old = self.store
            self._connect()
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
            self._mark_down("probe", TimeoutError(f"no answer within {max(1.0, self.config.health_seconds):g} s"))
            del exc
            return False
        except (SocialRiskError, OSError) as exc:
            self._mark_down("probe", exc)
            return False
        self._mark_up()
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
            self._mark_down(operation, exc, store=store)
            raise Unavailable(str(exc), retry_after=2 * self.config.health_seconds) from None
        except StoreError as exc:
            self.metrics.store_errors.labels(operation).inc()
            raise Unavailable(f"the {self.store_kind} store failed: {exc}", retry_after=2 * self.config.health_seconds) from None

    def _monitor(self) -> None:
        while not self._stop.wait(self.config.health_seconds):
            try:
                was_ok = self.store_ok
                if not self.probe():
                    continue
                due = time.monotonic() - self._last_refresh >= self.config.refresh_seconds
                if not was_ok or due or self.table is None or self.table.source != "store":
                    self._start_refresh()
                if self.graph is None and not self._warming:
                    self.warm_up()
            except Exception as exc:  # noqa: BLE001 - the monitor must outlive any one failure
                self._mark_down("monitor", exc)

    def _start_refresh(self) -> None:
        """Run :meth:`_refresh` on a thread of its own, unless one still runs (the next round
        of the monitor starts another)."""
        running = self._refreshing
        if running is not None and running.is_alive():
            return
        self._last_refresh = time.monotonic()
        self._refreshing = threading.Thread(target=self._refresh_guarded, name="socialrisk-refresh", daemon=True)
        self._refreshing.start()

    def _refresh_guarded(self) -> None:
        store = self.store
        try:
            self._refresh()
        except Exception as exc:  # noqa: BLE001 - reported as the store's state; the monitor starts the next one
            self._mark_down("refresh", exc, store=store)

    # -- scores ----------------------------------------------------------------------------------

    def _load_scores(self, *, initial: bool = False) -> None:
        """Read the ``scores`` result from the store (and keep a local copy when the store is a
        server); when the store is down, the local copy, served as stale."""
        if self.store is not None and self.store_ok:
            try:
                frame, meta = self.store.read_result("scores")
            except NotFoundError:
                if initial:
                    raise NotFoundError(f"{self.store}: no scores yet; the service serves precomputed scores: run 'socialrisk score' on this store first") from None
                raise
            except TransientStoreError as exc:
                self._mark_down("read_scores", exc)
            else:
                self._install(ScoreTable.from_frame(frame, meta, source="store"))
                if self.store_kind != "embedded":
                    threading.Thread(target=save_cache, args=(self.folder / "cache", frame, meta), daemon=True).start()
                return
        if self.table is None:
            cached = load_cache(self.folder / "cache")
            if cached is not None:
                self._install(ScoreTable.from_frame(cached[0], cached[1], source="cache"))

    def _install(self, table: ScoreTable) -> None:
        """Swap in a new table, with the flags it does not include applied again."""
        scored_at = int(table.meta.get("snapshot", 0) or 0)
        keep = [e for e in self.events if e.persisted_snapshot is None or e.persisted_snapshot > scored_at]
        for event in keep:
            self._apply_to_table(table, event)
        self.events = keep
        self.desk.forget_scored(table)
        self.table = table
        self.metrics.users.set(len(table))
        self.metrics.stale.set(0 if table.source == "store" and self.store_ok else 1)

    def _apply_to_table(self, table: ScoreTable, event: FlagEvent) -> list[dict[str, Any]]:
        s = self.settings.scoring
        return table.apply(
            event, approve_at=s.approve_at, review_at=s.review_at, min_reason_share=s.min_reason_share, max_reasons=s.max_reasons,
            graph_evidence=s.policy.graph_evidence,
        )

    def _refresh(self) -> None:
        """Reload the scores when a new scoring was written; rebuild the graph view when the
        store's graph changed under the service."""
        store = self.store
        if store is None:
            return
        try:
            meta = store.result_meta("scores")
        except TransientStoreError as exc:
            self._mark_down("refresh", exc, store=store)
            return
        table = self.table
        keys = ("written_at", "model_version", "snapshot", "config_hash")
        if table is None or meta is None or any(meta.get(k) != table.meta.get(k) for k in keys):
            self._load_scores()
            self._check_model()
        elif table.source != "store":
            table.source = "store"  # the cached copy is what the store holds
            self._check_model()
            self.metrics.stale.set(0)
        with self._write_lock:
            graph = self.graph
            if graph is not None and int(store.metadata().get("snapshot", 0)) != graph.snapshot:
                self.warm_up(force=True)

    def _check_model(self) -> None:
        """The model version of the served scores, read and its signature checked."""
        table, store = self.table, self.store
        version = table.meta.get("model_version") if table is not None else None
        if table is None or store is None:
            self.model = {"loaded": False, "version": None, "error": "no scores loaded"}
            return
        if version is None:
            self.model = {"loaded": True, "version": None, "error": None}  # a scorecard: nothing was fitted
            self.combination = None
            return
        if self.model.get("loaded") and self.model.get("version") == version:
            return
        try:
            self.combination = workflow.load_model(store, self.settings, self.workspace, str(version))
        except TransientStoreError as exc:
            self._mark_down("model", exc)
            self.model = {"loaded": False, "version": version, "error": str(exc)}
        except SocialRiskError as exc:
            self.model = {"loaded": False, "version": version, "error": str(exc)}
        else:
            self.model = {"loaded": True, "version": version, "error": None}

    @property
    def stale(self) -> bool:
        table = self.table
        return not self.store_ok or table is None or table.source != "store"

    def enrich(self, user_id: str) -> bytes:
        """One user's score as JSON bytes."""
        table = self._need_table()
        served = self.desk.served
        if served and user_id in served:  # committed since the last scoring
            return orjson.dumps({**served[user_id], "stale": self.stale})
        body = table.render(user_id, stale=self.stale)
        if body is not None:
            return body
        late = self.desk.unscored(user_id, self)
        if late is not None:
            return orjson.dumps({**late, "stale": self.stale})
        return orjson.dumps(self._neutral_or_404(table, user_id))

    def enrich_many(self, user_ids: list[str]) -> bytes:
        table = self._need_table()
        stale = self.stale
        results, unknown = [], []
        served = self.desk.served
        for user_id in user_ids:
            if served and user_id in served:
                results.append({**served[user_id], "stale": stale})
                continue
            i = table.index.get(user_id)
            late = self.desk.unscored(user_id, self) if i is None else None
            if late is not None:
                results.append({**late, "stale": stale})
            elif i is not None:
                with table.lock:
                    results.append(table.record(i, stale=stale))
            elif self.config.unknown_user == "neutral":
                results.append(self._neutral_record(table, user_id))
            else:
                unknown.append(user_id)
        return orjson.dumps({"results": results, "unknown": unknown})

    def _need_table(self) -> ScoreTable:
        table = self.table
        if table is None:
            raise Unavailable(f"no scores loaded yet: the {self.store_kind} store is unavailable ({self.store_error}) and there is no local copy",
                              retry_after=2 * self.config.health_seconds)
        return table

    def _neutral_or_404(self, table: ScoreTable, user_id: str) -> dict[str, Any]:
        if self.config.unknown_user != "neutral":
            raise NotFoundError(f"unknown user {user_id!r}: no score for this user (scored population of {len(table):,})")
        return self._neutral_record(table, user_id)

    def _neutral_record(self, table: ScoreTable, user_id: str) -> dict[str, Any]:
        return {
            "user_id": user_id, **self._neutral, "dimensions": {d: None for d in DIMENSIONS}, "reasons": [], "reason_codes": [],
            "flag": None, "ring_id": None, "model_version": table.meta.get("model_version"),
            "snapshot": int(table.meta.get("snapshot", 0) or 0), "stale": self.stale, "updated": False, "neutral": True,
        }

    def reload(self) -> dict[str, Any]:
        """Reload the scores from the store now (on demand)."""
        if self.store is None or not self.store_ok:
            raise Unavailable(f"the {self.store_kind} store is unavailable ({self.store_error}); retry later", retry_after=2 * self.config.health_seconds)
        self._load_scores()
        self._check_model()
        if self.stale:
            raise Unavailable(f"the {self.store_kind} store is unavailable ({self.store_error}); retry later", retry_after=2 * self.config.health_seconds)
        return self.readiness()

    # -- the graph in memory ---------------------------------------------------------------------

    def warm_up(self, *, force: bool = False) -> None:
        """Read the graph in the background (once at a time)."""
        with self._warm_lock:
            if self._warming or (self.graph is not None and not force):
                return
            self._warming = True
        self.graph_status = "warming up" if self.graph is None else "reading the changed graph"
        threading.Thread(target=self._build_graph, name="socialrisk-warm-up", daemon=True).start()

    def _build_graph(self) -> None:
        try:
            store, table = self.store, self.table
            if store is None or table is None or not self.store_ok:
                self.graph_status = f"waiting for the {self.store_kind} store"
                return
            t0 = time.perf_counter()
            graph = GraphView.build(store, self.settings, self.workspace, table, neighbours=self.store_kind == "embedded")
            applicants = self.desk.prepare(graph, self.combination, erased=frozenset(store.erased_user_ids()))
            # installed between two flag writes: flags written after the view read the store are in
            # neither (seeds set again: a seed the view holds already does not move), and the view
            # is as current as the store once it has them
            with self._write_lock, self._flag_lock:
                read_at = graph.snapshot
                for event in self.events:
                    if event.persisted_snapshot is None or event.persisted_snapshot > read_at:
                        graph.replay_seed(event.user_id, event.label, event.severity)
                graph.snapshot = self._after_own_writes(read_at)
                self.graph = graph
                self.desk.install(applicants, read_at=read_at)
            self.graph_status = "ready"
            log.info("graph read in %.1f s", time.perf_counter() - t0)
            settle_heap()
            release_free_memory()
        except TransientStoreError as exc:
            self._mark_down("warm_up", exc)
            self.graph_status = f"waiting for the {self.store_kind} store"
        except Exception as exc:  # noqa: BLE001 - reported by /readyz, retried by the monitor
            log.exception("reading the graph failed")
            self.graph_status = f"failed: {exc}"
        finally:
            with self._warm_lock:
                self._warming = False

    def _need_graph(self) -> GraphView:
        graph = self.graph
        if graph is None:
            raise Unavailable(f"the graph is not in memory yet ({self.graph_status}); retry shortly", retry_after=5)
        return graph

    # -- flags -----------------------------------------------------------------------------------

    def flag(self, user_id: str, label: str, severity: float, *, note: str, actor: str) -> dict[str, Any]:
        """Accept a flag: journal it (synced), apply it to the served scores, queue it for the
        store. Returns what moved."""
        canonical = self.settings.label_map.get(label.strip().lower())
        if canonical is None:
            raise ParameterError(f"unknown flag label {label!r}; expected one of {', '.join(sorted(self.settings.label_map))}")
        table = self._need_table()
        graph = self._need_graph()
        if user_id not in graph.node_of:
            raise NotFoundError(f"unknown user {user_id!r}: not in the loaded graph")
        flag_id = uuid.uuid4().hex
        record = {
            "flag_id": flag_id, "user_id": user_id, "label": label.strip().lower(), "canonical": canonical, "severity": float(severity),
            "note": note, "actor": actor, "ts": pd.Timestamp.now(tz="UTC").isoformat(timespec="milliseconds"),
        }
        with self._flag_lock:
            t0 = time.perf_counter()
            self.journal.accept(record)
            effect = graph.apply(flag_id, user_id, canonical, float(severity))
            scorer = self.desk.scorer
            if scorer is not None and scorer.live.knows(user_id):
                # the applicants' propagations take the seed in flag order, after the answer: the
                # flag's own scores moved above already, and a request waits for no push of theirs
                self._live_pool.submit(scorer.live.set_flag, user_id, fraud=float(severity) if canonical == "fraud" else 0.0,
                                       benign=float(severity) if canonical == "benign" else 0.0)
            table = self.table or table
            changes = self._apply_to_table(table, effect.event)
            self.events.append(effect.event)
            self.metrics.flag_apply.observe(time.perf_counter() - t0)
            self._note_flag(flag_id, {"flag_id": flag_id, "user_id": user_id, "label": canonical, "persisted": False, "failed": None,
                                      "snapshot": None})
            self._enqueue({"kind": "flag", "record": {**record, "users_moved": effect.users_moved, "error_bound": effect.error_bound},
                           "replay": False})
        if effect.needs_resolve:
            threading.Thread(target=graph.resolve, name="socialrisk-resolve", daemon=True).start()
        self.metrics.flags.labels(canonical).inc()
        return {
            "flag_id": flag_id, "user_id": user_id, "label": canonical, "severity": float(severity), "persisted": False,
            "users_moved": effect.users_moved, "error_bound": effect.error_bound, "scores_changed": changes[:20],
            "scores_changed_total": len(changes), "status_url": f"/v1/flags/{flag_id}",
        }

    def flag_state(self, flag_id: str) -> dict[str, Any]:
        status = self.flag_status.get(flag_id)
        if status is None:
            raise NotFoundError(f"unknown flag {flag_id!r}: not accepted by this service (statuses of the last {KEEP_STATUSES:,} are kept)")
        return dict(status)

    def _note_flag(self, flag_id: str, status: dict[str, Any]) -> None:
        self.flag_status[flag_id] = status
        while len(self.flag_status) > KEEP_STATUSES:
            self.flag_status.popitem(last=False)

    def _enqueue(self, item: dict[str, Any]) -> None:
        with self._queue_cv:
            self._queue.append(item)
            self._queue_cv.notify()
        self.metrics.flags_pending.set(sum(1 for q in self._queue if q["kind"] == "flag"))

    def _writer(self) -> None:
        backoff = 0.2
        while True:
            with self._queue_cv:
                while not self._queue and not self._stop.is_set():
                    self._queue_cv.wait(timeout=1.0)
                if self._stop.is_set():
                    return  # what is left stays in the journal for the next start
                head = self._queue[0]
                batch = [head]
                if head["kind"] in ("flag", "event"):
                    for item in list(self._queue)[1:WRITE_BATCH]:
                        if item["kind"] != head["kind"]:
                            break
                        batch.append(item)
            store = self.store
            if store is None or not self.store_ok:
                self._stop.wait(self.config.health_seconds)
                continue
            if head["kind"] == "event" and self.desk.scorer is None:
                # journaled events enter the live graph first (at its reading), then the store
                self._stop.wait(0.2)
                continue
            try:
                if head["kind"] == "flag":
                    self._write_flags(store, [b["record"] for b in batch], replay=[b["replay"] for b in batch])
                elif head["kind"] == "event":
                    self._write_events(store, [b["record"] for b in batch])
                else:
                    self._run_appeal(head)
            except (DataError, ParameterError, ConfigError, NotFoundError) as exc:
                # refused for good: keep them in the journal, marked, for an operator
                ids = [b["record"]["flag_id"] for b in batch if b["kind"] == "flag"]
                self.journal.failed(ids, str(exc))
                self.desk.journal.failed([b["record"]["event_id"] for b in batch if b["kind"] == "event"], str(exc))
                for i in ids:
                    self.flag_status.get(i, {}).update(failed=str(exc))
                log.error("the store refused %d flag(s) for good: %s", len(ids), exc)
            except Exception as exc:  # noqa: BLE001 - the writer must outlive any failure, or accepted flags stop reaching the store
                # a write that failed may have got partly through: written again as a replay, it adds
                # no second row or audit entry
                for b in batch:
                    if b["kind"] == "flag":
                        b["replay"] = True
                self._write_failing = True
                if store is not self.store:
                    # the monitor connected afresh during the write (and the old connection may
                    # have been closed under it): the failure says nothing of the new one
                    self.metrics.store_errors.labels("write").inc()
                    log.info("a write on a replaced store connection failed; writing again on the new one: %s", exc)
                    continue
                if isinstance(exc, TransientStoreError):
                    self._mark_down("write", exc, store=store)
                else:
                    # a fault that may pass (a locked file, a full disk, a driver error): keep the flags, try again
                    self.metrics.store_errors.labels("write").inc()
                    if backoff >= 5.0 or backoff == 0.2:
                        log.error("writing to the store failed, will retry: %s", exc, exc_info=not isinstance(exc, (StoreError, OSError)))
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            backoff = 0.2
            self._write_failing = False
            with self._queue_cv:
                for _ in batch:
                    self._queue.popleft()
            self.metrics.flags_pending.set(sum(1 for q in self._queue if q["kind"] == "flag"))
            release_free_memory()

    def _write_flags(self, store: GraphStore, records: list[dict[str, Any]], *, replay: list[bool]) -> None:
        ids = [r["flag_id"] for r in records]
        done = set(ids)
        with self._write_lock:
            before = int(store.metadata().get("snapshot", 0))
            write_flags(store, self.settings, self.workspace, records, replay=replay)
            after = int(store.metadata().get("snapshot", 0))
            if after != before:
                self._own_writes[before] = after
                if len(self._own_writes) > KEEP_STATUSES:  # bounded; a view being read started at a recent one
                    del self._own_writes[min(self._own_writes)]
            graph = self.graph
            if graph is not None and graph.snapshot == before:
                graph.snapshot = after  # the view holds these flags already
            for event in self.events:
                if event.flag_id in done:
                    event.persisted_snapshot = after
        self.journal.done(ids, after)
        for i in ids:
            self.flag_status.get(i, {}).update(persisted=True, snapshot=after)
        if not self._queue or len(self._queue) == len(records):
            try:
                self.journal.compact()
            except OSError as exc:
                log.warning("could not compact the flag journal: %s", exc)

    def _write_events(self, store: GraphStore, records: list[dict[str, Any]]) -> None:
        """Write committed applications and events to the store; the graph view, which holds
        them already, moves on to the store's new snapshot (no re-read)."""
        ids = [r["event_id"] for r in records]
        done = set(ids)
        with self._write_lock:
            before = int(store.metadata().get("snapshot", 0))
            self.desk.write(store, records)
            after = int(store.metadata().get("snapshot", 0))
            if after != before:
                self._own_writes[before] = after
                if len(self._own_writes) > KEEP_STATUSES:
                    del self._own_writes[min(self._own_writes)]
            graph = self.graph
            if graph is not None and graph.snapshot == before:
                graph.snapshot = after
            for event in self.events:
                if event.flag_id in done:
                    event.persisted_snapshot = after
        self.desk.written(records, after)
        if not self._queue or len(self._queue) == len(records):
            try:
                self.desk.journal.compact()
            except OSError as exc:
                log.warning("could not compact the events journal: %s", exc)

    def enqueue_event(self, record: dict[str, Any]) -> None:
        """Queue a journaled application or event batch for the store (behind what came before)."""
        self._enqueue({"kind": "event", "record": record, "replay": False})

    def apply_event(self, event: FlagEvent) -> list[dict[str, Any]]:
        """Move the served scores an event's new edges reach; kept until a scoring includes it."""
        table = self.table
        if table is None:
            return []
        with self._flag_lock:
            changes = self._apply_to_table(table, event)
            self.events.append(event)
        return changes

    def application(self, body: dict[str, Any], *, idempotency_key: str | None, actor: str) -> dict[str, Any]:
        self._need_table()
        self._need_graph()
        return self.desk.application(body, runtime=self, idempotency_key=idempotency_key, actor=actor)

    def account_events(self, body: dict[str, Any], *, actor: str) -> dict[str, Any]:
        self._need_table()
        self._need_graph()
        return self.desk.events(body, runtime=self, actor=actor)

    def _after_own_writes(self, snapshot: int) -> int:
        """The store snapshot reached from ``snapshot`` by this service's own flag writes alone
        (a view read at ``snapshot`` with their flags applied is that current). Called with the
        write lock held."""
        while snapshot in self._own_writes:
            snapshot = self._own_writes[snapshot]
        return snapshot

    # -- appeals ---------------------------------------------------------------------------------

    def appeal(self, user_id: str, action: str, *, other: str | None, target: str, reason: str, note: str, actor: str) -> dict[str, Any]:
        """Queue an appeal action behind the flags already accepted; it rescores every user
        (seconds to minutes), so the answer is a status to poll."""
        table = self._need_table()
        if user_id not in table.index:
            raise NotFoundError(f"unknown user {user_id!r}: no score for this user")
        if action == "dispute":
            self.settings.graph.dispute_weight(reason)  # an unknown reason is refused now, not in the queue
        appeal_id = uuid.uuid4().hex
        status = {"appeal_id": appeal_id, "user_id": user_id, "action": action, "status": "queued", "error": None,
                  "before": None, "after": None, "users_moved": None, "actor": actor}
        self.appeals[appeal_id] = status
        while len(self.appeals) > KEEP_STATUSES:
            self.appeals.popitem(last=False)
        self._enqueue({"kind": "appeal", "appeal_id": appeal_id, "user_id": user_id, "action": action, "other": other,
                       "target": target, "reason": reason, "note": note})
        return {**status, "status_url": f"/v1/appeals/{appeal_id}"}

    def appeal_state(self, appeal_id: str) -> dict[str, Any]:
        status = self.appeals.get(appeal_id)
        if status is None:
            raise NotFoundError(f"unknown appeal {appeal_id!r}: not queued by this service since it started")
        return {**status, "status_url": f"/v1/appeals/{appeal_id}"}

    def _run_appeal(self, job: dict[str, Any]) -> None:
        status = self.appeals.get(job["appeal_id"], {})
        status["status"] = "running"
        store = self.store
        assert store is not None
        try:
            with self._write_lock:
                out = workflow.appeal(store, self.settings, self.workspace, job["user_id"], job["action"], other=job["other"],
                                      target=job["target"], reason=job["reason"], note=job["note"])
        except TransientStoreError as exc:
            status.update(status="failed", error=f"{exc} (nothing or part of it was applied; look at the audit trail, then retry)")
            self._mark_down("appeal", exc, store=store)
            return
        except SocialRiskError as exc:
            status.update(status="failed", error=str(exc))
            return
        except Exception as exc:  # noqa: BLE001 - an appeal is not retried: reported, and the queue moves on
            log.exception("the appeal %s failed", job["appeal_id"])
            status.update(status="failed", error=f"{type(exc).__name__}: {exc} (nothing or part of it was applied; look at the audit "
                                                 "trail, then retry)")
            return
        keep = ("risk", "credit_score", "decision", "reasons", "reason_codes", "flag")
        status.update(status="done", users_moved=int(out.moved),
                      before={k: _plain(out.before.get(k)) for k in keep}, after={k: _plain(out.after.get(k)) for k in keep})
        # the appeal rescored every user and changed the graph's flags or links
        self._load_scores()
        self.warm_up(force=True)

    # -- reads of the graph ----------------------------------------------------------------------

    def explanation(self, user_id: str, *, top: int) -> dict[str, Any]:
        table = self._need_table()
        i = table.index.get(user_id)
        if i is None:
            raise NotFoundError(f"unknown user {user_id!r}: no score for this user")
        graph = self._need_graph()
        explanation = graph.explain(user_id, top=top)
        with table.lock:
            score = table.record(i, stale=self.stale)
        return {
            **score,
            "contributions": [
                {"seed": c.seed, "share": float(c.share), "flagged_on": c.flagged_on, "sentence": c.sentence(user_id),
                 "path": [{"source": s.source, "target": s.target, "via": s.via, "kind": s.kind, "when": s.when, "forward": bool(s.forward),
                           "ident": s.ident} for s in c.path]}
                for c in explanation.contributions
            ],
        }

    def local_neighbourhood(self, user_id: str, *, hops: int, limit: int) -> dict[str, Any]:
        """The neighbourhood from the graph in memory (the embedded store)."""
        table = self._need_table()
        graph = self._need_graph()
        index = graph.neighbours
        if index is None:
            raise Unavailable("the graph in memory has no neighbour index; retry shortly", retry_after=5)
        rows = graph.rows_in(table)  # the index's users are the projection's, in the same order
        # the served scores, read through the row map only for the users a walk visits
        attrs = UserAttributes(
            risk=_Served(table.risk, rows, np.nan), credit_score=_Served(table.credit_score, rows, np.nan),
            decision=_Served(table.decision, rows, None), flag=_Served(table.flag, rows, ""),
        )  # type: ignore[arg-type]
        node_frame, edge_frame = graph_neighbourhood(index, attrs, user_id, hops=hops, limit=limit)
        nodes, edges = node_frame.to_dict(orient="records"), edge_frame.to_dict(orient="records")
        return self._neighbourhood_body(table, user_id, hops, limit, nodes, edges, stale=self.stale)

    async def store_neighbourhood(self, user_id: str, *, hops: int, limit: int) -> dict[str, Any]:
        """The neighbourhood from the store (Neo4j), within ``store_timeout``."""
        table = self._need_table()
        # the store is told the deadline too: a call past it (or retrying against a server that
        # went down) would otherwise hold one of the store's call slots for the driver's 30 s
        timeout = self.config.store_timeout
        nodes, edges = await self.store_call(
            "neighbourhood", lambda s: s.neighbourhood_records(user_id, hops=hops, limit=limit, timeout=timeout),  # type: ignore[attr-defined]
            timeout=timeout,
        )
        return self._neighbourhood_body(table, user_id, hops, limit, nodes, edges, stale=False)

    def _neighbourhood_body(self, table: ScoreTable, user_id: str, hops: int, limit: int, nodes: list[dict[str, Any]],
                            edges: list[dict[str, Any]], *, stale: bool) -> dict[str, Any]:
        """Nodes and edges as the API shows them, with the served scores of users."""
        out_nodes = []
        for node in nodes:
            item = {"id": str(node["name"]), "type": node["node_type"], "hop": int(node["hop"]),
                    "ident_kind": _text(node.get("ident_kind")), "risk": None, "credit_score": None, "decision": None, "fraud_flag": None}
            if node["node_type"] == "user":
                i = table.index.get(item["id"])
                if i is not None:
                    item.update(risk=float(table.risk[i]), credit_score=int(table.credit_score[i]), decision=str(table.decision[i]),
                                fraud_flag=table.flag[i] == "fraud")
                else:
                    item.update(risk=_num(node.get("risk")), credit_score=_int(node.get("credit_score")), decision=_text(node.get("decision")) if _text(node.get("decision")) in ("approve", "review", "reject") else None,
                                fraud_flag=bool(node.get("fraud_flag")))
            out_nodes.append(item)
        out_edges = [{"source": str(e["source"]), "target": str(e["target"]), "type": str(e["type"]), "kind": str(e["kind"]),
                      "weight": _num(e.get("weight")), "ts": None if e.get("ts") is None or e.get("ts") != e.get("ts") else str(e["ts"])}
                     for e in edges]
        return {"user_id": user_id, "hops": hops, "limit": limit, "store": self.store_kind, "stale": stale, "nodes": out_nodes, "edges": out_edges}

    # -- health ----------------------------------------------------------------------------------

    def readiness(self) -> dict[str, Any]:
        table = self.table
        ready = bool(self.store_ok and table is not None and self.model.get("loaded"))
        return {
            "ready": ready,
            "store": {"kind": self.store_kind, "reachable": self.store_ok, "error": self.store_error},
            "scores": None if table is None else {"users": len(table), "source": table.source, "stale": self.stale, **table.provenance()},
            "model": dict(self.model),
            "graph": self.graph_status,
            "flags_pending": sum(1 for q in self._queue if q["kind"] == "flag"),
            "events_pending": sum(1 for q in self._queue if q["kind"] == "event"),
        }


class _Served:
    """A column of the served score table seen in the order of the graph's users (``rows``:
    the table row of each, -1 for none), gathered only where indexed."""

    def __init__(self, values: np.ndarray, rows: np.ndarray, missing: Any) -> None:
        self.values, self.rows, self.missing = values, rows, missing

    def __getitem__(self, at: Any) -> Any:
        r = self.rows[at]
        if np.ndim(r) == 0:
            return self.values[r] if r >= 0 else self.missing
        out = np.asarray(self.values)[np.maximum(r, 0)]
        if self.missing is None or isinstance(self.missing, str):
            out = out.astype(object)
        else:
            out = out.astype(np.float64)
        out[r < 0] = self.missing
        return out


def write_flags(store: GraphStore, settings: Settings, workspace: str | Path, records: list[dict[str, Any]], *, replay: list[bool]) -> None:
    """Record accepted flags in the store and the audit log, as ``socialrisk flag`` does
    (:func:`socialrisk.workflow.record_flags`); each row's ``source`` and audit entry name the
    flag id, so a replay after a crash adds neither twice."""
    workflow.record_flags(store, settings, workspace, [
        {
            "user_id": r["user_id"], "label": r["label"], "canonical": r["canonical"], "severity": r["severity"], "ts": r["ts"],
            "source": f"socialrisk serve flag {r['flag_id']}", "actor": r["actor"], "note": r.get("note", ""),
            "detail": {"flag_id": r["flag_id"], "via": "socialrisk serve", "users_moved": r.get("users_moved"), "error_bound": r.get("error_bound")},
        }
        for r in records
    ], replay=replay)


def _load_malloc_trim() -> Callable[[int], int] | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim: Callable[[int], int] = libc.malloc_trim
    except (OSError, AttributeError):
        return None  # not glibc (musl, macOS): nothing to do
    return trim


_MALLOC_TRIM = _load_malloc_trim()


def release_free_memory() -> None:
    """Give the memory the C heap holds free back to the system (glibc's ``malloc_trim``).

    Reading the graph (and, on Neo4j, the stored flags a new flag merges with) runs in several
    threads, each with a heap arena of its own; glibc keeps most of what they free, so the
    resident size of a service taking a flag a second crept up though the live objects did
    not grow (the soak test). Called after each write and each reading of the graph; it takes
    milliseconds."""
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


def settle_heap() -> None:
    """Collect once, then move every object alive to the collector's permanent generation
    (``gc.freeze``), so that later full collections scan only what requests allocate.

    A full collection of the service's heap (some 200,000 objects: the libraries and the
    tables) took 115 ms; allocation-heavy requests (a neighbourhood builds thousands of dicts)
    started one every few dozen requests, and the request that did waited that long (the
    neighbourhood p99). Called after start-up and after each reading of the graph: the
    objects frozen before are thawed first, so that an old graph's cycles are collected."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()


def _close_quietly(store: GraphStore) -> None:
    try:
        store.close()
    except Exception:  # noqa: BLE001 - a dead connection may fail to close; it is dropped anyway
        pass


def _plain(v: Any) -> Any:
    if v is None or (isinstance(v, float) and v != v):
        return None
    return v.item() if hasattr(v, "item") else v


def _num(v: Any) -> float | None:
    if v is None:
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if f != f else f


def _text(v: Any) -> str | None:
    if v is None or (isinstance(v, float) and v != v) or v == "":
        return None
    return str(v)


def _int(v: Any) -> int | None:
    f = _num(v)
    return None if f is None else int(f)
