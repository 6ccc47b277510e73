"""The analyst's commands: explore, path, case, rings --html and evaluate --plots, on the tiny
graph (tests/conftest.py) whose neighbourhoods can be worked out by hand."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from socialrisk.cli import app
from tests.conftest import write_dir
from loaders.synthetic import generate

runner = CliRunner()


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOCIALRISK_PSEUDONYM_KEY", "cli-views-key-0123456789")
    monkeypatch.setenv("SOCIALRISK_ACTOR", "analyst-7")


def invoke(*args: str):  # type: ignore[no-untyped-def]
    return runner.invoke(app, list(args), catch_exceptions=False)


@pytest.fixture
def ws(tmp_path: Path, tiny_dir: Path) -> str:
    workspace = str(tmp_path / "ws")
    assert invoke("score", str(tiny_dir), "--workspace", workspace).exit_code == 0
    return workspace


def test_the_commands_are_registered() -> None:
    listed = invoke("--help").output
    for command in ("explore", "path", "case", "rings", "evaluate"):
        assert re.search(rf"│ {command}\b", listed), command
        assert invoke(command, "--help").exit_code == 0
    assert "--html" in invoke("rings", "--help").output and "--plots" in invoke("evaluate", "--help").output


def test_the_entry_point_lists_them_without_an_import_cycle() -> None:
    exe = Path(sys.executable).with_name("socialrisk")
    done = subprocess.run([str(exe), "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and all(c in done.stdout for c in ("explore", "path", "case"))
    # the views module first, then the CLI: the same commands, no cycle
    code = "import socialrisk.cli_views, socialrisk.cli as c; print(sorted(x.name for x in c.app.registered_commands if x.name))"
    names = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "'case'" in names and "'explore'" in names and "'path'" in names


def test_explore_prints_the_neighbourhood(ws: str, tmp_path: Path) -> None:
    html = tmp_path / "a.html"
    result = invoke("explore", "a", "--workspace", ws, "--html", str(html))
    assert result.exit_code == 0, result.output
    text = result.output
    assert "2-hop neighbourhood: 5 users, 2 shared identifiers, 7 edges" in text
    assert re.search(r"2 │ f1 +│ +[01]\.\d{3} │ +\d+ │ reject +│ fraud", text)  # f1 two hops away, through the device
    assert "device d-" in text and "IP address i-" in text and "2 users" in text
    assert re.search(r"c +│ a +│ rating +│ +1 │ +-5\.00", text)  # the negative rating, signed
    assert "shares device d-" in text and "account f1" in text  # the explanation
    page = html.read_text()
    assert page.startswith("<!doctype html>") and "vis.Network" in page and "DEV-1" not in page
    payload = json.loads(invoke("explore", "a", "--workspace", ws, "--hops", "1", "--json").output)
    assert {n["name"] for n in payload["nodes"] if n["hop"] == 1} >= {"b", "c"}
    on_path = [e for e in payload["edges"] if e["on_path"]]
    assert {(e["source"], e["type"]) for e in on_path} == {("a", "USES"), ("f1", "USES")}


def test_explore_needs_scores_and_a_known_user(tmp_path: Path, tiny_dir: Path, ws: str) -> None:
    fresh = str(tmp_path / "fresh")
    assert invoke("load", str(tiny_dir), "--workspace", fresh).exit_code == 0
    result = invoke("explore", "a", "--workspace", fresh)
    assert result.exit_code == 4 and "run 'socialrisk score' first" in result.output
    unknown = invoke("explore", "ghost", "--workspace", ws)
    assert unknown.exit_code == 4 and "ghost" in unknown.output
    assert invoke("explore", "a", "--workspace", ws, "--hops", "9").exit_code == 2


def test_path_between_two_users(ws: str) -> None:
    result = invoke("path", "a", "g", "--workspace", ws)
    assert result.exit_code == 0, result.output
    assert "1 shortest path between a and g (2 edges):" in result.output
    assert "1. a -[rating]- c -[contact]- g" in result.output
    assert "g: risk " in result.output and "flagged benign" in result.output
    device = invoke("path", "a", "f1", "--workspace", ws).output
    assert re.search(r"1\. a - device d-[0-9a-f]{4} \(2 users\) - f1", device)
    assert "no path between a and z within 8 edges" in invoke("path", "a", "z", "--workspace", ws).output
    payload = json.loads(invoke("path", "b", "c", "--workspace", ws, "--json").output)
    assert [p["nodes"][1] for p in payload["paths"]][0] == "a" and len(payload["paths"]) == 2


def test_case_writes_one_offline_file(ws: str, tmp_path: Path) -> None:
    out = tmp_path / "case" / "a.html"
    result = invoke("case", "a", "--out", str(out), "--workspace", ws)
    assert result.exit_code == 0, result.output
    assert f"case file of a written to {out}" in result.output
    page = out.read_text()
    assert "<h1>Case file: a</h1>" in page and "Made by analyst-7" in page
    assert "LINKED_FRAUD_DEVICE" in page and "Dimension scores" in page and "Audit trail" in page
    assert not re.search(r"<(script|link|img)[^>]+(src|href)=", page)


def test_rings_html(ws: str, tmp_path: Path) -> None:
    out = tmp_path / "rings.html"
    result = invoke("rings", "--top", "3", "--workspace", ws, "--html", str(out))
    assert result.exit_code == 0, result.output
    assert "1. ring-a" in result.output  # the table is still printed
    page = out.read_text()
    assert "1. ring-a</h2>" in page and page.count('class="graph-box"') == 1
    (block,) = re.findall(r'<script type="application/json" id="ring-0-data">(.*?)</script>', page, flags=re.S)
    assert len(json.loads(block)["nodes"]) == 7  # five members, the device and the IP


def test_evaluate_writes_the_figures(tmp_path: Path) -> None:
    frames = generate(n_users=1500, seed=3)
    frames.pop("truth")
    data = write_dir(frames, tmp_path / "gen", fmt="parquet")
    result = invoke("evaluate", str(data), "--repeats", "2", "--plots", str(tmp_path / "figs"), "--json")
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output)
    assert set(payload["plots"]) == {"score_distributions", "roc", "precision_recall", "tradeoff", "calibration"}
    for path in payload["plots"].values():
        assert Path(path).stat().st_size > 10_000
