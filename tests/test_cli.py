"""The command line as other programs use it (CONTRACT.md)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from socialrisk.cli import app
from tests.conftest import tiny_frames, write_dir

runner = CliRunner()
CONTRACT_COLUMNS = ["user_id", "risk", "graph_risk", "credit_score", "decision", "reasons"]


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOCIALRISK_PSEUDONYM_KEY", "cli-test-key-0123456789")


def invoke(*args: str) -> object:
    return runner.invoke(app, list(args), catch_exceptions=False)


def test_every_command_has_help() -> None:
    for command in ("generate", "load", "propagate", "score", "explain", "rings", "flag", "evaluate", "demo"):
        result = invoke(command, "--help")
        assert result.exit_code == 0, command  # type: ignore[attr-defined]


def test_generate_writes_emails_only_when_asked(tmp_path: Path) -> None:
    for flag, expected in (([], 0), (["--emails"], 200)):
        out = tmp_path / ("with" if flag else "without")
        result = invoke("generate", "--users", "200", "--seed", "1", "--format", "csv", "--out", str(out), *flag)
        assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
        links = pd.read_csv(out / "links.csv")
        assert (links["kind"] == "email").sum() == expected
    without = pd.read_csv(tmp_path / "without" / "links.csv")
    with_emails = pd.read_csv(tmp_path / "with" / "links.csv")
    pd.testing.assert_frame_equal(with_emails[with_emails["kind"] != "email"].reset_index(drop=True), without)


def test_score_writes_the_contract_table(tmp_path: Path, tiny_dir: Path) -> None:
    out = tmp_path / "scores.csv"
    result = invoke("score", str(tiny_dir), "--out", str(out), "--workspace", str(tmp_path / "ws"))
    assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
    scores = pd.read_csv(out, keep_default_na=False)
    assert list(scores.columns[:6]) == CONTRACT_COLUMNS
    assert sorted(scores["user_id"]) == sorted(["f1", "a", "b", "c", "g", "z"])
    assert scores["credit_score"].between(350, 950).all()
    a = scores.set_index("user_id").loc["a"]
    assert "shares a device with 1 account confirmed as fraud" in a["reasons"].split(";")


def test_scores_file_holds_the_data_dirs_users(tmp_path: Path, tiny_dir: Path) -> None:
    ws = str(tmp_path / "ws")
    other = write_dir({"relations": pd.DataFrame({"src": ["o1"], "dst": ["o2"], "kind": ["transfer"]})}, tmp_path / "other")
    invoke("load", str(other), "--workspace", ws)
    result = invoke("score", str(tiny_dir), "--out", str(tmp_path / "s.csv"), "--workspace", ws)
    assert result.exit_code == 0
    assert "also holds 2 users from earlier loads" in result.output  # type: ignore[attr-defined]
    assert sorted(pd.read_csv(tmp_path / "s.csv")["user_id"]) == sorted(["f1", "a", "b", "c", "g", "z"])


def test_steps_run_as_separate_commands(tmp_path: Path, tiny_dir: Path) -> None:
    ws = str(tmp_path / "ws")
    assert invoke("load", str(tiny_dir), "--workspace", ws).exit_code == 0  # type: ignore[attr-defined]
    again = invoke("load", str(tiny_dir), "--workspace", ws)
    assert "already present" in again.output  # type: ignore[attr-defined]
    prop = invoke("propagate", "--workspace", ws)
    assert prop.exit_code == 0 and "most exposed" in prop.output  # type: ignore[attr-defined]
    assert invoke("score", "--workspace", ws).exit_code == 0  # type: ignore[attr-defined]
    text = invoke("explain", "a", "--workspace", ws)
    assert text.exit_code == 0  # type: ignore[attr-defined]
    assert "shares device d-" in text.output and "account f1, confirmed fraud on 2026-03-01" in text.output  # type: ignore[attr-defined]
    as_json = json.loads(invoke("explain", "a", "--workspace", ws, "--json").output)  # type: ignore[attr-defined]
    assert as_json["contributions"][0]["seed"] == "f1" and as_json["provenance"]["model_version"]


def test_explain_before_score_and_unknown_user(tmp_path: Path, tiny_dir: Path) -> None:
    ws = str(tmp_path / "ws")
    invoke("load", str(tiny_dir), "--workspace", ws)
    early = invoke("explain", "a", "--workspace", ws)
    assert early.exit_code == 4 and "no 'scores' result" in early.output  # type: ignore[attr-defined]
    invoke("score", "--workspace", ws)
    unknown = invoke("explain", "ghost", "--workspace", ws)
    assert unknown.exit_code == 4 and "unknown user 'ghost'" in unknown.output  # type: ignore[attr-defined]


def test_rings_need_scores_first(tmp_path: Path, tiny_dir: Path) -> None:
    ws = str(tmp_path / "ws")
    invoke("load", str(tiny_dir), "--workspace", ws)
    early = invoke("rings", "--workspace", ws)
    assert early.exit_code == 4 and "run 'socialrisk score' first" in early.output  # type: ignore[attr-defined]
    invoke("score", "--workspace", ws)
    unknown = invoke("rings", "--kind", "cliques", "--workspace", ws)
    assert unknown.exit_code == 2 and "Unknown ring kind 'cliques'" in unknown.output  # type: ignore[attr-defined]


def test_rings_table_and_json(tmp_path: Path, tiny_dir: Path) -> None:
    ws = str(tmp_path / "ws")
    assert invoke("score", str(tiny_dir), "--workspace", ws).exit_code == 0  # type: ignore[attr-defined]
    # f1 and a share a device, f1, b, c and g an IP: one ring, whose risk is the sum of its members'
    text = invoke("rings", "--top", "3", "--workspace", ws)
    assert text.exit_code == 0, text.output  # type: ignore[attr-defined]
    assert "1 ring (users joined, directly or in a chain, by shared identifiers) holds 5 users" in text.output  # type: ignore[attr-defined]
    assert "1. ring-a\n   members: f1, " in text.output  # type: ignore[attr-defined]
    assert "fraud:   f1\n" in text.output and "benign:  g\n" in text.output  # type: ignore[attr-defined]
    assert "device d-" in text.output and "IP address i-" in text.output  # type: ignore[attr-defined]
    payload = json.loads(invoke("rings", "--top", "3", "--workspace", ws, "--json").output)  # type: ignore[attr-defined]
    assert payload["kind"] == "components" and payload["rings_found"] == 1 and payload["users_in_rings"] == 5
    (ring,) = payload["rings"]
    scores = pd.read_parquet(Path(ws) / "results" / "scores.parquet").set_index("user_id")
    assert ring["ring_id"] == "ring-a" and sorted(ring["members"]) == ["a", "b", "c", "f1", "g"]
    assert ring["risk_mass"] == pytest.approx(scores.loc[ring["members"], "risk"].sum())
    assert ring["members"][0] == "f1"  # the confirmed fraudster is the riskiest member
    assert ring["fraud_members"] == ["f1"] and ring["benign_members"] == ["g"]
    assert sorted(i.split(" ")[0] for i in ring["identifiers"]) == ["IP", "device"]
    assert payload["scores"]["model_version"]


@pytest.fixture(scope="module")
def generated_ws(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A workspace with 2,000 generated users, scored (built once for the tests below)."""
    root = tmp_path_factory.mktemp("generated")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SOCIALRISK_PSEUDONYM_KEY", "cli-test-key-0123456789")
        assert invoke("generate", "--users", "2000", "--seed", "3", "--out", str(root / "gen")).exit_code == 0  # type: ignore[attr-defined]
        assert invoke("score", str(root / "gen"), "--workspace", str(root / "ws")).exit_code == 0  # type: ignore[attr-defined]
    return str(root / "ws")


