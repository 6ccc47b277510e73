"""A write-ahead journal of accepted flags: nothing the service accepted is lost.

A flag is appended (and synced to disk) before the caller gets its 202; it is marked done once
it is in the store, and marked failed if the store refuses it for good. A service that stops,
or dies, with flags not yet written finds them here when it starts and writes them then.
One JSON object a line: ``{"op": "accept", "flag": {...}}``, ``{"op": "done", "ids": [...],
"snapshot": N}`` or ``{"op": "failed", "ids": [...], "error": "..."}``.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

from loaders.errors import StoreError

__all__ = ["FlagJournal"]


class FlagJournal:
    """Accepted flags in ``path`` (created on first use).

    Parameters
    ----------
    path : path
        The journal file, e.g. ``<workspace>/service/flags.jsonl``.
    id_field : str
        The field of each entry that identifies it (``event_id`` in the journal of committed
        applications and events, which is the same kind of file).
    """

    def __init__(self, path: str | Path, *, id_field: str = "flag_id") -> None:
        self.path = Path(path)
        self.id_field = id_field
        self._lock = threading.Lock()

    def _append(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, sort_keys=True, default=str).encode() + b"\n"
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                view = memoryview(line)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            finally:
                os.close(fd)

    def accept(self, flag: dict[str, Any]) -> None:
        """Record an accepted flag, durably (synced) before returning."""
        self._append({"op": "accept", "flag": flag})

    def done(self, ids: list[str], snapshot: int | None) -> None:
        """Mark flags as written to the store."""
        if ids:
            self._append({"op": "done", "ids": list(ids), "snapshot": snapshot})

    def failed(self, ids: list[str], error: str) -> None:
        """Mark flags the store refused for good (kept in the journal for an operator)."""
        if ids:
            self._append({"op": "failed", "ids": list(ids), "error": error})

    def read(self) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
        """Every accepted flag in order, and the outcome of those that have one
        (``{"done": True, "snapshot": N}`` or ``{"failed": "why"}``).

        Raises
        ------
        StoreError
            A line other than the last is not JSON (the journal was edited); an incomplete last
            line (a crash mid-append, never acknowledged to a caller) is ignored.
        """
        with self._lock:
            return self._read()

    def _read(self) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
        if not self.path.exists():
            return [], {}
        data = self.path.read_bytes()
        lines = data.split(b"\n")
        accepted: list[dict[str, Any]] = []
        outcome: dict[str, dict[str, Any]] = {}
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError as exc:
                if number == len(lines):  # torn last line: that append never returned
                    break
                raise StoreError(f"{self.path}, line {number}: not a JSON journal entry ({exc}); the journal was edited") from exc
            op = record.get("op")
            if op == "accept":
                accepted.append(record["flag"])
            elif op == "done":
                for i in record.get("ids", []):
                    outcome[i] = {"done": True, "snapshot": record.get("snapshot")}
            elif op == "failed":
                for i in record.get("ids", []):
                    outcome[i] = {"failed": record.get("error", "")}
        return accepted, outcome

    def pending(self) -> list[dict[str, Any]]:
        """Accepted flags not yet written to the store, in the order they were accepted."""
        accepted, outcome = self.read()
        return [f for f in accepted if f[self.id_field] not in outcome]

    def compact(self) -> None:
        """Drop the flags that are done, keeping pending and failed ones (rewritten atomically)."""
        tmp = self.path.with_suffix(".tmp")
        with self._lock:  # one lock over read and rewrite: an accept cannot fall between them
            accepted, outcome = self._read()
            keep = [f for f in accepted if "done" not in outcome.get(f[self.id_field], {})]
            with open(tmp, "wb") as handle:
                for f in keep:
                    handle.write(json.dumps({"op": "accept", "flag": f}, sort_keys=True, default=str).encode() + b"\n")
                    failed = outcome.get(f[self.id_field], {}).get("failed")
                    if failed is not None:
                        handle.write(json.dumps({"op": "failed", "ids": [f[self.id_field]], "error": failed}).encode() + b"\n")
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path)
