"""Read the contract's tables from a data directory, files or DataFrames, as raw strings.

Every column is read as text, so that ids such as ``007`` keep their leading zeros and a bad
number can be reported with its row; :mod:`loaders.validate` converts the types.
"""

from __future__ import annotations

import csv
import gzip
import io
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from loaders.errors import DataError
from loaders.schema import TABLE_NAMES

__all__ = ["RawTable", "SUFFIXES", "find_tables", "read_table", "read_frame"]

SUFFIXES: tuple[str, ...] = (".parquet", ".csv.gz", ".csv")


@dataclass(frozen=True)
class RawTable:
    """One input table as read, before validation.

    Attributes
    ----------
    name : str
        ``users``, ``links``, ``relations`` or ``flags``.
    frame : DataFrame
        The rows; text columns as ``str`` with missing values as NA.
    source : str
        What to name in error messages: a file path or ``DataFrame 'links'``.
    """

    name: str
    frame: pd.DataFrame
    source: str


def find_tables(data_dir: str | Path) -> dict[str, Path]:
    """Find the contract's tables in a directory.

    Parameters
    ----------
    data_dir : str or Path
        A directory holding any of ``users``, ``links``, ``relations``, ``flags`` as
        ``.csv``, ``.csv.gz`` or ``.parquet``.

    Returns
    -------
    dict
        Table name to path, for the tables present.

    Raises
    ------
    DataError
        When the directory does not exist, holds none of the tables, or holds one table
        in two formats (which one to read would be a guess).
    """
    root = Path(data_dir)
    if not root.is_dir():
        raise DataError(f"{root}: not a directory; expected a data directory with users/links/relations/flags tables")
    found: dict[str, Path] = {}
    for name in TABLE_NAMES:
        candidates = [root / f"{name}{suffix}" for suffix in SUFFIXES if (root / f"{name}{suffix}").is_file()]
        if len(candidates) > 1:
            shown = ", ".join(p.name for p in candidates)
            raise DataError(f"{root}: table '{name}' is present in more than one format ({shown}); keep one")
        if candidates:
            found[name] = candidates[0]
    if not found:
        raise DataError(
            f"{root}: no input table found; expected at least one of "
            + ", ".join(f"{n}.csv" for n in TABLE_NAMES)
            + " (or .csv.gz / .parquet)"
        )
    return found


def read_table(name: str, path: str | Path) -> RawTable:
    """Read one table file (``.csv``, ``.csv.gz`` or ``.parquet``) with every column as text."""
    path = Path(path)
    suffix = "".join(path.suffixes[-2:]) if path.name.endswith(".csv.gz") else path.suffix
    try:
        if suffix == ".parquet":
            table = pq.read_table(path)
            frame = _arrow_to_text_frame(table)
        elif suffix in (".csv", ".csv.gz"):
            frame = _read_csv_text(path, gz=suffix == ".csv.gz")
        else:
            raise DataError(f"{path}: unsupported file type '{suffix}'; expected .csv, .csv.gz or .parquet")
    except DataError:
        raise
    except (pa.ArrowInvalid, OSError, EOFError, UnicodeDecodeError, csv.Error, ValueError) as exc:
        raise DataError(f"{path}: cannot be read as a {suffix} table: {_first_line(exc)}") from exc
    return RawTable(name=name, frame=frame, source=str(path))


def read_frame(name: str, frame: pd.DataFrame) -> RawTable:
    """Wrap a caller's DataFrame as a raw table.

    Text-like columns become pandas ``string``; numeric and datetime columns keep their dtype
    (validation accepts either text or native values).
    """
    if not isinstance(frame, pd.DataFrame):
        raise DataError(f"table '{name}': got {type(frame).__name__}, expected a pandas DataFrame")
    out = {}
    for column in frame.columns:
        series = frame[column].reset_index(drop=True)
        if pd.api.types.is_numeric_dtype(series) or pd.api.types.is_datetime64_any_dtype(series):
            pass
        elif isinstance(series.dtype, pd.StringDtype) or pd.api.types.infer_dtype(series, skipna=True) == "string":
            series = series.astype("string")
        else:
            missing = series.isna().to_numpy()
            text = [None if miss else (v if isinstance(v, str) else str(v)) for v, miss in zip(series.to_numpy(dtype=object), missing)]
            series = pd.Series(text, dtype="string")
        out[str(column).strip()] = series
    return RawTable(name=name, frame=pd.DataFrame(out, index=pd.RangeIndex(len(frame))), source=f"DataFrame '{name}'")


def _read_csv_text(path: Path, *, gz: bool) -> pd.DataFrame:
    opener = gzip.open if gz else open
    with opener(path, "rt", encoding="utf-8-sig", newline="") as handle:  # type: ignore[operator]
        header_line = handle.readline()
    if not header_line.strip():
        raise DataError(f"{path}: the file is empty; expected a header row naming the columns")
    header = next(csv.reader(io.StringIO(header_line)))
    header = [h.strip() for h in header]
    if len(set(header)) != len(header):
        dupes = sorted({h for h in header if header.count(h) > 1})
        raise DataError(f"{path}: the header names column(s) {', '.join(dupes)} more than once")
    table = pacsv.read_csv(
        path,
        read_options=pacsv.ReadOptions(column_names=header, skip_rows=1, block_size=1 << 24),
        parse_options=pacsv.ParseOptions(newlines_in_values=True),
        convert_options=pacsv.ConvertOptions(
            column_types={h: pa.string() for h in header},
            strings_can_be_null=True,
            null_values=[""],
            quoted_strings_can_be_null=True,
        ),
    )
    return _arrow_to_text_frame(table)


def _arrow_to_text_frame(table: pa.Table) -> pd.DataFrame:
    columns = {}
    for name, column in zip(table.column_names, table.columns):
        if pa.types.is_string(column.type) or pa.types.is_large_string(column.type) or pa.types.is_dictionary(column.type):
            series = column.to_pandas().astype("string")
        elif pa.types.is_timestamp(column.type):
            series = column.to_pandas()
            if getattr(series.dt, "tz", None) is None:
                series = series.dt.tz_localize("UTC")
        elif pa.types.is_integer(column.type) or pa.types.is_floating(column.type) or pa.types.is_boolean(column.type):
            series = column.to_pandas()
        else:
            series = column.to_pandas().astype(object)
            series = series.where(series.notna()).map(lambda v: None if v is None else str(v)).astype("string")
        columns[str(name).strip()] = series.reset_index(drop=True)
    return pd.DataFrame(columns, index=pd.RangeIndex(table.num_rows))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
