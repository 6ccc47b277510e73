"""The first load of an empty Neo4j database, through ``neo4j-admin database import full``.

An online load merges rows in transactions (:mod:`graph.store.neo4j.writes`); the admin tool
instead writes the store files directly, from CSV files, with the server stopped: an order of
magnitude faster for the first millions of rows, and only possible into an empty database.
This module holds what does not need the server process: the CSV files (the same nodes,
relationships and properties as an online load of the same tables), the tool's command line,
and the check that a database is empty. Stopping and starting the server around the import is
the application's (:func:`socialrisk.neo4j_server.bulk_import`).

The metadata node is imported with ``bulk_import`` set; :meth:`Neo4jStore.finish_bulk_import`
removes it once the constraints exist. Until then the store refuses to read the database
(:data:`BULK_PENDING`), so an import stopped half-way is never served as a graph.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute  # noqa: F401 - pa.compute
import pyarrow.csv as pacsv

from graph.store.merge import merge_table
from graph.store.neo4j.writes import (
    _INTERNAL_REL,
    FORMAT_VERSION,
    IDENTIFIER_LABELS,
    RESERVED_USER_PROPERTIES,
)
from loaders.errors import StoreError
from loaders.load import WriteCounts
from loaders.schema import TABLE_NAMES, Tables, is_in

__all__ = ["BULK_PENDING", "ImportFiles", "BulkSink", "write_import_files", "import_arguments", "DATABASE_CONTENTS"]

#: The metadata property an unfinished bulk import leaves (its start time, ISO 8601).
BULK_PENDING = "bulk_import"
#: What the database holds: nodes, and whether the metadata node says a bulk import is unfinished.
DATABASE_CONTENTS = """
CALL () { MATCH (n) RETURN count(n) AS nodes }
CALL () { OPTIONAL MATCH (m:SocialRiskMeta {id: 'meta'}) RETURN m.bulk_import AS pending }
RETURN nodes, pending
"""
#: Ends a bulk import: the constraints exist, the graph may be served.
FINISH_BULK = "MATCH (m:SocialRiskMeta {id: 'meta'}) REMOVE m.bulk_import RETURN count(m) AS done"


@dataclass
class ImportFiles:
    """The CSV files of one import and what they hold.

    Attributes
    ----------
    directory : Path
    nodes : list of (label, path)
        ``--nodes`` groups (the label is empty where the file carries a ``:LABEL`` column).
    relationships : list of (type, path)
        ``--relationships`` groups.
    multiline : bool
        Some text value holds a line break (the tool must then parse fields across lines).
    counts : dict
        Rows added per table, as :meth:`~graph.store.base.GraphStore.write_tables` counts them.
    rows : int
        Nodes and relationships written.
    """

    directory: Path
    nodes: list[tuple[str, Path]] = field(default_factory=list)
    relationships: list[tuple[str, Path]] = field(default_factory=list)
    multiline: bool = False
    counts: dict[str, WriteCounts] = field(default_factory=dict)
    rows: int = 0
    progress: Callable[[str], None] | None = field(default=None, repr=False, compare=False)


def _text(values: Any) -> pa.Array:
    """Text, with None, NaN and pd.NA as missing (no property)."""
    return pa.array(np.asarray(values, dtype=object), type=pa.string(), from_pandas=True)


def _datetimes(series: pd.Series) -> pa.Array:
    """Times as ISO 8601 in UTC with milliseconds (``2026-01-05T10:00:00.000Z``), as
    ``datetime.fromepochmillis`` stores them. Arrow's cast of a timestamp to text, with the
    ``T`` put in, is three times faster than its strftime (millions of values per load)."""
    values = pd.to_datetime(series, utc=True)
    missing = values.isna().to_numpy()
    ns = values.to_numpy(dtype="datetime64[ns]").view(np.int64)
    ms = pa.array(ns // 1_000_000, type=pa.int64(), mask=missing).cast(pa.timestamp("ms"))
    text = pa.compute.replace_substring(ms.cast(pa.string()), " ", "T", max_replacements=1)
    return pa.compute.binary_join_element_wise(text, pa.scalar("Z"), "")


def _floats(values: Any) -> pa.Array:
    arr = np.asarray(values, dtype=np.float64)
    return pa.array(arr, mask=np.isnan(arr), type=pa.float64())


def _breaks(array: pa.Array) -> bool:
    if not pa.types.is_string(array.type) or not len(array):
        return False
    return bool(pa.compute.any(pa.compute.match_substring_regex(array, "[\r\n]")).as_py() or False)


def _write(table: dict[str, pa.Array], path: Path, files: ImportFiles) -> None:
    frame = pa.table(table)
    files.multiline |= any(_breaks(frame[c].combine_chunks()) for c in frame.column_names)
    pacsv.write_csv(frame, path, write_options=pacsv.WriteOptions(quoting_style="all_valid"))
    files.rows += frame.num_rows
    if files.progress is not None:
        files.progress(f"wrote {path.name} ({frame.num_rows:,} rows)")


def _column_type(series: pd.Series) -> str:
    if pd.api.types.is_bool_dtype(series):
        return "boolean"
    if pd.api.types.is_integer_dtype(series):
        return "long"
    if pd.api.types.is_float_dtype(series):
        return "double"
    return "string"


def write_import_files(
    tables: Tables, directory: str | Path, *, meta: dict[str, Any], progress: Callable[[str], None] | None = None,
) -> ImportFiles:
    """Write the canonical tables as the admin tool's CSV files, with the properties an online
    load (:meth:`Neo4jStore.write_tables` into an empty database) gives each node and
    relationship.

    Parameters
    ----------
    tables : Tables
        Validated, pseudonymised tables (what :func:`loaders.load.load` passes a sink).
    directory : str or Path
        Created if missing; the files go there.
    meta : dict
        Store facts to put on the metadata node besides those of the load (the key
        fingerprint); ``counts``, ``snapshot``, column lists and :data:`BULK_PENDING` are set here.
    progress : callable, optional
        Called with a line of text as each file is written.

    Returns
    -------
    ImportFiles
    """
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    files = ImportFiles(directory=out, progress=progress)
    merged: dict[str, pd.DataFrame] = {}
    for name, new in tables:
        merged[name], files.counts[name] = merge_table(name, None, new)

    # Node ids of the import are integers, not the keys: the tool then maps ids by array index
    # instead of sorting and deduplicating millions of strings, and the files are smaller. The
    # keys (a user's id, an identifier's or a flag's key) are ordinary properties, as an online
    # load leaves them; each id space (User, Identifier, Flag, Meta) is numbered from 0.

    # users: the users table with its columns (numbers as doubles, text as text), then every
    # other user any table names, bare
    users = merged["users"]
    user_ids = users["user_id"].astype(str).to_numpy()
    user_columns: dict[str, str] = {}
    head: dict[str, pa.Array] = {":ID(User)": pa.array(np.arange(len(users), dtype=np.int64)), "id": _text(user_ids),
                                 "_seq:long": pa.array(np.arange(len(users), dtype=np.int64))}
    for col in users.columns:
        if col == "user_id":
            continue
        if col in RESERVED_USER_PROPERTIES or col.startswith("_"):
            raise StoreError(f"users column {col!r} clashes with a property socialrisk keeps on :User nodes; rename it")
        if pd.api.types.is_numeric_dtype(users[col]):
            user_columns[col] = "number"
            head[f"{col}:double"] = _floats(users[col].to_numpy(dtype=np.float64))
        else:
            user_columns[col] = "text"
            head[col] = _text([None if v is None or v is pd.NA else str(v) for v in users[col].astype(object).tolist()])
    _write(head, out / "users.csv", files)
    files.nodes.append(("User", out / "users.csv"))
    everyone = pd.Series(Tables(**merged).all_user_ids(), dtype=object)
    bare = everyone[~is_in(everyone, pd.Series(user_ids, dtype=object))].to_numpy(dtype=object)
    _write({":ID(User)": pa.array(np.arange(len(users), len(users) + len(bare), dtype=np.int64)), "id": _text(bare)},
           out / "users-bare.csv", files)
    files.nodes.append(("User", out / "users-bare.csv"))
    user_index = pd.Index(np.concatenate([user_ids, bare]).astype(object))

    def user_nid(values: pd.Series) -> pa.Array:
        return pa.array(user_index.get_indexer(values.astype(str).to_numpy()).astype(np.int64))

    # identifiers (their first link names their kind and pseudonym) and links
    links = merged["links"]
    kinds = links["kind"].astype(str)
    idents = links["ident"].astype(str)
    keys = kinds + ":" + idents
    ident_nid, ident_keys = pd.factorize(keys.to_numpy(), sort=False)  # numbered in order of first use
    first = ~keys.duplicated()
    labels = {k: "Identifier;" + IDENTIFIER_LABELS[k] if k in IDENTIFIER_LABELS else "Identifier" for k in pd.unique(kinds.to_numpy())}
    label = kinds[first].map(labels)
    _write({":ID(Identifier)": pa.array(np.arange(len(ident_keys), dtype=np.int64)), "key": _text(keys[first].to_numpy()),
            ":LABEL": _text(label.to_numpy()), "kind": _text(kinds[first].to_numpy()), "ident": _text(idents[first].to_numpy())},
           out / "identifiers.csv", files)
    files.nodes.append(("", out / "identifiers.csv"))
    _write({":START_ID(User)": user_nid(links["user_id"]), ":END_ID(Identifier)": pa.array(ident_nid.astype(np.int64)),
            "first_seen:datetime": _datetimes(links["first_seen"]), "last_seen:datetime": _datetimes(links["last_seen"]),
            "weight:double": _floats(links["weight"].to_numpy(dtype=np.float64)),
            "_seq:long": pa.array(np.arange(len(links), dtype=np.int64))}, out / "uses.csv", files)
    files.relationships.append(("USES", out / "uses.csv"))

    # relations, with their extra columns
    rel = merged["relations"]
    relation_columns: dict[str, str] = {}
    weight = rel["weight"].to_numpy(dtype=np.float64)
    body: dict[str, pa.Array] = {
        ":START_ID(User)": user_nid(rel["src"]), ":END_ID(User)": user_nid(rel["dst"]),
        "kind": _text(rel["kind"].astype(str).to_numpy()),
        # an online load keeps a missing weight as NaN, which the tool reads as Java spells it
        "weight:double": pa.array(weight, type=pa.float64()) if not np.isnan(weight).any()
        else _text(["NaN" if np.isnan(w) else repr(float(w)) for w in weight]),
        "ts:datetime": _datetimes(rel["ts"]),
        "_key:long": pa.array(rel["_key"].to_numpy(dtype=np.uint64).view(np.int64)),
        "_occ:long": pa.array(rel["_occ"].to_numpy(dtype=np.int64)), "_seq:long": pa.array(np.arange(len(rel), dtype=np.int64)),
    }
    for col in [c for c in rel.columns if c not in _INTERNAL_REL]:
        relation_columns[col] = "number" if pd.api.types.is_numeric_dtype(rel[col]) else "text"
        kind = _column_type(rel[col])
        values = rel[col]
        if kind == "string":
            body[col] = _text([None if v is None or v is pd.NA or (isinstance(v, float) and np.isnan(v)) else str(v) for v in values.astype(object)])
        elif kind == "double":
            body[f"{col}:double"] = _floats(values.to_numpy(dtype=np.float64))
        else:
            body[f"{col}:{kind}"] = pa.array(values.astype(object).where(values.notna(), None).tolist(),
                                             type=pa.int64() if kind == "long" else pa.bool_())
    _write(body, out / "relates.csv", files)
    files.relationships.append(("RELATES", out / "relates.csv"))

    # flags: a node each, keyed by content and occurrence, and the user's HAS_FLAG
    flags = merged["flags"]
    fkey = pd.Series(flags["_key"].to_numpy(dtype=np.uint64).view(np.int64)).astype(str) + ":" + flags["_occ"].astype(np.int64).astype(str).to_numpy()
    flag_nid = pa.array(np.arange(len(flags), dtype=np.int64))
    _write({":ID(Flag)": flag_nid, "key": _text(fkey.to_numpy()), "label": _text(flags["label"].astype(str).to_numpy()),
            "severity:double": pa.array(flags["severity"].to_numpy(dtype=np.float64), type=pa.float64()),
            "source": _text(flags["source"].fillna("").astype(str).to_numpy()),
            "_key:long": pa.array(flags["_key"].to_numpy(dtype=np.uint64).view(np.int64)),
            "_occ:long": pa.array(flags["_occ"].to_numpy(dtype=np.int64)),
            "_seq:long": pa.array(np.arange(len(flags), dtype=np.int64)), "ts:datetime": _datetimes(flags["ts"])},
           out / "flags.csv", files)
    files.nodes.append(("Flag", out / "flags.csv"))
    _write({":START_ID(User)": user_nid(flags["user_id"]), ":END_ID(Flag)": flag_nid}, out / "has-flag.csv", files)
    files.relationships.append(("HAS_FLAG", out / "has-flag.csv"))

    # the metadata node, as an online load leaves it, marked unfinished
    added = any(c.added for c in files.counts.values())
    props: dict[str, Any] = {**meta, "format_version": FORMAT_VERSION, "store_id": uuid.uuid4().hex,
                             "counts": json.dumps({n: len(merged[n]) for n in TABLE_NAMES}),
                             "user_columns": json.dumps(user_columns), "relation_columns": json.dumps(relation_columns),
                             "snapshot": 1 if added else 0, BULK_PENDING: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    if added:
        props["updated_at"] = props[BULK_PENDING]
    if files.counts["links"].added or files.counts["relations"].added:
        props["links_snapshot"] = 1
    if files.counts["users"].added or files.counts["links"].added or files.counts["relations"].added:
        props["graph_snapshot"] = 1
    columns: dict[str, pa.Array] = {":ID(Meta)": pa.array([0], type=pa.int64()), "id": pa.array(["meta"])}
    for k, v in props.items():
        typed = f"{k}:long" if isinstance(v, int) and not isinstance(v, bool) else k
        columns[typed] = pa.array([v])
    _write(columns, out / "meta.csv", files)
    files.nodes.append(("SocialRiskMeta", out / "meta.csv"))
    return files


def import_arguments(files: ImportFiles, *, database: str = "neo4j", report: str | Path | None = None) -> list[str]:
    """The arguments of ``neo4j-admin`` for ``files`` (after the tool's entry point): a full
    import over whatever the database's directory holds."""
    # the database first: --nodes and --relationships take any number of files, and would take
    # a name after them for one
    args = ["database", "import", "full", database, "--overwrite-destination=true", "--id-type=integer", "--array-delimiter=;",
            f"--report-file={report or files.directory / 'import.report'}"]
    if files.multiline:
        args.append("--multiline-fields=true")
    for label, path in files.nodes:
        args.append(f"--nodes={label}={path}" if label else f"--nodes={path}")
    for rel_type, path in files.relationships:
        args.append(f"--relationships={rel_type}={path}")
    return args


class BulkSink:
    """What :func:`loaders.load.load` writes into for a bulk first load: the tables become
    import files (:func:`write_import_files`), and ``importer`` imports them.

    Parameters
    ----------
    directory : Path
        Where the CSV files are written (removed by the caller once imported).
    meta : dict
        Store facts for the metadata node (the key fingerprint).
    importer : callable
        Called with the :class:`ImportFiles`; imports them (stopping and starting the server).
    progress : callable, optional
        Called with a line of text at each step.
    """

    def __init__(self, directory: Path, *, meta: dict[str, Any], importer: Callable[[ImportFiles], None],
                 progress: Callable[[str], None] | None = None) -> None:
        self.directory = Path(directory)
        self.meta = dict(meta)
        self.importer = importer
        self.progress = progress
        self.files: ImportFiles | None = None

    # an empty database holds nobody: no user is known, none was erased
    def known_user_ids(self) -> pd.Index:
        return pd.Index([], dtype="string")

    def known_among(self, user_ids: list[str]) -> set[str]:
        return set()

    def erased_user_ids(self) -> frozenset[str]:
        return frozenset()

    def write_tables(self, tables: Tables) -> dict[str, WriteCounts]:
        if self.progress:
            self.progress(f"writing the import files to {self.directory}")
        self.files = write_import_files(tables, self.directory, meta=self.meta, progress=self.progress)
        if self.progress:
            self.progress(f"importing {self.files.rows:,} nodes and relationships with neo4j-admin")
        self.importer(self.files)
        return self.files.counts
