"""Neo4j store throughput: online load, projection into CSR, and write-back of scores.

Generates a population with at least 1M relationships (USES + RELATES + HAS_FLAG), loads it
into an empty Neo4j database through the store (batched UNWIND/MERGE in managed transactions),
streams it back into the CSR projection, and writes the scores back onto the :User nodes. The
embedded store's figures are measured beside it in the same run.

Needs a running server (``socialrisk neo4j start``) and ``SOCIALRISK_NEO4J_PASSWORD``
(``SOCIALRISK_NEO4J_PORT`` if not 7687). The database is emptied first.

    .venv/bin/python benchmarks/neo4j_store.py --users 120000
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

from graph import GraphConfig, project
from graph.store import EmbeddedStore
from loaders import load
from loaders.synthetic import generate
from scoring import score_tables
from socialrisk.workflow import open_neo4j

ROOT = Path(__file__).resolve().parents[1]
KEY = b"benchmark-key-not-secret-0123456789"


def timed(fn):  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=120_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=5, help="Projection runs; the median is reported.")
    parser.add_argument("--keep", action="store_true", help="Leave the loaded graph in Neo4j.")
    args = parser.parse_args()

    frames = generate(n_users=args.users, seed=args.seed)
    frames.pop("truth")
    n_links, n_rel, n_flags = len(frames["links"]), len(frames["relations"]), len(frames["flags"])
    relationships = n_links + n_rel + n_flags
    print(f"{args.users:,} users: {n_links:,} links, {n_rel:,} relations, {n_flags:,} flags = {relationships:,} relationships", flush=True)

    store = open_neo4j()
    store.clear()
    _, load_s = timed(lambda: load(frames, store, key=KEY))
    print(f"neo4j load: {load_s:.1f} s, {relationships / load_s:,.0f} relationships/s", flush=True)
    tables, read_s = timed(lambda: store.read_tables())  # warm-up: the server is still checkpointing the load
    proj_runs = []
    for _ in range(args.repeat):
        store._tables = None  # the full stream again, inside the projection timing
        projection, proj_s = timed(lambda: project(store.read_tables(), GraphConfig()))
        proj_runs.append(proj_s)
    proj_s = statistics.median(proj_runs)
    edges = n_links + n_rel
    print(
        f"neo4j projection (stream + CSR): median {proj_s:.2f} s of {args.repeat} "
        f"({min(proj_runs):.2f}-{max(proj_runs):.2f}), {edges / proj_s:,.0f} edges/s",
        flush=True,
    )
    result = score_tables(tables, projection)
    scores = result.scores
    _, write_s = timed(lambda: store.write_result("scores", scores, meta={"model_version": "benchmark"}))
    print(f"neo4j write-back: {write_s:.1f} s, {len(scores) / write_s:,.0f} users/s", flush=True)
    if not args.keep:
        store.clear()
    store.close()

    with tempfile.TemporaryDirectory() as ws:
        emb = EmbeddedStore(ws)
        _, e_load = timed(lambda: load(frames, emb, key=KEY))
        emb_tables = EmbeddedStore(ws)
        _, e_proj = timed(lambda: project(emb_tables.read_tables(), GraphConfig()))
        _, e_write = timed(lambda: emb.write_result("scores", scores, meta={"model_version": "benchmark"}))
    print(f"embedded: load {e_load:.1f} s, projection {e_proj:.1f} s, write-back {e_write:.1f} s", flush=True)

    out = {
        "users": args.users,
        "relationships": relationships,
        "edges_projected": edges,
        "neo4j": {
            "load_s": round(load_s, 1),
            "load_relationships_per_s": round(relationships / load_s),
            "projection_s": round(proj_s, 2),
            "projection_runs_s": [round(x, 2) for x in proj_runs],
            "projection_edges_per_s": round(edges / proj_s),
            "projection_edges_per_s_range": [round(edges / max(proj_runs)), round(edges / min(proj_runs))],
            "write_back_s": round(write_s, 1),
            "write_back_users_per_s": round(len(scores) / write_s),
        },
        "embedded": {
            "load_s": round(e_load, 1),
            "load_relationships_per_s": round(relationships / e_load),
            "projection_s": round(e_proj, 1),
            "projection_edges_per_s": round(edges / e_proj),
            "write_back_s": round(e_write, 2),
        },
        "gds": "OpenGDS is not provisioned by socialrisk; no gds.pageRank.stream timing",
        "machine": {"python": platform.python_version(), "platform": platform.platform()},
        "date": time.strftime("%Y-%m-%d"),
    }
    path = ROOT / "benchmarks" / "results" / f"neo4j-{args.users}.json"
    path.write_text(json.dumps(out, indent=2))
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