@pytest.mark.parametrize("kind", ["components", "communities", "dense"])
def test_rings_of_every_kind_on_a_generated_population(generated_ws: str, kind: str) -> None:
    result = invoke("rings", "--kind", kind, "--top", "5", "--workspace", generated_ws, "--json")
    assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
    rings = json.loads(result.output)["rings"]  # type: ignore[attr-defined]
    assert len(rings) == 5 and [r["rank"] for r in rings] == [1, 2, 3, 4, 5]
    masses = [r["risk_mass"] for r in rings]
    assert masses == sorted(masses, reverse=True)
    members = [m for r in rings for m in r["members"]]
    assert len(members) == len(set(members))  # a user is in one ring at most
    # the generated fraud rings share devices, phones and cards: the riskiest ring holds confirmed fraud
    assert rings[0]["fraud"] >= 1
    again = json.loads(invoke("rings", "--kind", kind, "--top", "5", "--workspace", generated_ws, "--json").output)["rings"]  # type: ignore[attr-defined]
    assert again == rings
    text = invoke("rings", "--kind", kind, "--top", "5", "--workspace", generated_ws)
    assert f"1. {rings[0]['ring_id']}" in text.output and "members: " in text.output  # type: ignore[attr-defined]


def test_bad_input_exits_non_zero_with_a_one_line_error(tmp_path: Path) -> None:
    frames = tiny_frames()
    frames["relations"] = frames["relations"].astype(object)
    frames["relations"].loc[2, "weight"] = "lots"
    data = write_dir(frames, tmp_path / "bad")
    result = invoke("score", str(data), "--out", str(tmp_path / "s.csv"), "--workspace", str(tmp_path / "ws"))
    assert result.exit_code == 3  # type: ignore[attr-defined]
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]  # type: ignore[attr-defined]
    assert len(lines) == 1
    assert "relations.csv" in lines[0] and "row 3" in lines[0] and "'weight'" in lines[0] and "'lots'" in lines[0]
    assert not (tmp_path / "s.csv").exists()


