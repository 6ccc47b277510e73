"""What every ``socialrisk`` command shares: the Typer application, the consoles, the common
options, the step spinner and the error handling that turns a :class:`SocialRiskError` into
its exit code.

:mod:`socialrisk.cli` and :mod:`socialrisk.cli_views` register their commands on :data:`app`;
both import this module and neither imports the other's commands, so there is no import circle.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Callable, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from loaders.errors import ParameterError, SocialRiskError
from socialrisk.settings import ENV_WORKSPACE, Settings, load_settings

__all__ = ["app", "out", "err", "WorkspaceOpt", "ConfigOpt", "StoreOpt", "EngineOpt"]

app = typer.Typer(
    name="socialrisk",
    help="Graph-based social risk analysis: load, propagate, score, explain, evaluate.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console(highlight=False, soft_wrap=True, markup=False)
err = Console(stderr=True, highlight=False)

WorkspaceOpt = Annotated[
    Path,
    typer.Option("--workspace", "-w", envvar=ENV_WORKSPACE, help="Workspace directory of the embedded store."),
]
ConfigOpt = Annotated[Optional[Path], typer.Option("--config", "-c", help="TOML configuration file.")]
StoreOpt = Annotated[str, typer.Option("--store", help="Graph store: embedded (default, no server) or neo4j.")]
EngineOpt = Annotated[
    str,
    typer.Option("--engine", help="single (default: this machine) or spark (Apache Spark, local or a cluster; needs the spark extra, see docs/scaling.md)."),
]


def _engine(engine: str) -> str:
    if engine not in ("single", "spark"):
        raise ParameterError(f"Unknown engine {engine!r}; expected one of single, spark.")
    return engine


@contextlib.contextmanager
def _steps(title: str) -> Iterator[Callable[[str], None]]:
    """A spinner with the current step and elapsed time, on stderr."""
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=err, transient=True) as bar:
        task = bar.add_task(title, total=None)

        def update(message: str) -> None:
            bar.update(task, description=f"{title}: {message}")

        yield update


def _settings(config: Optional[Path]) -> Settings:
    return load_settings(config)


def _notice(message: str) -> None:
    err.print(f"[yellow]note:[/yellow] {escape(message)}", soft_wrap=True)


def _run(fn: Callable[[], None]) -> None:
    try:
        fn()
    except SocialRiskError as exc:
        err.print(f"[red]error:[/red] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(exc.exit_code) from None
