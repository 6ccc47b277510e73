"""The one seam between socialrisk and where the graph lives."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from abc import ABC, abstractmethod
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from graph.config import GraphConfig
from graph.projection import Projection, load_projection, project, save_projection

from loaders.errors import ConfigError
from loaders.load import WriteCounts
from loaders.schema import Tables

__all__ = ["GraphStore"]


class GraphStore(ABC):
    """A place that keeps the canonical tables and the results computed from them.

    The embedded store (Parquet files in a workspace directory) and the Neo4j store implement
    it; everything above the store (projection, propagation, scoring, the CLI) talks to this
    interface only, so most tests need no server.
    """

    @abstractmethod
    def known_user_ids(self) -> pd.Index:
        """Ids of every user the store already holds (in any table)."""

    @abstractmethod
    def write_tables(self, tables: Tables) -> dict[str, WriteCounts]:
        """Merge canonical tables in. Idempotent: rows already present are counted, not added."""

    @abstractmethod
    def read_tables(self) -> Tables:
        """All canonical tables, as loaded."""

    @abstractmethod
    def write_result(self, name: str, frame: pd.DataFrame, *, meta: dict[str, Any]) -> None:
        """Store a computed frame (propagation scores, credit scores) with its provenance."""

    @abstractmethod
    def read_result(self, name: str) -> tuple[pd.DataFrame, dict[str, Any]]:
        """A stored result and its provenance; :class:`~loaders.errors.NotFoundError` if absent."""

    @abstractmethod
    def has_result(self, name: str) -> bool:
        """Whether a result of that name has been written."""

    @abstractmethod
    def metadata(self) -> dict[str, Any]:
        """Store-level facts: row counts, data snapshot id, key fingerprint."""

    @abstractmethod
    def _update_metadata(self, values: dict[str, Any]) -> None:
        """Set store-level facts (merged into the existing ones)."""

    def bind_key(self, fingerprint: str) -> None:
        """Record the pseudonymisation key's fingerprint, or refuse a different key.

        Identifiers hashed under two keys would never match, silently splitting the graph.
        """
        bound = self.metadata().get("key_fingerprint")
        if bound is None:
            self._update_metadata({"key_fingerprint": fingerprint})
        elif bound != fingerprint:
            raise ConfigError(
                f"{self}: this store was loaded with a different pseudonymisation key (fingerprint mismatch). "
                "Use the same SOCIALRISK_PSEUDONYM_KEY, or load into a new workspace or an empty database."
            )

    #: Directory for derived data (the cached projection); None: nothing is cached.
    cache_dir: Path | None = None

    def projection(self, config: GraphConfig | None = None) -> Projection:
        """The sparse projection of the stored tables under ``config``.

        Stores with a :attr:`cache_dir` keep the last projection there, keyed by the data
        snapshot and the graph configuration, so repeated propagations skip re-projecting
        unchanged data; a load (a new snapshot) or another configuration projects afresh.
        """
        config = config or GraphConfig()
        if self.cache_dir is None:
            return project(self.read_tables(), config)
        fields = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
        plain = {k: dict(v) if isinstance(v, Mapping) else v for k, v in fields.items()}
        digest = hashlib.sha256(json.dumps(plain, sort_keys=True, default=repr).encode()).hexdigest()[:16]
        snapshot = int(self.metadata().get("snapshot", 0))
        path = Path(self.cache_dir) / f"projection-{snapshot}-{digest}.npz"
        if path.exists():
            return load_projection(path)
        projection = project(self.read_tables(), config)
        save_projection(projection, path)
        for old in Path(self.cache_dir).glob("projection-*.npz"):
            if old != path:
                old.unlink(missing_ok=True)
        return projection

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources (connections, file handles)."""

    def __enter__(self) -> "GraphStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
