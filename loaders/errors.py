"""Exceptions shared by every socialrisk package.

One root, :class:`SocialRiskError`, and a few subclasses that separate the caller's
mistakes (bad data, bad parameters, unknown users) from faults of the store.
They live in ``loaders`` because it is the most upstream package: every other package
may import it without importing "upwards".
"""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "SocialRiskError",
    "DataError",
    "ParameterError",
    "ConfigError",
    "NotFoundError",
    "StoreError",
    "TransientStoreError",
]


class SocialRiskError(Exception):
    """Root of every error socialrisk raises on purpose."""

    exit_code: int = 1


class DataError(SocialRiskError):
    """Input data that does not match the contract.

    The message names the file, the row, the column, the value and what was expected.
    ``row`` is the 1-based data row (the header is not counted).
    """

    exit_code = 3

    def __init__(
        self,
        message: str | None = None,
        *,
        source: str | Path | None = None,
        row: int | None = None,
        column: str | None = None,
        value: object = None,
        expected: str | None = None,
        positions: object = None,
        values: object = None,
    ) -> None:
        #: Every offending row of the check (0-based positions) and its value, when the error
        #: is about rows: what ``--on-error quarantine`` sets aside.
        self.positions = positions
        self.values = values
        self.source = str(source) if source is not None else None
        self.row = row
        self.column = column
        self.value = value
        self.expected = expected
        if message is None:
            parts = []
            if self.source is not None:
                parts.append(self.source)
            if row is not None:
                parts.append(f"row {row}")
            if column is not None:
                parts.append(f"column '{column}'")
            where = ", ".join(parts)
            shown = _show(value)
            message = f"{where}: got {shown}, expected {expected}" if where else f"got {shown}, expected {expected}"
        super().__init__(message)


class ParameterError(SocialRiskError, ValueError):
    """A parameter outside its documented range (the caller's mistake)."""

    exit_code = 2


class ConfigError(SocialRiskError):
    """A configuration file or setting that cannot be used."""

    exit_code = 2


class NotFoundError(SocialRiskError, KeyError):
    """An id (user, identifier) that the store does not hold."""

    exit_code = 4

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class StoreError(SocialRiskError):
    """The graph store failed or holds data that cannot be used."""

    exit_code = 5


class TransientStoreError(StoreError):
    """A store fault that may go away if the operation is retried."""


def _show(value: object, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
