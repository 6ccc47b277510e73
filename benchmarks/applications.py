"""Applicants at application time: parity with a full scoring, latency of the service, memory.

    python benchmarks/applications.py parity [--users 100000] [--held-out 1000]
    python benchmarks/applications.py parity --dataset ../shared/data/bitcoin-otc [--held-out-share 0.01]
    python benchmarks/applications.py latency [--users 1000000] [--rate 200] [--seconds 30]

**parity** holds users out of the load (chosen at random, fraud and good alike; their own flags
are dropped, since an applicant carries no label), loads and scores the rest, then scores each
held-out user through the applicant path (:class:`scoring.application.ApplicantScorer`, a
what-if) with its real profile, links and relations (relations to other held-out users cannot
be sent: they are dropped and counted). It compares with full scorings of all the data: one with
the same model version (what the applicant path is meant to reproduce) and one refitted (what a
nightly scoring would give): Spearman correlation of ``risk``, decision agreement, mean and
largest absolute difference, and the largest differences with their reasons.

**latency** serves a generated workspace (``socialrisk serve``) and measures from separate
load-generator processes: what-if applications with 1-20 links (values drawn from the
population's own, so applicants share identifiers) and 0-50 relations to known users, at a rate,
with ``enrich`` beside them; then committed applications; then steps of what-if rates to find
the highest holding p99 <= 20 ms. Memory: the service's resident size before and after the
commits, per added user and per added edge.

Results go to ``benchmarks/results/applications-*.json``.
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

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _loadgen import KEY, PSEUDONYM_KEY, ROOT, Server, install_uvloop, open_loop, percentile_ms, request_bytes, rss_kib, run_cli  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"


# -- parity ----------------------------------------------------------------------------------------


def _held_out_application(u: str, raw: dict[str, pd.DataFrame], held: set[str]) -> tuple[Any, int]:
    from scoring.application import Application

    users = raw["users"]
    row = users.loc[users["user_id"].astype(str) == u]
    features: dict[str, float | None] = {}
    if len(row):
        for c, v in row.iloc[0].items():
            if c != "user_id" and isinstance(v, (int, float, np.number)) and not isinstance(v, bool):
                features[str(c)] = None if pd.isna(v) else float(v)
    links = []
    if "links" in raw:
        mine = raw["links"][raw["links"]["user_id"].astype(str) == u]
        for r in mine.to_dict("records"):
            links.append({"kind": r["kind"], "value": r["value"], "weight": None if pd.isna(r.get("weight", np.nan)) else r.get("weight"),
                          **{t: (None if pd.isna(r.get(t)) else str(r.get(t))) for t in ("first_seen", "last_seen") if t in r}})
    rels, dropped = [], 0
    if "relations" in raw:
        rel = raw["relations"]
        mine = rel[(rel["src"].astype(str) == u) | (rel["dst"].astype(str) == u)]
        for r in mine.to_dict("records"):
            out = str(r["src"]) == u
            other = str(r["dst"]) if out else str(r["src"])
            if other in held or other == u:
                dropped += 1
                continue
            rels.append({"user_id": other, "kind": r["kind"], "direction": "out" if out else "in",
                         "weight": None if pd.isna(r.get("weight", np.nan)) else float(r["weight"]),
                         "ts": None if "ts" not in r or pd.isna(r["ts"]) else str(r["ts"])})
    return Application(user_id=u, features=features, links=links, relations=rels), dropped


def parity(args: argparse.Namespace) -> None:
    from scipy.stats import spearmanr

    from graph.config import GraphConfig
    from graph.live import LiveGraph
    from graph.projection import project
    from loaders.load import read_tables
    from loaders.read import find_tables, read_table
    from loaders.synthetic import generate
    from scoring.application import ApplicantScorer, canonical_frames
    from scoring.config import ScoringConfig
    from scoring.features import flag_vectors, user_columns
    from scoring.pipeline import Scorer

    key = PSEUDONYM_KEY.encode()
    if args.dataset:
        name = Path(args.dataset).name
        raw = {t: _plain_frame(read_table(t, p).frame) for t, p in find_tables(args.dataset).items()}
    else:
        name = f"generated-{args.users}"
        raw = {k: v for k, v in generate(n_users=args.users, seed=args.seed).items() if k != "truth"}
    ids = pd.Index(pd.concat([raw[t][c].astype(str) for t, cs in (("users", ["user_id"]), ("links", ["user_id"]), ("relations", ["src", "dst"]),
                                                               ("flags", ["user_id"])) if t in raw for c in cs]).unique())
    rng = np.random.default_rng(args.seed)
    k = args.held_out if args.held_out else max(10, int(round(args.held_out_share * len(ids))))
    held = set(rng.choice(ids.to_numpy(), k, replace=False).tolist())
    full_raw = dict(raw)
    full_raw["flags"] = raw["flags"][~raw["flags"]["user_id"].astype(str).isin(held)]
    part = {t: f for t, f in full_raw.items()}
    for t, cols in (("users", ["user_id"]), ("links", ["user_id"]), ("flags", ["user_id"])):
        if t in part:
            part[t] = part[t][~part[t][cols[0]].astype(str).isin(held)]
    if "relations" in part:
        r = part["relations"]
        part["relations"] = r[~(r["src"].astype(str).isin(held) | r["dst"].astype(str).isin(held))]
    gc, sc = GraphConfig(), ScoringConfig()
    t0 = time.perf_counter()
    pt = read_tables(part, key=key)
    pp = project(pt, gc)
    scorer = Scorer(pt, pp, graph_config=gc, config=sc)
    combination = scorer.score(scorer.flags_from(pt.flags)).fitted
    ft = read_tables(full_raw, key=key)
    fs = Scorer(ft, project(ft, gc), graph_config=gc, config=sc)
    flags = fs.flags_from(ft.flags)
    same = fs.score(flags, combination=combination).scores.set_index("user_id")
    refit = fs.score(flags).scores.set_index("user_id")
    batch_s = time.perf_counter() - t0
    print(f"{name}: {len(ids):,} users, {len(held):,} held out; batch scorings {batch_s:.0f} s", flush=True)
    fv = flag_vectors(pt.flags, pp)
    t0 = time.perf_counter()
    live = LiveGraph(pt, pp, config=gc, fraud=fv.fraud, benign=fv.benign, alpha=sc.alpha, tol=sc.tol)
    applicants = ApplicantScorer(live, user_columns(pt, pp), combination=combination, config=sc)
    live_s = time.perf_counter() - t0
    rows, times, dropped, over = [], [], 0, 0
    for u in sorted(held):
        app, d = _held_out_application(u, raw, held)
        dropped += d
        t1 = time.perf_counter()
        over += len(app.relations) > 1000 or len(app.links) > 1000
        lf, rf = canonical_frames(app, key=key, max_items=None)  # what a client sends as several event batches
        rows.append(applicants.score(app, links=lf, relations=rf).row)
        times.append(time.perf_counter() - t1)
    got = pd.DataFrame(rows).set_index("user_id")
    truth = raw.get("truth")
    result: dict[str, Any] = {
        "dataset": name, "users": int(len(ids)), "held_out": int(len(held)), "relations_to_held_out_dropped": int(dropped),
        "applicants_over_1000_relations": int(over),
        "live_graph_build_s": round(live_s, 2), "applicant_ms_p50": round(1e3 * float(np.median(times)), 2),
        "applicant_ms_p99": round(1e3 * float(np.quantile(times, 0.99)), 2), "machine": _machine(),
    }
    for label, ref in (("same_model", same), ("refitted", refit)):
        r = ref.loc[got.index]
        diff = (got["risk"] - r["risk"]).abs()
        worst = diff.sort_values(ascending=False).index[:5]
        result[label] = {
            "spearman_risk": round(float(spearmanr(got["risk"], r["risk"]).statistic), 4),
            "decision_agreement": round(float((got["decision"] == r["decision"]).mean()), 4),
            "mean_abs_risk_diff": float(diff.mean()), "max_abs_risk_diff": float(diff.max()),
            "largest": [{"user_id": u, "applicant_risk": float(got.loc[u, "risk"]), "full_risk": float(r.loc[u, "risk"]),
                         "applicant_reasons": got.loc[u, "reason_codes"], "full_reasons": str(r.loc[u, "reason_codes"])} for u in worst],
        }
        print(f"  vs full scoring ({label}): Spearman {result[label]['spearman_risk']}, decisions agree "
              f"{result[label]['decision_agreement']:.1%}, mean |diff| {result[label]['mean_abs_risk_diff']:.2e}, "
              f"max {result[label]['max_abs_risk_diff']:.3f}", flush=True)
    del truth
    out = args.out or RESULTS / f"applications-parity-{name}.json"
    out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"written to {out}")


def _plain_frame(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.astype(object).where(frame.notna(), None)


# -- latency ---------------------------------------------------------------------------------------


def _bodies(data: Path, users: list[str], *, n: int, seed: int, commit: bool, prefix: str) -> list[dict[str, Any]]:
    links = pd.read_parquet(data / "links.parquet", columns=["kind", "value"])
    rng = random.Random(seed)
    kinds, values = links["kind"].astype(str).tolist(), links["value"].astype(str).tolist()
    out = []
    for i in range(n):
        picks = [rng.randrange(len(values)) for _ in range(rng.randint(1, 20))]
        rels = [{"user_id": rng.choice(users), "kind": rng.choice(["transfer", "contact"]), "direction": rng.choice(["out", "in", "both"]),
                 "weight": round(rng.uniform(1, 500), 2)} for _ in range(rng.randint(0, 50))]
        out.append({"user_id": f"{prefix}{i:07d}", "features": {"tenure_days": rng.randint(0, 900), "txn_count_90d": rng.randint(0, 60)},
                    "links": [{"kind": kinds[j], "value": values[j]} for j in picks], "relations": rels, "commit": commit})
    return out


def loadgen(args: argparse.Namespace) -> None:
    """One load step in its own process: prints its figures as JSON."""
    install_uvloop()
    host = f"127.0.0.1:{args.port}"
    if args.target == "enrich":
        ids = json.loads(Path(args.ids).read_text())
        rng = random.Random(args.seed)
        requests = [request_bytes("POST", "/v1/enrich", host=host, body=json.dumps({"user_id": rng.choice(ids)}).encode()) for _ in range(20_000)]
    else:
        bodies = json.loads(Path(args.ids).read_text())
        requests = [request_bytes("POST", "/v1/applications", host=host, body=json.dumps(b).encode()) for b in bodies]
    n = int(args.rate * args.seconds)
    if args.target == "commit":
        n = min(n, len(requests))  # each committed applicant once
    run = asyncio.run(open_loop("127.0.0.1", args.port, requests, rate=args.rate, count=n, connections=args.connections,
                                timeout=args.seconds + 60))
    lat = sorted(s.latency for s in run.samples if s.latency is not None)
    errors = run.errors()
    first = next((s.body.decode(errors="replace")[:300] for s in run.samples if s.body), None)
    print(json.dumps({"target": args.target, "rate": args.rate, "seconds": args.seconds, "sent": n, "answered": len(lat), "errors": errors,
                      "first_error": first, "p50_ms": percentile_ms(lat, 0.5), "p95_ms": percentile_ms(lat, 0.95), "p99_ms": percentile_ms(lat, 0.99),
                      "max_ms": round(1e3 * lat[-1], 3) if lat else None, "send_lag_p99_ms": percentile_ms(sorted(run.lags), 0.99)}))


def _spawn(port: int, file: Path, target: str, rate: float, seconds: float, connections: int) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, __file__, "loadgen", "--port", str(port), "--ids", str(file), "--target", target, "--rate", str(rate),
                             "--seconds", str(seconds), "--connections", str(connections)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _collect(proc: subprocess.Popen[str]) -> dict[str, Any]:
    out, err = proc.communicate(timeout=900)
    if proc.returncode != 0:
        sys.exit(f"the load generator failed:\n{err[-3000:]}")
    result = json.loads(out.strip().splitlines()[-1])
    print(f"  {result['target']} at {result['rate']:g}/s: p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms, max {result['max_ms']} ms, "
          f"errors {result['errors'] or 0}", flush=True)
    return result


def latency(args: argparse.Namespace) -> None:
    env = dict(os.environ, SOCIALRISK_PSEUDONYM_KEY=PSEUDONYM_KEY, SOCIALRISK_API_KEYS=KEY)
    work = ROOT / "benchmarks" / "out" / "service" / str(args.users)
    ws = work / "workspace"
    if not (ws / "results" / "scores.parquet").exists():
        if not (work / "data" / "users.parquet").exists():
            run_cli(["generate", "--users", str(args.users), "--seed", str(args.seed), "--out", str(work / "data")], env)
        run_cli(["load", str(work / "data"), "--workspace", str(ws)], env)
        run_cli(["score", "--workspace", str(ws)], env)
    run_dir = work / "applications"
    run_dir.mkdir(parents=True, exist_ok=True)
    # a fresh copy of the service folder: earlier runs' committed applicants stay out
    import shutil

    shutil.rmtree(ws / "service", ignore_errors=True)
    users = pd.read_parquet(ws / "results" / "scores.parquet", columns=["user_id"])["user_id"].astype(str).tolist()
    (run_dir / "ids.json").write_text(json.dumps(random.Random(args.seed).sample(users, min(50_000, len(users)))))
    sample = random.Random(args.seed + 1).sample(users, min(20_000, len(users)))
    for name, commit, n in (("whatif", False, 4000), ("commit", True, int(args.commit_rate * args.seconds) + 10)):
        (run_dir / f"{name}.json").write_text(json.dumps(_bodies(work / "data", sample, n=n, seed=args.seed, commit=commit, prefix=f"{name}-")))
    server = Server(["-w", str(ws), *(["--store", args.store] if args.store != "embedded" else [])], env, run_dir / "serve.log")
    results: dict[str, Any] = {"users": args.users, "store": args.store, "machine": _machine(), "load_before": os.getloadavg()}
    try:
        t0 = time.perf_counter()
        server.wait_ready()
        results["ready_s"] = round(time.perf_counter() - t0, 1)
        results["rss_ready_mib"] = round((rss_kib(server.pid) or 0) / 1024, 1)
        print(f"serving {args.users:,} users; graph ready in {results['ready_s']} s, {results['rss_ready_mib']} MiB", flush=True)
        # warm-up: the compiled kernels' first calls
        warm = _spawn(server.port, run_dir / "whatif.json", "whatif", 20, 5, 4)
        _collect(warm)
        a = _spawn(server.port, run_dir / "whatif.json", "whatif", args.rate, args.seconds, args.connections)
        b = _spawn(server.port, run_dir / "ids.json", "enrich", args.enrich_rate, args.seconds, args.connections)
        results["whatif"], results["enrich_beside_whatif"] = _collect(a), _collect(b)
        rss0 = rss_kib(server.pid) or 0
        c = _spawn(server.port, run_dir / "commit.json", "commit", args.commit_rate, args.seconds, args.connections)
        d = _spawn(server.port, run_dir / "ids.json", "enrich", args.enrich_rate, args.seconds, args.connections)
        results["commit"], results["enrich_beside_commit"] = _collect(c), _collect(d)
        time.sleep(3)
        rss1 = rss_kib(server.pid) or 0
        committed = results["commit"]["answered"]
        bodies = json.loads((run_dir / "commit.json").read_text())[:committed]
        edges = sum(len(b["links"]) + sum(2 if r["direction"] == "both" else 1 for r in b["relations"]) for b in bodies)
        results["memory"] = {"rss_before_commits_mib": round(rss0 / 1024, 1), "rss_after_commits_mib": round(rss1 / 1024, 1),
                             "added_users": committed, "added_link_and_relation_rows": edges,
                             "bytes_per_added_user": round((rss1 - rss0) * 1024 / max(committed, 1)),
                             "bytes_per_added_row": round((rss1 - rss0) * 1024 / max(edges, 1))}
        steps = []
        for rate in [float(r) for r in args.step_rates.split(",")]:
            step = _collect(_spawn(server.port, run_dir / "whatif.json", "whatif", rate, args.step_seconds, args.connections))
            steps.append(step)
            if step["errors"] or step["p99_ms"] is None or step["p99_ms"] > 20:
                break
        results["steps"] = steps
        ok = [s["rate"] for s in steps if not s["errors"] and s["p99_ms"] is not None and s["p99_ms"] <= 20]
        results["highest_whatif_rate_p99_20ms"] = max(ok) if ok else None
    finally:
        server.stop()
    results["load_after"] = os.getloadavg()
    out = args.out or RESULTS / f"applications-latency-{args.store}-{args.users}.json"
    out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(f"written to {out}")


def _machine() -> dict[str, Any]:
    return {"cpus": os.cpu_count(), "python": platform.python_version(), "load_average": os.getloadavg(),
            "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=["parity", "latency", "loadgen"])
    parser.add_argument("--users", type=int, default=None)
    parser.add_argument("--dataset", help="A data directory (parity on real data) instead of generated users.")
    parser.add_argument("--held-out", type=int, default=None, help="Users held out (parity; default 1,000 generated, or --held-out-share).")
    parser.add_argument("--held-out-share", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--store", default="embedded")
    parser.add_argument("--rate", type=float, default=200, help="What-if applications per second.")
    parser.add_argument("--enrich-rate", type=float, default=200)
    parser.add_argument("--commit-rate", type=float, default=20, help="Committed applications per second.")
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--step-rates", default="50,100,200,300,400")
    parser.add_argument("--step-seconds", type=float, default=15)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--ids", help=argparse.SUPPRESS)
    parser.add_argument("--target", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.mode == "loadgen":
        loadgen(args)
        return
    if args.mode == "parity":
        if args.users is None:
            args.users = 100_000
        if args.held_out is None and not args.dataset:
            args.held_out = 1000
        parity(args)
    else:
        if args.users is None:
            args.users = 1_000_000
        latency(args)


if __name__ == "__main__":
    main()
