"""The generated, loaded workspaces the benchmarks share the making of."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLI = str(Path(sys.executable).with_name("socialrisk"))
#: The pseudonymisation key of generated benchmark data (not a secret).
KEY = "benchmark-key-not-secret-0123456789"


def generated_workspace(bench: str, users: int, seed: int) -> Path:
    """``benchmarks/out/<bench>/<users>/workspace``: ``users`` generated users (``socialrisk
    generate``) loaded into an embedded workspace, made on first use and kept for reuse."""
    work = ROOT / "benchmarks" / "out" / bench / str(users)
    ws = work / "workspace"
    if not (ws / "meta.json").exists():
        env = dict(os.environ, SOCIALRISK_PSEUDONYM_KEY=KEY)
        subprocess.run([CLI, "generate", "--users", str(users), "--seed", str(seed), "--out", str(work / "data")], env=env, check=True)
        subprocess.run([CLI, "load", str(work / "data"), "--workspace", str(ws)], env=env, check=True)
    return ws
