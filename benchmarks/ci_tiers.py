"""Wall time of test tiers, one after the other under the same conditions, with their slowest
tests: the figures behind the CI time of ``.ci/run``.

Each tier is one ``pytest`` process (``--durations=15``); its wall time, test count, outcome,
the 15 slowest tests and the 1-minute load average before and after go to
``benchmarks/results/ci-tiers.json`` (tiers measured before are kept unless measured again).

    .venv/bin/python benchmarks/ci_tiers.py spark-shared-whole spark-shared-sample

Tiers:

- ``spark-shared-whole``: the Spark parity tests on the shared datasets, whole
  (``SOCIALRISK_PARITY_SAMPLE_USERS=0``), as CI ran them before;
- ``spark-shared-sample``: the same tests on the connected 1,500-user samples CI runs now;
- ``spark``: every Spark test (``tests/spark``), as CI runs them;
- ``docs``: the documentation's tests (site build, generated tables, every snippet of the guide);
- ``docs-build``: ``mkdocs build --strict`` alone, into a scratch directory (not a test: the
  time a writer waits for the site);
- ``fresh-clone``: what CI runs: ``CI=true .ci/run`` in a fresh clone of the committed ``HEAD``
  (``../shared`` linked beside it), from creating the virtualenv and provisioning Neo4j to the
  last test, kept as ``fresh-clone@COMMIT``. Run it with nothing else on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "ci-tiers.json"
#: The loopback port scripts/test.sh starts its Neo4j on.
CI_NEO4J_PORT = 7697

TIERS: dict[str, tuple[list[str], dict[str, str]]] = {
    "spark-shared-whole": (["tests/spark/test_parity.py", "-k", "shared"], {"SOCIALRISK_PARITY_SAMPLE_USERS": "0"}),
    "spark-shared-sample": (["tests/spark/test_parity.py", "-k", "shared"], {}),
    "spark": (["tests/spark"], {}),
    "docs": (["tests/test_docs.py", "tests/test_docs_snippets.py"], {}),
    "docs-build": (["-m", "mkdocs", "build", "--strict", "--site-dir", "{scratch}"], {"NO_MKDOCS_2_WARNING": "1"}),
    "fresh-clone": (["{fresh-clone}"], {"CI": "true"}),
}

DURATION = re.compile(r"^(?P<s>[\d.]+)s (?P<phase>call|setup|teardown)\s+(?P<test>\S+)", re.M)
SUMMARY = re.compile(r"=+ (?P<summary>.*?) in [\d.]+s", re.M)


def run(name: str) -> dict[str, object]:
    args, extra = TIERS[name]
    env = dict(os.environ, **extra)
    scratch = tempfile.mkdtemp(prefix="ci-tier-")
    cwd = ROOT
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    if args == ["{fresh-clone}"]:  # CI's own run, clone included, in CI's environment
        env = {k: v for k, v in env.items() if not k.startswith(("SOCIALRISK_", "VIRTUAL_ENV"))}
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", CI_NEO4J_PORT)) == 0:
                raise SystemExit(f"port {CI_NEO4J_PORT} is taken (a Neo4j of this checkout?): .ci/run starts its own server there; stop it first")
        cwd = Path(scratch) / "socialrisk"
        subprocess.run(["git", "clone", "-q", str(ROOT), str(cwd)], check=True)
        (Path(scratch) / "shared").symlink_to(ROOT.parent / "shared")
        argv = ["bash", ".ci/run"]
    elif args[0] == "-m":  # a command, not tests
        argv = [sys.executable, *(a.replace("{scratch}", scratch) for a in args)]
    else:
        argv = [sys.executable, "-m", "pytest", *args, "-q", "-p", "no:cacheprovider", "--durations=15"]
    # the output is followed in a log as it comes (a whole CI run takes tens of minutes)
    log_path = Path(tempfile.gettempdir()) / f"ci-tier-{name}.log"
    lines = []
    with open(log_path, "w") as log, subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
        print(f"{name}: following in {log_path}", flush=True)
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            log.write(line)
            log.flush()
    wall = time.perf_counter() - t0
    shutil.rmtree(scratch, ignore_errors=True)
    out = "".join(lines)
    summary = SUMMARY.findall(out)
    slowest = [{"seconds": float(m["s"]), "phase": m["phase"], "test": m["test"]} for m in DURATION.finditer(out)]
    print(f"{name}: {wall:.0f} s, {summary[-1] if summary else 'no summary'} (exit {proc.returncode})", flush=True)
    return {
        "command": "CI=true .ci/run (in a fresh clone)" if argv[0] == "bash" else " ".join([*(f"{k}={v}" for k, v in extra.items()), "python", *argv[1:]]).replace(scratch, "SCRATCH"),
        "wall_s": round(wall, 1),
        "exit_code": proc.returncode,
        "summary": summary[-1] if summary else None,
        "slowest": slowest,
        "load_average_1min": {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)},
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "commit": commit,
        "tail": out[-1500:] if proc.returncode else "",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("tiers", nargs="+", choices=sorted(TIERS))
    args = parser.parse_args(argv)
    results = json.loads(OUT.read_text()) if OUT.exists() else {"tiers": {}}
    codes = []
    for name in args.tiers:
        result = run(name)
        codes.append(result["exit_code"])
        # CI's own run is kept per commit, so that runs before and after a change sit side by side
        results["tiers"][f"{name}@{result['commit']}" if name == "fresh-clone" else name] = result
        results["machine"] = {"cores": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()}
        OUT.write_text(json.dumps(results, indent=2))
    print(f"written {OUT}")
    return 0 if all(c == 0 for c in codes) else 1


if __name__ == "__main__":
    raise SystemExit(main())
