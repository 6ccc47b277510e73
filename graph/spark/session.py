"""Spark session plumbing: the pyspark check, a session for this engine, shuffle metrics.

Nothing here computes anything; :mod:`graph.spark.projection` and
:mod:`graph.spark.propagation` hold the math. pyspark is an optional dependency (the ``spark``
extra): this module imports it only inside its functions, so importing it never fails.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.request
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from loaders.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import SparkSession

__all__ = ["MISSING_PYSPARK", "require_pyspark", "spark_session", "ShuffleVolume", "shuffle_volume", "quiet_pandas_warning"]

#: What to do when pyspark is missing: the one error ``--engine spark`` gives.
MISSING_PYSPARK = (
    "the spark engine needs pyspark, which is not installed. Install the optional dependency with "
    "\"pip install 'socialrisk[spark]'\" (from a checkout: pip install -e '.[spark]'), and Java 17 or 21."
)

#: Settings every session of this engine gets unless the caller overrides them (see
#: ``docs/scaling.md``). Adaptive execution is off because it coalesces the shuffle partitions
#: of the iterate, which breaks its co-partitioning with the cached edges (an extra shuffle of
#: every edge per iteration); broadcast joins of the edges are off for the same reason (a new
#: broadcast per iteration). Canonical tables keep nanosecond times, which Spark reads as
#: integers only with ``nanosAsLong``.
DEFAULTS: Mapping[str, str] = {
    "spark.sql.adaptive.enabled": "false",
    "spark.sql.autoBroadcastJoinThreshold": "-1",
    "spark.sql.legacy.parquet.nanosAsLong": "true",
    "spark.sql.session.timeZone": "UTC",
    "spark.ui.showConsoleProgress": "false",
    # checkpointed iterates are freed when the driver's JVM collects them: do it often
    "spark.cleaner.periodicGC.interval": "1min",
    # a propagation runs one query per iteration: keep the UI's history of them short
    "spark.sql.ui.retainedExecutions": "50",
    # constraint inference over a wide iterate's filters costs time and memory for nothing here
    "spark.sql.constraintPropagation.enabled": "false",
}


def require_pyspark() -> None:
    """Check that pyspark can be imported.

    Raises
    ------
    ConfigError
        When it cannot, with the command that installs it.
    """
    try:
        import pyspark  # noqa: F401
    except ImportError:
        raise ConfigError(MISSING_PYSPARK) from None


def quiet_pandas_warning() -> None:
    """Silence pyspark's warning about pandas 3, which this engine does not rely on (it moves
    data through Arrow and pandas UDFs only in ways the tests cover)."""
    warnings.filterwarnings("ignore", message="PySpark does not yet fully support pandas", category=FutureWarning)


def spark_session(
    *,
    master: str | None = None,
    app_name: str = "socialrisk",
    shuffle_partitions: int | None = None,
    driver_memory: str | None = None,
    local_dir: str | None = None,
    conf: Mapping[str, str] | None = None,
) -> "SparkSession":
    """A Spark session configured for this engine (or the active one, reconfigured).

    Parameters
    ----------
    master : str, optional
        Spark master URL. Default: ``SOCIALRISK_SPARK_MASTER``, else the one ``spark-submit``
        was given (when it launched this process), else ``local[*]``.
    app_name : str
    shuffle_partitions : int, optional
        ``spark.sql.shuffle.partitions``: the partitions of every shuffle, and of the iterate
        and the edges, which must match. Default: ``SOCIALRISK_SPARK_PARTITIONS``, else Spark's.
    driver_memory : str, optional
        ``spark.driver.memory`` (only takes effect when this call starts the JVM).
    local_dir : str, optional
        ``spark.local.dir``: where shuffle and checkpoint blocks spill.
    conf : mapping, optional
        Any other Spark settings; they override :data:`DEFAULTS`.

    Returns
    -------
    SparkSession

    Raises
    ------
    ConfigError
        When pyspark is not installed.
    """
    require_pyspark()
    quiet_pandas_warning()
    from pyspark.sql import SparkSession

    # local mode: the Python workers (pandas UDFs) must be this interpreter, with its packages
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    builder = SparkSession.builder.appName(app_name)
    master = master or os.environ.get("SOCIALRISK_SPARK_MASTER")
    if master:
        builder = builder.master(master)
    elif "PYSPARK_GATEWAY_PORT" not in os.environ:
        # not launched by spark-submit (which starts the JVM with its own --master first)
        builder = builder.master("local[*]")
    settings: dict[str, str] = dict(DEFAULTS)
    partitions = shuffle_partitions or (int(os.environ["SOCIALRISK_SPARK_PARTITIONS"]) if os.environ.get("SOCIALRISK_SPARK_PARTITIONS") else None)
    if partitions is not None:
        if partitions < 1:
            raise ConfigError(f"The 'shuffle_partitions' of spark_session must be >= 1. Got {partitions!r} instead.")
        settings["spark.sql.shuffle.partitions"] = str(partitions)
    if driver_memory:
        settings["spark.driver.memory"] = driver_memory
    if local_dir:
        settings["spark.local.dir"] = local_dir
    settings.update(conf or {})
    for key, value in settings.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    for key, value in settings.items():
        # an already running session keeps its static settings; the SQL ones can change
        if key.startswith("spark.sql.") and spark.conf.isModifiable(key):
            spark.conf.set(key, value)
    spark.sparkContext.setLogLevel(os.environ.get("SOCIALRISK_SPARK_LOG_LEVEL", "ERROR"))
    return spark


@dataclass(frozen=True)
class ShuffleVolume:
    """Shuffle bytes of the stages a Spark application completed, from its monitoring API.

    Attributes
    ----------
    read_bytes, write_bytes : int
        Sums of ``shuffleReadBytes`` and ``shuffleWriteBytes`` over the stages.
    stages : int
        Completed stages counted.
    """

    read_bytes: int
    write_bytes: int
    stages: int

    def __sub__(self, other: "ShuffleVolume") -> "ShuffleVolume":
        return ShuffleVolume(self.read_bytes - other.read_bytes, self.write_bytes - other.write_bytes, self.stages - other.stages)


def shuffle_volume(spark: "SparkSession", *, timeout: float = 10.0) -> ShuffleVolume:
    """Shuffle read and write bytes of every completed stage so far.

    Read from the application's REST API (``<ui>/api/v1/applications/<id>/stages``): the
    status tracker has no byte counts.

    Raises
    ------
    ConfigError
        When the Spark UI is disabled (``spark.ui.enabled=false``) or does not answer.
    """
    url = spark.sparkContext.uiWebUrl
    if not url:
        raise ConfigError("shuffle volume needs the Spark UI's REST API; this session runs with spark.ui.enabled=false")
    app = spark.sparkContext.applicationId
    try:
        with urllib.request.urlopen(f"{url}/api/v1/applications/{app}/stages?status=complete", timeout=timeout) as response:
            stages: list[dict[str, Any]] = json.loads(response.read())
    except (urllib.error.URLError, OSError) as exc:
        raise ConfigError(f"the Spark UI at {url} did not answer ({exc}); shuffle volume is not available") from exc
    return ShuffleVolume(
        read_bytes=int(sum(s.get("shuffleReadBytes", 0) for s in stages)),
        write_bytes=int(sum(s.get("shuffleWriteBytes", 0) for s in stages)),
        stages=len(stages),
    )
