"""Read, validate, pseudonymise and write a data set into a graph store."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, Union

import numpy as np
import pandas as pd

from loaders.errors import DataError, ParameterError
from loaders.normalise import Normalisation
from loaders.read import RawTable, find_tables, read_frame, read_table
from loaders.schema import TABLE_NAMES, Tables, empty_tables, is_in
from loaders.validate import validate_flags, validate_links, validate_relations, validate_users

__all__ = ["Source", "TableSink", "WriteCounts", "LoadReport", "read_tables", "load"]

#: A data directory, or a mapping of table name to a file path or a DataFrame.
Source = Union[str, Path, Mapping[str, Union[str, Path, pd.DataFrame]]]
Progress = Callable[[str], None]
#: Which of the given user ids a store already holds.
KnownAmong = Callable[[list[str]], Collection[str]]


@dataclass(frozen=True)
class WriteCounts:
    """What a store did with one table's rows: ``rows = added + unchanged``."""

    added: int
    unchanged: int


class TableSink(Protocol):
    """What :func:`load` writes into; every ``GraphStore`` is one."""

    def known_user_ids(self) -> pd.Index: ...

    def known_among(self, user_ids: list[str]) -> set[str]: ...

    def erased_user_ids(self) -> frozenset[str]: ...

    def write_tables(self, tables: Tables) -> dict[str, WriteCounts]: ...


@dataclass
class LoadReport:
    """Row accounting of one load: for every table, read + derived = loaded + rejected."""

    read: dict[str, int] = field(default_factory=dict)
    #: Rows the load made from other rows (``ip_prefix`` links from IP addresses).
    derived: dict[str, int] = field(default_factory=dict)
    added: dict[str, int] = field(default_factory=dict)
    unchanged: dict[str, int] = field(default_factory=dict)
    rejected: dict[str, int] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)
    #: Every user that appears in the loaded tables.
    user_ids: pd.Index = field(default_factory=lambda: pd.Index([], dtype="string"))
    #: Rows set aside by ``on_error="quarantine"``: table, source, row, column, value, expected
    #: (a row failing several checks is listed once per check).
    rejects: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=["table", "source", "row", "column", "value", "expected"]))
    #: Where the rejects were written, if they were.
    rejects_path: str | None = None

    def loaded(self, table: str) -> int:
        return self.added.get(table, 0) + self.unchanged.get(table, 0)

    def check(self) -> None:
        """Raise if a row went missing between reading and writing."""
        for table, n in self.read.items():
            made = self.derived.get(table, 0)
            if n + made != self.loaded(table) + self.rejected.get(table, 0):
                also = f" (and {made} derived)" if made else ""
                raise DataError(
                    f"table '{table}': {n} rows read{also} but {self.loaded(table)} loaded and "
                    f"{self.rejected.get(table, 0)} rejected; rows must not be lost"
                )


