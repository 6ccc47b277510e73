"""The canonical tables that loaders produce and stores keep.

Column names and dtypes after validation and pseudonymisation. Every store writes and
returns these frames, so the projection to sparse matrices does not care where they came from.
"""

from __future__ import annotations

from dataclasses import dataclass, field

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
        ids = pd.concat([p.astype(str) for p in parts], ignore_index=True)
        return pd.Index(ids.drop_duplicates().to_numpy(), name="user_id")


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
