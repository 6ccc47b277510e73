"""What the service benchmarks share: an open-loop HTTP load generator, and the ``socialrisk``
subprocesses it measures (the CLI steps that prepare a workspace, the served service).

The generator sends request ``i`` at ``start + i / rate`` over a pool of keep-alive connections,
whether earlier answers came back or not (a stalled server does not slow the load down: no
coordinated omission). A request is timed from when its timer fired, so the wait for a free
connection counts; how late the timers fired (event-loop timers tick in milliseconds) is kept
apart. Timestamps are ``time.monotonic()``: on Linux one clock for every process, so another
process's events (a restart) can be laid over them.
"""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "ROOT", "CLI", "KEY", "PSEUDONYM_KEY", "Sample", "LoadRun", "request_bytes", "open_loop", "install_uvloop", "percentile_ms",
    "run_cli", "free_port", "Server", "rss_kib",
]

ROOT = Path(__file__).resolve().parents[1]
CLI = str(Path(sys.executable).with_name("socialrisk"))
KEY = "benchmark-api-key-not-secret-0123456789"
PSEUDONYM_KEY = "benchmark-key-not-secret-0123456789"


# -- the load generator ----------------------------------------------------------------------------


def request_bytes(method: str, path: str, *, host: str, key: str = KEY, body: bytes | None = None) -> bytes:
    """One HTTP/1.1 keep-alive request, ready to write."""
    head = [f"{method} {path} HTTP/1.1", f"Host: {host}", f"Authorization: Bearer {key}", "Connection: keep-alive"]
    if body is not None:
        head += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + (body or b"")


@dataclass(slots=True)
class Sample:
    """One request's outcome.

    Attributes
    ----------
    index : int
        Its place in the schedule.
    started : float
        ``time.monotonic()`` when its timer fired.
    latency : float or None
        Seconds from ``started`` to the last byte of the answer; None without an answer.
    status : int or None
        HTTP status; None when there was no answer (``error`` says why).
    error : str or None
        ``timeout`` or the exception that ended the exchange.
    retry_after : str or None
        The ``Retry-After`` header of the answer.
    body : bytes or None
        The answer's body, when asked to keep it, and of every answer with a status >= 400.
    """

    index: int
    started: float
    latency: float | None = None
    status: int | None = None
    error: str | None = None
    retry_after: str | None = None
    body: bytes | None = None


@dataclass
class LoadRun:
    """A run in progress or done: samples in completion order, timer lags, and when it started."""

    sent: int = 0
    start: float = 0.0
    elapsed_s: float = 0.0
    samples: list[Sample] = field(default_factory=list)
    lags: list[float] = field(default_factory=list)

    def errors(self) -> dict[str, int]:
        """Answers other than 2xx by status, and exchanges without an answer by cause."""
        out: dict[str, int] = {}
        for s in self.samples:
            if s.status is None or not 200 <= s.status < 300:
                name = str(s.status) if s.status is not None else str(s.error)
                out[name] = out.get(name, 0) + 1
        return out


async def _exchange(conn: tuple[asyncio.StreamReader, asyncio.StreamWriter], request: bytes, sample: Sample, keep_body: bool) -> None:
    reader, writer = conn
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    sample.status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"retry-after":
            sample.retry_after = value.strip().decode()
        elif name == b"transfer-encoding":
            raise ValueError("chunked answers are not read by this generator")
    body = await reader.readexactly(length)
    if keep_body or sample.status >= 400:  # error bodies are short and say why
        sample.body = body


