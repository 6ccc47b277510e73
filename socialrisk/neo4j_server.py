"""Provision, start and stop a local Neo4j Community server from Maven Central.

No Docker and no download site: ``neo4j/pom.xml`` lists ``org.neo4j:neo4j``, whose dependency
set is a complete server classpath; ``mvn dependency:copy-dependencies`` puts it into a cache
directory, and the server runs as ``java -cp 'lib/*' org.neo4j.server.CommunityEntryPoint`` on
loopback, with auth on and the password from ``SOCIALRISK_NEO4J_PASSWORD``.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from loaders.errors import ConfigError, StoreError

__all__ = ["NEO4J_VERSION", "ServerSettings", "server_settings", "provision", "start", "stop", "status", "bulk_import",
           "interrupted_import", "ADMIN_ENTRY_POINT"]

NEO4J_VERSION = "5.26.30"
POM = Path(__file__).resolve().parents[1] / "neo4j" / "pom.xml"
#: socialrisk's own procedures (``socialrisk.encodedEdges``, the packed read of the graph), built
#: from source by ``mvn package`` against the same server version.
PROCEDURES = POM.parent / "procedures"
PROCEDURES_JAR = "socialrisk-neo4j-procedures.jar"
ENV_HOME = "SOCIALRISK_NEO4J_HOME"
ENV_PORT = "SOCIALRISK_NEO4J_PORT"
ENV_PASSWORD = "SOCIALRISK_NEO4J_PASSWORD"
ENV_URI = "SOCIALRISK_NEO4J_URI"
ENV_USER = "SOCIALRISK_NEO4J_USER"
ENV_HEAP = "SOCIALRISK_NEO4J_HEAP"
ENV_PAGECACHE = "SOCIALRISK_NEO4J_PAGECACHE"
ENV_GDS = "SOCIALRISK_NEO4J_GDS"
GDS_VERSION = "2.13.9"
#: ``neo4j-admin``'s main class: the server classpath holds it (neo4j-command-line), so the admin
#: tool needs nothing beyond what ``provision`` fetched.
ADMIN_ENTRY_POINT = "org.neo4j.cli.AdminTool"
#: Memory the import tool may use outside its heap (caches of node ids and relationship groups).
ENV_IMPORT_MEMORY = "SOCIALRISK_NEO4J_IMPORT_MEMORY"

#: G1's pause target. Its default, 200 ms, sizes the young generation for pauses that long,
#: and Neo4j logged stop-the-world pauses of 204-301 ms under 50 neighbourhood queries a second:
#: each one stalled every query in flight (the service's neighbourhood p99). A smaller young
#: generation collected more often keeps each pause short. A server started some other way
#: takes the same line as ``server.jvm.additional`` in its neo4j.conf.
GC_PAUSE_OPTIONS = ("-XX:MaxGCPauseMillis=20",)

#: The JVM options of Neo4j's default neo4j.conf (server.jvm.additional), needed when the server
#: is started without its launcher script, and the pause target above.
JVM_OPTIONS = (
    "-XX:+UseG1GC",
    "-XX:-OmitStackTraceInFastThrow",
    "-XX:+UnlockExperimentalVMOptions",
    "-XX:+TrustFinalNonStaticFields",
    "-XX:+DisableExplicitGC",
    "-Djdk.nio.maxCachedBufferSize=1024",
    "-Dio.netty.tryReflectionSetAccessible=true",
    "-Djdk.tls.ephemeralDHKeySize=2048",
    "-Djdk.tls.rejectClientInitiatedRenegotiation=true",
    "-XX:FlightRecorderOptions=stackdepth=256",
    "-XX:+UnlockDiagnosticVMOptions",
    "-XX:+DebugNonSafepoints",
    "--add-opens=java.base/java.nio=ALL-UNNAMED",
    "--add-opens=java.base/java.io=ALL-UNNAMED",
    "--add-opens=java.base/sun.nio.ch=ALL-UNNAMED",
    "-Dlog4j2.disable.jmx=true",
    *GC_PAUSE_OPTIONS,
)


@dataclass(frozen=True)
class ServerSettings:
    """Where the server lives and how to reach it."""

    home: Path
    port: int
    user: str
    password: str
    heap: str
    pagecache: str
    gds: bool = False

    @property
    def uri(self) -> str:
        return f"bolt://127.0.0.1:{self.port}"

    @property
    def lib(self) -> Path:
        return self.home / "lib"

    @property
    def pid_file(self) -> Path:
        return self.home / "run" / "socialrisk-neo4j.pid"

    @property
    def import_marker(self) -> Path:
        """Present from just before a bulk import stops the server until the import finished:
        while it is there, the database may be half-written and the server is not started."""
        return self.home / "data" / "socialrisk-bulk-import.json"


def server_settings() -> ServerSettings:
    """Settings from the environment, with defaults that fit a 2-core, 24 GiB machine beside the tests."""
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    home = Path(os.environ.get(ENV_HOME, cache / "socialrisk" / f"neo4j-{NEO4J_VERSION}"))
    password = os.environ.get(ENV_PASSWORD, "")
    if len(password) < 8:
        raise ConfigError(
            f"Set {ENV_PASSWORD} to the Neo4j password (at least 8 characters); the server is started with auth on."
        )
    try:
        port = int(os.environ.get(ENV_PORT, "7687"))
    except ValueError as exc:
        raise ConfigError(f"{ENV_PORT} must be a port number, got {os.environ.get(ENV_PORT)!r}") from exc
    return ServerSettings(
        home=home,
        port=port,
        user=os.environ.get(ENV_USER, "neo4j"),
        password=password,
        heap=os.environ.get(ENV_HEAP, "2g"),
        pagecache=os.environ.get(ENV_PAGECACHE, "1g"),
        gds=os.environ.get(ENV_GDS, "") in ("1", "true", "yes"),
    )


def provision(settings: ServerSettings, *, log: callable | None = None) -> Path:  # type: ignore[valid-type]
    """Put the server classpath into ``home/lib`` (once); needs Java 17 or 21 and Maven."""
    say = log or (lambda _m: None)
    _require_java()
    marker = settings.lib / f".neo4j-{NEO4J_VERSION}"
    if marker.exists():
        _provision_procedures(settings)
        if settings.gds:
            _provision_gds(settings)
        return settings.lib
    mvn = shutil.which("mvn")
    if mvn is None:
        raise StoreError("Maven (mvn) is not installed: it is needed once to fetch the Neo4j server from Maven Central.")
    say(f"provisioning Neo4j {NEO4J_VERSION} from Maven Central into {settings.lib}")
    settings.lib.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [mvn, "-q", "-B", "-f", str(POM), "dependency:copy-dependencies", f"-DoutputDirectory={settings.lib}", "-DincludeScope=runtime"],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise StoreError(f"Maven could not fetch Neo4j {NEO4J_VERSION}: {(done.stdout + done.stderr).strip()[-800:]}")
    marker.write_text(NEO4J_VERSION)
    _provision_procedures(settings)
    if settings.gds:
        _provision_gds(settings)
    return settings.lib


def _procedures_digest() -> str:
    """A digest of the procedures' sources: a changed source is built again."""
    import hashlib

    h = hashlib.sha256()
    for path in sorted([PROCEDURES / "pom.xml", *(PROCEDURES / "src").rglob("*.java")]):
        h.update(path.relative_to(PROCEDURES).as_posix().encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def _provision_procedures(settings: ServerSettings) -> None:
    """Build socialrisk's procedures (once per source) and put the jar into both plugin
    directories (with and without OpenGDS)."""
    digest = _procedures_digest()
    # kept beside the server classpath (outside the 'lib/*' it puts on the class path), which
    # homes that share one classpath share too
    kept = settings.lib / ".socialrisk-procedures"
    built = kept / digest / PROCEDURES_JAR
    if not built.exists():
        target = kept / digest
        done = subprocess.run(
            [shutil.which("mvn") or "mvn", "-q", "-B", "-f", str(PROCEDURES / "pom.xml"), "package", f"-Dsocialrisk.build={target}"],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0 or not built.exists():
            raise StoreError(f"Maven could not build socialrisk's Neo4j procedures: {(done.stdout + done.stderr).strip()[-800:]}")
        for old in kept.iterdir():
            if old.name != digest:
                shutil.rmtree(old, ignore_errors=True)
    for plugins in (settings.home / "plugins", settings.home / "plugins-without-gds"):
        plugins.mkdir(parents=True, exist_ok=True)
        if not (plugins / PROCEDURES_JAR).exists() or (plugins / PROCEDURES_JAR).read_bytes() != built.read_bytes():
            shutil.copy2(built, plugins / PROCEDURES_JAR)


def _provision_gds(settings: ServerSettings) -> None:
    """OpenGDS into ``plugins/`` (procedures are registered from there): the jars the ``gds``
    Maven profile adds to the server's own."""
    plugins = settings.home / "plugins"
    marker = plugins / f".gds-{GDS_VERSION}"
    if marker.exists():
        return
    staging = settings.home / "gds-staging"
    done = subprocess.run(
        [shutil.which("mvn") or "mvn", "-q", "-B", "-f", str(POM), "-Pgds", "dependency:copy-dependencies",
         f"-DoutputDirectory={staging}", "-DincludeScope=runtime"],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise StoreError(f"Maven could not fetch OpenGDS {GDS_VERSION}: {(done.stdout + done.stderr).strip()[-800:]}")
    server_jars = {p.name for p in settings.lib.glob("*.jar")}
    plugins.mkdir(parents=True, exist_ok=True)
    for jar in staging.glob("*.jar"):
        if jar.name not in server_jars:
            shutil.copy2(jar, plugins / jar.name)
    shutil.rmtree(staging, ignore_errors=True)
    marker.write_text(GDS_VERSION)


def _require_java() -> str:
    java = shutil.which("java")
    if java is None:
        raise StoreError("Java is not installed: Neo4j 5.26 needs a Java 17 or 21 runtime (java on the PATH).")
    out = subprocess.run([java, "-version"], capture_output=True, text=True)
    text = out.stderr + out.stdout
    major = None
    for token in text.replace('"', " ").split():
        if token[:2].isdigit() and "." in token:
            major = int(token.split(".")[0])
            break
    if major not in (17, 21):
        raise StoreError(f"Neo4j {NEO4J_VERSION} runs on Java 17 or 21; found: {text.strip().splitlines()[0] if text.strip() else 'unknown'}")
    return java


def _write_conf(settings: ServerSettings) -> None:
    h = settings.home
    for sub in ("conf", "data", "logs", "run", "plugins", "import"):
        (h / sub).mkdir(parents=True, exist_ok=True)
    # OpenGDS's procedures fail the start-up unless its extension is on the classpath too: a
    # home provisioned with it and started without it loads no plugins
    plugins = h / "plugins"
    if not settings.gds and (plugins / f".gds-{GDS_VERSION}").exists():
        plugins = h / "plugins-without-gds"
        plugins.mkdir(exist_ok=True)
    conf = f"""# written by socialrisk neo4j start
server.directories.data={h / 'data'}
server.directories.logs={h / 'logs'}
server.directories.run={h / 'run'}
server.directories.plugins={plugins}
server.directories.import={h / 'import'}
server.default_listen_address=127.0.0.1
server.bolt.listen_address=127.0.0.1:{settings.port}
server.http.enabled=false
server.https.enabled=false
server.memory.heap.initial_size={settings.heap}
server.memory.heap.max_size={settings.heap}
server.memory.pagecache.size={settings.pagecache}
dbms.security.auth_enabled=true
"""
    if settings.gds:
        conf += "dbms.security.procedures.unrestricted=gds.*\ndbms.security.procedures.allowlist=gds.*,socialrisk.*\n"
    (h / "conf" / "neo4j.conf").write_text(conf)


def _pid(settings: ServerSettings) -> int | None:
    try:
        pid = int(settings.pid_file.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if _alive(pid) else None


def _bolt_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def status(settings: ServerSettings) -> dict[str, object]:
    """Whether the server runs, and where."""
    pid = _pid(settings)
    return {"running": pid is not None, "pid": pid, "bolt": settings.uri, "bolt_open": _bolt_open(settings.port), "home": str(settings.home)}


def start(
    settings: ServerSettings, *, timeout: float = 180.0, log: callable | None = None, after_import: bool = False,  # type: ignore[valid-type]
) -> dict[str, object]:
    """Provision if needed, start on loopback, wait for Bolt, and set the configured password.

    Refuses while a bulk import is unfinished (:func:`interrupted_import`), unless called by
    the import itself (``after_import``)."""
    say = log or (lambda _m: None)
    if _pid(settings) is not None:
        _ensure_password(settings)
        return status(settings)
    interrupted = interrupted_import(settings)
    if interrupted is not None and not after_import:
        raise StoreError(
            f"a bulk import into {settings.home / 'data'} started at {interrupted.get('started_at', '?')} did not finish: the database "
            "may be half-written and is not started. Run 'socialrisk load DATA_DIR --store neo4j --bulk' again (it imports afresh "
            f"over it), or delete {settings.home / 'data'} to start from an empty database."
        )
    if _bolt_open(settings.port):
        raise StoreError(f"port {settings.port} is already in use by another process; set {ENV_PORT} to a free port")
    java = _require_java()
    provision(settings, log=say)
    _write_conf(settings)
    say(f"starting Neo4j {NEO4J_VERSION} on {settings.uri}")
    console = open(settings.home / "logs" / "console.log", "ab")
    proc = subprocess.Popen(
        [java, f"-Xms{settings.heap}", f"-Xmx{settings.heap}", *JVM_OPTIONS, "-cp",
         str(settings.lib / "*") + (os.pathsep + str(settings.home / "plugins" / "*") if settings.gds else ""),
         "org.neo4j.server.CommunityEntryPoint", f"--home-dir={settings.home}", f"--config-dir={settings.home / 'conf'}"],
        stdout=console,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    settings.pid_file.write_text(str(proc.pid))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = (settings.home / "logs" / "console.log").read_text(errors="replace")[-1500:]
            raise StoreError(f"Neo4j exited during start-up (code {proc.returncode}); end of {settings.home / 'logs' / 'console.log'}:\n{tail}")
        if _bolt_open(settings.port) and _ensure_password(settings, quiet=True):
            return status(settings)
        time.sleep(0.5)
    raise StoreError(f"Neo4j did not answer on {settings.uri} within {timeout:.0f} s; see {settings.home / 'logs'}")


def _ensure_password(settings: ServerSettings, *, quiet: bool = False) -> bool:
    """Log in with the configured password; on a fresh server, replace the initial one."""
    from neo4j import GraphDatabase
    from neo4j.exceptions import AuthError, ServiceUnavailable, SessionExpired

    try:
        with GraphDatabase.driver(settings.uri, auth=(settings.user, settings.password)) as driver:
            driver.verify_connectivity()
            return True
    except (ServiceUnavailable, SessionExpired, OSError):
        if quiet:
            return False
        raise
    except AuthError:
        pass
    try:
        with GraphDatabase.driver(settings.uri, auth=(settings.user, "neo4j")) as driver:
            with driver.session(database="system") as session:
                session.run("ALTER CURRENT USER SET PASSWORD FROM $old TO $new", old="neo4j", new=settings.password).consume()
        return True
    except (ServiceUnavailable, SessionExpired, OSError):
        if quiet:
            return False
        raise
    except AuthError as exc:
        raise StoreError(
            f"Neo4j at {settings.uri} refuses the password in {ENV_PASSWORD} (it was set to another one earlier); "
            f"use that password, or delete {settings.home / 'data'} to start afresh"
        ) from exc


def stop(settings: ServerSettings, *, timeout: float = 60.0) -> bool:
    """Stop the server cleanly (SIGTERM, then wait); returns whether one was running."""
    pid = _pid(settings)
    if pid is None:
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid):
            break
        time.sleep(0.3)
    else:
        os.kill(pid, signal.SIGKILL)
    settings.pid_file.unlink(missing_ok=True)
    return True


def _alive(pid: int) -> bool:
    """Whether process ``pid`` still runs. A server that exited but that its parent has not
    reaped yet is a zombie, which answers signal 0: gone for our purposes. (A server started
    in this process, as the tests and the bulk import do, stays one until this process reaps
    it; waiting for it to vanish took the whole timeout.)"""
    try:
        os.kill(pid, 0)
    except OSError:
        return False
    try:
        if Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z":
            return False
    except (OSError, IndexError):
        pass
    return True


def interrupted_import(settings: ServerSettings) -> dict[str, object] | None:
    """What the marker of an unfinished bulk import says (``started_at``, ``files``), or None."""
    import json

    try:
        text = settings.import_marker.read_text()
    except FileNotFoundError:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        value = {}
    return value if isinstance(value, dict) else {}


def finish_import(settings: ServerSettings) -> None:
    """Remove the marker once the imported graph is complete (constraints created)."""
    settings.import_marker.unlink(missing_ok=True)


def _sum_sizes(*sizes: str) -> str:
    """Memory sizes as Neo4j writes them (``2g``, ``512m``) added up, in megabytes: what the
    import tool may use outside its heap by default is what the stopped server had (its heap
    and page cache)."""
    units = {"k": 1 / 1024, "m": 1, "g": 1024, "t": 1024 * 1024}
    total = 0.0
    for size in sizes:
        text = str(size).strip().lower().removesuffix("b")
        if text and text[-1] in units:
            total += float(text[:-1]) * units[text[-1]]
        else:
            total += float(text) / (1024 * 1024)  # bytes
    return f"{int(total)}m"


def bulk_import(settings: ServerSettings, arguments: list[str], *, log: callable | None = None) -> None:  # type: ignore[valid-type]
    """Run ``neo4j-admin`` with ``arguments`` on the server's database, the server stopped:
    leave the marker, stop the server, import, start it again (the marker stays until
    :func:`finish_import`).

    Raises
    ------
    StoreError
        The server is not this home's, or the tool failed (its last lines are in the message;
        the marker stays, so the half-written database is not served).
    """
    import json

    say = log or (lambda _m: None)
    java = _require_java()
    provision(settings, log=say)
    if _pid(settings) is None and _bolt_open(settings.port):
        raise StoreError(
            f"the Neo4j on port {settings.port} was not started by 'socialrisk neo4j start' with home {settings.home}: a bulk import "
            f"writes the database files of the server it runs, so set {ENV_HOME} and {ENV_PORT} to that server's"
        )
    _write_conf(settings)
    settings.import_marker.parent.mkdir(parents=True, exist_ok=True)
    settings.import_marker.write_text(json.dumps({"started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "arguments": arguments}))
    if stop(settings):
        say("stopped Neo4j for the import")
    memory = os.environ.get(ENV_IMPORT_MEMORY) or _sum_sizes(settings.heap, settings.pagecache)
    command = [java, f"-Xmx{settings.heap}", *JVM_OPTIONS, "-cp", str(settings.lib / "*"), ADMIN_ENTRY_POINT, *arguments[:3],
               f"--max-off-heap-memory={memory}", *arguments[3:]]
    env = {**os.environ, "NEO4J_HOME": str(settings.home), "NEO4J_CONF": str(settings.home / "conf")}
    log_path = settings.home / "logs" / "import.log"
    with open(log_path, "wb") as out:
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
        assert proc.stdout is not None
        for raw in proc.stdout:
            out.write(raw)
            line = raw.decode(errors="replace").strip()
            if line.startswith(("[*", "IMPORT DONE", "Import starting", "Estimated")) or "%" in line[-6:]:
                say(f"neo4j-admin: {line[:160]}")
        code = proc.wait()
    if code != 0:
        tail = log_path.read_text(errors="replace").strip().splitlines()[-12:]
        raise StoreError(f"neo4j-admin database import failed (exit {code}); the database is not started. End of {log_path}:\n" + "\n".join(tail))
    say("starting Neo4j on the imported database")
    start(settings, log=say, after_import=True)
