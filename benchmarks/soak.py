"""Soak test of the service on Neo4j (issue 8): a mixed load for minutes, a flag every second,
and Neo4j restarted once under it.

1. set-up: a private Neo4j (``--neo4j-home``, ``--neo4j-port``; started, then cleared),
   ``--users`` generated users loaded into it and scored there, and ``socialrisk serve --store
   neo4j`` on loopback with an API key (the first of ``SOCIALRISK_API_KEYS``, or a fixed one);
2. a warm-up: ``--warmup`` seconds of the same load, flags included (the flag writer's working
   memory is part of the service's), then, once its flags are written, the service's resident
   memory (``VmRSS``) as the start figure;
3. the soak: ``--rate`` requests/s for ``--duration`` seconds from a separate load-generator
   process (``--loadgen``, the open-loop generator of ``_loadgen.py``): ``POST /v1/enrich`` for
   the most part, some ``POST /v1/enrich/batch`` (50 users), ``GET /v1/users/{id}/explanation``
   and ``GET /v1/users/{id}/neighbourhood`` (2 hops, 50 a node) as ``--mix`` says, and one
   ``POST /v1/flags`` a second, alternately a new fraud flag and a cleared one, each on a user
   of its own;
4. at ``--restart-at`` seconds (a third of the way by default) Neo4j is stopped and started
   again (``socialrisk neo4j stop``, ``start``); the restart window runs from the stop to
   ``/readyz`` answering 200 again;
5. once the flags are written, the resident memory again, and every accepted flag (warm-up and
   soak) checked: served (``/v1/enrich/batch`` shows its flag), persisted (``/v1/flags/{id}``),
   and in Neo4j (its row in the flags table, the user's last flag, its audit entry; neither
   doubled).

Acceptance (exit status 1 when one fails): no accepted flag lost (nor written twice); no 5xx
outside the restart window, and inside it only 503 with ``Retry-After``; no other failures
(4xx, timeouts after 10 s, dropped connections); resident memory grown by less than 10%. A
request belongs to the window when its time in flight overlaps it. Figures go to ``benchmarks/results/soak.json`` and
are printed as a Markdown table. The service and Neo4j are stopped at the end, also on Ctrl-C,
SIGTERM or a failure.

    .venv/bin/python benchmarks/soak.py                      # 300 s at 200/s, 50,000 users
    .venv/bin/python benchmarks/soak.py --duration 60        # a shorter run
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from _loadgen import (
    CLI, KEY, PSEUDONYM_KEY, ROOT, LoadRun, Server, install_uvloop, open_loop, percentile_ms, request_bytes, rss_kib, run_cli,
)

#: Share of each route in the load, flags aside (one a second); ``--mix`` replaces it.
MIX = {"enrich": 0.90, "batch": 0.04, "explanation": 0.03, "neighbourhood": 0.03}
ROUTES = ("enrich", "batch", "explanation", "neighbourhood", "flag")
BATCH = 50
REQUEST_TIMEOUT = 10.0
MAX_GROWTH = 0.10
DEFAULT_HOME = Path("/tmp/neo4j-soak")
DEFAULT_PORT = 7727
DEFAULT_PASSWORD = "soak-password-not-secret"


# -- the load generator (its own process) --------------------------------------------------------


def _schedule(
    plan: dict[str, Any], host: str, key: str, *, mix: dict[str, float], count: int, every: int, flags: list[list[str]], seed: int
) -> tuple[list[bytes], list[str], dict[int, tuple[str, str]]]:
    """The requests of a run in order, the route of each, and the flags by place: one flag each
    ``every`` requests (one a second) while ``flags`` last, the rest drawn from ``mix``."""
    rng = random.Random(seed)
    users, marks = plan["users"], iter(flags)
    names, weights = list(mix), list(mix.values())
    requests, routes = [], []
    planned: dict[int, tuple[str, str]] = {}
    for i in range(count):
        mark = next(marks, None) if i % every == every // 2 else None
        if mark is not None:
            user, label = planned[i] = (mark[0], mark[1])
            route = "flag"
            req = request_bytes("POST", "/v1/flags", host=host, key=key, body=json.dumps({"user_id": user, "label": label}).encode())
        else:
            route = rng.choices(names, weights)[0]
            user = rng.choice(users)
            if route == "enrich":
                req = request_bytes("POST", "/v1/enrich", host=host, key=key, body=json.dumps({"user_id": user}).encode())
            elif route == "batch":
                req = request_bytes("POST", "/v1/enrich/batch", host=host, key=key,
                                    body=json.dumps({"user_ids": rng.sample(users, BATCH)}).encode())
            elif route == "explanation":
                req = request_bytes("GET", f"/v1/users/{user}/explanation", host=host, key=key)
            else:
                req = request_bytes("GET", f"/v1/users/{user}/neighbourhood?hops=2&limit=50", host=host, key=key)
        requests.append(req)
        routes.append(route)
    return requests, routes, planned


def loadgen(args: argparse.Namespace) -> None:
    """Run the load and write every request's outcome to ``--result`` (the ``--loadgen`` process).
    Prints ``started <time.monotonic()>`` on stdout when the first request is due, progress on stderr."""
    install_uvloop()
    plan = json.loads(Path(args.plan).read_text())
    key = (os.environ.get("SOCIALRISK_API_KEYS") or KEY).split(",")[0].strip()
    count = int(args.rate * args.seconds)
    requests, routes, planned = _schedule(plan, f"127.0.0.1:{args.port}", key, mix=_parse_mix(args.mix), count=count,
                                          every=max(1, round(args.rate)), flags=plan.get(args.flag_set, []), seed=args.seed)
    seen = [0]

    def report(run: LoadRun) -> None:
        fresh = run.samples[seen[0]:]
        seen[0] = len(run.samples)
        lat = sorted(s.latency for s in fresh if s.latency is not None)
        bad: dict[str, int] = {}
        for s in fresh:
            if s.status is None or s.status >= 400:
                name = f"{routes[s.index]} {s.status or s.error}"
                bad[name] = bad.get(name, 0) + 1
        print(f"  [{args.label} {time.monotonic() - run.start:4.0f} s] sent {run.sent:,}, answered {len(run.samples):,}; last 10 s: "
              f"p99 {percentile_ms(lat, 0.99)} ms, failures {bad or 0}", file=sys.stderr, flush=True)

    run = asyncio.run(open_loop(
        "127.0.0.1", args.port, requests, rate=args.rate, count=count, connections=args.connections,
        timeout=args.seconds + 2 * REQUEST_TIMEOUT, request_timeout=REQUEST_TIMEOUT, keep_body=lambda i: routes[i] == "flag",
        report=report, on_start=lambda t: print(f"started {t!r}", flush=True),
    ))
    samples = [[s.index, routes[s.index], s.started, s.latency, s.status, s.error, s.retry_after,
                s.body.decode(errors="replace")[:300] if s.body is not None and s.status is not None and s.status >= 400 else None]
               for s in run.samples]
    flags = []
    for s in run.samples:
        if routes[s.index] == "flag":
            body = json.loads(s.body) if s.body and s.status == 202 else {}
            user, label = planned[s.index]
            flags.append({"index": s.index, "started": s.started, "latency": s.latency, "status": s.status, "error": s.error,
                          "retry_after": s.retry_after, "flag_id": body.get("flag_id"), "user_id": user, "label": label})
    Path(args.result).write_text(json.dumps({"start": run.start, "elapsed_s": run.elapsed_s, "sent": run.sent, "rate": args.rate,
                                             "send_lag_p99_ms": percentile_ms(sorted(run.lags), 0.99), "samples": samples, "flags": flags}))


def _parse_mix(text: str | None) -> dict[str, float]:
    if not text:
        return dict(MIX)
    mix: dict[str, float] = {}
    for part in text.split(","):
        name, _, share = part.partition("=")
        if name.strip() not in MIX:
            raise SystemExit(f"--mix: unknown route {name.strip()!r}; expected some of {', '.join(MIX)} as NAME=SHARE")
        mix[name.strip()] = float(share)
    if not mix or sum(mix.values()) <= 0 or min(mix.values()) < 0:
        raise SystemExit(f"--mix needs shares >= 0 with a positive sum. Got {text!r} instead.")
    total = sum(mix.values())
    return {k: v / total for k, v in mix.items()}


# -- set-up and the watchers -----------------------------------------------------------------------


def _neo4j(command: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CLI, "neo4j", command], env=env, capture_output=True, text=True, timeout=600)


def _environment(args: argparse.Namespace, key: str) -> dict[str, str]:
    """The environment of every ``socialrisk`` process: the private Neo4j, the keys."""
    return dict(
        os.environ, SOCIALRISK_NEO4J_HOME=str(args.neo4j_home), SOCIALRISK_NEO4J_PORT=str(args.neo4j_port),
        SOCIALRISK_NEO4J_URI=f"bolt://127.0.0.1:{args.neo4j_port}", SOCIALRISK_NEO4J_USER="neo4j",
        SOCIALRISK_NEO4J_PASSWORD=args.neo4j_password, SOCIALRISK_PSEUDONYM_KEY=os.environ.get("SOCIALRISK_PSEUDONYM_KEY") or PSEUDONYM_KEY,
        SOCIALRISK_API_KEYS=key,
    )


def _prepare(args: argparse.Namespace, env: dict[str, str], work: Path) -> tuple[Path, dict[str, Any]]:
    """Generate the users (once), load them into the cleared Neo4j and score them there; returns the
    (fresh) workspace and the load plan: users to ask about, and the flags of the warm-up and the
    soak, each on a user of its own (new fraud flags on unflagged users, cleared ones on users
    flagged fraud)."""
    data = work / "data"
    if not (data / "users.parquet").exists():
        run_cli(["generate", "--users", str(args.users), "--seed", str(args.seed), "--out", str(data)], env)
    from socialrisk import workflow

    with workflow.open_neo4j() as store:
        store.clear()  # type: ignore[attr-defined]
    ws = work / "workspace"
    shutil.rmtree(ws, ignore_errors=True)  # the service's journal, cache and state of an earlier run
    run_cli(["load", str(data), "--store", "neo4j", "--workspace", str(ws)], env)
    run_cli(["score", "--store", "neo4j", "--workspace", str(ws)], env)
    with workflow.open_neo4j() as store:
        scores = store.read_result("scores")[0]
    rng = random.Random(args.seed)
    flag = scores["flag"].fillna("").astype(str)
    fraud = sorted(scores.loc[flag == "fraud", "user_id"].astype(str))
    clean = sorted(scores.loc[flag == "", "user_id"].astype(str))
    sizes = (int(args.warmup) + 1, int(args.duration) + 1)
    n_clear = sum(n // 2 for n in sizes)
    n_new = sum(n - n // 2 for n in sizes)
    if len(fraud) < n_clear or len(clean) < n_new:
        sys.exit(f"{args.users:,} users hold {len(fraud):,} fraud flags to clear and {len(clean):,} unflagged users; "
                 f"{sum(sizes)} flags need {n_clear:,} and {n_new:,}: use more --users or a shorter --duration")
    new, cleared = iter(rng.sample(clean, n_new)), iter(rng.sample(fraud, n_clear))
    sets = [[[next(new), "fraud"] if k % 2 == 0 else [next(cleared), "benign"] for k in range(n)] for n in sizes]
    ids = scores["user_id"].astype(str).tolist()
    return ws, {"users": rng.sample(ids, min(len(ids), 20_000)), "warmup_flags": sets[0], "flags": sets[1]}


class _Watch:
    """Background threads: ``/readyz`` every 0.2 s (changes of its status and of its graph's:
    ``reading the changed graph`` while the view is read again), the service's resident memory
    every 2 s, and the Neo4j restart at a set time."""

    def __init__(self, server: Server, env: dict[str, str]) -> None:
        import httpx

        self.server, self.env = server, env
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{server.port}", timeout=5)
        self.stop = threading.Event()
        self.ready: list[tuple[float, int | str, str | None]] = []  # (time, status, graph) at each change
        self.rss: list[tuple[float, int]] = []
        self.restart: dict[str, Any] = {}
        self.origin = time.monotonic()
        self._pollers = [threading.Thread(target=f, daemon=True) for f in (self._poll_ready, self._poll_rss)]
        self._restarter: threading.Thread | None = None
        for t in self._pollers:
            t.start()

    def restart_at(self, at: float, origin: float) -> None:
        """Restart Neo4j at ``at`` (``time.monotonic()``); progress is told relative to ``origin``."""
        self.origin = origin
        self._restarter = threading.Thread(target=self._restart, args=(at,), daemon=True)
        self._restarter.start()

    def finish_restart(self, *, timeout: float = 600) -> None:
        """Wait for the restart to be over (it may outlast the load)."""
        if self._restarter is not None:
            self._restarter.join(timeout=timeout)

    def close(self) -> None:
        """Stop the threads (a restart in progress gives up waiting for /readyz)."""
        self.stop.set()
        for t in [*self._pollers, *([self._restarter] if self._restarter else [])]:
            t.join(timeout=300)
        self.http.close()

    def _poll_ready(self) -> None:
        last: tuple[int | str, str | None] | None = None
        while not self.stop.is_set():
            graph: str | None = None
            try:
                answer = self.http.get("/readyz")
                status: int | str = answer.status_code
                graph = answer.json().get("graph")
            except Exception as exc:  # noqa: BLE001 - recorded as a state
                status = type(exc).__name__
            if (status, graph) != last:
                self.ready.append((time.monotonic(), status, graph))
                last = (status, graph)
            self.stop.wait(0.2)

    def _poll_rss(self) -> None:
        while True:
            kib = rss_kib(self.server.pid)
            if kib is not None:
                self.rss.append((time.monotonic(), kib))
            if self.stop.wait(2.0):
                return

    def _say(self, message: str) -> None:
        print(f"  [restart {time.monotonic() - self.origin:4.0f} s] {message}", flush=True)

    def _restart(self, at: float) -> None:
        if self.stop.wait(max(0.0, at - time.monotonic())):
            return
        r = self.restart
        r["stop_begin"] = time.monotonic()
        self._say("stopping Neo4j")
        done = _neo4j("stop", self.env)
        r["stopped"] = time.monotonic()
        if done.returncode != 0:
            r["error"] = f"socialrisk neo4j stop failed: {done.stderr[-500:]}"
        self._say(f"Neo4j stopped in {r['stopped'] - r['stop_begin']:.1f} s; starting it")
        done = _neo4j("start", self.env)
        r["started"] = time.monotonic()
        if done.returncode != 0:
            r["error"] = f"socialrisk neo4j start failed: {done.stderr[-500:]}"
            self._say(r["error"])
            return
        self._say(f"Neo4j started in {r['started'] - r['stopped']:.1f} s; waiting for /readyz")
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not self.stop.is_set():
            try:
                if self.http.get("/readyz").status_code == 200:
                    r["ready"] = time.monotonic()
                    self._say(f"/readyz 200 again, {r['ready'] - r['started']:.1f} s after the start; window {r['ready'] - r['stop_begin']:.1f} s")
                    return
            except Exception:  # noqa: BLE001 - not answering is what is waited out
                pass
            time.sleep(0.1)
        r["error"] = "/readyz did not answer 200 within 300 s of Neo4j's start"
        self._say(r["error"])


def _run_load(args: argparse.Namespace, port: int, plan: Path, result: Path, seconds: float, *, flag_set: str, label: str,
              started: Any = None) -> dict[str, Any]:
    """Run the load generator for ``seconds``; ``started(t)`` is called once its first request
    is due. Returns what it wrote to ``result``."""
    cmd = [sys.executable, __file__, "--loadgen", "--port", str(port), "--plan", str(plan), "--result", str(result), "--rate", str(args.rate),
           "--seconds", str(seconds), "--connections", str(args.connections), "--seed", str(args.seed), "--flag-set", flag_set,
           "--label", label, *(["--mix", args.mix] if args.mix else [])]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.startswith("started "):
            sys.exit(f"the load generator did not start (exit code {proc.wait()})")
        if started is not None:
            started(float(line.split()[1]))
        code = proc.wait(timeout=seconds + 4 * REQUEST_TIMEOUT + 120)
        if code != 0:
            sys.exit(f"the load generator failed with exit code {code}")
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait()
    return dict(json.loads(result.read_text()))


def _drain(server: Server, flags: list[dict[str, Any]], *, timeout: float = 600) -> bool:
    """Wait for every accepted flag to be written to the store; whether they were within ``timeout``."""
    deadline = time.monotonic() + timeout
    ids = [f["flag_id"] for f in flags if f["flag_id"]]
    while time.monotonic() < deadline:
        try:
            if server.http.get("/readyz").json().get("flags_pending") == 0:
                if all(server.http.get(f"/v1/flags/{i}").json().get("persisted") for i in ids):
                    return True
        except Exception:  # noqa: BLE001 - retried until the deadline
            pass
        time.sleep(1.0)
    return False


def _verify(server: Server, flags: list[dict[str, Any]]) -> dict[str, Any]:
    """Every accepted flag in the served scores, persisted by the service, and in Neo4j (its row,
    the user's last flag, its audit entry)."""
    from socialrisk import workflow

    accepted = [f for f in flags if f["flag_id"]]
    served: dict[str, dict[str, Any]] = {}
    users = [f["user_id"] for f in accepted]
    for k in range(0, len(users), 1000):
        body = server.http.post("/v1/enrich/batch", json={"user_ids": users[k:k + 1000]}).json()
        served.update({r["user_id"]: r for r in body["results"]})
    statuses = {f["flag_id"]: server.http.get(f"/v1/flags/{f['flag_id']}").json() for f in accepted}
    with workflow.open_neo4j() as store:
        table = store.read_table("flags")
        audit = store.read_audit()
    rows = table["source"].astype(str).value_counts()
    last = table.assign(label=table["label"].astype(str)).drop_duplicates("user_id", keep="last").set_index("user_id")["label"]
    audited: dict[str, int] = {}
    for e in audit:
        fid = str((e.detail or {}).get("flag_id"))
        audited[fid] = audited.get(fid, 0) + 1
    checks = ("not_served", "not_persisted", "not_in_store", "not_last_in_store", "no_audit_entry")
    problems: dict[str, list[str]] = {k: [] for k in (*checks, "duplicated_in_store", "duplicated_audit_entry")}
    for f in accepted:
        fid, user, label = f["flag_id"], f["user_id"], f["label"]
        score = served.get(user)
        if label == "fraud":
            shown = score is not None and score["flag"] == "fraud" and score["risk"] >= 1.0 - 1e-9 and "CONFIRMED_FRAUD" in score["reason_codes"]
        else:
            shown = score is not None and score["flag"] == "benign" and "CONFIRMED_FRAUD" not in score["reason_codes"]
        if not shown:
            problems["not_served"].append(fid)
        status = statuses.get(fid, {})
        if not status.get("persisted") or status.get("failed"):
            problems["not_persisted"].append(fid)
        n = int(rows.get(f"socialrisk serve flag {fid}", 0))
        if n == 0:
            problems["not_in_store"].append(fid)
        elif n > 1:
            problems["duplicated_in_store"].append(fid)
        if str(last.get(user, "")) != label:
            problems["not_last_in_store"].append(fid)
        if fid not in audited:
            problems["no_audit_entry"].append(fid)
        elif audited[fid] > 1:
            problems["duplicated_audit_entry"].append(fid)
    lost = {fid for key in checks for fid in problems[key]}
    return {"accepted": len(accepted), "lost": len(lost), **{k: len(v) for k, v in problems.items()},
            "examples": {k: v[:5] for k, v in problems.items() if v}}


# -- figures -----------------------------------------------------------------------------------------


def _in_window(started: float, latency: float | None, window: tuple[float, float] | None) -> bool:
    if window is None:
        return False
    end = started + (latency if latency is not None else REQUEST_TIMEOUT)
    return started <= window[1] and end >= window[0]


def _summarise(result: dict[str, Any], window: tuple[float, float] | None, origin: float = 0.0) -> dict[str, Any]:
    """Latency per route, and failures split by the restart window, with an example answer of
    each and the times (seconds from ``origin``) at which those outside it were sent."""
    lat: dict[str, list[float]] = {r: [] for r in ROUTES}
    counts = dict.fromkeys(ROUTES, 0)
    by_status: dict[str, int] = {}
    inside: dict[str, int] = {}
    outside: dict[str, int] = {}
    other: dict[str, int] = {}
    examples: dict[str, str] = {}
    five = {r: [0, 0] for r in ROUTES}
    no_retry_after = in_window = 0
    outside_at: list[float] = []
    for _, route, started, latency, status, error, retry_after, body in result["samples"]:
        counts[route] += 1
        key = str(status) if status is not None else str(error)
        by_status[key] = by_status.get(key, 0) + 1
        if latency is not None:
            lat[route].append(latency)
        inw = _in_window(started, latency, window)
        in_window += inw
        if status is not None and 200 <= status < 300:
            continue
        name = f"{route} {key}"
        where = "in window" if inw else "outside window"
        examples.setdefault(f"{name} ({where})", body or key)
        if status is not None and status >= 500:
            bucket = inside if inw else outside
            bucket[name] = bucket.get(name, 0) + 1
            if not inw:
                outside_at.append(round(started - origin, 2))
            five[route][0 if inw else 1] += 1
            no_retry_after += status == 503 and not retry_after
        else:
            other[f"{name} ({where})"] = other.get(f"{name} ({where})", 0) + 1
    latency_ms: dict[str, Any] = {}
    everything: list[float] = []
    for route in ROUTES:
        ordered = sorted(lat[route])
        everything += ordered
        latency_ms[route] = {"requests": counts[route], "p50_ms": percentile_ms(ordered, 0.5), "p99_ms": percentile_ms(ordered, 0.99),
                             "max_ms": percentile_ms(ordered, 1.0), "5xx_in_window": five[route][0], "5xx_outside_window": five[route][1]}
    everything.sort()
    latency_ms["all"] = {"requests": len(result["samples"]), "p50_ms": percentile_ms(everything, 0.5), "p99_ms": percentile_ms(everything, 0.99),
                         "max_ms": percentile_ms(everything, 1.0), "5xx_in_window": sum(inside.values()),
                         "5xx_outside_window": sum(outside.values())}
    return {
        "latency_ms": latency_ms, "by_status": dict(sorted(by_status.items())), "requests_in_window": in_window,
        "5xx_in_window": inside, "5xx_outside_window": outside, "5xx_in_window_not_503": {k: v for k, v in inside.items() if not k.endswith(" 503")},
        "503_without_retry_after": no_retry_after, "other_failures": other, "examples": examples,
        "5xx_outside_window_sent_at_s": outside_at[:100],
    }


def _mib(kib: int | None) -> float | None:
    return None if kib is None else round(kib / 1024, 1)


def _figures(result: dict[str, Any], warm: dict[str, Any] | None, watch: _Watch, origin: float, *, restarted: bool,
             rss: tuple[int | None, int | None], drained: tuple[bool, float], checked: dict[str, Any]) -> dict[str, Any]:
    """The figures of results/soak.json, and the acceptance."""
    r = watch.restart
    window = (r["stop_begin"], r["ready"]) if "ready" in r else None
    if "stop_begin" in r and window is None:
        window = (r["stop_begin"], float("inf"))  # never ready again: everything after the stop is in the window
    summary = _summarise(result, window, origin)
    down = [t for t, s, _ in watch.ready if s != 200 and "stop_begin" in r and t >= r["stop_begin"]]
    restart = None if "stop_begin" not in r else {
        "error": r.get("error"),
        "at_s": round(r["stop_begin"] - origin, 1),
        "stop_s": round(r["stopped"] - r["stop_begin"], 1) if "stopped" in r else None,
        "start_s": round(r["started"] - r["stopped"], 1) if "started" in r else None,
        "ready_after_start_s": round(r["ready"] - r["started"], 1) if "ready" in r else None,
        "window_s": round(r["ready"] - r["stop_begin"], 1) if "ready" in r else None,
        "readyz_503_after_s": round(down[0] - r["stop_begin"], 1) if down else None,
    }
    changes = [[round(t - origin, 1), s, g] for t, s, g in watch.ready]
    start, end = rss
    growth = None if not (start and end) else (end - start) / start
    soak_rss = [k for t, k in watch.rss if t >= origin]
    flags = result["flags"]
    return {
        "requests": {"sent": result["sent"], "answered": sum(1 for s in result["samples"] if s[4] is not None),
                     "not_2xx": sum(v for k, v in summary["by_status"].items() if not k.startswith("2")),
                     "achieved_rps": round(len(result["samples"]) / max(result["elapsed_s"], 1e-9), 1),
                     "send_lag_p99_ms": result["send_lag_p99_ms"]},
        "latency_ms": summary["latency_ms"],
        "errors": {k: summary[k] for k in ("by_status", "requests_in_window", "5xx_in_window", "5xx_outside_window",
                                           "5xx_outside_window_sent_at_s", "5xx_in_window_not_503",
                                           "503_without_retry_after", "other_failures", "examples")},
        "warmup_failures": None if warm is None else {k: v for part in ("5xx_outside_window", "other_failures")
                                                      for k, v in _summarise(warm, None)[part].items()},
        "restart": restart,
        "readyz_changes": changes,
        "graph_read_again": sum(1 for _, _, g in watch.ready if g == "reading the changed graph"),
        "memory": {"rss_start_mib": _mib(start), "rss_end_mib": _mib(end), "growth": None if growth is None else round(growth, 4),
                   "rss_max_during_soak_mib": _mib(max(soak_rss)) if soak_rss else None,
                   "measured": "VmRSS of the service once the flags sent so far were written: after the warm-up, and after the soak",
                   "samples_mib": [[round(t - origin, 1), _mib(k)] for t, k in watch.rss]},
        "flags": {"sent": len(flags), "accepted": sum(1 for f in flags if f["flag_id"]),
                  "accepted_in_window": sum(1 for f in flags if f["flag_id"] and _in_window(f["started"], f["latency"], window)),
                  "warmup_accepted": None if warm is None else sum(1 for f in warm["flags"] if f["flag_id"]),
                  "all_written": drained[0], "written_s_after_the_load": round(drained[1], 1),
                  "checked": checked["accepted"], **{k: v for k, v in checked.items() if k != "accepted"}},
        "acceptance": {
            "no_lost_flags": checked["lost"] == 0 and drained[0],  # a flag refused with 5xx counts under the 5xx rules
            "no_flag_written_twice": checked["duplicated_in_store"] == 0 and checked["duplicated_audit_entry"] == 0,
            "no_5xx_outside_restart_window": not summary["5xx_outside_window"],
            "only_503_with_retry_after_in_window": not summary["5xx_in_window_not_503"] and summary["503_without_retry_after"] == 0,
            "no_other_failures": not summary["other_failures"],
            "restart_recovered": not restarted or ("ready" in r and not r.get("error")),
            "memory_growth_below_10_percent": growth is not None and growth < MAX_GROWTH,
        },
    }


def _print(results: dict[str, Any]) -> None:
    lat = results["latency_ms"]
    print("\n| route | requests | p50 | p99 | max | 5xx in restart window | 5xx outside |\n|---|---:|---:|---:|---:|---:|---:|")
    for route in (*ROUTES, "all"):
        row = lat[route]
        print(f"| {route} | {row['requests']:,} | {row['p50_ms']} ms | {row['p99_ms']} ms | {row['max_ms']} ms | {row['5xx_in_window']} | "
              f"{row['5xx_outside_window']} |")
    r, m, f, e = results["restart"], results["memory"], results["flags"], results["errors"]
    print(f"\nrequests: {results['requests']['sent']:,} sent, {results['requests']['not_2xx']:,} not 2xx; by status {e['by_status']}")
    if r is not None:
        print(f"Neo4j restart at {r['at_s']} s: stop {r['stop_s']} s, start {r['start_s']} s, /readyz 200 {r['ready_after_start_s']} s after "
              f"the start; window {r['window_s']} s (/readyz 503 {r['readyz_503_after_s']} s after the stop began)")
    print(f"graph view read again {results['graph_read_again']} time(s) during the soak")
    print(f"5xx in the window {e['5xx_in_window'] or 0}; outside {e['5xx_outside_window'] or 0}; 503 without Retry-After "
          f"{e['503_without_retry_after']}; other failures {e['other_failures'] or 0}")
    if e["5xx_outside_window_sent_at_s"]:
        print(f"  5xx outside the window sent at (s into the soak): {e['5xx_outside_window_sent_at_s'][:20]}")
    for name, body in e["examples"].items():
        print(f"  e.g. {name}: {body[:200]}")
    if m["growth"] is not None:
        print(f"resident memory: {m['rss_start_mib']} MiB after the warm-up, {m['rss_end_mib']} MiB after the soak ({100 * m['growth']:+.1f}%), "
              f"at most {m['rss_max_during_soak_mib']} MiB during it")
    print(f"flags: {f['sent']} sent, {f['accepted']} accepted ({f['accepted_in_window']} in the window), {f['checked']} checked with the "
          f"warm-up's, {f['lost']} lost; all written {f['written_s_after_the_load']} s after the load")
    for name, ok in results["acceptance"].items():
        print(f"  {'PASS' if ok else 'FAIL'} {name.replace('_', ' ')}")


# -- the orchestration -----------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--loadgen", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--plan", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--flag-set", default="flags", help=argparse.SUPPRESS)
    parser.add_argument("--label", default="soak", help=argparse.SUPPRESS)
    parser.add_argument("--duration", type=float, default=300, help="Seconds of the soak (default 300).")
    parser.add_argument("--rate", type=float, default=200, help="Requests per second, flags included (default 200).")
    parser.add_argument("--users", type=int, default=50_000, help="Generated users loaded into Neo4j (default 50,000).")
    parser.add_argument("--restart-at", type=float, help="Seconds into the soak at which Neo4j is restarted (default: a third of "
                                                          "--duration); negative: no restart.")
    parser.add_argument("--warmup", type=float, default=30, help="Seconds of load before the start figures (default 30).")
    parser.add_argument("--mix", help="Shares of the routes besides flags, e.g. 'enrich=0.9,batch=0.04,explanation=0.03,neighbourhood=0.03' "
                                      "(the default).")
    parser.add_argument("--connections", type=int, default=64, help="Keep-alive connections of the load generator (default 64).")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--neo4j-home", type=Path, default=DEFAULT_HOME,
                        help=f"Home of the soak's own Neo4j, cleared and restarted by it (default {DEFAULT_HOME}).")
    parser.add_argument("--neo4j-port", type=int, default=DEFAULT_PORT, help=f"Its Bolt port (default {DEFAULT_PORT}).")
    parser.add_argument("--neo4j-password", default=DEFAULT_PASSWORD, help="Its password (set on its first start).")
    parser.add_argument("--keep-neo4j", action="store_true", help="Leave Neo4j running at the end.")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "soak.json")
    args = parser.parse_args()
    if args.loadgen:
        loadgen(args)
        return
    mix = _parse_mix(args.mix)
    restart_at = args.duration / 3 if args.restart_at is None else args.restart_at

    def terminated(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, terminated)  # clean up as on Ctrl-C
    key = (os.environ.get("SOCIALRISK_API_KEYS") or KEY).split(",")[0].strip()
    env = _environment(args, key)
    os.environ.update({k: v for k, v in env.items() if k.startswith("SOCIALRISK_")})  # this process reads the store too
    work = ROOT / "benchmarks" / "out" / "soak" / str(args.users)
    work.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "users": args.users, "rate": args.rate,
                               "duration_s": args.duration, "warmup_s": args.warmup, "restart_at_s": restart_at if restart_at >= 0 else None,
                               "mix": {**{k: round(v, 4) for k, v in mix.items()}, "flag": "1 a second"}}
    server: Server | None = None
    watch: _Watch | None = None
    try:
        t0 = time.perf_counter()
        done = _neo4j("start", env)
        if done.returncode != 0:
            sys.exit(f"socialrisk neo4j start failed:\n{done.stdout[-1500:]}\n{done.stderr[-1500:]}")
        print(f"Neo4j on bolt://127.0.0.1:{args.neo4j_port} (home {args.neo4j_home}): {time.perf_counter() - t0:.1f} s", flush=True)
        ws, plan = _prepare(args, env, work)
        plan_file = work / "plan.json"
        plan_file.write_text(json.dumps(plan))
        server = Server(["--store", "neo4j", "-w", str(ws)], env, work / "serve.log", key=key)
        t0 = time.perf_counter()
        server.wait_ready()
        results["startup_s"] = round(time.perf_counter() - t0, 1)
        print(f"service ready on port {server.port} (pid {server.pid}) in {results['startup_s']} s", flush=True)
        watch = _Watch(server, env)

        warm = None
        if args.warmup > 0:
            warm = _run_load(args, server.port, plan_file, work / "warmup-requests.json", args.warmup, flag_set="warmup_flags", label="warm-up")
            if not _drain(server, warm["flags"]):
                sys.exit("the warm-up's flags were not written within 10 minutes")
        rss_start = rss_kib(server.pid)
        print(f"resident memory after the warm-up: {_mib(rss_start)} MiB; soak: {args.rate:g}/s for {args.duration:g} s"
              + (f", Neo4j restarted at {restart_at:g} s" if restart_at >= 0 else ""), flush=True)

        box: list[float] = []

        def started(t: float) -> None:
            box.append(t)
            if restart_at >= 0:
                watch.restart_at(t + restart_at, t)  # type: ignore[union-attr]

        result = _run_load(args, server.port, plan_file, work / "soak-requests.json", args.duration, flag_set="flags", label="soak", started=started)
        load_end = time.monotonic()
        print(f"load done in {result['elapsed_s']:.1f} s; waiting for the restart to be over and the flags to be written", flush=True)
        watch.finish_restart()
        drained = _drain(server, result["flags"])
        drain_s = time.monotonic() - load_end
        rss_end = rss_kib(server.pid)
        print(f"flags written {drain_s:.1f} s after the load; resident memory {_mib(rss_end)} MiB; checking every accepted flag", flush=True)
        checked = _verify(server, [*(warm["flags"] if warm else []), *result["flags"]])
        watch.close()
        results.update(_figures(result, warm, watch, box[0], restarted=restart_at >= 0, rss=(rss_start, rss_end), drained=(drained, drain_s),
                                checked=checked))
        results["passed"] = all(results["acceptance"].values())
        results["machine"] = {"python": platform.python_version(), "platform": platform.platform(), "cores": os.cpu_count()}
        results["date"] = time.strftime("%Y-%m-%d")
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1) + "\n")
        _print(results)
        print(f"written to {args.out}")
    finally:
        if watch is not None:
            watch.close()
        if server is not None:
            server.stop()
        if not args.keep_neo4j:
            done = _neo4j("stop", env)
            print("Neo4j stopped" if done.returncode == 0 else f"stopping Neo4j failed: {done.stderr[-500:]}", flush=True)
    if not results["passed"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
