"""Scale benchmark: generate N users, then load and score them on the embedded store.

Each step runs as its own ``socialrisk`` process so that its wall time and peak resident
memory (from ``wait4``) are its own. Results go to ``benchmarks/results/scale-<N>.json`` and
are printed as a Markdown table.

    .venv/bin/python benchmarks/scale.py --users 1000000
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
CLI = str(Path(sys.executable).with_name("socialrisk"))


def run(step: str, args: list[str], env: dict[str, str]) -> dict[str, float | str]:
    t0 = time.perf_counter()
    proc = subprocess.Popen([CLI, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    stdout = proc.stdout.read() if proc.stdout else ""
    stderr = proc.stderr.read() if proc.stderr else ""
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        sys.exit(f"{step} failed with exit code {code}:\n{stdout}\n{stderr}")
    print(f"{step}: {wall:.1f} s, peak RSS {usage.ru_maxrss / 2**20:.2f} GiB", flush=True)
    return {"step": step, "wall_s": round(wall, 1), "peak_rss_gib": round(usage.ru_maxrss / 2**20, 2), "output": stdout.strip()[-2000:]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=ROOT / "benchmarks" / "out" / "scale")
    parser.add_argument("--keep", action="store_true", help="Keep the generated data and workspace.")
    args = parser.parse_args()

    work = args.work / str(args.users)
    if work.exists():
        shutil.rmtree(work)
    data, workspace, scores = work / "data", work / "workspace", work / "scores.csv"
    env = dict(os.environ, SOCIALRISK_PSEUDONYM_KEY="benchmark-key-not-secret-0123456789")
    steps = [
        run("generate", ["generate", "--users", str(args.users), "--seed", str(args.seed), "--out", str(data)], env),
        run("load", ["load", str(data), "--workspace", str(workspace)], env),
        run("score", ["score", "--workspace", str(workspace), "--out", str(scores)], env),
    ]
    counts = {name: int(pd.read_parquet(data / f"{name}.parquet", columns=[pd.read_parquet(data / f"{name}.parquet").columns[0]]).shape[0]) for name in ("users", "links", "relations", "flags")}
    result = {
        "users": args.users,
        "rows": counts,
        "links_plus_relations": counts["links"] + counts["relations"],
        "steps": steps,
        "load_plus_score_s": round(sum(float(s["wall_s"]) for s in steps if s["step"] in ("load", "score")), 1),
        "peak_rss_gib": max(float(s["peak_rss_gib"]) for s in steps),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "date": time.strftime("%Y-%m-%d"),
    }
    out = ROOT / "benchmarks" / "results" / f"scale-{args.users}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print()
    print("| step | wall time | peak memory |\n|---|---:|---:|")
    for s in steps:
        print(f"| {s['step']} | {s['wall_s']} s | {s['peak_rss_gib']} GiB |")
    print(f"\n{counts['users']:,} users, {counts['links']:,} links, {counts['relations']:,} relations, {counts['flags']:,} flags; written {out}")
    if not args.keep:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