def test_neo4j_store_needs_its_password(tmp_path: Path, tiny_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SOCIALRISK_NEO4J_PASSWORD", raising=False)
    result = invoke("score", str(tiny_dir), "--store", "neo4j", "--out", str(tmp_path / "s.csv"))
    assert result.exit_code == 2 and "SOCIALRISK_NEO4J_PASSWORD" in result.output  # type: ignore[attr-defined]


@pytest.mark.neo4j
def test_score_through_neo4j_equals_embedded(tmp_path: Path, tiny_dir: Path, neo4j_store) -> None:  # type: ignore[no-untyped-def]
    embedded = invoke("score", str(tiny_dir), "--out", str(tmp_path / "e.csv"), "--workspace", str(tmp_path / "ws"))
    assert embedded.exit_code == 0  # type: ignore[attr-defined]
    through = invoke("score", str(tiny_dir), "--store", "neo4j", "--out", str(tmp_path / "n.csv"), "--workspace", str(tmp_path / "ws2"))
    assert through.exit_code == 0, through.output  # type: ignore[attr-defined]
    for step in (("propagate", "--store", "neo4j"), ("explain", "a", "--store", "neo4j")):
        assert invoke(*step).exit_code == 0, step
    a = pd.read_csv(tmp_path / "e.csv", keep_default_na=False)
    b = pd.read_csv(tmp_path / "n.csv", keep_default_na=False)
    # each store registers its own model version (named by the second it was fitted in); the
    # fitted payloads are the same, so the versions end in the same digest
    assert a["model_version"].str[-8:].tolist() == b["model_version"].str[-8:].tolist()
    pd.testing.assert_frame_equal(a.drop(columns="model_version"), b.drop(columns="model_version"))


def test_generate_then_evaluate_json(tmp_path: Path) -> None:
    data = tmp_path / "gen"
    assert invoke("generate", "--users", "2000", "--seed", "3", "--out", str(data), "--format", "csv").exit_code == 0  # type: ignore[attr-defined]
    result = invoke("evaluate", str(data), "--repeats", "2", "--json")
    assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
    payload = json.loads(result.output)  # type: ignore[attr-defined]
    assert payload["protocol"] == {"train_frac": 0.4, "repeats": 2, "seed": 0}
    for metric in ("auroc", "auprc", "rec_at_k"):
        assert 0.0 <= payload["metrics"][metric]["mean"] <= 1.0
    assert len(payload["runs"]) == 2


def test_evaluate_prints_the_tradeoff_table(tmp_path: Path) -> None:
    data = tmp_path / "gen"
    assert invoke("generate", "--users", "2000", "--seed", "3", "--out", str(data)).exit_code == 0  # type: ignore[attr-defined]
    result = invoke("evaluate", str(data), "--repeats", "2")
    assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
    text = result.output  # type: ignore[attr-defined]
    assert "AUROC" in text and "good users refused" in text  # the metrics table is still there
    assert "trade-off: users refused below each credit-score cut-off (* approve_at, 650)" in text
    rows = [line.split() for line in text.splitlines() if line.strip()[:3] in {str(c) for c in range(500, 801, 25)}]
    assert [r[0] for r in rows] == [str(c) for c in range(500, 801, 25)]
    assert any(r[:2] == ["650", "*"] for r in rows)


def test_demo_writes_scores_and_report(tmp_path: Path) -> None:
    result = invoke("demo", "--users", "1500", "--out", str(tmp_path / "demo"))
    assert result.exit_code == 0, result.output  # type: ignore[attr-defined]
    assert "AUROC" in result.output  # type: ignore[attr-defined]
    report = (tmp_path / "demo" / "report.html").read_text()
    assert "<h2>Evaluation on hidden labels" in report
    assert list(pd.read_csv(tmp_path / "demo" / "scores.csv").columns[:6]) == CONTRACT_COLUMNS


def test_installed_entry_point(tmp_path: Path, tiny_dir: Path) -> None:
    exe = Path(sys.executable).with_name("socialrisk")
    assert exe.exists(), "run the README's set-up command: the CLI is .venv/bin/socialrisk"
    done = subprocess.run([str(exe), "score", str(tiny_dir), "--out", str(tmp_path / "s.csv"), "--workspace", str(tmp_path / "ws")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    missing = subprocess.run([str(exe), "score", str(tmp_path / "nowhere"), "--out", str(tmp_path / "t.csv")], capture_output=True, text=True, cwd=tmp_path)
    assert missing.returncode == 3 and "not a directory" in missing.stderr