def read_tables(
    source: Source,
    *,
    key: bytes,
    label_map: Mapping[str, str] | None = None,
    known_user_ids: pd.Index | None = None,
    progress: Progress | None = None,
    normalisation: Normalisation | None = None,
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
    normalisation : Normalisation, optional
        How identifier values are normalised before they are pseudonymised
        (:mod:`loaders.normalise`); default: :class:`~loaders.normalise.Normalisation()`.

    Raises
    ------
    DataError
        On the first bad value, naming the source, row, column, value and expectation.
    """
    tables, _, _, _ = _read_validated(
        source, key=key, label_map=label_map, known_user_ids=known_user_ids, progress=progress, on_error="fail", normalisation=normalisation
    )
    return tables


#: What ``load`` does with a bad row: stop with a clear error, or set it aside and go on.
ON_ERROR = ("fail", "quarantine")
REJECT_COLUMNS = ["table", "source", "row", "column", "value", "expected"]
#: The reason given for the rows of an erased user, which every load sets aside.
ERASED_USER = "erased user: not loaded again after 'socialrisk forget'"
#: The columns of each table that name a user.
USER_COLUMNS: dict[str, tuple[str, ...]] = {"users": ("user_id",), "links": ("user_id",), "relations": ("src", "dst"), "flags": ("user_id",)}


def _read_validated(
    source: Source,
    *,
    key: bytes,
    label_map: Mapping[str, str] | None,
    known_user_ids: pd.Index | KnownAmong | None,
    progress: Progress | None,
    on_error: str,
    erased: Collection[str] = frozenset(),
    normalisation: Normalisation | None = None,
) -> tuple[Tables, pd.DataFrame, dict[str, int], dict[str, int]]:
    """Tables, the rows set aside (``on_error="quarantine"``, and the rows of ``erased``
    users in either mode), the rows read per table and the rows derived per table."""
    if on_error not in ON_ERROR:
        raise ParameterError(f"The 'on_error' parameter must be one of {', '.join(ON_ERROR)}. Got {on_error!r} instead.")
    raws = _read_raw(source, progress)
    canonical = empty_tables()
    parts: dict[str, pd.DataFrame] = {name: frame for name, frame in canonical}
    rejects: list[dict[str, object]] = []
    rows: dict[str, np.ndarray] = {}
    for name, raw in raws.items():
        if progress:
            progress(f"validating {name} ({len(raw.frame):,} rows)")
        validator = {
            "users": validate_users,
            "links": lambda r: validate_links(r, key=key, normalisation=normalisation),
            "relations": validate_relations,
            "flags": lambda r: validate_flags(r, label_map=label_map),
        }[name]
        parts[name], rows[name] = _validate(raw, validator, on_error, rejects)
    tables = Tables(**parts, sources={n: r.source for n, r in raws.items()})
    if erased:
        tables = _drop_erased(tables, rows, erased, rejects)
    if "flags" in raws and len(tables.flags):
        while True:
            try:
                _check_flag_users(tables, raws["flags"], known_user_ids)
                break
            except DataError as exc:
                if on_error != "quarantine" or exc.positions is None:
                    raise
                keep = _set_aside(exc, raws["flags"].source, "flags", rows["flags"], len(tables.flags), rejects)
                rows["flags"] = rows["flags"][keep]
                tables = dataclasses.replace(tables, flags=tables.flags.loc[keep].reset_index(drop=True))
    frame = pd.DataFrame(rejects, columns=REJECT_COLUMNS)
    # a derived row carries the input row it comes from: the repeats of a row number
    derived = {n: _repeats(r) for n, r in rows.items()}
    return tables, frame, {n: len(r.frame) for n, r in raws.items()}, derived


def _validate(
    raw: RawTable, validator: Callable[[RawTable], pd.DataFrame], on_error: str, rejects: list[dict[str, object]]
) -> tuple[pd.DataFrame, np.ndarray]:
    """Validate, setting aside the rows of each failed check and validating the rest again
    (quarantine); the original row of every row kept."""
    rows = np.arange(len(raw.frame))
    current = raw
    while True:
        try:
            frame = validator(current)
        except DataError as exc:
            if on_error != "quarantine" or exc.positions is None:
                raise
            keep = _set_aside(exc, raw.source, raw.name, rows, len(current.frame), rejects)
            rows = rows[keep]
            current = RawTable(name=raw.name, frame=current.frame.loc[keep].reset_index(drop=True), source=raw.source)
            continue
        derived = np.asarray(frame.attrs.pop("derived", np.zeros(0, dtype=np.int64)), dtype=np.int64)
        return frame, np.concatenate([rows, rows[derived]])


def _drop_erased(tables: Tables, rows: dict[str, np.ndarray], erased: Collection[str], rejects: list[dict[str, object]]) -> Tables:
    """The tables without the rows that name an erased user (in any user column), each set
    aside with :data:`ERASED_USER` as its reason. Not an error: a source file may well still
    hold the user, and an erasure must hold whatever is loaded after it."""
    gone = pd.Index(list(erased), dtype="string")
    parts = {}
    for name, frame in tables:
        if name not in rows or not len(frame):
            parts[name] = frame
            continue
        hit = np.zeros(len(frame), dtype=bool)
        for column in USER_COLUMNS[name]:
            mine = frame[column].isin(gone).to_numpy(dtype=bool)
            for p in np.flatnonzero(mine).tolist():
                rejects.append({"table": name, "source": tables.sources[name], "row": int(rows[name][p]) + 1, "column": column,
                                "value": str(frame[column].iloc[p]), "expected": ERASED_USER})
            hit |= mine
        rows[name] = rows[name][~hit]
        parts[name] = frame.loc[~hit].reset_index(drop=True) if hit.any() else frame
    return dataclasses.replace(tables, **parts)


def _set_aside(exc: DataError, source: str, table: str, rows: np.ndarray, n: int, rejects: list[dict[str, object]]) -> np.ndarray:
    positions = np.asarray(exc.positions, dtype=np.int64)
    values = list(exc.values) if exc.values is not None else [None] * len(positions)
    for p, v in zip(positions.tolist(), values):
        rejects.append({
            "table": table, "source": source, "row": int(rows[p]) + 1, "column": exc.column,
            "value": None if v is None else str(v), "expected": exc.expected,
        })
    keep = np.ones(n, dtype=bool)
    keep[positions] = False
    return keep


def load(
    source: Source,
    sink: TableSink,
    *,
    key: bytes,
    label_map: Mapping[str, str] | None = None,
    progress: Progress | None = None,
    on_error: str = "fail",
    rejects_path: str | Path | None = None,
    normalisation: Normalisation | None = None,
) -> LoadReport:
    """Read, validate and pseudonymise ``source``, then write it into ``sink``.

    Loading the same rows twice adds nothing; new rows add to the graph.

    Rows that name a user the sink has erased (``sink.erased_user_ids()``, see
    ``GraphStore.forget_user``) are never loaded: in either mode they are set aside with the
    reason :data:`ERASED_USER` and counted as rejected, so ``rows read = loaded + rejected``
    still holds.

    Parameters
    ----------
    on_error : {"fail", "quarantine"}
        ``fail``: the first bad value stops the load with a :class:`DataError` and nothing is
        written. ``quarantine``: every bad row is set aside with the reason (source, row,
        column, value, expectation), the rest is loaded, and ``rows read = loaded +
        rejected`` holds per table. Errors about a whole file (missing column, unreadable
        file) still stop the load.
    rejects_path : path, optional
        CSV file to write the rows set aside to (only written when there are some).
        Identifier values in it are redacted, as in error messages.
    normalisation : Normalisation, optional
        How identifier values are normalised before pseudonymisation (see :func:`read_tables`).
        Record :meth:`~loaders.normalise.Normalisation.fingerprint` in the store
        (``GraphStore.bind_normalisation``) so that data normalised otherwise is never mixed in.

    Returns
    -------
    LoadReport
        Rows read, added, already present and rejected, per table.
    """
    tables, rejects, read, derived = _read_validated(
        source, key=key, label_map=label_map, known_user_ids=sink.known_among, progress=progress, on_error=on_error,
        erased=sink.erased_user_ids(), normalisation=normalisation,
    )
    if progress:
        progress("writing to the store")
    counts = sink.write_tables(tables)
    report = LoadReport(sources=dict(tables.sources), user_ids=tables.all_user_ids(), rejects=rejects)
    for name in tables.sources:
        report.read[name] = read[name]
        if derived.get(name):
            report.derived[name] = derived[name]
        report.added[name] = counts[name].added
        report.unchanged[name] = counts[name].unchanged
        report.rejected[name] = int(rejects.loc[rejects["table"] == name, "row"].nunique())
    if len(rejects) and rejects_path is not None:
        path = Path(rejects_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        rejects.to_csv(path, index=False)
        report.rejects_path = str(path)
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


def _repeats(rows: np.ndarray) -> int:
    """Rows that repeat an input row number (derived rows carry the row they come from)."""
    if len(rows) < 2 or bool((np.diff(rows) > 0).all()):
        return 0
    return int(len(rows) - len(np.unique(rows)))


def _check_flag_users(tables: Tables, raw: RawTable, known: pd.Index | KnownAmong | None) -> None:
    # table by table, and only for the flagged users not found yet: most are in the users table,
    # and a column of millions is scanned against the few left rather than hashed whole
    flagged = tables.flags["user_id"]
    unknown = ~is_in(flagged, tables.users["user_id"])
    for column in (tables.links["user_id"], tables.relations["src"], tables.relations["dst"]):
        if not bool(unknown.any()):
            break
        found = column[is_in(column, flagged[unknown])]
        unknown &= ~is_in(flagged, found)
    if known is not None and bool(unknown.any()):
        # only the flagged users this load does not name are looked up in the store
        outside = tables.flags.loc[unknown, "user_id"].astype(str).unique().tolist()
        held = known(outside) if callable(known) else set(outside) & set(pd.Index(known).astype(str))
        unknown &= ~tables.flags["user_id"].isin(list(held)).to_numpy()
    if bool(unknown.any()):
        positions = unknown.nonzero()[0]
        pos = int(positions[0])
        raise DataError(
            source=raw.source,
            row=pos + 1,
            column="user_id",
            value=tables.flags["user_id"].iloc[pos],
            expected="a user who appears in users, links or relations (this load or the store)",
            positions=positions,
            values=tables.flags["user_id"].iloc[positions].tolist(),
        )
