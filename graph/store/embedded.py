"""The embedded store: canonical tables and results as Parquet files in a workspace directory."""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd

from loaders.errors import NotFoundError, StoreError
from loaders.load import WriteCounts
from loaders.schema import TABLE_NAMES, Tables, empty_tables
from graph.store.base import GraphStore
from graph.store.merge import merge_table

__all__ = ["EmbeddedStore", "FORMAT_VERSION"]

FORMAT_VERSION = 1
_RESULT_NAME = __import__("re").compile(r"^[a-z][a-z0-9_.-]{0,63}$")


class EmbeddedStore(GraphStore):
    """Graph store kept as Parquet plus JSON metadata under ``workspace``.

    Layout::

        workspace/
          meta.json               format version, counts, snapshot, key fingerprint
          graph/<table>.parquet   canonical users, links, relations, flags
          results/<name>.parquet  computed results, with results/<name>.json provenance
          cache/                  the last projection (derived; safe to delete)

    Every file is written to a temporary name and renamed into place, so a crash leaves the
    previous version readable.

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

    def known_user_ids(self) -> pd.Index:
        if not (self.workspace / "graph").exists():
            return pd.Index([], dtype="string")
        return self.read_tables().all_user_ids()

    def read_tables(self) -> Tables:
        if self._tables is not None:
            return self._tables
        base = empty_tables()
        parts = {}
        for name, empty in base:
            path = self.workspace / "graph" / f"{name}.parquet"
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

    def _read_stored(self) -> dict[str, pd.DataFrame]:
        out = {}
        for name in TABLE_NAMES:
            path = self.workspace / "graph" / f"{name}.parquet"
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
        for name, frame in merged.items():
            _atomic_write_parquet(self.workspace / "graph" / f"{name}.parquet", frame)
        meta = self._read_meta()
        if any(c.added for c in counts.values()):
            meta["snapshot"] = int(meta.get("snapshot", 0)) + 1
            meta["updated_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        for name in TABLE_NAMES:
            if name in merged:
                meta.setdefault("counts", {})[name] = len(merged[name])
            elif stored[name] is not None:
                meta.setdefault("counts", {})[name] = len(stored[name])
            else:
                meta.setdefault("counts", {})[name] = 0
        meta["format_version"] = FORMAT_VERSION
        self._write_meta(meta)
        self._tables = None
        return counts

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

    def has_result(self, name: str) -> bool:
        _check_result_name(name)
        return (self.workspace / "results" / f"{name}.parquet").exists()


def _check_result_name(name: str) -> None:
    if not _RESULT_NAME.match(name):
        raise ValueError(f"result name {name!r} must be a lowercase word of letters, digits, '_', '.', '-'")


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
