"""The one seam between socialrisk and where the graph lives."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import shutil
import threading
from abc import ABC, abstractmethod
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from graph.config import GraphConfig
from graph.disputes import active_disputes
from graph.neighbourhood import GraphIndex, UserAttributes, graph_index, neighbourhood, ring_members, shortest_paths, user_attributes
from graph.projection import PROJECTION_FORMAT, EncodedGraph, Projection, encode, load_projection, project_encoded, save_projection, signed_relations

from graph.store.audit import AuditEntry, verify_chain
from loaders.errors import ConfigError
from loaders.load import WriteCounts
from loaders.schema import Tables

log = logging.getLogger(__name__)

__all__ = ["GraphStore"]


#: Projections being written to a store's cache directory, by directory. The writing is not on
#: the way of the propagation that made the projection: it runs beside it, on a thread of its
#: own (not a daemon: a process ends once it is written). Every store object on the same
#: directory waits for it before reading the cache, and so does :meth:`GraphStore.close`.
_KEEPING: dict[Path, threading.Thread] = {}
_KEEPING_LOCK = threading.Lock()


def wait_for_kept_projection(cache_dir: str | Path) -> None:
    """Wait until a projection being written to ``cache_dir`` (by this process) is written."""
    with _KEEPING_LOCK:
        writer = _KEEPING.get(Path(cache_dir).resolve())
    if writer is not None and writer is not threading.current_thread():
        writer.join()


def _keep_projection(projection: Projection, path: Path) -> None:
    """Write ``projection`` to ``path`` on a thread of its own, then drop the other projections
    kept beside it (older snapshots and configurations, and the files of older versions). A
    cache that cannot be written costs only speed: the failure is logged, not raised."""
    cache_dir = path.parent.resolve()

    def write() -> None:
        try:
            save_projection(projection, path)
            for old in path.parent.glob("projection-*"):
                if old != path:
                    shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink(missing_ok=True)
        except OSError as exc:
            log.warning("the projection could not be kept in %s (the next propagation projects afresh): %s", path, exc)

    with _KEEPING_LOCK:
        writer = threading.Thread(target=write, name="socialrisk-keep-projection")
        _KEEPING[cache_dir] = writer
        writer.start()


class GraphStore(ABC):
    """A place that keeps the canonical tables and the results computed from them.

    The embedded store (Parquet files in a workspace directory) and the Neo4j store implement
    it; everything above the store (projection, propagation, scoring, the CLI) talks to this
    interface only, so most tests need no server.
    """

    @abstractmethod
    def known_user_ids(self) -> pd.Index:
        """Ids of every user the store already holds (in any table)."""

    def known_among(self, user_ids: list[str]) -> set[str]:
        """Which of ``user_ids`` the store already holds. Stores that can look ids up one by
        one override this; the default reads every id."""
        return set(user_ids) & set(self.known_user_ids().astype(str))

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

    def result_meta(self, name: str) -> dict[str, Any] | None:
        """The provenance of a stored result without reading its rows (None when there is
        none). Stores that keep it apart override this; the default reads the result."""
        return self.read_result(name)[1] if self.has_result(name) else None

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

    def bind_normalisation(self, fingerprint: str) -> None:
        """Record how identifier values were normalised before they were hashed
        (:meth:`loaders.normalise.Normalisation.fingerprint`), or refuse data normalised otherwise.

        The same phone normalised under two rule sets (or two default regions) hashes to two
        pseudonyms that never match, silently splitting the graph. A store that holds users
        but no recorded normalisation was loaded before identifiers were normalised.
        """
        meta = self.metadata()
        bound = meta.get("normalisation")
        how = (
            "Reload the data into a new workspace (socialrisk load DATA_DIR --workspace NEW_DIR) or an empty database, "
            "or load with the [normalise] settings the store was loaded with."
        )
        if bound is None:
            if len(self.known_user_ids()):
                raise ConfigError(
                    f"{self}: this store was loaded before identifier values were normalised (phones to E.164, emails and "
                    f"IP addresses canonical), so its pseudonyms do not match new ones (normalisation {fingerprint}). {how}"
                )
            self._update_metadata({"normalisation": fingerprint})
        elif bound != fingerprint:
            raise ConfigError(
                f"{self}: this store was loaded under identifier normalisation {bound}, not {fingerprint} (another rule "
                f"version or other [normalise] settings), so the same phone or email would not link. {how}"
            )

    #: Directory for derived data (the cached projection); None: nothing is cached.
    cache_dir: Path | None = None

    def forget_user(self, user_id: str) -> dict[str, int]:
        """Erase a user's personal data: its feature values, its links to identifiers no other
        user has (and those identifiers), and on stores that keep results on users, its
        results. Relations, links to shared identifiers and flags stay (they are other users'
        records and fraud evidence too). Returns how many links and values were removed.

        The user id is kept as a tombstone (:meth:`erased_user_ids`), written before anything
        is erased, so that loading the same source files again does not bring the data back."""
        raise NotImplementedError(f"{type(self).__name__} cannot erase a user")

    def erased_user_ids(self) -> frozenset[str]:
        """The tombstones: ids of the users erased by :meth:`forget_user`, whose rows every
        later load sets aside (:func:`loaders.load.load`). Stores that cannot erase keep none."""
        return frozenset()

    def mark_dispute(self, user_id: str, target: str, other: str, reason: str | None) -> None:  # noqa: B027 - optional hook
        """Mark a disputed link on the stored graph itself (``reason`` None: the dispute was
        withdrawn). The audit log is the record every store keeps; stores whose graph analysts
        query directly (Neo4j) mark the link there too."""

    def disputes(self) -> pd.DataFrame:
        """The disputed links in force, folded from the audit log (:func:`graph.disputes.active_disputes`)."""
        return active_disputes(self.read_audit())

    def projection(self, config: GraphConfig | None = None, *, what_if: pd.DataFrame | None = None) -> Projection:
        """The sparse projection of the stored tables under ``config``, disputed links weighted.

        Stores with a :attr:`cache_dir` keep the last projection there, keyed by the data
        snapshot, the graph configuration and the disputes in force, so repeated propagations
        skip re-projecting unchanged data; a load (a new snapshot), another configuration or a
        new dispute projects afresh. ``what_if`` adds hypothetical disputes (``user_id``,
        ``target``, ``other``, and ``reason`` or ``weight``) to those in force; such projections
        are not kept.
        """
        config = config or GraphConfig()
        disputes = self.disputes()
        if what_if is not None and len(what_if):
            disputes = pd.concat([disputes, what_if], ignore_index=True)
            return project_encoded(self.encoded(), config, disputes=disputes)
        if self.cache_dir is None:
            return project_encoded(self.encoded(), config, disputes=disputes)
        fields = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
        plain = {k: dict(v) if isinstance(v, Mapping) else v for k, v in fields.items()}
        plain["disputes"] = disputes[["user_id", "target", "other", "reason"]].astype(str).values.tolist()
        plain["format"] = PROJECTION_FORMAT  # versions that save other files use other directories
        digest = hashlib.sha256(json.dumps(plain, sort_keys=True, default=repr).encode()).hexdigest()[:16]
        snapshot = int(self.metadata().get("snapshot", 0))
        path = Path(self.cache_dir) / f"projection-{snapshot}-{digest}"
        wait_for_kept_projection(self.cache_dir)
        if (path / "complete").exists():
            return load_projection(path, signed=lambda: signed_relations(self.encoded(), config, disputes=disputes))
        projection = project_encoded(self.encoded(), config, disputes=disputes)
        _keep_projection(projection, path)
        return projection

    def encoded(self) -> EncodedGraph:
        """The stored graph as integer codes (:class:`~graph.projection.EncodedGraph`).

        Stores that keep it from load time return the kept one; this default encodes the
        tables afresh.
        """
        return encode(self.read_tables())

    def read_table(self, name: str) -> pd.DataFrame:
        """One canonical table (``users``, ``links``, ``relations`` or ``flags``)."""
        return getattr(self.read_tables(), name)

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources (connections, file handles); a projection being kept in the cache
        is written first."""
        if self.cache_dir is not None:
            wait_for_kept_projection(self.cache_dir)

    def __enter__(self) -> "GraphStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- local views for analysts (graph.neighbourhood) -----------------------------------------

    def graph_index(self) -> tuple[GraphIndex, UserAttributes]:
        """The adjacency index of :meth:`encoded` and the users' stored scores and latest flags,
        kept on this store object until the snapshot or the scores change."""
        meta = self.metadata()
        scores, scores_meta = self.read_result("scores") if self.has_result("scores") else (None, {})
        stamp = (int(meta.get("snapshot", 0)), str(scores_meta.get("written_at")), len(scores) if scores is not None else -1)
        kept = getattr(self, "_views_index", None)
        if kept is not None and kept[0] == stamp:
            return kept[1], kept[2]
        index = graph_index(self.encoded())
        attrs = user_attributes(index, scores, self.read_table("flags"))
        self._views_index = (stamp, index, attrs)
        return index, attrs

    def neighbourhood(self, user_id: str, *, hops: int = 2, limit: int = 50) -> tuple[pd.DataFrame, pd.DataFrame]:
        """The user's neighbourhood up to ``hops`` edges away (a user-identifier and a user-user
        edge each count one), expanding at most ``limit`` neighbours per node: shared identifiers
        first, then users by decreasing risk.

        Returns
        -------
        nodes, edges : DataFrame
            :data:`graph.neighbourhood.NODE_COLUMNS` and :data:`~graph.neighbourhood.EDGE_COLUMNS`
            (see :func:`graph.neighbourhood.neighbourhood`).
        """
        index, attrs = self.graph_index()
        return neighbourhood(index, attrs, user_id, hops=hops, limit=limit)

    def shortest_paths(self, a: str, b: str, *, max_hops: int = 8, limit: int = 5) -> list[dict[str, list[Any]]]:
        """Shortest paths between two users through identifiers and relations, each
        ``{"nodes", "node_types", "edges", "degrees"}`` (:func:`graph.neighbourhood.shortest_paths`);
        empty when none is within ``max_hops`` (at most 12)."""
        index, _ = self.graph_index()
        return shortest_paths(index, a, b, max_hops=max_hops, limit=limit)

    def ring_members(self, user_id: str) -> pd.DataFrame:
        """Members of the user's ring (users joined by shared identifiers, as of the last
        ``score``: its ``ring_id``), riskiest first, with the ring's identifiers each member uses.
        Empty when the user is in no ring."""
        index, attrs = self.graph_index()
        index.user_code(user_id)  # unknown users are an error, not an empty ring
        members: list[str] = []
        if self.has_result("scores"):
            scores = self.read_result("scores")[0].drop_duplicates("user_id", keep="last")
            if "ring_id" in scores:
                ring = scores.loc[scores["user_id"].astype(str) == str(user_id), "ring_id"]
                if len(ring) and isinstance(ring.iloc[0], str) and ring.iloc[0]:
                    members = scores.loc[scores["ring_id"] == ring.iloc[0], "user_id"].astype(str).tolist()
        return ring_members(index, attrs, members)

    # -- audit log ----------------------------------------------------------------------------

    def append_audit(self, records: list[dict[str, Any]]) -> list[AuditEntry]:
        """Append entries to the audit log, atomically with respect to other writers.

        Parameters
        ----------
        records : list of dict
            One per entry: ``action`` and optionally ``actor``, ``user_id``, ``before``,
            ``after``, ``detail`` (see :func:`graph.store.audit.new_entries`).

        Returns
        -------
        list of AuditEntry
            The entries as stored, with their ``seq``, ``at`` and hashes.

        Raises
        ------
        ParameterError
            A malformed record (nothing is appended).
        StoreError
            The stored log is damaged at its end (nothing is appended).
        """
        raise NotImplementedError(f"{type(self).__name__} keeps no audit log")

    def read_audit(self, user_id: str | None = None) -> list[AuditEntry]:
        """The audit log in order, after checking the whole chain.

        Parameters
        ----------
        user_id : str, optional
            Only the entries about this user; default all.

        Returns
        -------
        list of AuditEntry

        Raises
        ------
        StoreError
            An entry was altered, removed, reordered or is incomplete; the message names it.
        """
        entries = self._audit_entries()
        verify_chain(entries, source=self._audit_location())
        if user_id is None:
            return entries
        return [e for e in entries if e.user_id == user_id]

    def _audit_entries(self) -> list[AuditEntry]:
        """Every stored audit entry in stored order, unverified."""
        raise NotImplementedError(f"{type(self).__name__} keeps no audit log")

    def _audit_location(self) -> str:
        """Where the audit log is kept, to start error messages."""
        return f"{self}: audit log"

    # -- model registry -----------------------------------------------------------------------

    def write_model(self, version: str, payload: bytes, meta: dict[str, Any]) -> None:
        """Register a model version: its payload (the pickled combination) and metadata.

        The store records ``payload_sha256``, ``payload_bytes``, ``version`` and
        ``created_at`` (unless given) in the metadata; see :func:`graph.store.models.model_meta`.

        Raises
        ------
        StoreError
            The version already exists: versions are never overwritten.
        ParameterError
            A bad version id, a payload that is not bytes, or metadata JSON cannot hold.
        """
        raise NotImplementedError(f"{type(self).__name__} keeps no model registry")

    def read_model(self, version: str) -> tuple[bytes, dict[str, Any]]:
        """A registered version's payload and metadata, the payload checked against its SHA-256.

        Raises
        ------
        NotFoundError
            No such version.
        StoreError
            The payload does not match the recorded SHA-256, or the registry is damaged.
        """
        raise NotImplementedError(f"{type(self).__name__} keeps no model registry")

    def _model_metas(self) -> list[dict[str, Any]]:
        """The metadata of every registered version, in any order."""
        raise NotImplementedError(f"{type(self).__name__} keeps no model registry")

    def list_models(self) -> list[dict[str, Any]]:
        """The metadata of every registered version, oldest first (by ``created_at``, then
        version), each with ``current``: whether it is the current version."""
        current = self.current_model()
        metas = sorted(self._model_metas(), key=lambda m: (str(m.get("created_at", "")), str(m.get("version", ""))))
        return [{**m, "current": m.get("version") == current} for m in metas]

    def current_model(self) -> str | None:
        """The version set by :meth:`set_current_model`; None before any is set."""
        version = self.metadata().get("current_model")
        return str(version) if version else None

    def set_current_model(self, version: str) -> None:
        """Make ``version`` the current model, after checking that it reads back intact.

        Raises
        ------
        NotFoundError
            No such version.
        StoreError
            Its payload does not match its recorded SHA-256.
        """
        self.read_model(version)
        self._update_metadata({"current_model": version})
