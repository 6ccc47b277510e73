"""A Spark session for the parity tests: local mode, two cores, two partitions (one task per core
and stage: every task costs scheduling time, which dominates on these small graphs), little memory."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest


def _spark_unavailable(reason: str) -> None:
    """Outside CI a missing pyspark skips the Spark tests; in CI it fails them (scripts/test.sh
    installs the spark extra)."""
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"Spark tests must run in CI: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def spark() -> Iterator[Any]:
    """One ``local[2]`` session for every Spark test (starting a JVM takes seconds)."""
    try:
        import pyspark  # noqa: F401
    except ImportError:
        _spark_unavailable("pyspark is not installed: pip install -e '.[spark]'")
    from graph.spark.session import spark_session

    session = spark_session(master="local[2]", app_name="socialrisk-tests", shuffle_partitions=2, driver_memory="1536m")
    yield session
    session.stop()
