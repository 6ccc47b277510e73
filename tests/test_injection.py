"""Hostile ids and values are data, never code: through every loader path (CSV, Parquet,
DataFrames) into both stores, every query helper of the store interface, the workflow steps
that write (flag, appeal, forget, audit) and the service's user routes.

Every hostile id loads as itself, is found by its exact id, and every question about it answers
with that user's data; an id never loaded is a clear NotFoundError. Nothing a value says runs:
the node counts stay, no label or property it names appears, and (Neo4j) no query text sent to
the server contains a value. A static check makes sure every Cypher text in the code is a
constant whose only composed parts are labels from the fixed vocabulary.
"""

from __future__ import annotations

import ast
import re
import threading
from pathlib import Path
from typing import Any
from urllib.parse import quote

import neo4j
import pandas as pd
import pytest

from graph.store import EmbeddedStore, GraphStore
from loaders import DataError, NotFoundError, ParameterError, load
from socialrisk import workflow
from socialrisk.settings import Settings
from tests.conftest import KEY, tiny_frames, write_dir

ROOT = Path(__file__).resolve().parents[1]

HOSTILE = [
    'x"}) DETACH DELETE n //',
    "x'}) DETACH DELETE n //",
    "' OR 1=1 --",
    "$param",
    "`backtick`",
    "{}",
    ":Admin",
    "}) MERGE (p:Admin {pwned: true}) //",
    "MATCH (n) DETACH DELETE n",
    "line one\nline two",  # a newline inside a quoted CSV cell
    'quote " and, comma; semicolon',
    "\\'; CALL dbms.shutdown() //",
    "ünïcødé 用户 🚀",
    "NULL",
    "L" * 256,  # the longest id accepted
]
#: Column names that look like code, on users (features) and relations (attributes).
HOSTILE_COLUMNS = ["'}) SET u.admin = true //", "$props", ":Admin"]
NOBODY = 'nobody"}) DETACH DELETE n //'
#: Never loaded either, and fit for a URL path (no '/').
NOBODY_IN_PATH = "nobody $x {} `y`"
USERS = ["f1", "a", "b", "c", "g", "z", *HOSTILE]
#: The labels and relationship types socialrisk writes: nothing else may appear.
LABELS = {"User", "Identifier", "Device", "Phone", "Card", "IP", "Account", "Email", "Address", "Flag", "SocialRiskMeta", "Result",
          "AuditEntry", "AuditHead", "ModelVersion", "Tombstone"}
TYPES = {"USES", "RELATES", "HAS_FLAG"}


def hostile_frames() -> dict[str, pd.DataFrame]:
    """The tiny graph (tests/conftest.py) plus a chain of hostile users: each has its own device
    and shares an account with the next, sends it a transfer and carries hostile text; the first
    shares device DEV-1 with the fraud f1, and b has a contact with it."""
    base = tiny_frames()
    n = len(HOSTILE)
    users = pd.DataFrame({"user_id": HOSTILE, "repayments_total": [4] * n, "repayments_late": [1] * n, "chargebacks_90d": [0] * n})
    users["note"] = HOSTILE[::-1]
    for i, column in enumerate(HOSTILE_COLUMNS):
        users[column] = HOSTILE[i:] + HOSTILE[:i]
    links = pd.DataFrame({
        "user_id": [*HOSTILE, *HOSTILE[:-1], *HOSTILE[1:], HOSTILE[0]],
        "kind": ["device"] * n + ["account"] * (2 * (n - 1)) + ["device"],
        "value": [f"{h[:240]} device" for h in HOSTILE] + [f"{h[:240]} account" for h in HOSTILE[:-1]] * 2 + ["DEV-1"],
    })
    relations = pd.DataFrame({"src": [*HOSTILE[:-1], "b"], "dst": [*HOSTILE[1:], HOSTILE[0]], "kind": ["transfer"] * (n - 1) + ["contact"]})
    relations["memo"] = [*HOSTILE[:-1], HOSTILE[-1]]
    relations[HOSTILE_COLUMNS[0]] = HOSTILE[::-1][:n]
    flags = pd.DataFrame({"user_id": [HOSTILE[0], HOSTILE[1]], "label": ["fraud", "benign"], "source": [HOSTILE[2], HOSTILE[3]]})
    return {
        "users": pd.concat([base["users"], users], ignore_index=True),
        "links": pd.concat([base["links"], links], ignore_index=True),
        "relations": pd.concat([base["relations"], relations], ignore_index=True),
        "flags": pd.concat([base["flags"], flags], ignore_index=True),
    }


