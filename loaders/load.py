"""Read, validate, pseudonymise and write a data set into a graph store."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, Union

import pandas as pd

from loaders.errors import DataError
from loaders.read import RawTable, find_tables, read_frame, read_table
from loaders.schema import TABLE_NAMES, Tables, empty_tables
from loaders.validate import validate_flags, validate_links, validate_relations, validate_users

__all__ = ["Source", "TableSink", "WriteCounts", "LoadReport", "read_tables", "load"]

#: A data directory, or a mapping of table name to a file path or a DataFrame.
Source = Union[str, Path, Mapping[str, Union[str, Path, pd.DataFrame]]]
Progress = Callable[[str], None]


@dataclass(frozen=True)
class WriteCounts:
    """What a store did with one table's rows: ``rows = added + unchanged``."""

    added: int
    unchanged: int


class TableSink(Protocol):
    """What :func:`load` writes into; every ``GraphStore`` is one."""

    def known_user_ids(self) -> pd.Index: ...

    def write_tables(self, tables: Tables) -> dict[str, WriteCounts]: ...


@dataclass
class LoadReport:
    """Row accounting of one load: for every table, read = loaded + rejected."""

    read: dict[str, int] = field(default_factory=dict)
    added: dict[str, int] = field(default_factory=dict)
    unchanged: dict[str, int] = field(default_factory=dict)
    rejected: dict[str, int] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)
    #: Every user that appears in the loaded tables.
    user_ids: pd.Index = field(default_factory=lambda: pd.Index([], dtype="string"))

    def loaded(self, table: str) -> int:
        return self.added.get(table, 0) + self.unchanged.get(table, 0)

    def check(self) -> None:
        """Raise if a row went missing between reading and writing."""
        for table, n in self.read.items():
            if n != self.loaded(table) + self.rejected.get(table, 0):
                raise DataError(
                    f"table '{table}': {n} rows read but {self.loaded(table)} loaded and "
                    f"{self.rejected.get(table, 0)} rejected; rows must not be lost"
                )


def read_tables(
    source: Source,
    *,
    key: bytes,
    label_map: Mapping[str, str] | None = None,
    known_user_ids: pd.Index | None = None,
    progress: Progress | None = None,
) -> Tables:
    """Read and validate the contract's tables into canonical frames.

    Parameters
    ----------
    source : path or mapping
        A data directory, or ``{"links": path_or_dataframe, ...}``.
    key : bytes
        Pseudonymisation key for ``links.value``.
    label_map : mapping, optional
        Flag label to ``fraud``/``benign``; defaults to :data:`loaders.validate.DEFAULT_LABEL_MAP`.
    known_user_ids : Index, optional
        Users already in the store: flags may name them even if this load does not.
    progress : callable, optional
        Called with a short message before each step.

    Raises
    ------
    DataError
        On the first bad value, naming the source, row, column, value and expectation.
    """
    raws = _read_raw(source, progress)
    canonical = empty_tables()
    parts: dict[str, pd.DataFrame] = {name: frame for name, frame in canonical}
    for name, raw in raws.items():
        if progress:
            progress(f"validating {name} ({len(raw.frame):,} rows)")
        if name == "users":
            parts[name] = validate_users(raw)
        elif name == "links":
            parts[name] = validate_links(raw, key=key)
        elif name == "relations":
            parts[name] = validate_relations(raw)
        else:
            parts[name] = validate_flags(raw, label_map=label_map)
    tables = Tables(**parts, sources={n: r.source for n, r in raws.items()})
    if "flags" in raws and len(tables.flags):
        _check_flag_users(tables, raws["flags"], known_user_ids)
    return tables


def load(
    source: Source,
    sink: TableSink,
    *,
    key: bytes,
    label_map: Mapping[str, str] | None = None,
    progress: Progress | None = None,
) -> LoadReport:
    """Read, validate and pseudonymise ``source``, then write it into ``sink``.

    Loading the same rows twice adds nothing; new rows add to the graph.

    Returns
    -------
    LoadReport
        Rows read, added, already present and rejected, per table.
    """
    tables = read_tables(source, key=key, label_map=label_map, known_user_ids=sink.known_user_ids(), progress=progress)
    if progress:
        progress("writing to the store")
    counts = sink.write_tables(tables)
    report = LoadReport(sources=dict(tables.sources), user_ids=tables.all_user_ids())
    for name in tables.sources:
        report.read[name] = len(getattr(tables, name))
        report.added[name] = counts[name].added
        report.unchanged[name] = counts[name].unchanged
        report.rejected[name] = 0
    report.check()
    return report


def _read_raw(source: Source, progress: Progress | None) -> dict[str, RawTable]:
    raws: dict[str, RawTable] = {}
    if isinstance(source, (str, Path)):
        for name, path in find_tables(source).items():
            if progress:
                progress(f"reading {Path(path).name}")
            raws[name] = read_table(name, path)
        return raws
    unknown = sorted(set(source) - set(TABLE_NAMES))
    if unknown:
        raise DataError(f"unknown table name(s) {', '.join(unknown)}; expected any of {', '.join(TABLE_NAMES)}")
    for name, item in source.items():
        if isinstance(item, pd.DataFrame):
            raws[name] = read_frame(name, item)
        else:
            if progress:
                progress(f"reading {Path(item).name}")
            raws[name] = read_table(name, item)
    if not raws:
        raise DataError("no input table given; expected any of " + ", ".join(TABLE_NAMES))
    return raws


def _check_flag_users(tables: Tables, raw: RawTable, known: pd.Index | None) -> None:
    others = pd.concat(
        [tables.users["user_id"], tables.links["user_id"], tables.relations["src"], tables.relations["dst"]],
        ignore_index=True,
    )
    pool = pd.Index(others.unique())
    if known is not None and len(known):
        pool = pool.append(pd.Index(known))
    unknown = ~tables.flags["user_id"].isin(pool)
    if bool(unknown.any()):
        pos = int(unknown.to_numpy().nonzero()[0][0])
        raise DataError(
            source=raw.source,
            row=pos + 1,
            column="user_id",
            value=tables.flags["user_id"].iloc[pos],
            expected="a user who appears in users, links or relations (this load or the store)",
        )
