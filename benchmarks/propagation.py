"""Propagation speed: socialrisk's personalized PageRank beside networkx, igraph and bare scipy.

On one generated graph (about 10M stored links and relations) and 1,000 seed users, in one run:

- socialrisk end to end from the embedded store: project to CSR, build the walk matrix and its
  transition matrix (as ``socialrisk propagate`` does), solve with ``personalized_pagerank``'s
  default method (Chebyshev steps: the generated walk is reversible, every relation kind walked
  both ways; power iteration otherwise)
  (tolerance ``--tol`` on the L1 change); cold, as the first propagation after a load (the
  projection built from the integer codes the load keeps), and warm, from the projection the
  store keeps for its current snapshot;
- ``networkx.pagerank`` with ``personalization`` (its ``tol`` is per node: ``tol / N``), and
  ``igraph.Graph.personalized_pagerank`` (PRPACK, solved to its own precision), each timed from
  the walk matrix's integer edge list (their graph build plus the solve; the store read and
  projection, which they would need too, are not counted for them);
- one bare float64 ``scipy.sparse`` product with the same matrix: the floor per iteration.

Also: propagation working memory (peak traced allocation of the solve, per stored edge), an
incremental new flag (median of ``--updates`` single-user flags, beside a full recompute, with
the measured L1 error), and one user's explanation (median over users with exposure).

    .venv/bin/python benchmarks/propagation.py --users 1000000

The generated data and workspace are kept in ``benchmarks/out/propagation/<users>`` for reuse.
Results go to ``benchmarks/results/propagation-<users>.json``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shutil
import statistics
import time
import tracemalloc
from pathlib import Path

import numpy as np
from _workspace import generated_workspace  # beside this script

ROOT = Path(__file__).resolve().parents[1]


def timed(fn):  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def workspace(users: int, seed: int) -> Path:
    return generated_workspace("propagation", users, seed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--seeds", type=int, default=1000)
    parser.add_argument("--tol", type=float, default=1e-8)
    parser.add_argument("--alpha", type=float, default=0.85)
    parser.add_argument("--updates", type=int, default=50)
    parser.add_argument("--explanations", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workspace", type=Path, help="An existing embedded workspace to use instead of generating one.")
    parser.add_argument("--skip-networkx", action="store_true", help="Leave networkx out (it takes minutes).")
    args = parser.parse_args()

    import scipy.sparse as sp

    from graph import GraphConfig
    from graph.explain import ExplainContext
    from graph.projection import encode, walk_matrix, walk_transition
    from graph.propagation import personalized_pagerank
    from graph.propagation.push import add_seed, push_state
    from graph.store import EmbeddedStore
    from graph.store.base import wait_for_kept_projection

    ws = args.workspace or workspace(args.users, args.seed)
    out: dict[str, object] = {"users": args.users, "seeds": args.seeds, "tol": args.tol, "alpha": args.alpha}

    # -- socialrisk, end to end from the store ----------------------------------------------------
    gc.collect()
    tables, read_s = timed(lambda: EmbeddedStore(ws).read_tables())
    stored_edges = len(tables.links) + len(tables.relations)
    # what a load does once: the tables as integer codes (kept in the workspace)
    _, encode_s = timed(lambda: encode(tables))
    del tables  # a propagation does not hold the tables: neither do the timed runs (read again for the explanations)
    gc.collect()
    EmbeddedStore(ws).encoded()  # a workspace loaded by an older version gets its codes here, once
    cache = ws / "cache"

    def cold_run():  # type: ignore[no-untyped-def]
        # the first propagation after a load: no projection kept, only the load's integer codes
        # (the store keeps the projection it makes on a thread beside the solve: let the last
        # one finish before clearing, untimed)
        wait_for_kept_projection(cache)
        for old in cache.glob("projection-*"):
            shutil.rmtree(old) if old.is_dir() else old.unlink()
        projection, project_s = timed(lambda: EmbeddedStore(ws).projection(GraphConfig()))
        # the walk matrix and its transition, as `socialrisk propagate` builds them
        (W, transition), walk_s = timed(lambda: (walk_matrix(projection), walk_transition(projection)))
        return projection, W, transition, project_s, walk_s

    projection, W, transition, _, _ = cold_run()  # the first call of a process also loads the compiled kernels
    n = W.shape[0]
    rng = np.random.default_rng(args.seed)
    seed_nodes = rng.choice(projection.n_users, args.seeds, replace=False)
    s = np.zeros(n)
    s[seed_nodes] = 1.0
    tracemalloc.start()
    result, solve_s = timed(lambda: personalized_pagerank(W, s, alpha=args.alpha, tol=args.tol, transition=walk_transition(projection)))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    ours = result.scores
    cold_runs = []
    for _ in range(3):  # median of three: single runs on two shared cores move by tens of percent
        del projection, W, transition
        gc.collect()
        projection, W, transition, project_s, walk_s = cold_run()
        result, solve_s = timed(lambda: personalized_pagerank(W, s, alpha=args.alpha, tol=args.tol, transition=transition))
        cold_runs.append((project_s + walk_s + solve_s, project_s, walk_s, solve_s))
    cold, project_s, walk_s, solve_s = sorted(cold_runs)[1]
    # warm: the store keeps the projection of its current snapshot (embedded: workspace/cache)
    wait_for_kept_projection(cache)
    warm_runs = []
    for _ in range(3):
        warm_projection, warm_read_s = timed(lambda: EmbeddedStore(ws).projection(GraphConfig()))
        (W2, T2), warm_walk_s = timed(lambda: (walk_matrix(warm_projection), walk_transition(warm_projection)))
        _, warm_solve_s = timed(lambda: personalized_pagerank(W2, s, alpha=args.alpha, tol=args.tol, transition=T2))
        warm_runs.append((warm_read_s + warm_walk_s + warm_solve_s, warm_read_s, warm_walk_s, warm_solve_s))
    end_to_end, warm_read_s, warm_walk_s, warm_solve_s = sorted(warm_runs)[1]
    del W2, T2, warm_projection
    print(f"{stored_edges:,} stored edges; walk matrix {n:,} nodes, {W.nnz:,} entries", flush=True)
    print(
        f"socialrisk cold (first propagation after a load): project from the store's integer codes {project_s:.2f} s "
        f"+ walk and transition matrices {walk_s:.2f} s + solve {solve_s:.2f} s ({result.n_iter} iterations) = {cold:.2f} s (median of 3: "
        f"{', '.join(f'{c[0]:.2f}' for c in cold_runs)}); the codes are made once at load ({encode_s:.2f} s, after "
        f"reading the tables in {read_s:.2f} s)",
        flush=True,
    )
    print(
        f"socialrisk warm (the store's kept projection): {warm_read_s:.2f} + {warm_walk_s:.2f} + {warm_solve_s:.2f} = "
        f"{end_to_end:.2f} s (median of 3: {', '.join(f'{w[0]:.2f}' for w in warm_runs)})",
        flush=True,
    )

    # -- bare scipy SpMV on the same matrix, beside the solve's iterations ---------------------
    transition = walk_transition(projection)  # the solve's own (Chebyshev steps on this walk)
    PT = transition[0]
    x = ours.copy()  # the vector the iterations multiply: same values, same costs
    spmv, iters = [], []
    for _ in range(5):  # interleaved, so that both see the same machine
        for _ in range(20):
            _, t = timed(lambda: PT @ x)
            spmv.append(t)
        r, t = timed(lambda: personalized_pagerank(W, s, alpha=args.alpha, tol=args.tol, transition=transition))
        iters.append(t / r.n_iter)
    spmv_s = statistics.median(spmv)
    per_iter = statistics.median(iters)
    print(
        f"bare SpMV {spmv_s * 1e3:.2f} ms; socialrisk per iteration {per_iter * 1e3:.2f} ms ({per_iter / spmv_s:.2f}x; "
        "the solve's whole time over its matrix products, the transition matrix given)",
        flush=True,
    )

    # -- igraph -----------------------------------------------------------------------------
    import igraph as ig

    coo = W.tocoo()
    edges = np.column_stack([coo.row, coo.col]).astype(np.int64)

    def run_igraph():  # type: ignore[no-untyped-def]
        g = ig.Graph(n=n, edges=edges, directed=True)
        g.es["weight"] = coo.data
        return np.asarray(g.personalized_pagerank(reset_vertices=seed_nodes.tolist(), weights="weight", directed=True, damping=args.alpha))

    ig_runs = []
    for _ in range(3):  # median of three, as for socialrisk
        ig_scores, t = timed(run_igraph)
        ig_runs.append(t)
    ig_s = statistics.median(ig_runs)
    print(
        f"igraph: {ig_s:.2f} s (median of {', '.join(f'{t:.2f}' for t in ig_runs)}); L1 difference from socialrisk "
        f"{np.abs(ig_scores - ours).sum():.2e}",
        flush=True,
    )
    del ig_scores
    gc.collect()

    # -- networkx ---------------------------------------------------------------------------
    nx_s = None
    nx_diff = None
    if not args.skip_networkx:
        import networkx as nx

        def run_networkx():  # type: ignore[no-untyped-def]
            G = nx.from_scipy_sparse_array(W, create_using=nx.DiGraph)
            return nx.pagerank(G, alpha=args.alpha, personalization={int(v): 1.0 for v in seed_nodes}, tol=args.tol / n, weight="weight", max_iter=1000)

        nx_scores, nx_s = timed(run_networkx)
        nx_vec = np.zeros(n)
        nx_vec[np.fromiter(nx_scores.keys(), dtype=np.int64)] = np.fromiter(nx_scores.values(), dtype=np.float64)
        nx_diff = float(np.abs(nx_vec - ours).sum())
        print(f"networkx: {nx_s:.1f} s; L1 difference from socialrisk {nx_diff:.2e}", flush=True)
        del nx_scores, nx_vec
        gc.collect()

    # -- incremental new flag -----------------------------------------------------------------
    state, state_s = timed(lambda: push_state(W, s, alpha=args.alpha, tol=args.tol * 1e-2))
    full = []
    for _ in range(3):
        _, t = timed(lambda: personalized_pagerank(W, state.seeds, alpha=args.alpha, tol=args.tol, dangling="self"))
        full.append(t)
    full_s = statistics.median(full)
    candidates = np.setdiff1d(np.arange(projection.n_users), seed_nodes)
    new_flags = rng.choice(candidates, args.updates, replace=False)
    times, moved = [], []
    for u in new_flags.tolist():
        up, t = timed(lambda u=u: add_seed(state, u, 1.0))
        times.append(t)
        moved.append(len(up.nodes))
    exact = personalized_pagerank(W, state.seeds, alpha=args.alpha, tol=1e-13, max_iter=2000, dangling="self").scores * state.seeds.sum()
    err = float(np.abs(state.p - exact).sum() / state.seeds.sum())
    err_max = float(np.abs(state.p - exact).max() / state.seeds.sum())
    scale_max = float(exact.max() / state.seeds.sum())
    inc_s = statistics.median(times)
    print(
        f"incremental flag: median {inc_s * 1e3:.2f} ms (max {max(times) * 1e3:.1f}), {statistics.median(moved):.0f} users moved; "
        f"full recompute {full_s:.2f} s ({full_s / inc_s:.0f}x); L1 error after {args.updates} flags {err:.2e} "
        f"(bound {state.error_bound / state.seeds.sum():.2e}); largest error at one node {err_max:.1e} (largest score {scale_max:.1e})",
        flush=True,
    )

    # -- explanation ----------------------------------------------------------------------------
    fraud = np.zeros(projection.n_users)
    fraud[seed_nodes] = 1.0
    tables = EmbeddedStore(ws).read_tables()
    context, context_s = timed(lambda: ExplainContext(tables, projection, fraud, alpha=args.alpha))
    exposed = np.flatnonzero(ours[: projection.n_users] > 0)
    exposed = np.setdiff1d(exposed, seed_nodes)
    users = rng.choice(exposed, min(args.explanations, len(exposed)), replace=False)
    ex_times, ex_sentences = [], []
    for u in users.tolist():
        e, t = timed(lambda u=u: context.explain(str(projection.user_ids[u]), top=5))
        ex_times.append(t)
        ex_sentences.extend(e.sentences()[:1])
    ex_s = statistics.median(ex_times)
    print(f"explanation: median {ex_s * 1e3:.1f} ms (max {max(ex_times) * 1e3:.1f}); context built once in {context_s:.2f} s", flush=True)
    print(f"  e.g. {ex_sentences[0] if ex_sentences else '-'}")

    out.update(
        {
            "stored_edges": stored_edges,
            "walk_nodes": n,
            "walk_entries": int(W.nnz),
            "socialrisk": {
                "read_tables_s": round(read_s, 3),
                "encode_at_load_s": round(encode_s, 3),
                "project_s": round(project_s, 3),
                "walk_s": round(walk_s, 3),
                "solve_s": round(solve_s, 3),
                "iterations": result.n_iter,
                "end_to_end_cold_s": round(cold, 3),
                "end_to_end_cold_runs_s": [round(c[0], 3) for c in cold_runs],
                "cached_projection_read_s": round(warm_read_s, 3),
                "end_to_end_s": round(end_to_end, 3),
                "end_to_end_runs_s": [round(w[0], 3) for w in warm_runs],
                "per_iteration_ms": round(per_iter * 1e3, 3),
                "working_memory_bytes": int(peak),
                "working_memory_bytes_per_stored_edge": round(peak / stored_edges, 2),
            },
            "bare_spmv_ms": round(spmv_s * 1e3, 3),
            "per_iteration_vs_spmv": round(per_iter / spmv_s, 3),
            "igraph": {"s": round(ig_s, 3), "runs_s": [round(t, 3) for t in ig_runs], "speedup": round(ig_s / end_to_end, 2), "speedup_cold": round(ig_s / cold, 2)},
            "networkx": None
            if nx_s is None
            else {"s": round(nx_s, 1), "speedup": round(nx_s / end_to_end, 1), "speedup_cold": round(nx_s / cold, 1), "l1_diff": nx_diff},
            "incremental": {
                "median_ms": round(inc_s * 1e3, 3),
                "max_ms": round(max(times) * 1e3, 3),
                "full_recompute_s": round(full_s, 3),
                "speedup": round(full_s / inc_s),
                "l1_error": err,
                "max_node_error": err_max,
                "max_score": scale_max,
                "l1_error_bound": state.error_bound / state.seeds.sum(),
                "median_users_moved": statistics.median(moved),
                "state_build_s": round(state_s, 2),
            },
            "explanation": {"median_ms": round(ex_s * 1e3, 2), "max_ms": round(max(ex_times) * 1e3, 2), "context_s": round(context_s, 2)},
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
            "date": time.strftime("%Y-%m-%d"),
        }
    )
    path = ROOT / "benchmarks" / "results" / f"propagation-{args.users}.json"
    path.write_text(json.dumps(out, indent=2))
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