def _source(path: str, tmp_path: Path) -> Any:
    frames = hostile_frames()
    if path == "dataframe":
        return frames
    return write_dir(frames, tmp_path / "data", fmt=path)


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOCIALRISK_PSEUDONYM_KEY", KEY.decode())


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every query text sent to Neo4j (managed transactions, execute_query, auto-commit runs)."""
    texts: list[str] = []
    lock = threading.Lock()
    for cls in (neo4j.ManagedTransaction, neo4j.Session):
        real = cls.run

        def spy(self: Any, query: Any, *args: Any, _real: Any = real, **kwargs: Any) -> Any:
            with lock:
                texts.append(str(getattr(query, "text", query)))
            return _real(self, query, *args, **kwargs)

        monkeypatch.setattr(cls, "run", spy)
    return texts


def _graph_facts(store: GraphStore) -> dict[str, Any]:
    """What a hostile value would change if it ran: the node and edge counts, and (Neo4j) the
    labels, types and properties the database holds."""
    tables = store.read_tables()
    facts: dict[str, Any] = {"users": sorted(tables.all_user_ids().astype(str)), "links": len(tables.links),
                             "relations": len(tables.relations)}
    driver = getattr(store, "_driver", None)
    if driver is not None:
        q = driver.execute_query
        facts["labels"] = {r["label"] for r in q("CALL db.labels() YIELD label RETURN label", database_="neo4j").records}
        facts["types"] = {r["t"] for r in q("CALL db.relationshipTypes() YIELD relationshipType AS t RETURN t", database_="neo4j").records}
        counts = q("""CALL () { MATCH (u:User) RETURN count(u) AS users }
                      CALL () { MATCH (i:Identifier) RETURN count(i) AS identifiers }
                      CALL () { MATCH (n) WHERE n.admin IS NOT NULL OR n.pwned IS NOT NULL RETURN count(n) AS pwned }
                      RETURN users, identifiers, pwned""", database_="neo4j").records[0]
        facts.update(dict(counts))
    return facts


def _query_texts() -> set[str]:
    """Every string the Neo4j store's module and this file hold, and the module's composed queries."""
    from graph.store import neo4j as store_module

    texts = set()
    for path in (*sorted((ROOT / "graph" / "store" / "neo4j").glob("*.py")), Path(__file__)):
        texts |= {n.value for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
    texts |= {v for v in vars(store_module).values() if isinstance(v, str)}
    return texts | set(store_module.MERGE_LINKS_LABELLED.values())


def _check_loaded(store: GraphStore) -> None:
    """The hostile rows are in the store exactly as given."""
    frames = hostile_frames()
    tables = store.read_tables()
    assert sorted(tables.all_user_ids().astype(str)) == sorted(USERS)
    users = tables.users.set_index("user_id")
    expected = frames["users"].set_index("user_id")
    for column in ["note", *HOSTILE_COLUMNS]:
        assert users.loc[HOSTILE, column].astype(str).tolist() == expected.loc[HOSTILE, column].tolist(), column
    links = tables.links
    assert len(links) == len(frames["links"])
    assert links.groupby("user_id").size().to_dict() == frames["links"].groupby("user_id").size().to_dict()
    assert not links["ident"].isin(frames["links"]["value"]).any()  # pseudonymised, hostile values included
    rel = tables.relations
    got = sorted(zip(rel["src"].astype(str), rel["dst"].astype(str), rel["memo"].fillna("").astype(str), rel[HOSTILE_COLUMNS[0]].fillna("").astype(str)))
    want = frames["relations"][["src", "dst", "memo", HOSTILE_COLUMNS[0]]].fillna("")
    assert got == sorted(zip(want["src"], want["dst"], want["memo"], want[HOSTILE_COLUMNS[0]]))
    flags = tables.flags
    assert sorted(zip(flags["user_id"].astype(str), flags["source"].fillna("").astype(str))) == sorted(
        zip(frames["flags"]["user_id"], frames["flags"]["source"].fillna("")))
    driver = getattr(store, "_driver", None)
    if driver is not None:
        for h in HOSTILE:
            rec = driver.execute_query("MATCH (u:User {id: $id}) RETURN count(u) AS n, u.note AS note", id=h, database_="neo4j").records
            assert [(r["n"], r["note"]) for r in rec] == [(1, expected.loc[h, "note"])], h


@pytest.mark.parametrize("path", ["csv", "csv.gz", "parquet", "dataframe"])
def test_every_loader_path_keeps_hostile_values_as_data(store: GraphStore, path: str, tmp_path: Path) -> None:
    report = load(_source(path, tmp_path), store, key=KEY)
    assert sum(report.rejected.values()) == 0 and report.added["users"] == len(USERS)
    _check_loaded(store)
    facts = _graph_facts(store)
    if "labels" in facts:
        assert facts["labels"] <= LABELS and facts["types"] <= TYPES and facts["pwned"] == 0
        assert facts["users"] == len(USERS)
    # loading it again adds nothing: the hostile rows match themselves
    again = load(_source(path, tmp_path / "again"), store, key=KEY)
    assert sum(again.added.values()) == 0 and _graph_facts(store) == facts


def test_an_id_past_the_limit_is_a_clear_error_or_set_aside(tmp_path: Path) -> None:
    long_id = 'y"}) DETACH DELETE n //' + "y" * 240
    frames = {"users": pd.DataFrame({"user_id": ["ok", long_id]})}
    store = EmbeddedStore(tmp_path / "ws")
    with pytest.raises(DataError, match="at most 256 characters") as info:
        load(frames, store, key=KEY)
    assert "row 2" in str(info.value) and "\n" not in str(info.value)
    report = load(frames, store, key=KEY, on_error="quarantine")
    assert report.rejected == {"users": 1} and store.read_tables().all_user_ids().tolist() == ["ok"]


def test_every_query_helper_answers_about_exactly_the_hostile_user(store: GraphStore, tmp_path: Path, sent: list[str]) -> None:
    settings, ws = Settings(), tmp_path / "ws"
    workflow.load_into(store, write_dir(hostile_frames(), tmp_path / "data"), settings, ws)
    workflow.score(store, settings, workspace=ws)
    facts = _graph_facts(store)
    scores = store.read_result("scores")[0].set_index("user_id")
    assert sorted(scores.index.astype(str)) == sorted(USERS)

    for i, h in enumerate(HOSTILE):
        nodes, edges = store.neighbourhood(h, hops=1, limit=50)
        assert nodes["name"].iloc[0] == h and nodes["hop"].iloc[0] == 0
        assert nodes["risk"].iloc[0] == pytest.approx(scores.loc[h, "risk"])
        users = set(nodes.loc[nodes["node_type"] == "user", "name"])
        assert users <= set(USERS)
        chain = {HOSTILE[j] for j in (i - 1, i + 1) if 0 <= j < len(HOSTILE)}
        assert chain <= users, h
        assert set(edges["source"]) | set(edges["target"]) <= set(nodes["name"])
        ring = store.ring_members(h)
        assert set(ring["user_id"]) <= set(USERS) and (ring.empty or h in set(ring["user_id"]))
        row, explanation, _ = workflow.explain(store, settings, h)
        assert row["user_id"] == h and explanation.user_id == h
        assert {c.seed for c in explanation.contributions} <= set(USERS)
    paths = store.shortest_paths(HOSTILE[0], HOSTILE[4])  # four transfers along the chain
    assert [p["nodes"] for p in paths] == [HOSTILE[:5]] and paths[0]["edges"] == ["transfer"] * 4
    assert store.read_table("users").set_index("user_id").loc[HOSTILE[4], "note"] == HOSTILE[::-1][4]

    # names of results are not ids: a hostile one is refused or simply absent
    for name in (HOSTILE[0], "scores\n", "../scores"):
        try:
            assert store.result_meta(name) is None and not store.has_result(name)
        except ParameterError as exc:
            assert "result name" in str(exc)

    # the steps that write, with hostile ids and hostile free text
    a, b, c, d = HOSTILE[5], HOSTILE[6], HOSTILE[7], HOSTILE[-1]
    update = workflow.flag(store, settings, ws, a, "fraud")
    assert update.user_id == a
    flags = store.read_table("flags")
    assert flags.loc[flags["user_id"] == a, "label"].tolist() == ["fraud"]
    outcome = workflow.appeal(store, settings, ws, b, "dispute", other=c, target="relation", reason="other", note=HOSTILE[0])
    assert outcome.user_id == b
    disputes = store.disputes()
    assert disputes[["user_id", "target", "other"]].values.tolist() == [[b, "relation", c]]
    driver = getattr(store, "_driver", None)
    if driver is not None:  # the dispute is marked on the relationship itself, the reason as given
        marked = driver.execute_query("MATCH (:User {id: $b})-[r:RELATES]->(:User {id: $c}) RETURN r.disputed AS reason", b=b, c=c,
                                      database_="neo4j").records
        assert [r["reason"] for r in marked] == ["other"]
    removed = workflow.forget(store, settings, d, note=HOSTILE[1])
    assert removed["links"] == 1 and store.erased_user_ids() == frozenset({d})  # its own device; the account is shared
    assert [e.action for e in workflow.audit_trail(store, a)] == ["flag"]
    assert [e.action for e in workflow.audit_trail(store, b)] == ["dispute_link", "appeal_decision"]
    assert [(e.action, e.detail["note"]) for e in workflow.audit_trail(store, d)] == [("forget", HOSTILE[1])]
    assert {e.user_id for e in workflow.audit_trail(store)} <= {None, *USERS}

    # ids never loaded are a clear NotFoundError everywhere
    for ask in (
        lambda: store.neighbourhood(NOBODY),
        lambda: store.shortest_paths(NOBODY, HOSTILE[0]),
        lambda: store.shortest_paths(HOSTILE[0], NOBODY),
        lambda: store.ring_members(NOBODY),
        lambda: workflow.explain(store, settings, NOBODY),
        lambda: workflow.forget(store, settings, NOBODY),
        lambda: workflow.appeal(store, settings, ws, NOBODY, "counter_evidence"),
    ):
        with pytest.raises(NotFoundError, match="nobody"):
            ask()

    after = _graph_facts(store)
    assert after["users"] == facts["users"] and after["relations"] == facts["relations"]
    assert after["links"] == facts["links"] - 1  # what forget removed, nothing else
    if "labels" in after:
        assert after["labels"] <= LABELS and after["types"] <= TYPES and after["pwned"] == 0
        assert after["users"] == len(USERS) and after["identifiers"] == facts["identifiers"] - 1
        # no value ever reached the server as query text: every text sent is one written in the code
        assert sent and set(sent) <= _query_texts()
        assert not [(h, q) for q in set(sent) for h in [*HOSTILE, NOBODY] if len(h) > 4 and h in q]


def test_the_service_routes_take_hostile_ids(store: GraphStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from fastapi.testclient import TestClient

    from socialrisk.service import create_app
    from tests.service.conftest import API_KEY, AUTH, service_settings, wait_for

    monkeypatch.setenv("SOCIALRISK_API_KEYS", API_KEY)
    settings, ws = Settings(), tmp_path / "ws"
    workflow.load_into(store, write_dir(hostile_frames(), tmp_path / "data"), settings, ws)
    workflow.score(store, settings, workspace=ws)
    erased = HOSTILE[-1]
    workflow.forget(store, settings, erased)
    scores = store.read_result("scores")[0].set_index("user_id")
    kind = "embedded" if isinstance(store, EmbeddedStore) else "neo4j"
    with TestClient(create_app(service_settings(), kind, ws)) as client:
        wait_for(lambda: client.get("/readyz").json()["graph"] == "ready", what="the graph in memory")
        for h in HOSTILE[:-1]:
            body = client.post("/v1/enrich", json={"user_id": h}, headers=AUTH)
            assert body.status_code == 200 and body.json()["user_id"] == h, (h, body.text)
            assert body.json()["credit_score"] == scores.loc[h, "credit_score"]
            path = quote(h, safe="")
            if "/" in h:  # a path segment cannot hold '/', even as %2F: such ids are asked for in a body only
                assert client.get(f"/v1/users/{path}/explanation", headers=AUTH).status_code == 404
                continue
            explained = client.get(f"/v1/users/{path}/explanation", headers=AUTH)
            assert explained.status_code == 200 and explained.json()["user_id"] == h, (h, explained.text)
            hood = client.get(f"/v1/users/{path}/neighbourhood?hops=1&limit=20", headers=AUTH)
            assert hood.status_code == 200, (h, hood.text)
            assert hood.json()["nodes"][0]["id"] == h and {n["id"] for n in hood.json()["nodes"] if n["type"] == "user"} <= set(USERS)
        for h in (erased, NOBODY_IN_PATH):  # the erased user's scores are not served; an unknown id is a 404
            assert client.post("/v1/enrich", json={"user_id": h}, headers=AUTH).status_code == 404
            assert client.get(f"/v1/users/{quote(h, safe='')}/explanation", headers=AUTH).status_code == 404
        batch = client.post("/v1/enrich/batch", json={"user_ids": [HOSTILE[0], NOBODY, HOSTILE[3], erased]}, headers=AUTH).json()
        assert [r["user_id"] for r in batch["results"]] == [HOSTILE[0], HOSTILE[3]] and batch["unknown"] == [NOBODY, erased]


# -- static check: every Cypher text is a constant ----------------------------------------------

CYPHER = re.compile(r"\b(MATCH|MERGE|CREATE|UNWIND|DETACH|DELETE|REMOVE|RETURN|CALL|SHOW|ALTER|DROP|FOREACH|SET)\b")
#: The one place a query is composed: a label from the fixed vocabulary into the link merge.
COMPOSED = {("graph/store/neo4j/writes.py", "MERGE_LINKS_LABELLED")}
#: Calls that take a query text: method name -> position of the query among the arguments.
QUERY_CALLS = {"run": 0, "execute_query": 0, "_read": 0, "_write_batches": 1}
NOT_DRIVERS = {"subprocess", "uvicorn", "asyncio"}


def _modules() -> list[Path]:
    """Every module that may run Cypher: the packages and the benchmarks."""
    files = [p for d in ("graph", "loaders", "scoring", "socialrisk", "benchmarks") for p in sorted((ROOT / d).rglob("*.py"))]
    store = ROOT / "graph" / "store" / "neo4j"
    return [p for p in files if p.parent == store or re.search(r"neo4j|execute_query|execute_write|execute_read", p.read_text())]


def _texts(node: ast.AST) -> list[str]:
    return [n.value for n in ast.walk(node) if isinstance(n, ast.Constant) and isinstance(n.value, str)]


def _interpolated(node: ast.AST) -> bool:
    """An f-string with values, ``%`` or ``+`` on strings, or ``.format``/``.join``."""
    if isinstance(node, ast.JoinedStr):
        return any(isinstance(v, ast.FormattedValue) for v in node.values)
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Mod, ast.Add)):
        return bool(_texts(node)) and not all(isinstance(s, ast.Constant) for s in (node.left, node.right))
    return isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in ("format", "join", "format_map")


class _Scan(ast.NodeVisitor):
    def __init__(self, rel: str, tree: ast.Module) -> None:
        self.rel = rel
        self.problems: list[str] = []
        self.constants = {t.id for s in tree.body if isinstance(s, (ast.Assign, ast.AnnAssign))
                          for t in (s.targets if isinstance(s, ast.Assign) else [s.target]) if isinstance(t, ast.Name)}
        # query constants taken from a sibling module of the store, where they are scanned too
        self.constants |= {a.asname or a.name for s in tree.body if isinstance(s, ast.ImportFrom) and (s.module or "").startswith("graph.store.neo4j")
                           for a in s.names if (a.asname or a.name).isupper()}
        self.scopes: list[ast.AST] = []
        self.assigned: str | None = None
        self.checked = 0  # query arguments looked at

    def visit_Assign(self, node: ast.Assign | ast.AnnAssign) -> None:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        names = [t.id for t in targets if isinstance(t, ast.Name)]
        self.assigned = names[0] if names else None
        self.generic_visit(node)
        self.assigned = None

    visit_AnnAssign = visit_Assign  # type: ignore[assignment]

    def _scoped(self, node: ast.AST) -> None:
        self.scopes.append(node)
        self.generic_visit(node)
        self.scopes.pop()

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _scoped  # type: ignore[assignment]

    def generic_visit(self, node: ast.AST) -> None:
        if _interpolated(node) and any(CYPHER.search(t) for t in _texts(node)):
            if (self.rel, self.assigned) not in COMPOSED or self.scopes:
                self.problems.append(f"{self.rel}:{node.lineno}: a Cypher text is built from values: {ast.unparse(node)[:120]}")
        if isinstance(node, ast.Call):
            self._check_call(node)
        super().generic_visit(node)

    def _check_call(self, node: ast.Call) -> None:
        func = node.func
        # write jobs carry (query, rows) segments: _Job(table, [(QUERY, rows)]), segments.append((QUERY, rows))
        segments: list[ast.AST] = []
        if isinstance(func, ast.Name) and func.id == "_Job" and len(node.args) > 1 and isinstance(node.args[1], ast.List):
            segments = list(node.args[1].elts)
        if isinstance(func, ast.Attribute) and func.attr == "append" and isinstance(func.value, ast.Name) and func.value.id == "segments":
            segments = list(node.args)
        for segment in segments:
            self.checked += 1
            if not (isinstance(segment, ast.Tuple) and self._static(segment.elts[0])):
                self.problems.append(f"{self.rel}:{node.lineno}: a write job is given a query that is not a constant: {ast.unparse(segment)[:120]}")
        name = func.attr if isinstance(func, ast.Attribute) else None
        if name not in QUERY_CALLS or len(node.args) <= QUERY_CALLS[name]:
            return
        if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id in NOT_DRIVERS:
            return
        query = node.args[QUERY_CALLS[name]]
        self.checked += 1
        if not self._static(query):
            self.problems.append(f"{self.rel}:{node.lineno}: {name}() is given a query that is not a constant: {ast.unparse(query)[:120]}")

    def _static(self, node: ast.AST) -> bool:
        """A constant, a module constant (or an item of one), or a name bound to such in the
        enclosing functions (a parameter: its callers are checked where they pass it)."""
        if isinstance(node, ast.Constant):
            return isinstance(node.value, str)
        if isinstance(node, ast.IfExp):
            return self._static(node.body) and self._static(node.orelse)
        if isinstance(node, ast.Subscript):
            return isinstance(node.value, ast.Name) and node.value.id in self.constants
        if not isinstance(node, ast.Name):
            return False
        if node.id in self.constants:
            return True
        for scope in reversed(self.scopes):
            args = scope.args  # type: ignore[attr-defined]
            if node.id in {a.arg for a in [*args.posonlyargs, *args.args, *args.kwonlyargs]}:
                return True
            bound = [s.value for s in ast.walk(scope) if isinstance(s, ast.Assign) and any(isinstance(t, ast.Name) and t.id == node.id for t in s.targets)]
            loops = [s for s in ast.walk(scope) if isinstance(s, ast.For) and node.id in {n.id for n in ast.walk(s.target) if isinstance(n, ast.Name)}]
            if bound or loops:
                # a loop over a module constant, or over the (query, rows) segments of write jobs, checked where they are made
                return all(self._static(v) for v in bound) and all(
                    (isinstance(s.iter, ast.Name) and s.iter.id in self.constants)
                    or (isinstance(s.iter, ast.Attribute) and s.iter.attr == "segments" and isinstance(s.target, ast.Tuple))
                    for s in loops
                )
        return False


def test_every_cypher_text_is_a_constant() -> None:
    modules = _modules()
    rels = {str(p.relative_to(ROOT)) for p in modules}
    assert {"graph/store/neo4j/store.py", "graph/store/neo4j/read.py", "socialrisk/neo4j_server.py"} <= rels
    problems, checked = [], {}
    for path in modules:
        tree = ast.parse(path.read_text())
        scan = _Scan(str(path.relative_to(ROOT)), tree)
        scan.visit(tree)
        problems += scan.problems
        checked[scan.rel] = scan.checked
    assert problems == []
    assert sum(n for rel, n in checked.items() if rel.startswith("graph/store/neo4j/")) >= 30  # the scan does see the store's queries


def test_composed_queries_only_take_labels_from_the_vocabulary() -> None:
    from graph.store import neo4j as store_module

    labelled = store_module.MERGE_LINKS_LABELLED
    assert set(labelled) == set(store_module.IDENTIFIER_LABELS.values()) <= LABELS
    for label, query in labelled.items():
        assert re.fullmatch(r"[A-Z][A-Za-z]*", label)
        assert query.replace(f"i:{label}, ", "", 1) == store_module.MERGE_LINKS and query.count(label) == 1
    # every module-level query is plain text with $parameters: no format placeholders left in it
    for name, value in vars(store_module).items():
        if name.startswith("_"):
            continue
        texts = [value] if isinstance(value, str) else list(value) if isinstance(value, tuple) else []
        for text in texts:
            if isinstance(text, str) and CYPHER.search(text):
                assert not re.search(r"%[sdr]|\{\d*\}|\{[a-z_]+\}", text), name


def test_the_static_check_catches_interpolation() -> None:
    """The scan itself, on code that must fail it."""
    bad = '''
def f(tx, user_id, label):
    tx.run(f"MATCH (u:User {{id: '{user_id}'}}) RETURN u")
    tx.run("MATCH (u:%s) RETURN u" % label)
    q = "MATCH (u:User) WHERE u.id = '" + user_id + "' RETURN u"
    tx.run(q)
    session.execute_query("MATCH (n:{}) RETURN n".format(label))
'''
    tree = ast.parse(bad)
    scan = _Scan("bad.py", tree)
    scan.visit(tree)
    lines = lambda kind: sorted({int(p.split(":")[1]) for p in scan.problems if kind in p})  # noqa: E731
    assert lines("built from values") == [3, 4, 5, 7]
    assert lines("not a constant") == [3, 4, 6, 7]
