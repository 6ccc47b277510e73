"""The audit log: an append-only, hash-chained record of who changed what.

Each :class:`AuditEntry` carries the hash of the entry before it, and its own hash covers
every other field, so editing, removing or reordering any stored entry breaks the chain at
that entry, and :func:`verify_chain` names it. The stores keep the entries
(:meth:`GraphStore.append_audit <graph.store.base.GraphStore.append_audit>`); this module
builds and checks them and touches no storage.
"""

from __future__ import annotations

import dataclasses
import getpass
import hashlib
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from graph.store._json import canonical_json, plain_json
from loaders.errors import ParameterError, StoreError

__all__ = ["AuditEntry", "ACTOR_ENV", "default_actor", "entry_hash", "new_entries", "verify_chain", "entry_from_dict"]

#: Environment variable naming who acts (an analyst's login, a service account).
ACTOR_ENV = "SOCIALRISK_ACTOR"
#: Fields a record given to :func:`new_entries` may set; the rest are assigned.
RECORD_FIELDS = frozenset({"actor", "action", "user_id", "before", "after", "detail"})


@dataclass(frozen=True)
class AuditEntry:
    """One entry of the audit log.

    Attributes
    ----------
    seq : int
        Position in the log, 1-based and without gaps.
    at : str
        When it was appended, UTC ISO-8601 to the second (``2026-11-27T01:22:33Z``).
    actor : str
        Who acted.
    action : str
        What was done: ``flag``, ``clear_flag``, ``dispute_link``, ``overturn_flag``,
        ``counter_evidence``, ``appeal_decision``, ``calibrate``, ``score``...
    user_id : str or None
        The user acted on; None for actions on the whole graph.
    before, after : dict
        State before and after the action (empty when there is none).
    detail : dict
        Anything else worth keeping (a reason, a ticket, parameters).
    prev_hash : str
        ``hash`` of the previous entry; ``""`` for the first.
    hash : str
        SHA-256 (hex) of the canonical JSON of every other field; see :func:`entry_hash`.
    """

    seq: int
    at: str
    actor: str
    action: str
    user_id: str | None
    before: dict[str, Any]
    after: dict[str, Any]
    detail: dict[str, Any]
    prev_hash: str
    hash: str

    def to_dict(self) -> dict[str, Any]:
        """The entry as a plain dict (what the embedded store writes as one JSON line)."""
        return dataclasses.asdict(self)


def default_actor() -> str:
    """Who is acting: ``$SOCIALRISK_ACTOR`` if set, else the operating-system user name."""
    actor = os.environ.get(ACTOR_ENV, "").strip()
    if actor:
        return actor
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry and no LOGNAME/USER (some containers)
        return f"uid-{os.getuid()}" if hasattr(os, "getuid") else "unknown"


