"""The writer thread: accepted flags, then journaled applications and account events, written
to the store in acceptance order (in batches), and the appeals queued behind them.

Threads: ``writer`` (:meth:`Writer.run`), the only thread that writes to the store. It retries
while the store is down, so nothing accepted is dropped; what is left when the service stops
stays in the journals for the next start. Request threads only queue (:meth:`Writer.enqueue`).
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from graph.store import GraphStore
from loaders.errors import ConfigError, DataError, NotFoundError, ParameterError, SocialRiskError, StoreError, TransientStoreError
from socialrisk import workflow
from socialrisk.service import memory
from socialrisk.service.connection import StoreConnection
from socialrisk.service.journal import FlagJournal
from socialrisk.service.metrics import Metrics
from socialrisk.settings import Settings

if TYPE_CHECKING:
    from socialrisk.service.applications import ApplicationDesk
    from socialrisk.service.graphview import GraphView
    from socialrisk.service.scores import FlagEvent

__all__ = ["KEEP_STATUSES", "WRITE_BATCH", "Writer", "write_flags"]

log = logging.getLogger("socialrisk.service")

#: Flags written to the store in one load at most.
WRITE_BATCH = 500
#: Appeal outcomes and flag statuses kept for GET (oldest dropped first).
KEEP_STATUSES = 10_000


class Writer:
    """The queue of what was accepted for the store, and the thread that writes it.

    Parameters
    ----------
    connection : StoreConnection
        The store written to; marked down when a write fails for want of it.
    settings : Settings
    workspace : path
    journal : FlagJournal
        Accepted flags, marked done (or failed for good) as they are written.
    desk : ApplicationDesk
        Writes the journaled applications and events.
    metrics : Metrics
    stop : threading.Event
        Set when the service stops: the writer ends after the write in progress.
    flag_status, appeals : dict
        The statuses ``GET /v1/flags/{id}`` and ``GET /v1/appeals/{id}`` answer, updated here.
    view : callable
        ``() -> GraphView | None``: the graph in memory, moved on to the store's snapshot
        after each write it holds already.
    events : callable
        ``() -> list[FlagEvent]``: the flags and events kept on the served scores, marked with
        the snapshot that persisted them.
    after_appeal : callable
        Called after an appeal went through: it rescored every user and changed the graph.

    Attributes
    ----------
    lock : threading.Lock
        Held for each write to the store; the graph view is compared with the store's snapshot,
        and installed, under it.
    """

    def __init__(
        self, connection: StoreConnection, settings: Settings, workspace: Path, journal: FlagJournal, desk: ApplicationDesk,
        metrics: Metrics, *, stop: threading.Event, flag_status: dict[str, dict[str, Any]], appeals: dict[str, dict[str, Any]],
        view: Callable[[], GraphView | None], events: Callable[[], list[FlagEvent]], after_appeal: Callable[[], None],
    ) -> None:
        self.connection = connection
        self.settings = settings
        self.config = settings.service
        self.workspace = workspace
        self.journal = journal
        self.desk = desk
        self.metrics = metrics
        self.flag_status = flag_status
        self.appeals = appeals
        self._stop = stop
        self._view = view
        self._events = events
        self._after_appeal = after_appeal
        self._queue: collections.deque[dict[str, Any]] = collections.deque()
        self._queue_cv = threading.Condition()
        self.lock = threading.Lock()
        self._own_writes: dict[int, int] = {}  # store snapshot before -> after each flag write of this service
        self._write_failing = False

    def pending(self, kind: str) -> int:
        """Queued items of ``kind`` (``"flag"``, ``"event"`` or ``"appeal"``) not yet written."""
        return sum(1 for q in self._queue if q["kind"] == kind)

    def enqueue(self, item: dict[str, Any]) -> None:
        """Queue ``item`` (a flag, an event batch or an appeal) behind what came before."""
        with self._queue_cv:
            self._queue.append(item)
            self._queue_cv.notify()
        self.metrics.flags_pending.set(self.pending("flag"))

    def run(self) -> None:
        """The writer thread: write the queue's head (a batch of flags or of events, or one
        appeal) until the service stops."""
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
            store = self.connection.store
            if store is None or not self.connection.store_ok:
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
                if store is not self.connection.store:
                    # the monitor connected afresh during the write (and the old connection may
                    # have been closed under it): the failure says nothing of the new one
                    self.metrics.store_errors.labels("write").inc()
                    log.info("a write on a replaced store connection failed; writing again on the new one: %s", exc)
                    continue
                if isinstance(exc, TransientStoreError):
                    self.connection.mark_down("write", exc, store=store)
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
            self.metrics.flags_pending.set(self.pending("flag"))
            memory.release_free_memory()

    def _write_flags(self, store: GraphStore, records: list[dict[str, Any]], *, replay: list[bool]) -> None:
        ids = [r["flag_id"] for r in records]
        done = set(ids)
        with self.lock:
            before = int(store.metadata().get("snapshot", 0))
            write_flags(store, self.settings, self.workspace, records, replay=replay)
            after = int(store.metadata().get("snapshot", 0))
            if after != before:
                self._own_writes[before] = after
                if len(self._own_writes) > KEEP_STATUSES:  # bounded; a view being read started at a recent one
                    del self._own_writes[min(self._own_writes)]
            graph = self._view()
            if graph is not None and graph.snapshot == before:
                graph.snapshot = after  # the view holds these flags already
            for event in self._events():
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
        with self.lock:
            before = int(store.metadata().get("snapshot", 0))
            self.desk.write(store, records)
            after = int(store.metadata().get("snapshot", 0))
            if after != before:
                self._own_writes[before] = after
                if len(self._own_writes) > KEEP_STATUSES:
                    del self._own_writes[min(self._own_writes)]
            graph = self._view()
            if graph is not None and graph.snapshot == before:
                graph.snapshot = after
            for event in self._events():
                if event.flag_id in done:
                    event.persisted_snapshot = after
        self.desk.written(records, after)
        if not self._queue or len(self._queue) == len(records):
            try:
                self.desk.journal.compact()
            except OSError as exc:
                log.warning("could not compact the events journal: %s", exc)

    def after_own_writes(self, snapshot: int) -> int:
        """The store snapshot reached from ``snapshot`` by this service's own flag writes alone
        (a view read at ``snapshot`` with their flags applied is that current). Called with
        :attr:`lock` held."""
        while snapshot in self._own_writes:
            snapshot = self._own_writes[snapshot]
        return snapshot

    def drain(self, deadline: float) -> None:
        """Wait until the queue is written, a write fails, the store is down, or ``deadline``
        (``time.monotonic()``) passes."""
        while self._queue and time.monotonic() < deadline and self.connection.store_ok and not self._write_failing:
            time.sleep(0.05)

    def wake(self) -> None:
        """Wake the writer waiting for work (to see that the service stops)."""
        with self._queue_cv:
            self._queue_cv.notify_all()

    def _run_appeal(self, job: dict[str, Any]) -> None:
        status = self.appeals.get(job["appeal_id"], {})
        status["status"] = "running"
        store = self.connection.store
        assert store is not None
        try:
            with self.lock:
                out = workflow.appeal(store, self.settings, self.workspace, job["user_id"], job["action"], other=job["other"],
                                      target=job["target"], reason=job["reason"], note=job["note"])
        except TransientStoreError as exc:
            status.update(status="failed", error=f"{exc} (nothing or part of it was applied; look at the audit trail, then retry)")
            self.connection.mark_down("appeal", exc, store=store)
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
        self._after_appeal()  # the appeal rescored every user and changed the graph's flags or links


def write_flags(store: GraphStore, settings: Settings, workspace: str | Path, records: list[dict[str, Any]], *, replay: list[bool]) -> None:
    """Record accepted flags in the store and the audit log, as ``socialrisk flag`` does
    (:func:`socialrisk.workflow.record_flags`); each row's ``source`` and audit entry name the
    flag id, so a replay after a crash adds neither twice."""
    workflow.record_flags(store, settings, workspace, [
        {
            "user_id": r["user_id"], "label": r["label"], "canonical": r["canonical"], "severity": r["severity"], "ts": r["ts"],
            "source": f"socialrisk serve flag {r['flag_id']}", "actor": r["actor"], "note": r.get("note", ""),
            "detail": {"flag_id": r["flag_id"], "via": "socialrisk serve", "users_moved": r.get("users_moved"), "error_bound": r.get("error_bound"),
                       **({"request_id": r["request_id"]} if r.get("request_id") else {})},
        }
        for r in records
    ], replay=replay)


def _plain(v: Any) -> Any:
    if v is None or (isinstance(v, float) and v != v):
        return None
    return v.item() if hasattr(v, "item") else v

