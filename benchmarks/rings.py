"""Time of ``socialrisk rings --top 10`` for each ``--kind`` on a generated, scored workspace.

Each run is a fresh ``socialrisk`` process, so its wall time and peak resident memory (from
``wait4``) include reading the workspace and projecting it, as an analyst's command does. The
median of ``--repeats`` runs per kind goes to ``benchmarks/results/rings-<N>.json`` with the
load average seen during the runs; ``benchmarks/tables.py`` turns it into the docs' table.

    .venv/bin/python benchmarks/rings.py --users 100000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _workspace import CLI, KEY, ROOT, generated_workspace  # noqa: E402

KINDS = ("components", "dense", "communities")


def timed(args: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall seconds and peak resident GiB of one CLI process."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([CLI, *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    err = proc.stderr.read() if proc.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"socialrisk {' '.join(args)} failed:\n{err}")
    return wall, usage.ru_maxrss / 2**20


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    env = dict(os.environ, SOCIALRISK_PSEUDONYM_KEY=KEY)
    ws = generated_workspace("rings", args.users, args.seed)
    score_s = None
    if not (ws / "results" / "scores.parquet").exists():  # rings rank by the scores: score once
        score_s, _ = timed(["score", "--workspace", str(ws)], env)
        print(f"score: {score_s:.1f} s", flush=True)
    kinds, loads = {}, [os.getloadavg()[0]]
    for kind in KINDS:
        runs = []
        for _ in range(args.repeats):
            runs.append(timed(["rings", "--top", "10", "--kind", kind, "--workspace", str(ws)], env))
            loads.append(os.getloadavg()[0])
        walls = [w for w, _ in runs]
        kinds[kind] = {
            "wall_s": round(statistics.median(walls), 2),
            "runs_s": [round(w, 2) for w in walls],
            "peak_rss_gib": round(max(g for _, g in runs), 2),
        }
        print(f"{kind}: median {kinds[kind]['wall_s']} s, runs {kinds[kind]['runs_s']}, peak {kinds[kind]['peak_rss_gib']} GiB", flush=True)
    meta = json.loads((ws / "meta.json").read_text())
    result = {
        "command": f"python benchmarks/rings.py --users {args.users} --repeats {args.repeats}",
        "users": args.users,
        "seed": args.seed,
        "repeats": args.repeats,
        "score_s": None if score_s is None else round(score_s, 1),
        "kinds": kinds,
        "load_average_1min": {"min": round(min(loads), 2), "max": round(max(loads), 2)},
        "workspace_rows": meta.get("counts", {}),
        "machine": {"cores": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "date": time.strftime("%Y-%m-%d"),
    }
    out = ROOT / "benchmarks" / "results" / f"rings-{args.users}.json"
    out.write_text(json.dumps(result, indent=2))
    print(f"written {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
