"""The service's moving parts, wired: the served scores, the graph in memory, the flags
accepted, and the parts that run the service's threads.

Threads (all daemons, stopped by :meth:`ServiceRuntime.stop`):

- ``monitor``: probes the store every ``health_seconds`` and reconnects on recovery
  (:class:`~socialrisk.service.connection.StoreConnection`). Requests never wait for it, and
  it waits for nothing slow: each probe is bounded in time.
- ``refresh`` (here): started by the monitor (one at a time) on recovery and every
  ``refresh_seconds``; reloads scores written by a new scoring, and rebuilds the graph view when
  the store's graph changed under the service. It waits for a flag write in progress, so it is
  not the monitor's own work: the health would stop while the writer is slow or stuck on a
  dying store.
- ``writer``: writes accepted flags to the store in acceptance order (batched), then runs
  queued appeals; retries while the store is down, so nothing accepted is dropped
  (:class:`~socialrisk.service.writer.Writer`).
- ``warm-up`` (here): reads the graph (:class:`~socialrisk.service.graphview.GraphView`) in the
  background; flags and explanations answer 503 until it is there, enrich never waits for it.

Request threads call :class:`ServiceRuntime`; the C heap and the collector are settled by
:mod:`socialrisk.service.memory`.
"""

from __future__ import annotations

import collections
import fcntl
import functools
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd

from graph.store import GraphStore
from loaders.errors import ConfigError, NotFoundError, ParameterError, SocialRiskError, TransientStoreError
from scoring.config import DIMENSIONS
from scoring.credit import credit_score, decide
from socialrisk import workflow
from socialrisk.service import memory
from socialrisk.service.applications import ApplicationDesk
from socialrisk.service.connection import StoreConnection
from socialrisk.service.errors import Unavailable
from socialrisk.service.graphview import GraphView
from socialrisk.service.journal import FlagJournal
from socialrisk.service.requests import current_request_id
from socialrisk.service.metrics import Metrics
from graph.neighbourhood import UserAttributes, neighbourhood as graph_neighbourhood
from socialrisk.service.scores import FlagEvent, ScoreTable, load_cache, save_cache
from socialrisk.service.writer import KEEP_STATUSES, Writer
from socialrisk.settings import Settings

__all__ = ["ServiceRuntime", "Unavailable"]

