"""Every command of the guide runs as written, so the docs cannot drift from the code.

The guide is the README, ``docs/getting-started.md``, ``docs/guide/*.md`` and
``docs/concepts/*.md``. In those pages:

- a fenced block marked ``sh`` is a script: it runs with ``bash -euo pipefail`` and must succeed;
- an unmarked (or ``console``) block whose first line starts with ``$ `` is a transcript: each
  ``$`` command runs, must succeed, and the first line of output shown under it must be one of
  the lines it prints, once numbers, dates and hex digests are masked (so a changed decision,
  reason or wording fails, a new model version's digest does not);
- ``text`` blocks are synopses (``socialrisk explore USER [--hops 2]``), not commands;
- a block right after ``<!-- run by .ci/run -->`` is not run here: the README's two commands
  (set up and run the demo; set up and run these tests), which CI itself runs. Only those may
  carry it.

The blocks of one page run in order in one scratch directory, with ``.venv/bin`` first on the
``PATH``, so a page's later blocks see the files and variables its earlier ones made. A page
that generates no data of its own starts from a copy of one generated, scored population in
``data/`` and ``ws/`` (``socialrisk generate --users 5000 --seed 1``, as those pages say).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
GUIDE = [ROOT / "README.md", ROOT / "docs" / "getting-started.md", *sorted((ROOT / "docs" / "guide").glob("*.md")),
         *sorted((ROOT / "docs" / "concepts").glob("*.md"))]
FENCE = re.compile(r"^```(?P<lang>[\w-]*)[^\n]*\n(?P<body>.*?)^```\s*$", re.M | re.S)
RUN_BY_CI = "<!-- run by .ci/run -->"
TIMEOUT = 900


@dataclass(frozen=True)
class Block:
    page: str
    line: int
    kind: str  # "script" or "transcript"
    body: str


def blocks(page: Path) -> list[Block]:
    text = page.read_text()
    out = []
    for m in FENCE.finditer(text):
        lang, body = m.group("lang"), m.group("body")
        line = text.count("\n", 0, m.start()) + 1
        name = str(page.relative_to(ROOT))
        if text[: m.start()].rstrip().endswith(RUN_BY_CI):
            continue
        if lang == "sh":
            out.append(Block(name, line, "script", body))
        elif lang in ("", "console") and body.startswith("$ "):
            out.append(Block(name, line, "transcript", body))
    return out


def mask(line: str) -> str:
    """A line with every token of digits (and hex digits beside them) as ``#``."""
    line = re.sub(r"[0-9a-f]*[0-9][0-9a-f]*", "#", line)
    return " ".join(line.split())


