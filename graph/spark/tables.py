"""A store's canonical tables as Parquet paths, the way from any store into Spark."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator
from pathlib import Path

from graph.store import EmbeddedStore, GraphStore
from loaders.schema import TABLE_NAMES

__all__ = ["export_tables", "table_paths"]


def export_tables(store: GraphStore, directory: str | Path) -> dict[str, str]:
    """Write the store's canonical tables as Parquet files (``<directory>/<table>.parquet``):
    the way from any store (Neo4j among them) to Spark."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    out = {}
    for name, frame in store.read_tables():
        path = directory / f"{name}.parquet"
        frame.to_parquet(path, index=False)
        out[name] = str(path)
    return out


@contextlib.contextmanager
def table_paths(store: GraphStore) -> Iterator[dict[str, str]]:
    """The store's canonical tables as Parquet paths, for as long as the context lasts.

    The embedded store keeps them as Parquet already (the files its ``meta.json`` names); any
    other store is exported to a temporary directory first.
    """
    if isinstance(store, EmbeddedStore):
        meta = store.metadata()
        files = meta.get("files", {})
        paths = {}
        for name in TABLE_NAMES:
            path = store.workspace / files.get(name, f"graph/{name}.parquet")
            if path.exists():
                paths[name] = str(path)
        yield paths
        return
    with tempfile.TemporaryDirectory(prefix="socialrisk-spark-") as tmp:
        yield export_tables(store, tmp)
