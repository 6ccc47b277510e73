"""socialrisk's personalized PageRank beside OpenGDS's ``gds.pageRank.stream`` with
``sourceNodes``, on the same graph in the same Neo4j server.

Both run on the unweighted, undirected graph of users and identifiers (USES and RELATES), from
the same 1,000 seed users, with damping 0.85 and the same tolerance. socialrisk's time is end
to end from the store: stream the graph out of Neo4j, build the CSR matrix, iterate. GDS's time
is its in-memory projection (``gds.graph.project``) plus the streamed algorithm.

Needs a server started with OpenGDS (``SOCIALRISK_NEO4J_GDS=1 socialrisk neo4j start``) and
``SOCIALRISK_NEO4J_PASSWORD`` / ``SOCIALRISK_NEO4J_PORT``. The database is emptied first.

    SOCIALRISK_NEO4J_GDS=1 .venv/bin/python benchmarks/gds_peer.py --users 120000

``benchmarks/neo4j_scale.py`` measures the same comparison with the store's integer read of the graph
(``Neo4jStore.stored_graph``) after a bulk load, beside the other Neo4j figures.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from graph import GraphConfig, project
from graph.propagation import personalized_pagerank
from loaders import load
from loaders.synthetic import generate
from socialrisk.workflow import open_neo4j

from _gds import gds_pagerank  # beside this script

ROOT = Path(__file__).resolve().parents[1]
KEY = b"benchmark-key-not-secret-0123456789"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=120_000)
    parser.add_argument("--seeds", type=int, default=1000)
    parser.add_argument("--tol", type=float, default=1e-7)
    parser.add_argument("--max-iter", type=int, default=100)
    args = parser.parse_args()

    frames = generate(n_users=args.users, seed=0)
    frames.pop("truth")
    store = open_neo4j()
    store.clear()
    load(frames, store, key=KEY)
    rng = np.random.default_rng(0)
    seeds = rng.choice(frames["users"]["user_id"].to_numpy(), size=args.seeds, replace=False).tolist()
    run = store._driver.execute_query

    # socialrisk: from the store to scores
    t0 = time.perf_counter()
    store._tables = None
    tables = store.read_tables()
    p = project(tables, GraphConfig(hub_max_degree=None))
    # the same graph as GDS's: every identifier, including those used by one user (socialrisk's
    # own projection drops them because they link nobody)
    codes, keys = pd.factorize(tables.links["kind"].astype(str) + ":" + tables.links["ident"].astype(str))
    n, m = p.n_users, len(keys)
    rows = p.index_of(tables.links["user_id"].to_numpy())
    inc = sp.csr_matrix((np.ones(len(codes)), (rows, codes)), shape=(n, m))
    inc.data[:] = 1.0
    rel = ((p.relations_walk + p.relations_walk.T + p.relations_neg + p.relations_neg.T) > 0).astype(np.float64)
    A = sp.csr_matrix(sp.bmat([[rel, inc], [inc.T, None]]))
    t_matrix = time.perf_counter() - t0
    s = np.zeros(n + m)
    s[p.index_of(seeds)] = 1.0
    t1 = time.perf_counter()
    ours = personalized_pagerank(A, s, alpha=0.85, tol=args.tol, max_iter=args.max_iter)
    t_ppr = time.perf_counter() - t1
    ours_total = time.perf_counter() - t0

    # GDS: project into its in-memory graph, then stream PageRank from the same seeds
    gds = gds_pagerank(run, seeds, tol=args.tol, max_iter=args.max_iter)
    gds_total, t_gds_pr = gds.pop("_total"), gds.pop("_pagerank")
    store.clear()
    store.close()

    out = {
        "users": args.users,
        "nodes": n + m,
        "undirected_edges": int(A.nnz // 2),
        "gds_graph": gds["graph"],
        "seeds": args.seeds,
        "tolerance": args.tol,
        "socialrisk": {
            "stream_and_matrix_s": round(t_matrix, 2),
            "ppr_s": round(t_ppr, 3),
            "ppr_iterations": ours.n_iter,
            "converged": ours.converged,
            "total_s": round(ours_total, 2),
        },
        "gds": {k: v for k, v in gds.items() if k != "graph"},
        "ratio_total_gds_over_socialrisk": round(gds_total / ours_total, 2),
        "ratio_algorithm_gds_over_socialrisk": round(t_gds_pr / t_ppr, 1),
        "date": time.strftime("%Y-%m-%d"),
    }
    path = ROOT / "benchmarks" / "results" / f"gds-peer-{args.users}.json"
    path.write_text(json.dumps(out, indent=2))
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