async def open_loop(
    host: str, port: int, requests: Sequence[bytes], *, rate: float, count: int, connections: int, timeout: float,
    request_timeout: float | None = None, keep_body: Callable[[int], bool] | None = None,
    report: Callable[[LoadRun], None] | None = None, report_every: float = 10.0, on_start: Callable[[float], None] | None = None,
) -> LoadRun:
    """Send ``count`` requests at ``rate`` per second, request ``i`` being ``requests[i % len(requests)]``.

    Parameters
    ----------
    host, port : str, int
        Where the server listens.
    requests : sequence of bytes
        Rendered requests (:func:`request_bytes`).
    rate : float
        Requests per second, by schedule (open loop).
    count : int
        Requests in all.
    connections : int
        Keep-alive connections opened up front; a broken one is opened again on next use.
    timeout : float
        Seconds to wait for the whole run; requests still open then count as ``timeout``.
    request_timeout : float, optional
        Seconds one exchange may take; past it the connection is dropped and the request counts
        as ``timeout``.
    keep_body : callable, optional
        ``index -> bool``: keep the body of those answers (and of every error).
    report : callable, optional
        Called every ``report_every`` seconds with the run so far (progress).
    on_start : callable, optional
        Called with the time the first request is due (``time.monotonic()``), once it is fixed.

    Returns
    -------
    LoadRun
    """
    clock = time.monotonic  # not loop.time(): uvloop's clock ticks in whole milliseconds
    pool: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter] | None] = asyncio.Queue()
    for _ in range(connections):
        pool.put_nowait(await asyncio.open_connection(host, port))
    run = LoadRun(start=clock() + 0.05)
    if on_start is not None:
        on_start(run.start)

    async def one(i: int) -> None:
        due = run.start + i / rate
        ready = clock()  # the timer that woke this request may fire up to a millisecond late: that is the
        run.lags.append(ready - due)  # generator's lag, kept apart; waiting for a free connection counts
        sample = Sample(index=i, started=ready)
        conn = await pool.get()
        try:
            if conn is None:
                conn = await asyncio.open_connection(host, port)
            exchange = _exchange(conn, requests[i % len(requests)], sample, keep_body is not None and keep_body(i))
            await (asyncio.wait_for(exchange, request_timeout) if request_timeout else exchange)
            sample.latency = clock() - ready
        except (asyncio.TimeoutError, TimeoutError, asyncio.CancelledError) as exc:
            sample.status, sample.error = None, "timeout"  # past request_timeout, or still open at the run's end
            conn = _drop(conn)
            if isinstance(exc, asyncio.CancelledError):
                raise
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
            sample.status, sample.error = None, type(exc).__name__
            conn = _drop(conn)  # reconnect on next use
        finally:
            run.samples.append(sample)
            pool.put_nowait(conn)

    async def reporter() -> None:
        while True:
            await asyncio.sleep(report_every)
            report(run)  # type: ignore[misc]

    progress = asyncio.create_task(reporter()) if report is not None else None
    tasks = []
    for i in range(count):
        delay = run.start + i / rate - clock()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i)))
        run.sent = i + 1
    _, pending = await asyncio.wait(tasks, timeout=max(1.0, timeout - (clock() - run.start))) if tasks else (set(), set())
    for t in pending:
        t.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    answered = {s.index for s in run.samples}
    for i in range(count):
        if i not in answered:
            run.samples.append(Sample(index=i, started=run.start + i / rate, error="timeout"))
    if progress is not None:
        progress.cancel()
    run.elapsed_s = clock() - run.start
    return run


def _drop(conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None) -> None:
    if conn is not None:
        conn[1].close()
    return None


def install_uvloop() -> None:
    """Use uvloop when installed (a cheaper event loop: the generator's own cost stays low)."""
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass


def percentile_ms(ordered: Sequence[float], q: float) -> float | None:
    """The ``q`` quantile (nearest rank below) of sorted seconds, in milliseconds."""
    if not len(ordered):
        return None
    return round(1e3 * ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)


# -- the processes measured ------------------------------------------------------------------------


def run_cli(args: list[str], env: dict[str, str], *, quiet: bool = False) -> float:
    """Run ``socialrisk ARGS``; exit with its output when it fails. Returns its wall time."""
    t0 = time.perf_counter()
    done = subprocess.run([CLI, *args], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"socialrisk {' '.join(args)} failed ({done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    elapsed = time.perf_counter() - t0
    if not quiet:
        print(f"socialrisk {args[0]}: {elapsed:.1f} s", flush=True)
    return elapsed


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_kib(pid: int) -> int | None:
    """Resident memory of a process (``VmRSS`` of ``/proc/PID/status``), in KiB; None when gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


class Server:
    """``socialrisk serve ARGS`` in a subprocess on a free loopback port, its output in ``log``."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path, *, key: str = KEY) -> None:
        import httpx

        self.port = free_port()
        self.log = open(log, "wb")
        self.proc = subprocess.Popen([CLI, "serve", "--port", str(self.port), *args], env=env, stdout=self.log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", headers={"Authorization": f"Bearer {key}"}, timeout=30)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_ready(self, timeout: float = 900) -> dict[str, Any]:
        """Wait for ``/readyz`` to be 200 with the graph in memory; exit when it does not come."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                sys.exit(f"socialrisk serve exited with {self.proc.returncode}; see {self.log.name}")
            try:
                r = self.http.get("/readyz")
                body = r.json()
                if r.status_code == 200 and body["graph"] == "ready":
                    return dict(body)
            except Exception:  # noqa: BLE001 - not listening yet
                pass
            time.sleep(0.5)
        sys.exit(f"socialrisk serve was not ready within {timeout:.0f} s; see {self.log.name}")

    def stop(self) -> int | None:
        """SIGTERM (a clean shutdown), SIGKILL after a minute; returns the exit code."""
        self.http.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return self.proc.returncode