log = logging.getLogger("socialrisk.service")


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

    Attributes
    ----------
    connection : StoreConnection
        The store connection and its health; runs the ``monitor`` thread.
    writer : Writer
        The queue of accepted flags, events and appeals; runs the ``writer`` thread.
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
        self.table: ScoreTable | None = None
        self.model: dict[str, Any] = {"loaded": False, "version": None, "error": "not checked yet"}
        self.graph: GraphView | None = None
        self.graph_status = "not started"
        self.events: list[FlagEvent] = []
        self.flag_status: collections.OrderedDict[str, dict[str, Any]] = collections.OrderedDict()
        self.appeals: collections.OrderedDict[str, dict[str, Any]] = collections.OrderedDict()
        self.started = False
        self._stop = threading.Event()
        self._flag_lock = threading.Lock()
        self._warm_lock = threading.Lock()
        self._warming = False
        self._threads: list[threading.Thread] = []
        self._live_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="socialrisk-live")
        self._lock_fd: int | None = None
        self._last_refresh = 0.0
        self._refreshing: threading.Thread | None = None
        self.journal = FlagJournal(self.folder / "flags.jsonl")
        self.desk = ApplicationDesk(settings, self.workspace, self.folder)
        self.connection = StoreConnection(
            store_kind, self.workspace, self.config, self.metrics, open_store=open_store or workflow.open_store, stop=self._stop,
            table=lambda: self.table, started=lambda: self.started,
        )
        self.writer = Writer(
            self.connection, settings, self.workspace, self.journal, self.desk, self.metrics, stop=self._stop,
            flag_status=self.flag_status, appeals=self.appeals, view=lambda: self.graph, events=lambda: self.events,
            after_appeal=self._after_appeal,
        )
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
            self.connection.connect()
            self._load_scores(initial=True)
            if self.store_ok and self.store is not None:
                self._check_model()
                try:
                    self.connection.warm_store(self.store)
                except TransientStoreError as exc:
                    self.connection.mark_down("warm_store", exc)
        except BaseException:
            self._release_workspace()
            raise
        pending = self.journal.pending()
        for record in pending:
            self._note_flag(record["flag_id"], {"flag_id": record["flag_id"], "user_id": record["user_id"], "label": record["canonical"],
                                                "persisted": False, "failed": None, "snapshot": None})
            self.writer.enqueue({"kind": "flag", "record": record, "replay": True})
        self.metrics.flags_pending.set(len(pending))
        events = self.desk.journal.pending()
        for record in events:
            self.writer.enqueue({"kind": "event", "record": record, "replay": True})
        self.desk.pending = len(events)
        memory.settle_heap()
        self.started = True
        monitor = functools.partial(self.connection.monitor, self._answered)
        for name, target in (("monitor", monitor), ("writer", self.writer.run)):
            t = threading.Thread(target=target, name=f"socialrisk-{name}", daemon=True)
            t.start()
            self._threads.append(t)
        self.warm_up()

    def stop(self, *, drain_seconds: float = 10.0) -> None:
        """Stop the threads. Flags not yet written stay in the journal for the next start."""
        if not self.started:
            return
        deadline = time.monotonic() + drain_seconds
        self.writer.drain(deadline)
        self._stop.set()
        self.writer.wake()
        for t in self._threads:
            # a write in progress is let finish: after stop() nothing more is written
            t.join(timeout=60.0 if t.name == "socialrisk-writer" else 1.0)
        self._live_pool.shutdown(wait=False, cancel_futures=True)
        self.connection.close()
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

    @property
    def store(self) -> GraphStore | None:
        """The store connection in use (:attr:`StoreConnection.store`)."""
        return self.connection.store

    @property
    def store_ok(self) -> bool:
        """Whether the store answered last (:attr:`StoreConnection.store_ok`)."""
        return self.connection.store_ok

    @property
    def store_error(self) -> str | None:
        """Why the store is unavailable, while it is."""
        return self.connection.store_error

    def probe(self) -> bool:
        """:meth:`StoreConnection.probe`: whether the store answers, within ``health_seconds``."""
        return self.connection.probe()

    async def store_call(self, operation: str, fn: Callable[[GraphStore], Any], *, timeout: float) -> Any:
        """:meth:`StoreConnection.store_call`: ``fn(store)`` on the store pool, within ``timeout``
        seconds; 503 (:class:`Unavailable`) when the store is down or does not answer."""
        return await self.connection.store_call(operation, fn, timeout=timeout)

    def _answered(self, was_ok: bool) -> None:
        """The monitor's work once the store answered: a refresh on recovery or when one is
        due, the graph read when it is not in memory."""
        due = time.monotonic() - self._last_refresh >= self.config.refresh_seconds
        if not was_ok or due or self.table is None or self.table.source != "store":
            self._start_refresh()
        if self.graph is None and not self._warming:
            self.warm_up()

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
            self.connection.mark_down("refresh", exc, store=store)

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
                self.connection.mark_down("read_scores", exc)
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
            self.connection.mark_down("refresh", exc, store=store)
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
        with self.writer.lock:
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
            self.connection.mark_down("model", exc)
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
            with self.writer.lock, self._flag_lock:
                read_at = graph.snapshot
                for event in self.events:
                    if event.persisted_snapshot is None or event.persisted_snapshot > read_at:
                        graph.replay_seed(event.user_id, event.label, event.severity)
                graph.snapshot = self.writer.after_own_writes(read_at)
                self.graph = graph
                self.desk.install(applicants, read_at=read_at)
            self.graph_status = "ready"
            log.info("graph read in %.1f s", time.perf_counter() - t0)
            memory.settle_heap()
            memory.release_free_memory()
        except TransientStoreError as exc:
            self.connection.mark_down("warm_up", exc)
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
            scorer = self.desk.scorer
            if scorer is not None and scorer.live.knows(user_id) and user_id not in self.desk.erased:
                return self._flag_applicant(user_id, label, canonical, severity, note=note, actor=actor)
            raise NotFoundError(f"unknown user {user_id!r}: not in the loaded graph")
        record = _flag_record(user_id, label, canonical, severity, note=note, actor=actor)
        flag_id = record["flag_id"]
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
            self.writer.enqueue({"kind": "flag", "record": {**record, "users_moved": effect.users_moved, "error_bound": effect.error_bound},
                           "replay": False})
        if effect.needs_resolve:
            threading.Thread(target=graph.resolve, name="socialrisk-resolve", daemon=True).start()
        self.metrics.flags.labels(canonical).inc()
        return {
            "flag_id": flag_id, "user_id": user_id, "label": canonical, "severity": float(severity), "persisted": False,
            "users_moved": effect.users_moved, "error_bound": effect.error_bound, "scores_changed": changes[:20],
            "scores_changed_total": len(changes), "status_url": f"/v1/flags/{flag_id}",
        }

    def _flag_applicant(self, user_id: str, label: str, canonical: str, severity: float, *, note: str, actor: str) -> dict[str, Any]:
        """A flag on a user committed through an application or event since the graph view was
        read: journaled and queued like any flag (the writer stores it after the user, in
        acceptance order), pushed through the live graph at once, and the user's served score
        computed again with its own flag. The graph view does not hold the user, so the users
        linked to it move in the live graph (the next applicants' scores) and at the next
        scoring, not in the served table."""
        scorer = self.desk.scorer
        assert scorer is not None
        record = _flag_record(user_id, label, canonical, severity, note=note, actor=actor)
        flag_id = record["flag_id"]
        with self._flag_lock:
            t0 = time.perf_counter()
            self.journal.accept(record)
            before = self.desk.unscored(user_id, self)
            scorer.live.set_flag(user_id, fraud=float(severity) if canonical == "fraud" else 0.0, benign=float(severity) if canonical == "benign" else 0.0)
            after = self.desk.unscored(user_id, self, again=True)
            self.metrics.flag_apply.observe(time.perf_counter() - t0)
            self._note_flag(flag_id, {"flag_id": flag_id, "user_id": user_id, "label": canonical, "persisted": False, "failed": None,
                                      "snapshot": None})
            self.writer.enqueue({"kind": "flag", "record": {**record, "users_moved": 0, "error_bound": 0.0}, "replay": False})
        self.metrics.flags.labels(canonical).inc()
        changes = []
        if before is not None and after is not None:
            changes = [{"user_id": user_id, "risk_before": float(before["risk"]), "risk_after": float(after["risk"]),
                        "credit_score_before": int(before["credit_score"]), "credit_score_after": int(after["credit_score"]),
                        "decision_before": str(before["decision"]), "decision_after": str(after["decision"])}]
        return {
            "flag_id": flag_id, "user_id": user_id, "label": canonical, "severity": float(severity), "persisted": False,
            "users_moved": 0, "error_bound": 0.0, "scores_changed": changes, "scores_changed_total": len(changes),
            "status_url": f"/v1/flags/{flag_id}",
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


    def enqueue_event(self, record: dict[str, Any]) -> None:
        """Queue a journaled application or event batch for the store (behind what came before)."""
        self.writer.enqueue({"kind": "event", "record": record, "replay": False})

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

    def recourse(self, user_id: str) -> dict[str, Any]:
        self._need_table()
        self._need_graph()
        return self.desk.recourse(user_id, runtime=self)

    def account_events(self, body: dict[str, Any], *, actor: str) -> dict[str, Any]:
        self._need_table()
        self._need_graph()
        return self.desk.events(body, runtime=self, actor=actor)


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
        self.writer.enqueue({"kind": "appeal", "appeal_id": appeal_id, "user_id": user_id, "action": action, "other": other,
                       "target": target, "reason": reason, "note": note})
        return {**status, "status_url": f"/v1/appeals/{appeal_id}"}

    def _after_appeal(self) -> None:
        """Run by the writer after an appeal went through: the served scores and the graph
        read again."""
        self._load_scores()
        self.warm_up(force=True)

    def appeal_state(self, appeal_id: str) -> dict[str, Any]:
        status = self.appeals.get(appeal_id)
        if status is None:
            raise NotFoundError(f"unknown appeal {appeal_id!r}: not queued by this service since it started")
        return {**status, "status_url": f"/v1/appeals/{appeal_id}"}


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
            "flags_pending": self.writer.pending("flag"),
            "events_pending": self.writer.pending("event"),
        }


def _flag_record(user_id: str, label: str, canonical: str, severity: float, *, note: str, actor: str) -> dict[str, Any]:
    """A flag as the journal keeps it and the writer stores it."""
    return {
        "flag_id": uuid.uuid4().hex, "user_id": user_id, "label": label.strip().lower(), "canonical": canonical, "severity": float(severity),
        "note": note, "actor": actor, "request_id": current_request_id(), "ts": pd.Timestamp.now(tz="UTC").isoformat(timespec="milliseconds"),
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