def transcript_steps(body: str) -> list[tuple[str, list[str]]]:
    """(command, the output lines shown under it) for each ``$`` line of a transcript."""
    steps: list[tuple[str, list[str]]] = []
    for line in body.splitlines():
        if line.startswith("$ "):
            steps.append((line[2:], []))
        elif steps:
            steps[-1][1].append(line)
    return steps


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def population(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """``data/`` and ``ws/`` of ``socialrisk generate --users 5000 --seed 1``, loaded and scored."""
    base = tmp_path_factory.mktemp("population")
    env = _env(base)
    for cmd in ("socialrisk generate --users 5000 --seed 1 --out data", "socialrisk score data -w ws --out scores.csv"):
        proc = subprocess.run(["bash", "-c", cmd], cwd=base, env=env, capture_output=True, text=True, timeout=TIMEOUT)
        assert proc.returncode == 0, f"{cmd}: {proc.stderr[-2000:]}"
    return base, env


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SOCIALRISK_")}
    env.update({
        "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        "SOCIALRISK_PSEUDONYM_KEY": "docs-snippets-key-0123456789",
        "HOME": str(home),
        "COLUMNS": "200",
        "NO_COLOR": "1",
    })
    for name in ("SOCIALRISK_NEO4J_HOME", "SOCIALRISK_NEO4J_PORT", "SOCIALRISK_NEO4J_PASSWORD", "CI"):
        if name in os.environ:
            env[name] = os.environ[name]
    return env


def _run_script(body: str, cwd: Path, env: dict[str, str], where: str) -> dict[str, str]:
    """Run a script block; returns the environment it leaves (its ``export``s)."""
    port = str(_free_port())
    body = body.replace("localhost:8000", f"localhost:{port}").replace("--port 8000", f"--port {port}")
    dump = cwd / ".env-after"
    script = f"set -euo pipefail\n{body}\nenv -0 > {shlex.quote(str(dump))}\n"
    proc = subprocess.run(["bash", "-c", script], cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, f"{where}: the block failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    pairs = [p.split("=", 1) for p in dump.read_text().split("\0") if "=" in p]
    return {k: v for k, v in pairs}


def _run_transcript(body: str, cwd: Path, env: dict[str, str], where: str) -> dict[str, str]:
    for command, shown in transcript_steps(body):
        if command.startswith("export "):
            env = _run_script(command, cwd, env, f"{where}: {command}")
            continue
        proc = subprocess.run(["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True, timeout=TIMEOUT)
        assert proc.returncode == 0, f"{where}: `{command}` failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        expected = next((line for line in shown if line.strip() and line.strip() != "..."), None)
        if expected is None:
            continue
        printed = {mask(line) for line in proc.stdout.splitlines()}
        assert mask(expected) in printed, (
            f"{where}: `{command}` no longer prints the line the docs show:\n  docs: {expected}\n  now:  "
            + "\n        ".join(proc.stdout.splitlines()[:8])
        )
    return env


PAGES = [p for p in GUIDE if blocks(p)]


def test_the_guide_has_commands_to_run() -> None:
    assert len([b for p in GUIDE for b in blocks(p)]) >= 8


def test_only_the_two_commands_are_left_to_ci() -> None:
    left = []
    for page in GUIDE:
        text = page.read_text()
        for m in FENCE.finditer(text):
            if text[: m.start()].rstrip().endswith(RUN_BY_CI):
                left.append(m.group("body"))
    assert left, "the README's two commands carry the run-by-CI mark"
    for body in left:
        assert "./scripts/test.sh" in body and "socialrisk demo" in body, f"only the two commands may be left to CI:\n{body}"


@pytest.mark.slow
@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_page_runs_as_written(page: Path, population: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    base, env = population
    work = tmp_path / "page"
    page_blocks = blocks(page)
    if any("socialrisk generate" in b.body for b in page_blocks):
        work.mkdir()  # the page makes its own data
    else:
        shutil.copytree(base, work)
    env = dict(env, HOME=str(work))
    for block in page_blocks:
        where = f"{block.page}:{block.line}"
        if block.kind == "script":
            env = _run_script(block.body, work, env, where)
        else:
            env = _run_transcript(block.body, work, env, where)


def test_mask_keeps_words_and_hides_figures() -> None:
    assert mask("u0000744: credit score 578, decision review, risk 0.575") == "u#: credit score #, decision review, risk #.#"
    assert mask("model m-20261127T010459Z-d1a5aca2 is current") == "model m-#T#Z-# is current"
    assert mask("decision review") != mask("decision reject")


def test_transcript_steps_pair_commands_with_their_output() -> None:
    steps = transcript_steps("$ a\nout 1\n...\n$ b\n")
    assert steps == [("a", ["out 1", "..."]), ("b", [])]


TOML_PAGES = sorted((ROOT / "docs").rglob("*.md"))


@pytest.mark.parametrize("page", [p for p in TOML_PAGES if "```toml" in p.read_text()],
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_every_configuration_example_is_accepted(page: Path, tmp_path: Path) -> None:
    from socialrisk.settings import load_settings

    text = page.read_text()
    examples = [m.group("body") for m in FENCE.finditer(text) if m.group("lang") == "toml"]
    assert examples
    for i, body in enumerate(examples):
        path = tmp_path / f"example-{i}.toml"
        path.write_text(body)
        load_settings(path)  # raises ConfigError naming the key when the docs show a wrong one
