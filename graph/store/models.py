"""The model registry's pure parts: version ids, and the metadata that lets a payload be checked.

A model version is an id (``m-20261127T012233Z-1a2b3c4d``: when it was made and the first 8
hex digits of the payload's SHA-256), a payload (the fitted combination, as bytes; the caller
pickles it, the store never unpickles) and a metadata dict (``created_at``, ``config_hash``,
``snapshot``, label counts, ``combination``, metrics...). The stores keep them
(:meth:`GraphStore.write_model <graph.store.base.GraphStore.write_model>`); these functions
touch no storage. They live beside the stores rather than in ``scoring`` because the stores
use them, and ``graph`` never imports ``scoring``.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import re
import time
from typing import Any

from graph.store._json import plain_json
from loaders.errors import ParameterError, StoreError

__all__ = ["new_model_version", "check_model_version", "model_meta", "check_model_payload", "payload_sha256"]

#: What a version id may look like: it names files in the embedded store, so no separators.
_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


def payload_sha256(payload: bytes) -> str:
    """SHA-256 of ``payload``, hex."""
    return hashlib.sha256(payload).hexdigest()


def new_model_version(payload: bytes, *, at: _dt.datetime | None = None) -> str:
    """A version id for ``payload``: ``m-<UTC time to the second>-<8 hex of its SHA-256>``.

    Parameters
    ----------
    payload : bytes
        The fitted combination, serialised.
    at : datetime, optional
        When it was made (aware, or naive meaning UTC); default now.

    Examples
    --------
    >>> import datetime as dt
    >>> new_model_version(b"model", at=dt.datetime(2026, 11, 27, 1, 22, 33, tzinfo=dt.timezone.utc))
    'm-20261127T012233Z-9372c470'
    """
    _check_payload_type(payload)
    if at is None:
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    else:
        utc = at.astimezone(_dt.timezone.utc) if at.tzinfo is not None else at
        stamp = utc.strftime("%Y%m%dT%H%M%SZ")
    return f"m-{stamp}-{payload_sha256(payload)[:8]}"


def check_model_version(version: str) -> None:
    """Refuse a version id that could not name a file: 1-128 letters, digits, ``_ . -``,
    starting with a letter or digit.

    Raises
    ------
    ParameterError
        With the id and what was expected.
    """
    if not isinstance(version, str) or not _VERSION.fullmatch(version):
        raise ParameterError(
            f"A model version must be 1-128 letters, digits, '_', '.' or '-', starting with a letter or digit "
            f"(like 'm-20261127T012233Z-1a2b3c4d'). Got {version!r} instead."
        )


def model_meta(version: str, payload: bytes, meta: dict[str, Any]) -> dict[str, Any]:
    """The metadata a store records for a new version: ``meta`` as plain JSON, plus
    ``version``, ``payload_sha256``, ``payload_bytes`` and ``created_at`` (UTC ISO-8601
    seconds, kept if the caller gave it).

    Raises
    ------
    ParameterError
        A bad version id, a payload that is not bytes, values JSON cannot hold, or a ``version``
        or ``payload_sha256`` in ``meta`` that contradicts the arguments.
    """
    check_model_version(version)
    _check_payload_type(payload)
    if not isinstance(meta, dict):
        raise ParameterError(f"The 'meta' of model {version} must be a dict. Got {type(meta).__name__} instead.")
    full: dict[str, Any] = plain_json(meta, what=f"The 'meta' of model {version}")
    digest = payload_sha256(payload)
    for key, value in (("version", version), ("payload_sha256", digest)):
        if full.get(key, value) != value:
            raise ParameterError(f"The '{key}' in the meta of model {version} is {full[key]!r}, but the {key} is {value!r}; leave it out.")
        full[key] = value
    full["payload_bytes"] = len(payload)
    created = full.setdefault("created_at", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    if not isinstance(created, str):
        raise ParameterError(f"The 'created_at' in the meta of model {version} must be ISO-8601 text. Got {created!r} instead.")
    full.pop("current", None)  # a property of the registry, not of the version
    return full


def check_model_payload(version: str, payload: bytes, meta: dict[str, Any], *, source: str) -> None:
    """Check ``payload`` against the SHA-256 recorded in ``meta['payload_sha256']``.

    Raises
    ------
    StoreError
        No digest recorded, or a payload that does not match it; ``source`` says where it was read.
    """
    recorded = meta.get("payload_sha256")
    if not isinstance(recorded, str):
        raise StoreError(f"{source}: model {version} has no payload_sha256 in its metadata, so its payload cannot be checked; the registry was edited")
    actual = payload_sha256(payload)
    if actual != recorded:
        raise StoreError(
            f"{source}: the payload of model {version} does not match its recorded SHA-256 (recorded {recorded[:12]}..., "
            f"read {actual[:12]}..., {len(payload):,} bytes): it was changed or damaged. Restore it, or train and register a new version."
        )


def _check_payload_type(payload: Any) -> None:
    if not isinstance(payload, (bytes, bytearray)):
        raise ParameterError(f"A model payload must be bytes (pickle the fitted combination first). Got {type(payload).__name__} instead.")
