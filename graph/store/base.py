"""The one seam between socialrisk and where the graph lives."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import pandas as pd

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

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources (connections, file handles)."""

    def __enter__(self) -> "GraphStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
