"""Out-of-time evaluation: what enters the graph at the cut, when labels become known, the report."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from loaders import DataError, read_tables
from loaders.synthetic import generate
from scoring.evaluate import evaluate_time, label_times, tables_at
from tests.conftest import KEY, tiny_frames


def test_tables_at_leave_out_what_is_dated_after_the_cut() -> None:
    t = read_tables(tiny_frames(), key=KEY)
    cut = pd.Timestamp("2026-01-15", tz="UTC")
    past = tables_at(t, cut)
    # a's device link (2026-02-01) is later; every relation (February) and flag (March) too
    assert len(past.links) == len(t.links) - 1 and not (past.links["first_seen"] > cut).any()
    assert len(past.relations) == 0 and len(past.flags) == 0
    undated = read_tables({**tiny_frames(), "relations": tiny_frames()["relations"].drop(columns="ts")}, key=KEY)
    assert len(tables_at(undated, cut).relations) == 3  # nothing says they came later


def test_label_time_is_the_flag_time_else_the_first_activity() -> None:
    frames = tiny_frames()
    frames["flags"] = pd.DataFrame({"user_id": ["f1", "g", "a"], "label": ["fraud", "benign", "fraud"], "ts": ["2026-03-01", None, None]})
    t = read_tables(frames, key=KEY)
    times = label_times(t)
    assert times.tolist() == [
        pd.Timestamp("2026-03-01", tz="UTC"),
        pd.Timestamp("2026-01-01", tz="UTC"),  # g: its IP link
        pd.Timestamp("2026-01-05", tz="UTC"),  # a: its phone link, before its device and the relations
    ]


@pytest.fixture(scope="module")
def generated():  # type: ignore[no-untyped-def]
    raw = {k: v for k, v in generate(n_users=3000, seed=3).items() if k != "truth"}
    return read_tables(raw, key=KEY)


def test_the_later_labels_are_judged_and_the_report_counts_each_side(generated) -> None:  # type: ignore[no-untyped-def]
    report = evaluate_time(generated)
    split = report.meta["split"]
    times = label_times(generated)
    cut = pd.Timestamp(split["at"])
    assert split["train"]["users"] == int((times <= cut).sum()) and split["test"]["users"] == int((times > cut).sum())
    assert split["train"]["users"] + split["test"]["users"] + split["undated"] == report.n_labelled
    assert report.runs["hidden"].iloc[0] == split["test"]["users"]
    assert split["graph_at_cut"]["links"] == int((~(generated.links["first_seen"] > cut)).sum()) < split["graph"]["links"]
    assert 0.5 < report.summary()["auroc"]["mean"] <= 1.0
    hidden = set(report.predictions["user_id"])
    assert hidden.isdisjoint(set(generated.flags.loc[generated.flags["ts"] <= cut, "user_id"]))


def test_a_cut_with_too_few_labels_on_one_side_says_so(generated) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(DataError, match="each side needs at least 2"):
        evaluate_time(generated, at="1990-01-01")


def test_no_time_at_all_is_an_error() -> None:
    frames = {k: v for k, v in tiny_frames().items()}
    frames["flags"] = frames["flags"].drop(columns="ts")
    frames["links"] = frames["links"].drop(columns=["first_seen", "last_seen"])
    frames["relations"] = frames["relations"].drop(columns="ts")
    with pytest.raises(DataError, match="needs times"):
        evaluate_time(read_tables(frames, key=KEY))


def test_the_command_reports_both_sides(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from typer.testing import CliRunner

    from loaders.synthetic import write_tables
    from socialrisk.cli import app

    monkeypatch.setenv("SOCIALRISK_PSEUDONYM_KEY", KEY.decode())
    write_tables(generate(n_users=1500, seed=4), tmp_path / "data")
    result = CliRunner().invoke(app, ["evaluate", str(tmp_path / "data"), "--split", "time"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    text = result.output
    assert "time split at" in text and "labelled users before it train" in text and "AUROC" in text
    assert np.isfinite(float(text.split("AUROC")[1].replace("│", " ").split()[0]))
