"""Neo4j at production size, side by side in one run: the bulk first load, an online load of
more rows after it, the read of the graph out of Neo4j (each way of reading it), and
personalized PageRank end to end from Neo4j against OpenGDS.

1. Generates a population (``loaders.synthetic.generate``) and bulk loads it into the empty
   database (``socialrisk load --store neo4j --bulk``: CSV files, ``neo4j-admin database import
   full``, restart, constraints). Wall time from the tables to a served graph.
2. Loads ``--online-rows`` more rows (links, relations and flags of a second population of
   the same id scheme, so many touch existing users) online, through the store.
3. Reads the graph out of Neo4j for a projection, each way in turn (``--repeat`` runs each, the
   median reported): the canonical tables (``read_tables`` then ``encode``, as before), the
   integer read by Cypher (:meth:`Neo4jStore.stored_graph` with ``packed_read=False``) in 1, 2
   and 4 parts, the same with the driver's Rust extension switched off, the packed read
   (``socialrisk.encodedEdges``, the server's procedure: what a store uses where the server has
   it) in 1, 2 and 4 parts, and the kept encoded graph (a second ``store.projection`` at the
   same snapshot).
4. Personalized PageRank from 1,000 seed users on the unweighted, undirected graph of users
   and identifiers: socialrisk end to end (read, matrix, iterate) against GDS's
   ``gds.graph.project`` + ``gds.pageRank.stream`` with ``sourceNodes`` on the same graph (GDS
   memory permitting).

Peak resident memory of the Neo4j JVM and of this process is sampled through each phase.

Needs a server of ``socialrisk neo4j start`` with OpenGDS (``SOCIALRISK_NEO4J_GDS=1``) and
``SOCIALRISK_NEO4J_PASSWORD`` / ``_PORT`` / ``_HOME``; the database is emptied (its data
directory is imported over).

    SOCIALRISK_NEO4J_GDS=1 flock /work/bench.lock .venv/bin/python benchmarks/neo4j_scale.py --users 120000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from graph import GraphConfig
from graph.projection import encode, project_encoded
from graph.propagation import personalized_pagerank
from graph.store.neo4j import encode_stored
from loaders import load
from loaders.synthetic import generate
from socialrisk import neo4j_server
from socialrisk.settings import Settings
from socialrisk.workflow import bulk_load_into, open_neo4j

from _gds import gds_pagerank  # beside this script

ROOT = Path(__file__).resolve().parents[1]
KEY = "benchmark-key-not-secret-0123456789"


def _rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


class Peaks:
    """Peak resident memory of the Neo4j JVM (found through its pid file, which a restart
    rewrites) and of this process, sampled every 0.1 s, per phase."""

    def __init__(self, server: neo4j_server.ServerSettings) -> None:
        self.server = server
        self.phase = "start"
        self.peaks: dict[str, dict[str, float]] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        while not self.stop.is_set():
            pid = neo4j_server.status(self.server)["pid"]
            now = {"neo4j_jvm_mb": _rss_mb(int(pid)) if pid else 0.0, "python_mb": _rss_mb(os.getpid())}
            peak = self.peaks.setdefault(self.phase, {"neo4j_jvm_mb": 0.0, "python_mb": 0.0})
            for k, v in now.items():
                peak[k] = max(peak[k], round(v))
            time.sleep(0.1)

    def __call__(self, phase: str) -> None:
        self.phase = phase


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def rust_extension(on: bool) -> None:
    """Switch the driver's Rust codec (neo4j-rust-ext) on or off in this process: the pure-Python
    packer and unpacker the driver falls back to without it."""
    from neo4j._codec.packstream import v1

    if not hasattr(rust_extension, "saved"):
        rust_extension.saved = (v1.Packer._pack, v1.Unpacker.unpack)  # type: ignore[attr-defined]
    if on:
        v1.Packer._pack, v1.Unpacker.unpack = rust_extension.saved  # type: ignore[attr-defined]
    else:
        v1.Packer._pack = lambda self, data, dehydration_hooks=None: self._py_pack(data, dehydration_hooks)
        v1.Unpacker.unpack = lambda self, hydration_hooks=None: self._unpack(hydration_hooks=hydration_hooks)


def more_rows(users: int, rows: int, *, seed: int) -> dict[str, Any]:
    """About ``rows`` rows of links, relations and flags from another population of the same id
    scheme (events about users already loaded, and some new ones)."""
    frames = generate(n_users=max(1000, rows // 10), seed=seed)
    frames.pop("truth")
    frames.pop("users")
    total = sum(len(f) for f in frames.values())
    share = min(1.0, rows / total)
    return {name: f.iloc[: int(round(len(f) * share))] for name, f in frames.items()}


def gds_matrix(stored: Any) -> tuple[sp.csr_matrix, np.ndarray, np.ndarray]:
    """The unweighted, undirected graph of users and identifiers (every identifier, as GDS
    projects it) from the integer read: the adjacency and the node ids of its rows."""
    users = stored.user_nid
    idents = np.unique(stored.link_ident)
    nodes = np.concatenate([np.sort(users), idents])
    order = np.argsort(nodes)
    pos = lambda nid: order[np.searchsorted(nodes[order], nid)]  # noqa: E731
    n = len(nodes)
    rows = np.concatenate([pos(stored.link_user), pos(stored.rel_src)])
    cols = np.concatenate([pos(stored.link_ident), pos(stored.rel_dst)])
    a = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, n))
    a = ((a + a.T) > 0).astype(np.float64).tocsr()
    return a, nodes, pos(np.sort(users))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=120_000)
    parser.add_argument("--online-rows", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3, help="Runs of each read; the median is reported.")
    parser.add_argument("--seeds", type=int, default=1000)
    parser.add_argument("--tol", type=float, default=1e-7)
    parser.add_argument("--max-iter", type=int, default=100)
    parser.add_argument("--no-gds", action="store_true", help="Leave OpenGDS out (a server without it).")
    parser.add_argument("--reads", default="all",
                        help="Comma-separated reads to measure (tables, integer, rust, packed, kept), or 'all'.")
    parser.add_argument("--reuse", action="store_true",
                        help="A probe: skip the loads and read the graph the database holds (results written to a -probe file).")
    args = parser.parse_args()
    wanted = {"tables", "integer", "rust", "packed", "kept"} if args.reads == "all" else set(args.reads.split(","))
    os.environ.setdefault("SOCIALRISK_PSEUDONYM_KEY", KEY)
    server = neo4j_server.server_settings()
    peaks = Peaks(server)
    out: dict[str, Any] = {"users": args.users, "load_average_before": os.getloadavg()}

    if args.reuse:
        store = open_neo4j()
        user_ids = store._read("MATCH (u:User) WHERE u._seq IS NOT NULL RETURN collect(u.id) AS ids")[0]["ids"]
        frames = {"users": pd.DataFrame({"user_id": sorted(user_ids)})}
    else:
        # 1. bulk first load
        peaks("generate")
        frames = generate(n_users=args.users, seed=0)
        frames.pop("truth")
        rows = {name: len(f) for name, f in frames.items()}
        print(f"{args.users:,} users: {rows} = {sum(rows.values()):,} rows", flush=True)
        with tempfile.TemporaryDirectory() as ws:
            if neo4j_server.status(server)["running"]:
                with open_neo4j() as store:
                    store.clear()  # an emptied database; the import writes over its files anyway
            peaks("bulk_load")
            report, bulk_s = timed(lambda: bulk_load_into(frames, Settings(), ws, progress=lambda m: print(f"  {time.strftime('%H:%M:%S')} {m}", flush=True)))
        out["bulk_load"] = {"rows": sum(rows.values()), "rows_by_table": rows, "wall_s": round(bulk_s, 1),
                            "rows_per_s": round(sum(rows.values()) / bulk_s), "added": report.added}
        print(f"bulk load: {bulk_s:.1f} s, {sum(rows.values()) / bulk_s:,.0f} rows/s", flush=True)

        # 2. online load of more rows after it
        extra = more_rows(args.users, args.online_rows, seed=1)
        n_extra = sum(len(f) for f in extra.values())
        store = open_neo4j()
        peaks("online_load")
        online, online_s = timed(lambda: load(extra, store, key=KEY.encode()))
        relationships = sum(online.added.values())
        out["online_load"] = {"rows": n_extra, "relationships_added": relationships, "wall_s": round(online_s, 1),
                              "rows_per_s": round(n_extra / online_s), "relationships_per_s": round(relationships / online_s),
                              "added": online.added, "unchanged": online.unchanged}
        print(f"online load of {n_extra:,} rows: {online_s:.1f} s, {n_extra / online_s:,.0f} rows/s", flush=True)

    # 3. reading the graph out
    config = GraphConfig()
    edges = int(store.metadata()["counts"]["links"] + store.metadata()["counts"]["relations"])
    reads: dict[str, Any] = {}

    def measure(name: str, fn: Callable[[], Any]) -> None:
        peaks(f"read:{name}")
        runs = [timed(fn)[1] for _ in range(args.repeat)]
        med = statistics.median(runs)
        reads[name] = {"median_s": round(med, 2), "runs_s": [round(r, 2) for r in runs], "edges_per_s": round(edges / med)}
        print(f"read {name}: median {med:.2f} s ({edges / med:,.0f} edges/s)", flush=True)

    def tables() -> Any:
        store._tables = None
        return project_encoded(encode(store.read_tables()), config)

    store.stored_graph()  # warm-up: the server's page cache after the load
    if not store.packed_read():
        raise SystemExit("the server has no socialrisk.encodedEdges procedure: start it with 'socialrisk neo4j start'")
    cypher = open_neo4j(packed_read=False)
    if "tables" in wanted:
        measure("tables_then_encode", tables)
    if "integer" in wanted:
        for parts in (1, 2, 4):
            measure(f"integer_read_{parts}_parts", lambda p=parts: project_encoded(encode_stored(cypher.stored_graph(parts=p)), config))
    if "rust" in wanted:
        rust_extension(False)
        measure("integer_read_2_parts_without_rust_extension", lambda: project_encoded(encode_stored(cypher.stored_graph(parts=2)), config))
        rust_extension(True)
    cypher.close()
    if "packed" in wanted:
        for parts in (1, 2, 4):
            measure(f"packed_read_{parts}_parts", lambda p=parts: project_encoded(encode_stored(store.stored_graph(parts=p)), config))
    if "kept" in wanted:
        with tempfile.TemporaryDirectory() as cache:
            kept = open_neo4j(cache_dir=cache)
            kept.projection(config)  # read once, kept
            kept.close()
            def kept_projection() -> Any:
                with open_neo4j(cache_dir=cache) as again:
                    return again.projection(config)

            measure("kept_at_same_snapshot", kept_projection)
    out["read"] = {"edges": edges, **reads}
    cold = [v["median_s"] for k, v in reads.items() if k.startswith(("integer_read", "packed_read")) and "without" not in k]
    if "tables_then_encode" in reads and cold:
        out["read"]["speedup_best_cold_over_tables"] = round(reads["tables_then_encode"]["median_s"] / min(cold), 2)

    # 4. PageRank end to end against GDS
    rng = np.random.default_rng(0)
    seeds = rng.choice(frames["users"]["user_id"].to_numpy(), size=args.seeds, replace=False).tolist()
    peaks("ppr:socialrisk")
    t0 = time.perf_counter()
    stored = store.stored_graph()
    a, nodes, user_rows = gds_matrix(stored)
    t_matrix = time.perf_counter() - t0
    s = np.zeros(a.shape[0])
    by_id = dict(zip(stored.user_id.tolist(), stored.user_nid.tolist()))
    order = np.argsort(nodes)
    s[order[np.searchsorted(nodes[order], np.array([by_id[u] for u in seeds]))]] = 1.0
    t1 = time.perf_counter()
    ours = personalized_pagerank(a, s, alpha=0.85, tol=args.tol, max_iter=args.max_iter)
    t_ppr = time.perf_counter() - t1
    ours_total = time.perf_counter() - t0
    out["pagerank"] = {
        "nodes": int(a.shape[0]), "undirected_edges": int(a.nnz // 2), "seeds": args.seeds, "tolerance": args.tol,
        "socialrisk": {"read_and_matrix_s": round(t_matrix, 2), "ppr_s": round(t_ppr, 3), "ppr_iterations": ours.n_iter,
                       "converged": ours.converged, "total_s": round(ours_total, 2)},
    }
    print(f"socialrisk PPR end to end: {ours_total:.2f} s", flush=True)
    if not args.no_gds:
        run = store._driver.execute_query
        peaks("ppr:gds")
        try:
            gds = gds_pagerank(run, seeds, tol=args.tol, max_iter=args.max_iter)
            gds_total = gds.pop("_total")
            gds.pop("_pagerank")
            out["pagerank"]["gds"] = gds
            out["pagerank"]["ratio_total_gds_over_socialrisk"] = round(gds_total / ours_total, 2)
            print(f"GDS end to end: {gds_total:.2f} s; ratio GDS/socialrisk {gds_total / ours_total:.2f}", flush=True)
        except Exception as exc:  # GDS out of memory at the larger sizes: recorded, not fatal
            out["pagerank"]["gds"] = {"error": f"{type(exc).__name__}: {str(exc)[:300]}"}
            print(f"GDS failed: {exc}", flush=True)
    store.close()
    peaks.stop.set()
    peaks.thread.join()
    out["peak_memory_mb"] = peaks.peaks
    out["conditions"] = {
        "neo4j_heap": server.heap, "neo4j_pagecache": server.pagecache, "load_average_after": os.getloadavg(),
        "cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
    }
    out["date"] = time.strftime("%Y-%m-%d")
    path = ROOT / "benchmarks" / "results" / f"neo4j-scale-{args.users}.json"
    if args.reuse:  # a probe is not a result
        path = ROOT / "benchmarks" / "out" / f"neo4j-scale-{args.users}-probe.json"
        path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2))
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