def entry_hash(fields: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of the canonical JSON (sorted keys, compact separators) of an entry's
    fields other than ``hash``, ``prev_hash`` included.

    Examples
    --------
    >>> fields = dict(seq=1, at="2026-01-01T00:00:00Z", actor="ana", action="flag", user_id="u1",
    ...               before={}, after={"label": "fraud"}, detail={}, prev_hash="")
    >>> text = ('{"action":"flag","actor":"ana","after":{"label":"fraud"},"at":"2026-01-01T00:00:00Z",'
    ...         '"before":{},"detail":{},"prev_hash":"","seq":1,"user_id":"u1"}')
    >>> entry_hash(fields) == hashlib.sha256(text.encode()).hexdigest()
    True
    """
    body = {k: v for k, v in fields.items() if k != "hash"}
    return hashlib.sha256(canonical_json(body).encode("ascii")).hexdigest()


def new_entries(last: AuditEntry | None, records: list[dict[str, Any]], *, at: str | None = None) -> list[AuditEntry]:
    """Chain ``records`` after ``last``: number them, time them and hash them.

    Parameters
    ----------
    last : AuditEntry or None
        The log's last entry; None when the log is empty.
    records : list of dict
        One per entry, with ``action`` (required, non-empty text) and optionally ``actor``
        (default :func:`default_actor`), ``user_id`` (text or None), ``before``, ``after``,
        ``detail`` (dicts of JSON values; default empty).
    at : str, optional
        The time to record, UTC ISO-8601 seconds with ``Z``; default now. (For tests.)

    Returns
    -------
    list of AuditEntry
        ``seq`` continues from ``last.seq`` (or starts at 1), each ``prev_hash`` is the
        previous entry's ``hash``.

    Raises
    ------
    ParameterError
        A record with an unknown key, no action, or values JSON cannot hold; the message
        names the record (0-based, in ``records``).

    Examples
    --------
    >>> a, b = new_entries(None, [{"action": "flag", "actor": "ana", "user_id": "u1"},
    ...                           {"action": "score", "actor": "ana"}], at="2026-01-01T00:00:00Z")
    >>> (a.seq, b.seq, a.prev_hash, b.prev_hash == a.hash)
    (1, 2, '', True)
    """
    when = at if at is not None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    prev_hash = last.hash if last is not None else ""
    seq = last.seq if last is not None else 0
    actor = None
    out = []
    for i, record in enumerate(records):
        fields = _record_fields(i, record)
        if fields["actor"] is None:
            actor = actor or default_actor()
            fields["actor"] = actor
        seq += 1
        body = {"seq": seq, "at": when, **fields, "prev_hash": prev_hash}
        entry = AuditEntry(**body, hash=entry_hash(body))
        out.append(entry)
        prev_hash = entry.hash
    return out


def _record_fields(i: int, record: Mapping[str, Any]) -> dict[str, Any]:
    where = f"audit record {i}"
    if not isinstance(record, Mapping):
        raise ParameterError(f"{where} must be a dict. Got {type(record).__name__} instead.")
    unknown = sorted(set(record) - RECORD_FIELDS)
    if unknown:
        raise ParameterError(
            f"{where} has unknown keys {unknown}; a record may set only {sorted(RECORD_FIELDS)} "
            "(seq, at and the hashes are assigned when it is appended)."
        )
    action = record.get("action")
    if not isinstance(action, str) or not action.strip():
        raise ParameterError(f"The 'action' of {where} must be non-empty text. Got {action!r} instead.")
    actor = record.get("actor")
    if actor is not None and (not isinstance(actor, str) or not actor.strip()):
        raise ParameterError(f"The 'actor' of {where} must be non-empty text or left out. Got {actor!r} instead.")
    user_id = record.get("user_id")
    if user_id is not None and not isinstance(user_id, str):
        raise ParameterError(f"The 'user_id' of {where} must be text or None. Got {user_id!r} instead.")
    fields: dict[str, Any] = {"actor": actor, "action": action, "user_id": user_id}
    for name in ("before", "after", "detail"):
        value = record.get(name, {})
        if value is None:
            value = {}
        if not isinstance(value, Mapping):
            raise ParameterError(f"The '{name}' of {where} must be a dict. Got {type(value).__name__} instead.")
        fields[name] = plain_json(dict(value), what=f"The '{name}' of {where}")
    return fields


def entry_from_dict(data: Any, *, where: str) -> AuditEntry:
    """An entry from its stored fields, checking their types (not the hash: see :func:`verify_chain`).

    Raises
    ------
    StoreError
        A missing field or one of the wrong type; ``where`` says where the entry was read.
    """
    if not isinstance(data, Mapping):
        raise StoreError(f"{where}: an audit entry must be a JSON object, got {type(data).__name__}; the log was edited or damaged")
    names = [f.name for f in dataclasses.fields(AuditEntry)]
    missing = [n for n in names if n not in data]
    extra = sorted(set(data) - set(names))
    if missing or extra:
        raise StoreError(
            f"{where}: audit entry has {'missing fields ' + str(missing) if missing else ''}"
            f"{' and ' if missing and extra else ''}{'unexpected fields ' + str(extra) if extra else ''}; the log was edited or damaged"
        )
    kinds: dict[str, tuple[type, ...]] = {
        "seq": (int,), "at": (str,), "actor": (str,), "action": (str,), "user_id": (str, type(None)),
        "before": (dict,), "after": (dict,), "detail": (dict,), "prev_hash": (str,), "hash": (str,),
    }
    for name, kind in kinds.items():
        value = data[name]
        if not isinstance(value, kind) or (name == "seq" and isinstance(value, bool)):
            raise StoreError(
                f"{where}: audit entry field '{name}' holds {value!r:.60}, expected {' or '.join(k.__name__ for k in kind)}; "
                "the log was edited or damaged"
            )
    return AuditEntry(**{n: data[n] for n in names})


def verify_chain(entries: Iterable[AuditEntry], *, source: str = "audit log") -> None:
    """Check that ``entries`` form the whole log, unaltered: seq 1, 2, 3... with each entry's
    ``prev_hash`` equal to the previous ``hash`` and each ``hash`` matching its fields.

    Parameters
    ----------
    entries : iterable of AuditEntry
        The whole log, in stored order.
    source : str
        Where the entries were read (a file, a database), to start the error message.

    Raises
    ------
    StoreError
        At the first entry that fails, naming its seq: "audit entry 7 was altered: ...".

    Examples
    --------
    >>> log = new_entries(None, [{"action": "flag", "actor": "ana"}] * 3, at="2026-01-01T00:00:00Z")
    >>> verify_chain(log)
    >>> verify_chain([log[0], log[2]])
    Traceback (most recent call last):
    ...
    loaders.errors.StoreError: audit log: audit entry 3 follows entry 1: entry 2 is missing (removed from the log)
    """
    prev: AuditEntry | None = None
    for entry in entries:
        expected = 1 if prev is None else prev.seq + 1
        if entry.seq != expected:
            if prev is None:
                raise StoreError(f"{source}: the log starts at audit entry {entry.seq}, not 1: earlier entries were removed")
            if entry.seq <= prev.seq:
                raise StoreError(f"{source}: audit entry {entry.seq} appears again after entry {prev.seq}: entries were duplicated or reordered")
            missing = f"entry {expected}" if entry.seq == expected + 1 else f"entries {expected}..{entry.seq - 1}"
            raise StoreError(f"{source}: audit entry {entry.seq} follows entry {prev.seq}: {missing} {'is' if entry.seq == expected + 1 else 'are'} missing (removed from the log)")
        computed = entry_hash(dataclasses.asdict(entry))
        if computed != entry.hash:
            raise StoreError(
                f"{source}: audit entry {entry.seq} was altered: its fields no longer match its hash "
                f"(recorded {entry.hash[:12]}..., computed {computed[:12]}...)"
            )
        prev_hash = "" if prev is None else prev.hash
        if entry.prev_hash != prev_hash:
            if prev is None:
                raise StoreError(f"{source}: audit entry 1 was altered: the first entry must have an empty prev_hash")
            raise StoreError(
                f"{source}: audit entry {entry.seq} does not link to entry {prev.seq}: it records prev_hash "
                f"{entry.prev_hash[:12]}..., entry {prev.seq} hashes to {prev.hash[:12]}...; entry {prev.seq} was rewritten "
                "(with a fresh hash) or replaced"
            )
        prev = entry
