"""The command line of decisions: policies, recourse and the fairness report, and their errors."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from socialrisk.cli import app
from tests.conftest import tiny_frames, write_dir

runner = CliRunner()


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOCIALRISK_PSEUDONYM_KEY", "cli-test-key-0123456789")


def invoke(*args: str) -> object:
    return runner.invoke(app, list(args), catch_exceptions=False)


def test_unknown_policy_is_a_one_line_error(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('[scoring]\npolicy = "mars"\n')
    data = write_dir(tiny_frames(), tmp_path / "data")
    result = invoke("score", str(data), "--out", str(tmp_path / "s.csv"), "--workspace", str(tmp_path / "ws"), "--config", str(config))
    assert result.exit_code != 0  # type: ignore[attr-defined]
    lines = [ln for ln in result.output.splitlines() if ln.strip()]  # type: ignore[attr-defined]
    assert len(lines) == 1 and "Unknown decision policy 'mars'; expected one of default, eu" in lines[0]


def test_scores_under_eu_carry_both_outputs_and_the_review_route(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('[scoring]\npolicy = "eu"\n')
    data = write_dir(tiny_frames(), tmp_path / "data")
    out = tmp_path / "s.csv"
    ws = str(tmp_path / "ws")
    assert invoke("score", str(data), "--out", str(out), "--workspace", ws, "--config", str(config)).exit_code == 0  # type: ignore[attr-defined]
    s = pd.read_csv(out, keep_default_na=False).set_index("user_id")
    assert {"fraud_risk", "credit_risk", "principal_reasons", "review_route", "decision_basis"} <= set(s.columns)
    assert (s["policy"] == "eu").all()
    # the tiny graph's credit output reads no link: a user's credit reasons never name the graph
    assert not s["credit_reason_codes"].str.contains("LINKED|SOCIAL").any()
    refused = s["decision"] != "approve"
    assert refused.any() and (s.loc[refused, "review_route"] != "").all()
    approved = s.index[~refused][0]
    result = invoke("explain", approved, "--workspace", ws, "--config", str(config), "--recourse")
    assert result.exit_code != 0  # type: ignore[attr-defined]
    assert f"User '{approved}' is approved" in result.output and "recourse is for refused or reviewed users" in result.output  # type: ignore[attr-defined]
    f1 = invoke("explain", "f1", "--workspace", ws, "--config", str(config), "--recourse", "--json")
    payload = json.loads(f1.output)  # type: ignore[attr-defined]
    assert payload["recourse"]["options"] == [] and "confirmed as fraud" in payload["recourse"]["note"]
    assert payload["principal_reasons"] and payload["review_route"]


def test_fairness_bad_segments(tmp_path: Path) -> None:
    frames = tiny_frames()
    frames["users"] = frames["users"].assign(band="x")
    data = write_dir(frames, tmp_path / "data")
    missing = invoke("fairness", str(data), "--segment", "age_band")
    assert missing.exit_code != 0 and "no segment column 'age_band'; the columns are:" in missing.output  # type: ignore[attr-defined]
    single = invoke("fairness", str(data), "--segment", "band")
    assert single.exit_code != 0 and "the segment column 'band' has one value ('x')" in single.output  # type: ignore[attr-defined]
