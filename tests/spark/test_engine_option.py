"""``--engine spark`` where pyspark is missing, and the default import without pyspark: these
need no Spark and run everywhere."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from loaders.errors import ConfigError
from socialrisk.cli import app
from tests.conftest import tiny_frames, write_dir

runner = CliRunner()


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOCIALRISK_PSEUDONYM_KEY", "spark-option-key-0123456789")


def _invoke(*args: str) -> Any:
    return runner.invoke(app, list(args), catch_exceptions=False)


def test_missing_pyspark_says_how_to_install(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """``--engine spark`` without pyspark fails with the install command, never falls back."""
    from graph.spark.session import require_pyspark

    monkeypatch.setitem(sys.modules, "pyspark", None)  # import pyspark now raises ImportError
    with pytest.raises(ConfigError, match=r"pip install 'socialrisk\[spark\]'"):
        require_pyspark()
    data = write_dir(tiny_frames(), tmp_path / "tiny")
    ws = str(tmp_path / "ws")
    assert _invoke("load", str(data), "--workspace", ws).exit_code == 0
    for args in (("propagate",), ("score", "--out", str(tmp_path / "s.parquet"))):
        result = _invoke(*args, "--workspace", ws, "--engine", "spark")
        assert result.exit_code == 2 and "pip install 'socialrisk[spark]'" in result.output, result.output
    assert not (tmp_path / "s.parquet").exists()


def test_default_import_does_not_load_pyspark() -> None:
    code = "import sys, socialrisk, socialrisk.cli, socialrisk.workflow, graph, scoring; print('pyspark' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
