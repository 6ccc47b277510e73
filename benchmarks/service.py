"""Service benchmark: ``POST /v1/enrich`` latency on precomputed scores, and ``neighbourhood`` on Neo4j.

The service runs as ``socialrisk serve`` (one uvicorn worker) in a subprocess; the load comes
from this script run as a second, separate process (``--loadgen``): the open-loop generator of
``_loadgen.py``, which sends requests at fixed times over keep-alive connections, whether earlier
answers came back or not (a stalled server does not slow the load down: no coordinated omission). A request is timed
from when its timer fired, so the wait for a free connection counts; how late the timers fired
(event-loop timers tick in milliseconds) is reported apart as ``send_lag_p99_ms``. Every run is
bounded in count and time.

1. a workspace with scores: ``--workspace`` (scored first when it has none), or N generated users
   under ``benchmarks/out/service/N`` (``socialrisk generate``, ``load``, ``score``);
2. enrich at ``--rate`` requests/s for ``--seconds`` (targets: p50 <= 2 ms, p99 <= 10 ms, no errors);
3. a step search over ``--step-rates``, ``--step-seconds`` each, for the highest rate whose p99
   stays <= 10 ms without errors;
4. with ``--neo4j``: N users (``--neo4j-users``) loaded into the Neo4j named by
   ``SOCIALRISK_NEO4J_*`` (which is cleared first), scored there, and
   ``GET /v1/users/{id}/neighbourhood?hops=2&limit=50`` at 50 requests/s (target p99 <= 50 ms).
   ``--neo4j-only`` skips steps 1-3; ``--neo4j-reuse`` keeps the graph a previous run loaded and
   scored (when Neo4j still holds that many users and their scores) instead of loading again.

Results go to ``benchmarks/results/service.json`` (``service-neighbourhood.json`` with
``--neo4j-only``) and are printed as a Markdown table.

    .venv/bin/python benchmarks/service.py --users 1000000
    .venv/bin/python benchmarks/service.py --users 1000000 --neo4j --neo4j-users 120000
    .venv/bin/python benchmarks/service.py --neo4j-only --neo4j-reuse --neo4j-users 120000
    .venv/bin/python benchmarks/service.py --users 2000 --rate 50 --seconds 3 --step-rates 100,200 --step-seconds 2   # smoke
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _loadgen import KEY, PSEUDONYM_KEY, ROOT, Server, install_uvloop, open_loop, percentile_ms, request_bytes, run_cli

# -- the load generator (its own process) --------------------------------------------------------


def loadgen(args: argparse.Namespace) -> None:
    """Run one load step and print its figures as JSON (the ``--loadgen`` process)."""
    install_uvloop()
    ids = json.loads(Path(args.ids).read_text())
    rng = random.Random(args.seed)
    host = f"127.0.0.1:{args.port}"
    if args.target == "enrich":
        requests = [request_bytes("POST", "/v1/enrich", host=host, body=json.dumps({"user_id": rng.choice(ids)}).encode())
                    for _ in range(min(20_000, len(ids) * 4))]
    else:
        requests = [request_bytes("GET", f"/v1/users/{rng.choice(ids)}/neighbourhood?hops=2&limit=50", host=host) for _ in range(5_000)]
    n = int(args.rate * args.seconds)
    run = asyncio.run(open_loop("127.0.0.1", args.port, requests, rate=args.rate, count=n, connections=args.connections,
                                timeout=args.seconds + 15))
    lat = sorted(s.latency for s in run.samples if s.latency is not None)
    out: dict[str, Any] = {"sent": n, "answered": len(lat), "errors": run.errors(), "elapsed_s": run.elapsed_s,
                           "send_lag_p99_ms": percentile_ms(sorted(run.lags), 0.99)}
    out.update(rate=args.rate, seconds=args.seconds, target=args.target, p50_ms=percentile_ms(lat, 0.50), p95_ms=percentile_ms(lat, 0.95),
               p99_ms=percentile_ms(lat, 0.99), max_ms=round(1e3 * lat[-1], 3) if lat else None,
               achieved_rps=round(len(lat) / max(run.elapsed_s, 1e-9), 1))
    print(json.dumps(out))


# -- the orchestration -----------------------------------------------------------------------------


def _workspace(args: argparse.Namespace, env: dict[str, str]) -> Path:
    if args.workspace is not None:
        ws = args.workspace
        if not (ws / "results" / "scores.parquet").exists():
            run_cli(["score", "--workspace", str(ws)], env)
        return ws
    work = ROOT / "benchmarks" / "out" / "service" / str(args.users)
    ws = work / "workspace"
    if not (ws / "results" / "scores.parquet").exists():
        if not (work / "data" / "users.parquet").exists():
            run_cli(["generate", "--users", str(args.users), "--seed", str(args.seed), "--out", str(work / "data")], env)
        run_cli(["load", str(work / "data"), "--workspace", str(ws)], env)
        run_cli(["score", "--workspace", str(ws)], env)
    return ws


def _step(port: int, ids: Path, target: str, rate: float, seconds: float, connections: int) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, __file__, "--loadgen", "--port", str(port), "--ids", str(ids), "--target", target, "--rate", str(rate),
         "--seconds", str(seconds), "--connections", str(connections)],
        capture_output=True, text=True, timeout=seconds + 120,
    )
    if done.returncode != 0:
        sys.exit(f"the load generator failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"  {target} at {rate:g}/s for {seconds:g} s: p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms, max {result['max_ms']} ms, "
          f"errors {result['errors'] or 0}", flush=True)
    return result


def _ok(result: dict[str, Any], p99_ms: float) -> bool:
    return not result["errors"] and result["p99_ms"] is not None and result["p99_ms"] <= p99_ms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--loadgen", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--ids", help=argparse.SUPPRESS)
    parser.add_argument("--target", default="enrich", help=argparse.SUPPRESS)
    parser.add_argument("--users", type=int, default=1_000_000, help="Generated users (without --workspace).")
    parser.add_argument("--workspace", type=Path, help="A loaded workspace to serve (scored first if it has no scores).")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rate", type=float, default=500, help="Requests per second of the sustained enrich run.")
    parser.add_argument("--seconds", type=float, default=30, help="Length of the sustained run.")
    parser.add_argument("--step-rates", default="500,1000,1500,2000,2500,3000,3500,4000,5000", help="Rates of the step search.")
    parser.add_argument("--step-seconds", type=float, default=10, help="Length of each step.")
    parser.add_argument("--connections", type=int, default=64, help="Keep-alive connections of the load generator.")
    parser.add_argument("--neo4j", action="store_true", help="Also benchmark neighbourhood on Neo4j (clears the database named by SOCIALRISK_NEO4J_*).")
    parser.add_argument("--neo4j-users", type=int, default=120_000, help="Users loaded into Neo4j for the neighbourhood run.")
    parser.add_argument("--neo4j-rate", type=float, default=50)
    parser.add_argument("--neo4j-only", action="store_true", help="Only the neighbourhood run on Neo4j (implies --neo4j).")
    parser.add_argument("--neo4j-reuse", action="store_true",
                        help="Keep the graph and scores a previous run left in Neo4j when it holds --neo4j-users users.")
    parser.add_argument("--out", type=Path, help="Results file (default results/service.json, or service-neighbourhood.json with --neo4j-only).")
    args = parser.parse_args()
    if args.loadgen:
        loadgen(args)
        return

    env = dict(os.environ, SOCIALRISK_PSEUDONYM_KEY=PSEUDONYM_KEY, SOCIALRISK_API_KEYS=KEY)
    args.neo4j = args.neo4j or args.neo4j_only
    if args.out is None:
        args.out = ROOT / "benchmarks" / "results" / ("service-neighbourhood.json" if args.neo4j_only else "service.json")
    results: dict[str, Any] = {"command": " ".join([Path(sys.executable).name, *sys.argv])}
    if not args.neo4j_only:
        _enrich(args, env, results)
    if args.neo4j:
        _neighbourhood(args, env, results)
    _report(args, results)


def _enrich(args: argparse.Namespace, env: dict[str, str], results: dict[str, Any]) -> None:
    import pandas as pd

    ws = _workspace(args, env)
    ids = pd.read_parquet(ws / "results" / "scores.parquet", columns=["user_id"])["user_id"].astype(str).tolist()
    ids_file = ws.parent / "bench-ids.json"
    ids_file.write_text(json.dumps(random.Random(args.seed).sample(ids, min(len(ids), 100_000))))
    results.update(workspace=str(ws), users=len(ids))

    print(f"serving {len(ids):,} users from {ws}", flush=True)
    server = Server(["-w", str(ws)], env, ws.parent / "serve.log")
    try:
        t0 = time.perf_counter()
        server.wait_ready()
        results["startup_s"] = round(time.perf_counter() - t0, 1)
        _step(server.port, ids_file, "enrich", 100, 2, args.connections)  # warm-up, not recorded
        sustained = _step(server.port, ids_file, "enrich", args.rate, args.seconds, args.connections)
        results["enrich_sustained"] = sustained
        steps = []
        for rate in [float(r) for r in args.step_rates.split(",") if r]:
            step = _step(server.port, ids_file, "enrich", rate, args.step_seconds, args.connections)
            steps.append(step)
            if not _ok(step, 10.0):
                break
        passing = [s["rate"] for s in steps if _ok(s, 10.0)]
        results["enrich_steps"] = steps
        results["enrich_max_rate_p99_10ms"] = max(passing) if passing else None
    finally:
        server.stop()


def _neighbourhood(args: argparse.Namespace, env: dict[str, str], results: dict[str, Any]) -> None:
    import pandas as pd

    work = ROOT / "benchmarks" / "out" / "service" / f"neo4j-{args.neo4j_users}"
    if not (work / "data" / "users.parquet").exists():
        run_cli(["generate", "--users", str(args.neo4j_users), "--seed", str(args.seed), "--out", str(work / "data")], env)
    from socialrisk import workflow

    os.environ["SOCIALRISK_PSEUDONYM_KEY"] = PSEUDONYM_KEY
    with workflow.open_neo4j() as store:
        held = len(pd.read_parquet(work / "data" / "users.parquet", columns=["user_id"]))
        reuse = (args.neo4j_reuse and (work / "workspace").is_dir() and store.has_result("scores")
                 and store.metadata().get("counts", {}).get("users") == held)
        if not reuse:
            store.clear()  # type: ignore[attr-defined]
    results["neo4j_reused"] = bool(reuse)
    if reuse:
        print(f"reusing the {held:,} users loaded and scored in Neo4j by an earlier run", flush=True)
    else:
        run_cli(["load", str(work / "data"), "--store", "neo4j", "--workspace", str(work / "workspace")], env)
        run_cli(["score", "--store", "neo4j", "--workspace", str(work / "workspace")], env)
    n_ids = pd.read_parquet(work / "data" / "users.parquet", columns=["user_id"])["user_id"].astype(str).tolist()
    neo_ids = work / "bench-ids.json"
    neo_ids.write_text(json.dumps(random.Random(args.seed).sample(n_ids, min(len(n_ids), 20_000))))
    server = Server(["--store", "neo4j", "-w", str(work / "workspace")], env, work / "serve.log")
    try:
        server.wait_ready()
        _step(server.port, neo_ids, "neighbourhood", 10, 3, 16)  # warm-up
        results["neighbourhood_neo4j"] = {**_step(server.port, neo_ids, "neighbourhood", args.neo4j_rate, args.seconds, 16),
                                          "users": args.neo4j_users, "hops": 2, "limit": 50}
    finally:
        server.stop()


def _report(args: argparse.Namespace, results: dict[str, Any]) -> None:
    results["machine"] = {"python": platform.python_version(), "platform": platform.platform(), "cores": os.cpu_count()}
    results["date"] = time.strftime("%Y-%m-%d")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    print("\n| measure | p50 | p95 | p99 | max | errors | target |\n|---|---:|---:|---:|---:|---:|---|")
    if "enrich_sustained" in results:
        s = results["enrich_sustained"]
        print(f"| enrich, {s['rate']:g}/s for {s['seconds']:g} s, {results['users']:,} users | {s['p50_ms']} ms | {s['p95_ms']} ms | "
              f"{s['p99_ms']} ms | {s['max_ms']} ms | {sum(s['errors'].values())} | p50 <= 2 ms, p99 <= 10 ms, 0 errors |")
    if "neighbourhood_neo4j" in results:
        n = results["neighbourhood_neo4j"]
        print(f"| neighbourhood on Neo4j (2 hops, limit 50), {n['rate']:g}/s, {n['users']:,} users | {n['p50_ms']} ms | {n['p95_ms']} ms | "
              f"{n['p99_ms']} ms | {n['max_ms']} ms | {sum(n['errors'].values())} | p99 <= 50 ms |")
    if "enrich_max_rate_p99_10ms" in results:
        print(f"\nhighest enrich rate with p99 <= 10 ms and no errors: {results['enrich_max_rate_p99_10ms']}/s (steps of {args.step_seconds:g} s)")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
