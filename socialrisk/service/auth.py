"""API keys: where they come from, and how a presented key is checked (in constant time)."""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Mapping
from dataclasses import dataclass

from loaders.errors import ConfigError
from socialrisk.settings import ServiceConfig

__all__ = ["ENV_API_KEYS", "MIN_KEY_LENGTH", "ApiKeys", "api_keys"]

ENV_API_KEYS = "SOCIALRISK_API_KEYS"
MIN_KEY_LENGTH = 16


@dataclass(frozen=True)
class ApiKeys:
    """The accepted keys, kept only as SHA-256 digests.

    A presented key is hashed and compared with every digest by :func:`hmac.compare_digest`,
    without stopping at a match, so the time taken tells nothing about which key, or how much
    of one, was right.
    """

    digests: tuple[bytes, ...]

    def check(self, presented: str) -> str | None:
        """The matching key's id (the first 8 hex digits of its SHA-256, safe to log and to
        record as the actor of a change), or None."""
        digest = hashlib.sha256(presented.encode("utf-8", "surrogatepass")).digest()
        match = None
        for d in self.digests:
            if hmac.compare_digest(d, digest):
                match = d
        return None if match is None else "key-" + match.hex()[:8]


def api_keys(config: ServiceConfig, environ: Mapping[str, str] | None = None) -> ApiKeys:
    """The keys from ``SOCIALRISK_API_KEYS`` (comma-separated) or, when it is unset, from
    ``api_keys`` in the ``[service]`` table of the config file.

    Raises
    ------
    ConfigError
        No key at all (the service refuses to start open), or a key shorter than 16
        characters or holding whitespace. Messages never show a key.
    """
    env = os.environ if environ is None else environ
    raw = env.get(ENV_API_KEYS)
    if raw is not None and raw.strip():
        keys, where = [k.strip() for k in raw.split(",") if k.strip()], ENV_API_KEYS
    else:
        keys, where = list(config.api_keys), "api_keys in the [service] table of the config file"
    if not keys:
        raise ConfigError(
            f"no API key is configured: set {ENV_API_KEYS} (comma-separated keys) or api_keys in the [service] table of the "
            "config file; every /v1 route needs one. Make one with: python -c 'import secrets; print(secrets.token_urlsafe(32))'"
        )
    for number, key in enumerate(keys, start=1):
        if len(key) < MIN_KEY_LENGTH:
            raise ConfigError(f"API key #{number} of {where} has {len(key)} characters; use at least {MIN_KEY_LENGTH} (a random token)")
        if any(c.isspace() or not c.isprintable() for c in key):
            raise ConfigError(f"API key #{number} of {where} holds whitespace or control characters; use a printable token")
    return ApiKeys(tuple(hashlib.sha256(k.encode()).digest() for k in keys))
