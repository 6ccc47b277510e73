"""The canonical tables that loaders produce and stores keep.

Column names and dtypes after validation and pseudonymisation. Every store writes and
returns these frames, so the projection to sparse matrices does not care where they came from.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

import pandas as pd

__all__ = [
    "TABLE_NAMES",
    "REQUIRED_COLUMNS",
    "LINK_COLUMNS",
    "RELATION_COLUMNS",
    "FLAG_COLUMNS",
    "ROW_KEY",
    "Tables",
    "empty_tables",
]

TABLE_NAMES: tuple[str, ...] = ("users", "links", "relations", "flags")

REQUIRED_COLUMNS: dict[str, tuple[str, ...]] = {
    "users": ("user_id",),
    "links": ("user_id", "kind", "value"),
    "relations": ("src", "dst", "kind"),
    "flags": ("user_id", "label"),
}

#: Canonical links: ``ident`` is the keyed hash of ``(kind, value)``; raw values are dropped.
LINK_COLUMNS: tuple[str, ...] = ("user_id", "kind", "ident", "first_seen", "last_seen", "weight")
#: Canonical relations; extra numeric columns of the input follow these.
RELATION_COLUMNS: tuple[str, ...] = ("src", "dst", "kind", "weight", "ts")
FLAG_COLUMNS: tuple[str, ...] = ("user_id", "label", "severity", "source", "ts")

#: Content key of a row (uint64) plus its occurrence number among identical rows of one
#: load: loading the same rows twice yields the same keys, so the store can skip them.
ROW_KEY: tuple[str, str] = ("_key", "_occ")


@dataclass(frozen=True)
class Tables:
    """The four canonical tables.

    Attributes
    ----------
    users : DataFrame
        ``user_id`` (str) and feature columns (float64 for numeric, str for categorical).
    links : DataFrame
        ``LINK_COLUMNS``: ``kind`` (str), ``ident`` (hex str, pseudonymised), ``first_seen`` and
        ``last_seen`` (datetime64[ns, UTC], may be NaT), ``weight`` (float64, NaN = default).
    relations : DataFrame
        ``RELATION_COLUMNS`` then any extra numeric attributes (float64). ``weight`` defaults to 1.
    flags : DataFrame
        ``FLAG_COLUMNS``: ``label`` is ``fraud`` or ``benign`` after mapping, ``severity`` in 0..1.
    """

    users: pd.DataFrame
    links: pd.DataFrame
    relations: pd.DataFrame
    flags: pd.DataFrame
    sources: dict[str, str] = field(default_factory=dict)

    def __iter__(self):  # type: ignore[no-untyped-def]
        yield from (("users", self.users), ("links", self.links), ("relations", self.relations), ("flags", self.flags))

    def counts(self) -> dict[str, int]:
        """Number of rows per table."""
        return {name: len(frame) for name, frame in self}

    def all_user_ids(self) -> pd.Index:
        """Every user that appears in any table (the users to score), in first-seen order."""
        parts = [
            self.users["user_id"],
            self.links["user_id"],
            self.relations["src"],
            self.relations["dst"],
            self.flags["user_id"],
        ]
        # Arrow's hash kernel keeps values in the order they are first met, in C++: a
        # concatenation of millions of ids as Python strings and drop_duplicates took seconds
        ids = pa.chunked_array([chunk for p in parts for chunk in _arrow_text(p)], type=pa.large_string())
        unique = pc.unique(ids)
        return pd.Index(np.asarray(unique.to_numpy(zero_copy_only=False), dtype=object), name="user_id")


def _arrow_text(column: pd.Series) -> list[pa.Array]:
    """A column of ids as chunks of Arrow text (without converting where it is Arrow text already)."""
    if isinstance(column.dtype, pd.StringDtype) and column.dtype.storage in ("pyarrow", "pyarrow_numpy"):
        array = pa.array(column.array)
    else:
        array = pa.array(column.astype(str).to_numpy(dtype=object), type=pa.large_string())
    chunks = array.chunks if isinstance(array, pa.ChunkedArray) else [array]
    return [c.cast(pa.large_string()) for c in chunks]


def is_in(values: pd.Series, among: pd.Series) -> np.ndarray:
    """Which of ``values`` (ids) are among ``among``, as a boolean array, hashed by Arrow
    (pandas' own ``isin`` of Arrow text goes through Python objects)."""
    if not len(values):
        return np.zeros(0, dtype=bool)
    value_set = pa.chunked_array([c for c in _arrow_text(among)], type=pa.large_string())
    found = pc.is_in(pa.chunked_array(_arrow_text(values), type=pa.large_string()), value_set=value_set.combine_chunks())
    return found.to_numpy(zero_copy_only=False).astype(bool, copy=False)


def empty_tables() -> Tables:
    """Four empty canonical tables with the right columns and dtypes."""
    utc = "datetime64[ns, UTC]"
    users = pd.DataFrame({"user_id": pd.Series(dtype=str)})
    links = pd.DataFrame(
        {
            "user_id": pd.Series(dtype=str),
            "kind": pd.Series(dtype=str),
            "ident": pd.Series(dtype=str),
            "first_seen": pd.Series(dtype=utc),
            "last_seen": pd.Series(dtype=utc),
            "weight": pd.Series(dtype="float64"),
        }
    )
    relations = pd.DataFrame(
        {
            "src": pd.Series(dtype=str),
            "dst": pd.Series(dtype=str),
            "kind": pd.Series(dtype=str),
            "weight": pd.Series(dtype="float64"),
            "ts": pd.Series(dtype=utc),
        }
    )
    flags = pd.DataFrame(
        {
            "user_id": pd.Series(dtype=str),
            "label": pd.Series(dtype=str),
            "severity": pd.Series(dtype="float64"),
            "source": pd.Series(dtype=str),
            "ts": pd.Series(dtype=utc),
        }
    )
    return Tables(users=users, links=links, relations=relations, flags=flags)
