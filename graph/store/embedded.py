"""The embedded store: canonical tables and results as Parquet files in a workspace directory."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from loaders.errors import NotFoundError, ParameterError, StoreError
from loaders.load import WriteCounts
from loaders.schema import TABLE_NAMES, Tables, empty_tables
from graph.projection import EncodedGraph, complete_arrays, encode, load_encoded, save_encoded
from graph.store._json import canonical_json
from graph.store.audit import AuditEntry, entry_from_dict, entry_hash, new_entries
from graph.store.base import GraphStore
from graph.store.merge import merge_table
from graph.store.models import check_model_payload, check_model_version, model_meta

__all__ = ["EmbeddedStore", "FORMAT_VERSION"]

FORMAT_VERSION = 1
_RESULT_NAME = __import__("re").compile(r"^[a-z][a-z0-9_.-]{0,63}$")


class EmbeddedStore(GraphStore):
    """Graph store kept as Parquet plus JSON metadata under ``workspace``.

    Layout::

        workspace/
          meta.json               format version, counts, snapshot, key fingerprint, current files
          graph/<table>-<n>.parquet  canonical users, links, relations, flags of snapshot n
          graph/encoded-<n>/      the same graph as integer codes (.npy files), made at load time
          results/<name>.parquet  computed results, with results/<name>.json provenance
          cache/                  the last projection (derived; safe to delete)
          audit/log.jsonl         the audit log, one JSON entry a line, only ever appended to
          models/<version>.bin    registered model payloads, with models/<version>.json metadata
          erased.json             tombstones: ids of the users erased by forget_user

    Every file but the audit log is written to a temporary name and renamed into place. Graph
    files carry the snapshot they belong to and ``meta.json`` names the current ones, so a load
    commits by replacing ``meta.json`` alone: a crash at any point leaves the previous version
    whole. The audit log is appended to under a file lock
    and synced; a crash mid-append leaves an incomplete last line, which reads report.

    Parameters
    ----------
    workspace : path
        Directory to use; created on first write.
    """

    def __init__(self, workspace: str | Path) -> None:
        self.workspace = Path(workspace)
        self.cache_dir = self.workspace / "cache"
        self._tables: Tables | None = None
        meta_path = self.workspace / "meta.json"
        if meta_path.exists():
            meta = self._read_meta()
            if meta.get("format_version") != FORMAT_VERSION:
                raise StoreError(
                    f"{meta_path}: workspace format {meta.get('format_version')!r}, this version of socialrisk "
                    f"reads format {FORMAT_VERSION}; load the data into a new workspace"
                )

    # -- metadata ---------------------------------------------------------------------------

    def _read_meta(self) -> dict[str, Any]:
        path = self.workspace / "meta.json"
        if not path.exists():
            return {"format_version": FORMAT_VERSION, "snapshot": 0, "counts": {n: 0 for n in TABLE_NAMES}}
        try:
            return dict(json.loads(path.read_text()))
        except (OSError, json.JSONDecodeError) as exc:
            raise StoreError(f"{path}: unreadable workspace metadata ({exc}); the workspace is damaged") from exc

    def metadata(self) -> dict[str, Any]:
        return self._read_meta()

    def _update_metadata(self, values: dict[str, Any]) -> None:
        meta = self._read_meta()
        meta.update(values)
        self._write_meta(meta)

    def __str__(self) -> str:
        return str(self.workspace)

    def _write_meta(self, meta: dict[str, Any]) -> None:
        _atomic_write_bytes(self.workspace / "meta.json", json.dumps(meta, indent=2, sort_keys=True).encode())

    # -- tables -----------------------------------------------------------------------------

    def _table_path(self, name: str, meta: dict[str, Any] | None = None) -> Path:
        """Where the current version of a table is: named in ``meta.json`` (one file per
        snapshot, so that a write commits by replacing ``meta.json`` alone), or the unversioned
        name of workspaces written before that."""
        files = (meta if meta is not None else self._read_meta()).get("files", {})
        return self.workspace / files.get(name, "graph/encoded.npz" if name == "encoded" else f"graph/{name}.parquet")

    def known_user_ids(self) -> pd.Index:
        if not (self.workspace / "graph").exists():
            return pd.Index([], dtype="string")
        return self.read_tables().all_user_ids()

    def read_tables(self) -> Tables:
        if self._tables is not None:
            return self._tables
        base = empty_tables()
        parts = {}
        meta = self._read_meta()
        for name, empty in base:
            path = self._table_path(name, meta)
            if path.exists():
                try:
                    frame = pd.read_parquet(path)
                except Exception as exc:  # pyarrow raises several types for damaged files
                    raise StoreError(f"{path}: cannot be read ({exc}); the workspace is damaged") from exc
            else:
                frame = empty
            parts[name] = frame
        self._tables = Tables(**parts)
        return self._tables

    def read_table(self, name: str) -> pd.DataFrame:
        if self._tables is not None:
            return getattr(self._tables, name)
        if name not in TABLE_NAMES:
            raise ValueError(f"unknown table {name!r}; expected one of {', '.join(TABLE_NAMES)}")
        path = self._table_path(name)
        if not path.exists():
            return getattr(empty_tables(), name)
        try:
            return pd.read_parquet(path)
        except Exception as exc:  # pyarrow raises several types for damaged files
            raise StoreError(f"{path}: cannot be read ({exc}); the workspace is damaged") from exc

    @property
    def _encoded_path(self) -> Path:
        return self._table_path("encoded")

    def _kept_encoded(self) -> tuple[EncodedGraph, int] | None:
        path = self._encoded_path
        if not (complete_arrays(path) if path.is_dir() else path.is_file()):
            return None
        try:
            return load_encoded(self._encoded_path)
        except (OSError, ValueError, KeyError) as exc:
            raise StoreError(f"{self._encoded_path}: cannot be read ({exc}); delete it and it will be rebuilt from the tables") from exc

    def encoded(self) -> EncodedGraph:
        """The integer codes kept since the last load (``graph/encoded-<snapshot>/``), or the tables
        encoded afresh when they are missing or older than the tables (a workspace from an
        earlier version)."""
        snapshot = int(self._read_meta().get("snapshot", 0))
        kept = self._kept_encoded()
        if kept is not None and kept[1] == snapshot:
            return kept[0]
        encoded = encode(self.read_tables())
        if (self.workspace / "graph").exists():
            # kept beside the tables of this snapshot, and named in meta.json from now on
            path = self.workspace / f"graph/encoded-{snapshot}"
            save_encoded(encoded, path, snapshot=snapshot)
            self._update_metadata({"files": {**self._read_meta().get("files", {}), "encoded": f"graph/encoded-{snapshot}"}})
        return encoded

    def _read_stored(self) -> dict[str, pd.DataFrame]:
        out = {}
        meta = self._read_meta()
        for name in TABLE_NAMES:
            path = self._table_path(name, meta)
            out[name] = pd.read_parquet(path) if path.exists() else None
        return out

    def write_tables(self, tables: Tables) -> dict[str, WriteCounts]:
        stored = self._read_stored()
        counts: dict[str, WriteCounts] = {}
        merged: dict[str, pd.DataFrame] = {}
        for name, new in tables:
            old = stored[name]
            frame, count = merge_table(name, old, new)
            counts[name] = count
            if count.added or old is None:
                merged[name] = frame
        self._write_version(stored, merged, {name: c.added > 0 for name, c in counts.items()})
        self._tables = None
        return counts

    def _write_version(self, stored: dict[str, pd.DataFrame | None], merged: dict[str, pd.DataFrame], changed_tables: dict[str, bool]) -> None:
        """Write the tables in ``merged`` (the rest as ``stored``) as the next version."""
        counts_added = changed_tables
        # Every file of the new version gets a new name; replacing meta.json, which names them,
        # is the one step that commits the write. A crash before it leaves the previous
        # version whole (and some unnamed files, removed by the next write).
        meta = self._read_meta()
        previous = int(meta.get("snapshot", 0))
        changed = any(counts_added.values())
        version = previous + 1 if changed else previous
        files = dict(meta.get("files", {}))
        for name, frame in merged.items():
            files[name] = f"graph/{name}-{version}.parquet"
            _atomic_write_parquet(self.workspace / files[name], frame)
        if changed:
            meta["snapshot"] = version
            meta["updated_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            # the integer codes every projection starts from, made once per load: a new flag
            # only appends the users it brings, a change to the graph tables encodes afresh
            current = {name: merged.get(name, stored[name]) for name in TABLE_NAMES}
            kept = self._kept_encoded()
            if kept is not None and kept[1] == previous and not any(counts_added.get(name, False) for name in TABLE_NAMES if name != "flags"):
                encoded = kept[0].with_users(current["flags"]["user_id"]) if current["flags"] is not None else kept[0]
            else:
                encoded = encode(Tables(**{name: current[name] if current[name] is not None else empty for name, empty in empty_tables()}))
            files["encoded"] = f"graph/encoded-{version}"
            save_encoded(encoded, self.workspace / files["encoded"], snapshot=version)
        for name in TABLE_NAMES:
            if name in merged:
                meta.setdefault("counts", {})[name] = len(merged[name])
            elif stored[name] is not None:
                meta.setdefault("counts", {})[name] = len(stored[name])
            else:
                meta.setdefault("counts", {})[name] = 0
        meta["format_version"] = FORMAT_VERSION
        meta["files"] = files
        self._write_meta(meta)
        _remove_unnamed(self.workspace / "graph", set(files.values()), self.workspace)

    def forget_user(self, user_id: str) -> dict[str, int]:
        """Erase a user's personal data: its feature values, and its links to identifiers no
        other user has (with them, the identifiers). Its relations (other users' records too),
        links to shared identifiers and flags stay. Returns what was removed, by kind.

        The tombstone (``erased.json``) is written first: a crash after it leaves a user whose
        rows no load brings back, and running the erasure again finishes it."""
        stored = self._read_stored()
        if stored["users"] is None and stored["links"] is None:
            raise NotFoundError(f"{self.workspace}: the store holds no users yet")
        known = self.read_tables().all_user_ids()
        if user_id not in set(known.astype(str)):
            raise NotFoundError(f"unknown user {user_id!r}: not in the store")
        self._add_tombstone(user_id)
        merged: dict[str, pd.DataFrame] = {}
        removed = {"feature_values": 0, "links": 0}
        users = stored["users"]
        if users is not None:
            mine = users["user_id"].astype(str) == user_id
            features = [c for c in users.columns if c != "user_id"]
            if mine.any() and features:
                removed["feature_values"] = int(users.loc[mine, features].notna().sum().sum())
                users = users.copy()
                for c in features:
                    users.loc[mine, c] = None
                merged["users"] = users
        links = stored["links"]
        if links is not None and len(links):
            pair = links["kind"].astype(str) + "\0" + links["ident"].astype(str)
            holders = links.assign(_pair=pair).groupby("_pair")["user_id"].transform("nunique")
            drop = (links["user_id"].astype(str) == user_id) & (holders == 1)
            removed["links"] = int(drop.sum())
            if drop.any():
                merged["links"] = links.loc[~drop].reset_index(drop=True)
        self._tables = None
        if merged:
            self._write_version(stored, merged, {name: name in merged for name in TABLE_NAMES})
        self._tables = None
        return removed

    @property
    def _tombstones_path(self) -> Path:
        return self.workspace / "erased.json"

    def erased_user_ids(self) -> frozenset[str]:
        path = self._tombstones_path
        if not path.exists():
            return frozenset()
        try:
            ids = json.loads(path.read_text())["user_ids"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise StoreError(f"{path}: unreadable list of erased users ({exc}); restore it from a backup") from exc
        return frozenset(str(u) for u in ids)

    def _add_tombstone(self, user_id: str) -> None:
        """Add ``user_id`` to ``erased.json``, written atomically under a lock (two erasures at
        once both stay)."""
        path = self._tombstones_path
        path.parent.mkdir(parents=True, exist_ok=True)
        with _locked(path.with_name(".erased.lock"), exclusive=True):
            ids = self.erased_user_ids() | {user_id}
            _atomic_write_bytes(path, json.dumps({"user_ids": sorted(ids)}, indent=1).encode())

    # -- results ----------------------------------------------------------------------------

    def write_result(self, name: str, frame: pd.DataFrame, *, meta: dict[str, Any]) -> None:
        _check_result_name(name)
        _atomic_write_parquet(self.workspace / "results" / f"{name}.parquet", frame)
        full = dict(meta)
        full.setdefault("snapshot", self._read_meta().get("snapshot", 0))
        full.setdefault("written_at", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        _atomic_write_bytes(self.workspace / "results" / f"{name}.json", json.dumps(full, indent=2, default=str).encode())

    def read_result(self, name: str) -> tuple[pd.DataFrame, dict[str, Any]]:
        _check_result_name(name)
        path = self.workspace / "results" / f"{name}.parquet"
        if not path.exists():
            raise NotFoundError(f"{self.workspace}: no '{name}' result yet; run the step that computes it first")
        meta_path = path.with_suffix(".json")
        meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
        return pd.read_parquet(path), meta

    def result_meta(self, name: str) -> dict[str, Any] | None:
        _check_result_name(name)
        path = self.workspace / "results" / f"{name}.json"
        if not (self.workspace / "results" / f"{name}.parquet").exists():
            return None
        try:
            return dict(json.loads(path.read_text())) if path.exists() else {}
        except (OSError, ValueError) as exc:
            raise StoreError(f"{path}: unreadable ({exc}); the workspace is damaged") from exc

    def has_result(self, name: str) -> bool:
        _check_result_name(name)
        return (self.workspace / "results" / f"{name}.parquet").exists()

    # -- audit log ----------------------------------------------------------------------------

    @property
    def _audit_path(self) -> Path:
        return self.workspace / "audit" / "log.jsonl"

    def append_audit(self, records: list[dict[str, Any]]) -> list[AuditEntry]:
        records = list(records)
        if not records:
            return []
        path = self._audit_path
        path.parent.mkdir(parents=True, exist_ok=True)
        # one writer at a time, across processes: the last entry read is still the last when
        # the new ones land after it
        with _locked(path.with_name("log.lock"), exclusive=True):
            created = not path.exists()
            fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                entries = new_entries(_last_audit_entry(fd, path), records)
                _write_all(fd, b"".join(canonical_json(e.to_dict()).encode("ascii") + b"\n" for e in entries))
                os.fsync(fd)
            finally:
                os.close(fd)
            if created:
                _fsync_dir(path.parent)
        return entries

    def _audit_location(self) -> str:
        return str(self._audit_path)

    def _audit_entries(self) -> list[AuditEntry]:
        path = self._audit_path
        if not path.exists():
            return []
        with _locked(path.with_name("log.lock"), exclusive=False):
            data = path.read_bytes()
        lines = data.split(b"\n")
        if lines[-1]:
            raise _torn_line(path, len(lines), len(data) - len(lines[-1]))
        entries = []
        for number, line in enumerate(lines[:-1], start=1):
            entries.append(_parse_audit_line(line, where=f"{path}, line {number}"))
        return entries

    # -- model registry -----------------------------------------------------------------------

    def write_model(self, version: str, payload: bytes, meta: dict[str, Any]) -> None:
        full = model_meta(version, payload, meta)
        folder = self.workspace / "models"
        folder.mkdir(parents=True, exist_ok=True)
        # the .json is written last: a version exists once its metadata does; the lock keeps two
        # writers of the same version from mixing one's payload with the other's metadata
        with _locked(folder / ".lock", exclusive=True):
            if (folder / f"{version}.json").exists():
                raise StoreError(
                    f"{self.workspace}: model version {version} is already registered, and versions are never overwritten; "
                    "register the new model under a new version (graph.store.models.new_model_version)"
                )
            _atomic_write_bytes(folder / f"{version}.bin", bytes(payload))
            _atomic_write_bytes(folder / f"{version}.json", json.dumps(full, indent=2, sort_keys=True).encode())

    def read_model(self, version: str) -> tuple[bytes, dict[str, Any]]:
        check_model_version(version)
        folder = self.workspace / "models"
        meta_path = folder / f"{version}.json"
        if not meta_path.exists():
            raise NotFoundError(f"{self.workspace}: no model version {version!r} is registered (list_models shows those that are)")
        meta = _read_model_meta(meta_path)
        try:
            payload = (folder / f"{version}.bin").read_bytes()
        except OSError as exc:
            raise StoreError(f"{folder / f'{version}.bin'}: cannot read the payload of model {version} ({exc}); restore it from a backup") from exc
        check_model_payload(version, payload, meta, source=str(folder / f"{version}.bin"))
        return payload, meta

    def _model_metas(self) -> list[dict[str, Any]]:
        folder = self.workspace / "models"
        if not folder.exists():
            return []
        return [_read_model_meta(p) for p in sorted(folder.glob("*.json")) if not p.name.startswith(".")]


def _remove_unnamed(directory: Path, named: set[str], root: Path) -> None:
    """Drop the graph files the committed version does not name (older versions, leftovers of
    a crashed write)."""
    if not directory.exists():
        return
    for path in directory.iterdir():
        if str(path.relative_to(root)) in named:
            continue
        if path.is_dir():  # the integer codes of an older version
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def _check_result_name(name: str) -> None:
    if not _RESULT_NAME.fullmatch(name):
        raise ParameterError(f"result name {name!r} must be a lowercase word of letters, digits, '_', '.', '-'")


def _atomic_write_parquet(path: Path, frame: pd.DataFrame) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        frame.to_parquet(tmp, index=False)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def _locked(path: Path, *, exclusive: bool) -> Iterator[None]:
    """Hold an advisory ``flock`` on ``path`` (created if missing): exclusive for writers,
    shared for readers, released when the block ends (or the process dies)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _torn_line(path: Path, number: int, good_bytes: int) -> StoreError:
    return StoreError(
        f"{path}: line {number}, the last, is incomplete (no newline at its end): an append was interrupted by a crash "
        f"or a full disk, and that entry was never confirmed to its writer. The log is never rewritten automatically, "
        f"and nothing more can be appended until it is repaired: keep a copy of the file, then cut it after its last "
        f"complete line ('truncate -s {good_bytes} {path}')."
    )


def _parse_audit_line(line: bytes, *, where: str) -> AuditEntry:
    try:
        data = json.loads(line)
    except ValueError as exc:
        raise StoreError(f"{where}: not a JSON audit entry ({exc}); the log was edited or damaged") from exc
    return entry_from_dict(data, where=where)


def _last_audit_entry(fd: int, path: Path) -> AuditEntry | None:
    """The log's last entry, read backwards from the end of the open file; None if it is empty.

    Appending after a damaged end would bury the damage mid-log, so an incomplete last line,
    or a last entry that fails its own hash, is refused here.
    """
    size = os.fstat(fd).st_size
    if size == 0:
        return None
    if os.pread(fd, 1, size - 1) != b"\n":
        start = _line_start(fd, size)
        raise _torn_line(path, _count_lines(fd, start) + 1, start)
    start = _line_start(fd, size - 1)
    entry = _parse_audit_line(os.pread(fd, size - 1 - start, start), where=f"{path}, last line")
    if entry_hash(entry.to_dict()) != entry.hash:
        raise StoreError(
            f"{path}: audit entry {entry.seq} was altered: its fields no longer match its hash; "
            "nothing can be appended after it (read_audit checks the whole log)"
        )
    return entry


def _line_start(fd: int, end: int, block: int = 65536) -> int:
    """Offset just after the last newline before ``end`` (0 if there is none)."""
    pos = end
    while pos > 0:
        lo = max(0, pos - block)
        chunk = os.pread(fd, pos - lo, lo)
        cut = chunk.rfind(b"\n")
        if cut >= 0:
            return lo + cut + 1
        pos = lo
    return 0


def _count_lines(fd: int, end: int, block: int = 1 << 20) -> int:
    count, pos = 0, 0
    while pos < end:
        chunk = os.pread(fd, min(block, end - pos), pos)
        count += chunk.count(b"\n")
        pos += len(chunk)
    return count


def _read_model_meta(path: Path) -> dict[str, Any]:
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise StoreError(f"{path}: unreadable model metadata ({exc}); the registry is damaged, restore the file from a backup") from exc
    if not isinstance(meta, dict):
        raise StoreError(f"{path}: model metadata must be a JSON object; the registry is damaged, restore the file from a backup")
    return meta
