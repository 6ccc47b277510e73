"""The spark engine beside the single-machine one, on the same generated graph.

Both engines solve what ``socialrisk propagate`` solves (per layer: global PageRank, PPR from the
fraud seeds, PPR from the benign seeds) from the same embedded workspace. Reported per engine:
wall time end to end, the iterations and the wall time per iteration; for Spark also the
shuffle bytes (read and written, summed over the stages of the loop from the application's
REST API ``/api/v1/applications/<id>/stages``), and an extrapolation to 10^9 edges on a cluster
whose assumptions are written into the result.

    .venv/bin/python benchmarks/spark.py --users 100000

The generated data and workspace are kept in ``benchmarks/out/spark/<users>`` for reuse.
Results go to ``benchmarks/results/spark-<users>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from _workspace import KEY, generated_workspace  # noqa: E402 - beside this script


def workspace(users: int, seed: int) -> Path:
    return generated_workspace("spark", users, seed)


def single_machine(ws: Path) -> dict[str, Any]:
    """``workflow.propagate`` end to end, and the same solves one by one for their iterations."""
    from graph.projection import walk_matrix
    from graph.propagation import personalized_pagerank, transition_transpose
    from graph.store import EmbeddedStore
    from scoring.features import flag_vectors
    from socialrisk import workflow
    from socialrisk.settings import Settings

    settings = Settings()
    store = EmbeddedStore(ws)
    store.projection(settings.graph)  # the projection is cached: time the warm path, as Spark re-reads its Parquet
    t0 = time.perf_counter()
    workflow.propagate(store, settings)
    total = time.perf_counter() - t0
    projection = store.projection(settings.graph)
    flags = flag_vectors(store.read_table("flags"), projection)
    n = projection.n_users
    solves = []
    entries = 0
    for name, links, relations in (("lnk", True, False), ("rel", False, True)):
        A = walk_matrix(projection, hub_exponent=settings.graph.hub_exponent, hub_exponents=settings.graph.hub_exponents, links=links, relations=relations)
        if not A.nnz:
            continue
        entries += int(A.nnz)
        transition = transition_transpose(A)
        for label, seeds in (("base", np.r_[np.ones(n), np.zeros(A.shape[0] - n)]), ("fraud", np.r_[flags.fraud, np.zeros(A.shape[0] - n)]),
                             ("benign", np.r_[flags.benign, np.zeros(A.shape[0] - n)])):
            t = time.perf_counter()
            r = personalized_pagerank(A, seeds, alpha=settings.scoring.alpha, tol=settings.scoring.tol, transition=transition)
            solves.append({"problem": f"{label}:{name}", "n_iter": r.n_iter, "seconds": time.perf_counter() - t})
    iterations = sum(s["n_iter"] for s in solves)
    return {
        "wall_seconds": total,
        "solves": solves,
        "walk_entries": entries,
        "users": n,
        "seconds_per_iteration": sum(s["seconds"] for s in solves) / iterations,
        "note": "each solve runs alone (one vector, both cores); seconds per iteration = solve time / its iterations, averaged over the six solves",
    }


def spark_engine_run(ws: Path, *, partitions: int, driver_memory: str, master: str) -> dict[str, Any]:
    from graph.spark.session import shuffle_volume, spark_session
    from graph.store import EmbeddedStore
    from socialrisk.settings import Settings
    from graph.spark.tables import table_paths
    from socialrisk.spark_engine import propagation_frame

    settings = Settings()
    spark = spark_session(
        master=master, app_name="socialrisk-benchmark", shuffle_partitions=partitions, driver_memory=driver_memory,
        conf={"spark.ui.retainedStages": "100000", "spark.ui.retainedJobs": "100000"},
    )
    store = EmbeddedStore(ws)
    loop: dict[str, Any] = {}
    marks: dict[str, Any] = {}

    def progress(message: str) -> None:
        if message.startswith("propagating (spark): iteration 1:") and "first" not in marks:
            marks["first"] = time.perf_counter()
        if message == "propagating (spark)":
            marks["before_loop"] = shuffle_volume(spark)
            marks["loop_start"] = time.perf_counter()

    t0 = time.perf_counter()
    with table_paths(store) as paths:
        frame, meta = propagation_frame(spark, paths, settings, progress=progress)
        table = frame.toArrow()
    total = time.perf_counter() - t0
    after = shuffle_volume(spark)
    volume = after - marks["before_loop"]
    loop.update(meta)
    loop.pop("converged", None)
    iterations = int(meta["loop_iterations"])
    return {
        "wall_seconds": total,
        "rows_out": table.num_rows,
        "loop_iterations": iterations,
        "seconds_per_iteration": meta["seconds_per_iteration"],
        "seconds_per_iteration_note": "wall time of an iteration of the longest loop (links layer); the relations layer's loop runs side by side "
                                      "in another driver thread, each loop carrying 3 columns (global, fraud, benign)",
        "iterations_per_problem": meta["iterations"],
        "shuffle": {
            "read_bytes_loop": volume.read_bytes,
            "write_bytes_loop": volume.write_bytes,
            "stages_loop": volume.stages,
            "write_bytes_per_iteration": volume.write_bytes / iterations,
            "read_bytes_per_iteration": volume.read_bytes / iterations,
            "note": "stages completed from the start of the loop to the end of the run (the loop, the results' joins and the exposure): "
                    "the loop's share is nearly all of it",
        },
        "walk_entries": int(sum(meta["walk_entries"].values())),
        "walk_entries_per_layer": meta["walk_entries"],
        "partitions": partitions,
        "master": master,
        "driver_memory": driver_memory,
        "spark_version": spark.version,
    }


def extrapolate(run: dict[str, Any], single: dict[str, Any]) -> dict[str, Any]:
    """Per-iteration time and shuffle at 10^9 walk entries on a cluster, with the assumptions."""
    edges = run["walk_entries"]
    target = 1e9
    bytes_per_entry = run["shuffle"]["write_bytes_per_iteration"] / edges
    shuffle_at_target = bytes_per_entry * target
    # local[2]: two cores did one iteration in the measured time; scaled to the target edges
    core_seconds_per_entry = run["seconds_per_iteration"] * 2 / edges
    cores, nic_gbit = 200, 10
    executors = 50
    compute = core_seconds_per_entry * target / cores
    network = shuffle_at_target / (executors * nic_gbit * 1e9 / 8 * 0.5)
    overhead = 2.0
    per_iteration = max(compute, network) + overhead
    iterations = run["loop_iterations"]
    return {
        "target_walk_entries": target,
        "shuffle_bytes_per_entry_per_iteration": bytes_per_entry,
        "shuffle_bytes_per_iteration_at_target": shuffle_at_target,
        "core_seconds_per_entry_per_iteration_measured": core_seconds_per_entry,
        "cluster": {"executors": executors, "cores": cores, "memory_per_executor": "16g + 4g overhead", "network_gbit_per_executor": nic_gbit},
        "seconds_per_iteration_at_target": per_iteration,
        "iterations": iterations,
        "minutes_total_at_target": per_iteration * iterations / 60,
        "assumptions": [
            "cost per iteration is linear in walk entries (one join and one aggregation over them); the measured per-entry core time "
            "of local[2] includes local-mode scheduling overhead, so the compute term is pessimistic at this size",
            f"shuffle per iteration grows with entries at the measured {bytes_per_entry:.1f} bytes per entry (partial sums before the "
            "shuffle merge messages per target node and partition; more partitions merge less, so this is a lower bound at 1e9)",
            f"{executors} executors x 4 cores, {nic_gbit} Gbit/s each, half of it usable for shuffle; compute and network do not overlap "
            "(the larger one counts), plus a fixed 2 s per iteration of scheduling for thousands of tasks",
            f"the same number of iterations ({iterations}): PageRank's convergence depends on alpha and the tolerance, not on the size",
            "the iterate (users x 3 columns) fits in executor memory next to the cached edges: 10^9 entries x ~40 bytes = 40 GB of "
            "edges across 50 executors is 0.8 GB each, within 16 GB",
            "no skew beyond the generated one: identifiers above hub_max_degree (10,000) are left out before the join; a user with "
            "millions of relations would need more partitions or salting",
        ],
        "single_machine_seconds_per_iteration_measured": single["seconds_per_iteration"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--driver-memory", default="6g")
    parser.add_argument("--master", default="local[2]")
    args = parser.parse_args()
    os.environ.setdefault("SOCIALRISK_PSEUDONYM_KEY", KEY)
    ws = workspace(args.users, args.seed)
    single = single_machine(ws)
    print(json.dumps({"single": single}, indent=1), flush=True)
    run = spark_engine_run(ws, partitions=args.partitions, driver_memory=args.driver_memory, master=args.master)
    result = {
        "command": " ".join([".venv/bin/python", *sys.argv])
                   + (f" --partitions {args.partitions}" if args.partitions != 4 else ""),
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
        "machine": {"cores": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
                    "java": subprocess.run(["java", "-version"], capture_output=True, text=True).stderr.splitlines()[0]},
        "users": args.users,
        "single": single,
        "spark": run,
        "extrapolation_1e9_edges": extrapolate(run, single),
    }
    out = ROOT / "benchmarks" / "results" / f"spark-{args.users}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(f"written to {out}")


if __name__ == "__main__":
    main()
