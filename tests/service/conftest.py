"""Fixtures of the service tests: a generated population, loaded and scored once per session,
copied for each test (flags and appeals write to the workspace)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
from fastapi.testclient import TestClient

from graph.store import EmbeddedStore
from loaders.synthetic import generate, write_tables
from socialrisk import workflow
from socialrisk.settings import ServiceConfig, Settings

PSEUDONYM_KEY = "service-test-key-0123456789"
API_KEY = "test-api-key-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
USERS = 1500
CLI = str(Path(sys.executable).with_name("socialrisk"))


def wait_for(check: Callable[[], Any], *, timeout: float = 20.0, every: float = 0.05, what: str = "the condition") -> Any:
    """Poll ``check`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(every)


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOCIALRISK_PSEUDONYM_KEY", PSEUDONYM_KEY)
    monkeypatch.setenv("SOCIALRISK_API_KEYS", API_KEY)


@pytest.fixture(scope="session")
def population(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A generated data directory (users, links, relations, flags)."""
    data = tmp_path_factory.mktemp("population") / "data"
    write_tables(generate(n_users=USERS, seed=0), data)
    return data


@pytest.fixture(scope="session")
def scored(population: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An embedded workspace with the population loaded and scored (never changed: copy it)."""
    ws = tmp_path_factory.mktemp("scored") / "ws"
    old = os.environ.get("SOCIALRISK_PSEUDONYM_KEY")
    os.environ["SOCIALRISK_PSEUDONYM_KEY"] = PSEUDONYM_KEY
    try:
        with EmbeddedStore(ws) as store:
            workflow.load_into(store, population, Settings(), ws)
            workflow.score(store, Settings(), workspace=ws)
    finally:
        if old is None:
            os.environ.pop("SOCIALRISK_PSEUDONYM_KEY", None)
        else:
            os.environ["SOCIALRISK_PSEUDONYM_KEY"] = old
    return ws


@pytest.fixture
def ws(scored: Path, tmp_path: Path) -> Path:
    """A private copy of the scored workspace."""
    out = tmp_path / "ws"
    shutil.copytree(scored, out)
    return out


@pytest.fixture
def scores(scored: Path) -> pd.DataFrame:
    return pd.read_parquet(scored / "results" / "scores.parquet")


def service_settings(**service: Any) -> Settings:
    """Default settings with a fast health loop for tests, and ``service`` overrides."""
    return Settings(service=ServiceConfig(**{"health_seconds": 0.2, "refresh_seconds": 0.5, **service}))


def make_client(ws: Path, settings: Settings | None = None, store: str = "embedded") -> Iterator[TestClient]:
    from socialrisk.service import create_app

    app = create_app(settings or service_settings(), store, ws)
    with TestClient(app) as client:
        wait_for(lambda: client.get("/readyz").json()["graph"] == "ready", what="the graph in memory")
        yield client


@pytest.fixture
def client(ws: Path) -> Iterator[TestClient]:
    yield from make_client(ws)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Served:
    """A ``socialrisk serve`` subprocess on a free loopback port."""

    def __init__(self, args: list[str], env: dict[str, str], cwd: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = cwd / f"serve-{self.port}.log"
        self._log = open(self.log, "wb")
        self.proc = subprocess.Popen([CLI, "serve", "--port", str(self.port), *args], env=env, cwd=cwd, stdout=self._log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.http = httpx.Client(base_url=self.url, headers=AUTH, timeout=10.0)

    def wait_ready(self, *, timeout: float = 90.0, graph: bool = True) -> dict[str, Any]:
        def ready() -> Any:
            if self.proc.poll() is not None:
                pytest.fail(f"socialrisk serve exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                r = self.http.get("/readyz")
            except httpx.TransportError:
                return None
            body = r.json()
            return body if r.status_code == 200 and (not graph or body["graph"] == "ready") else None

        return wait_for(ready, timeout=timeout, every=0.2, what=f"socialrisk serve on {self.url} to be ready")

    def stop(self) -> int:
        self.http.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


def serve(args: list[str], cwd: Path, **env: str) -> Served:
    full = dict(os.environ, SOCIALRISK_PSEUDONYM_KEY=PSEUDONYM_KEY, SOCIALRISK_API_KEYS=API_KEY, **env)
    return Served(args, full, cwd)
