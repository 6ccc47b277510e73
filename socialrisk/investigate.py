"""What an analyst looks at: a user's neighbourhood with its explanation, paths between two
users, rings as graphs, and the case file that hands an investigation on.

These functions gather from the store (either one: both answer the same queries in the same
shape, :mod:`graph.neighbourhood`) and from :mod:`socialrisk.workflow`; they hold no math.
:mod:`socialrisk.views` draws what they return as self-contained HTML.
"""

from __future__ import annotations

import getpass
import os
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from graph.explain import Explanation, ident_label
from graph.neighbourhood import subgraph
from graph.store import GraphStore
from loaders.errors import NotFoundError, ParameterError
from socialrisk import workflow
from socialrisk.settings import Settings

__all__ = [
    "NetworkView",
    "Exploration",
    "RingView",
    "CaseFile",
    "explore",
    "paths",
    "path_text",
    "ring_views",
    "case_file",
    "node_label",
    "timeline",
    "MAX_RING_MEMBERS",
]

#: Rings drawn with at most this many members (the riskiest); larger ones say how many are left out.
MAX_RING_MEMBERS = 150


def node_label(name: str, node_type: str) -> str:
    """What a node is called on screen: the user id, or the short pseudonym of an identifier
    (``device d-3f9a``)."""
    return str(name) if node_type == "user" else ident_label(str(name))


@dataclass(frozen=True)
class NetworkView:
    """A graph ready to draw.

    Attributes
    ----------
    nodes : DataFrame
        :data:`graph.neighbourhood.NODE_COLUMNS`, plus ``label`` (:func:`node_label`),
        ``reasons`` (users: the stored reasons, ``;``-separated), ``ring_id`` and ``on_path``
        (the node lies on a path of the focus user's explanation).
    edges : DataFrame
        :data:`graph.neighbourhood.EDGE_COLUMNS`, plus ``on_path`` and ``disputed`` (the reason
        of a dispute in force on that link, or ``""``).
    focus : str or None
        The user the view is about.
    title : str
    hub_max_degree : int or None
        Identifiers shared by more users are left out of propagation (shown, marked as hubs).
    """

    nodes: pd.DataFrame
    edges: pd.DataFrame
    focus: str | None
    title: str
    hub_max_degree: int | None = None

    @property
    def n_nodes(self) -> int:
        return len(self.nodes)


@dataclass(frozen=True)
class Exploration:
    """A user's neighbourhood, its score and the explanation whose paths the view highlights."""

    user_id: str
    score: pd.Series
    explanation: Explanation
    view: NetworkView
    hops: int
    limit: int
    meta: dict[str, Any] = field(default_factory=dict)


def _scores(store: GraphStore) -> tuple[pd.DataFrame, dict[str, Any]]:
    if not store.has_result("scores"):
        raise NotFoundError("no 'scores' result yet: run 'socialrisk score' first (the views show each user's risk)")
    scores, meta = store.read_result("scores")
    return scores.drop_duplicates("user_id", keep="last").reset_index(drop=True), meta


def _path_elements(explanation: Explanation) -> tuple[set[tuple[str, str, str, str]], set[str], set[str]]:
    """The edges (as ``(source, target, type, kind)`` keys), users and identifier keys on the
    explanation's paths."""
    keys: set[tuple[str, str, str, str]] = set()
    users: set[str] = set()
    idents: set[str] = set()
    for c in explanation.contributions:
        for s in c.path:
            users.update((s.source, s.target))
            if s.kind == "identifier" and s.ident:
                idents.add(s.ident)
                keys.add((s.source, s.ident, "USES", "uses"))
                keys.add((s.target, s.ident, "USES", "uses"))
            else:
                src, dst = (s.source, s.target) if s.forward else (s.target, s.source)
                keys.add((src, dst, "RELATES", s.via))
    return keys, users, idents


def _path_hops(explanation: Explanation) -> dict[str, int]:
    """Edges from the explained user to each node on its paths (the fewest over the paths; an
    identifier is one hop from each of its users)."""
    out = {explanation.user_id: 0}
    for c in explanation.contributions:
        d = 0
        for s in reversed(c.path):  # from the user back to the flagged account
            if s.kind == "identifier" and s.ident:
                out[s.ident] = min(out.get(s.ident, d + 1), d + 1)
                d += 2
            else:
                d += 1
            out[s.source] = min(out.get(s.source, d), d)
    return out


def _decorate(
    store: GraphStore,
    settings: Settings,
    nodes: pd.DataFrame,
    edges: pd.DataFrame,
    scores: pd.DataFrame,
    *,
    focus: str | None,
    title: str,
    explanation: Explanation | None = None,
) -> NetworkView:
    """Add the explanation's paths (nodes and edges missing from the view too), labels,
    reasons, ring ids and disputes."""
    path_keys: set[tuple[str, str, str, str]] = set()
    if explanation is not None and explanation.contributions:
        path_keys, path_users, path_idents = _path_elements(explanation)
        have = set(nodes["name"])
        if not (path_users | path_idents) <= have or not path_keys <= set(zip(edges["source"], edges["target"], edges["type"], edges["kind"])):
            # paths reach beyond the neighbourhood: draw them whole
            index, attrs = store.graph_index()
            more_nodes, more_edges = subgraph(index, attrs, sorted(path_users), identifiers=sorted(path_idents))
            # nodes beyond the neighbourhood: their hops along the explanation paths
            hops = _path_hops(explanation)
            more_nodes = more_nodes.loc[~more_nodes["name"].isin(have)]
            more_nodes = more_nodes.assign(hop=[hops.get(str(name), 0) for name in more_nodes["name"]])
            edge_keys = set(zip(edges["source"], edges["target"], edges["type"], edges["kind"]))
            wanted = [
                (k in path_keys) and (k not in edge_keys)
                for k in zip(more_edges["source"], more_edges["target"], more_edges["type"], more_edges["kind"])
            ]
            nodes = pd.concat([nodes, more_nodes], ignore_index=True)
            edges = pd.concat([edges, more_edges.loc[wanted]], ignore_index=True)
    nodes = nodes.reset_index(drop=True).copy()
    edges = edges.reset_index(drop=True).copy()
    by_user = scores.set_index(scores["user_id"].astype(str))
    on_path_names = {k[0] for k in path_keys} | {k[1] for k in path_keys}
    nodes["label"] = [node_label(n, t) for n, t in zip(nodes["name"], nodes["node_type"])]
    nodes["reasons"] = [
        str(by_user.at[n, "reasons"]) if t == "user" and n in by_user.index and "reasons" in by_user and isinstance(by_user.at[n, "reasons"], str) else ""
        for n, t in zip(nodes["name"], nodes["node_type"])
    ]
    nodes["ring_id"] = [
        str(by_user.at[n, "ring_id"]) if t == "user" and n in by_user.index and "ring_id" in by_user and isinstance(by_user.at[n, "ring_id"], str) else ""
        for n, t in zip(nodes["name"], nodes["node_type"])
    ]
    nodes["on_path"] = nodes["name"].isin(on_path_names)
    edges["on_path"] = [k in path_keys for k in zip(edges["source"], edges["target"], edges["type"], edges["kind"])]
    disputes = store.disputes()
    marks: dict[tuple[str, str], str] = {}
    for d in disputes.itertuples():
        marks[(str(d.user_id), str(d.other))] = str(d.reason)
        if d.target == "relation":
            marks[(str(d.other), str(d.user_id))] = str(d.reason)
    edges["disputed"] = [marks.get((s, t), "") for s, t in zip(edges["source"], edges["target"])]
    return NetworkView(nodes=nodes, edges=edges, focus=focus, title=title, hub_max_degree=settings.graph.hub_max_degree)


def explore(
    store: GraphStore, settings: Settings, user_id: str, *, hops: int = 2, limit: int = 50, top: int = 5
) -> Exploration:
    """A user's neighbourhood, scored, with the paths of its explanation.

    Parameters
    ----------
    store, settings
        The store to read (scored: the views show each user's risk) and its configuration.
    user_id : str
    hops : int
        Edges from the user, 1 to 4; a shared identifier counts as a hop, so ``hops=2`` reaches
        the users that share an identifier with the user and the partners of its partners.
    limit : int
        Neighbours expanded per node (shared identifiers first, then the riskiest users).
    top : int
        Flagged accounts in the explanation; their paths are drawn whole, even beyond ``hops``.

    Returns
    -------
    Exploration

    Raises
    ------
    NotFoundError
        No scores yet, or no such user.
    """
    scores, meta = _scores(store)
    row, explanation, _ = workflow.explain(store, settings, user_id, top=top)
    nodes, edges = store.neighbourhood(user_id, hops=hops, limit=limit)
    view = _decorate(
        store, settings, nodes, edges, scores, focus=user_id, explanation=explanation,
        title=f"{user_id}: {hops}-hop neighbourhood",
    )
    return Exploration(user_id=user_id, score=row, explanation=explanation, view=view, hops=hops, limit=limit, meta=meta)


def paths(store: GraphStore, a: str, b: str, *, max_hops: int = 8, limit: int = 5) -> list[dict[str, Any]]:
    """The shortest paths between two users (:meth:`GraphStore.shortest_paths`), each with
    ``labels`` (what to print for each node) and ``users`` (risk, decision and latest flag of
    each user on it, from the last scoring)."""
    found = store.shortest_paths(a, b, max_hops=max_hops, limit=limit)
    scores = store.read_result("scores")[0].drop_duplicates("user_id", keep="last").set_index("user_id") if store.has_result("scores") else None
    out = []
    for p in found:
        users = {}
        for name, kind in zip(p["nodes"], p["node_types"]):
            if kind == "user":
                info: dict[str, Any] = {"risk": None, "decision": None, "flag": ""}
                if scores is not None and name in scores.index:
                    r = scores.loc[name]
                    info = {"risk": float(r["risk"]), "decision": r.get("decision"), "flag": str(r.get("flag", "") or "")}
                users[name] = info
        out.append({**p, "labels": [node_label(n, t) for n, t in zip(p["nodes"], p["node_types"])], "users": users})
    return out


def path_text(path: dict[str, Any]) -> str:
    """One path of :func:`paths` in a line: ``a -[transfer]- b - device d-3f9a (2 users) - c``."""
    parts = [str(path["labels"][0])]
    for j, edge in enumerate(path["edges"]):
        nxt = str(path["labels"][j + 1])
        if path["node_types"][j + 1] == "identifier" and path["degrees"][j + 1] is not None:
            nxt += f" ({int(path['degrees'][j + 1]):,} users)"
        parts.append(f" - {nxt}" if edge == "uses" else f" -[{edge}]- {nxt}")
    return "".join(parts)


@dataclass(frozen=True)
class RingView:
    """One ranked ring (a row of :func:`graph.rings.rank_rings`) and its graph: the members
    drawn (the riskiest :data:`MAX_RING_MEMBERS`), the identifiers they share, the relations
    among them."""

    ring: dict[str, Any]
    view: NetworkView
    members: pd.DataFrame
    shown: int


def ring_views(
    store: GraphStore, settings: Settings, *, kind: str = "components", top: int = 10, seed: int = 0,
    summary: workflow.RingsSummary | None = None,
) -> tuple[workflow.RingsSummary, list[RingView]]:
    """The ``top`` rings with the most risk (:func:`socialrisk.workflow.rings`), each as a graph.

    ``summary`` reuses rings already found (the CLI prints them first).
    """
    summary = summary or workflow.rings(store, settings, kind=kind, top=top, seed=seed)
    scores, _ = _scores(store)
    index, attrs = store.graph_index()
    out = []
    for ring in summary.frame.to_dict(orient="records"):
        members = list(ring["members"])[:MAX_RING_MEMBERS]
        nodes, edges = subgraph(index, attrs, members, identifiers=ring["identifier_keys"])
        view = _decorate(store, settings, nodes, edges, scores, focus=None, title=f"{ring['ring_id']}")
        table = view.nodes.loc[view.nodes["node_type"] == "user", ["name", "risk", "credit_score", "decision", "flag"]]
        order = {m: i for i, m in enumerate(members)}
        table = table.assign(_o=table["name"].map(order)).sort_values("_o").drop(columns="_o").rename(columns={"name": "user_id"})
        out.append(RingView(ring=ring, view=view, members=table.reset_index(drop=True), shown=len(members)))
    return summary, out


@dataclass(frozen=True)
class CaseFile:
    """Everything handed on with a case: the user's score, reasons and dimensions, the
    neighbourhood with its explanation, a timeline of links, relations and flags, and the audit
    trail, with the provenance of the scores and who made the file when."""

    exploration: Exploration
    dimensions: dict[str, float | None]
    reasons: list[tuple[str, str]]
    timeline: pd.DataFrame
    audit: list[Any]
    disputes: pd.DataFrame
    made_by: str
    made_at: str
    store: str
    #: The refused user's recourse (:class:`scoring.recourse.Recourse` as a dict), when asked for.
    recourse: dict[str, Any] | None = None


def _actor() -> str:
    who = os.environ.get("SOCIALRISK_ACTOR")
    if who:
        return who
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no login name (a container): say so rather than fail
        return "unknown"


def timeline(store: GraphStore, view: NetworkView, users: list[str], *, max_events: int = 300) -> pd.DataFrame:
    """Dated events of ``users`` within the view: their links to the view's identifiers (first
    and last seen), their relations with the view's users, and their flags; newest last.

    Returns
    -------
    DataFrame
        ``at`` (UTC), ``event`` (``link``, ``relation`` or ``flag``), ``user_id``, ``what``
        (plain words, identifiers pseudonymised), ``other`` (the identifier key or the other
        user). At most ``max_events``, the latest kept.
    """
    tables = store.read_tables()
    wanted = set(users)
    in_view = set(view.nodes["name"])
    rows: list[dict[str, Any]] = []
    links = tables.links
    if len(links):
        mine = links.loc[links["user_id"].astype(str).isin(wanted)]
        keys = mine["kind"].astype(str) + ":" + mine["ident"].astype(str)
        mine = mine.assign(key_=keys).loc[keys.isin(in_view)]
        for r in mine.itertuples():
            label = ident_label(r.key_)
            first, last = r.first_seen, r.last_seen
            if pd.notna(first):
                rows.append({"at": first, "event": "link", "user_id": r.user_id, "what": f"first seen on {label}", "other": r.key_})
            if pd.notna(last) and (pd.isna(first) or last != first):
                rows.append({"at": last, "event": "link", "user_id": r.user_id, "what": f"last seen on {label}", "other": r.key_})
    rel = tables.relations
    if len(rel):
        src, dst = rel["src"].astype(str), rel["dst"].astype(str)
        mine = rel.loc[(src.isin(wanted) & dst.isin(in_view)) | (dst.isin(wanted) & src.isin(in_view))]
        for r in mine.itertuples():
            weight = getattr(r, "weight", np.nan)
            amount = getattr(r, "amount", np.nan)
            extra = f", amount {amount:,.2f}" if isinstance(amount, float) and np.isfinite(amount) else ""
            extra += f", weight {weight:g}" if isinstance(weight, float) and np.isfinite(weight) and weight != 1.0 else ""
            me, other = (r.src, r.dst) if r.src in wanted else (r.dst, r.src)
            rows.append({"at": r.ts, "event": "relation", "user_id": me, "what": f"{r.src} -[{r.kind}]-> {r.dst}{extra}", "other": other})
    flags = tables.flags
    if len(flags):
        mine = flags.loc[flags["user_id"].astype(str).isin(in_view)]
        for r in mine.itertuples():
            src = f" ({r.source})" if isinstance(r.source, str) and r.source else ""
            sev = f", severity {r.severity:g}" if pd.notna(r.severity) and r.severity != 1.0 else ""
            rows.append({"at": r.ts, "event": "flag", "user_id": r.user_id, "what": f"flagged {r.label}{sev}{src}", "other": ""})
    frame = pd.DataFrame(rows, columns=["at", "event", "user_id", "what", "other"])
    frame["at"] = pd.to_datetime(frame["at"], utc=True)
    frame = frame.sort_values(["at", "event", "user_id"], na_position="first", kind="stable").reset_index(drop=True)
    return frame.tail(max_events).reset_index(drop=True)


def case_file(
    store: GraphStore, settings: Settings, user_id: str, *, hops: int = 2, limit: int = 50, top: int = 5, store_name: str = "embedded",
    recourse: bool = False, workspace: str | None = None,
) -> CaseFile:
    """Gather a case file for ``user_id`` (:func:`socialrisk.views.case_html` draws it).

    The timeline covers the user and the users on its explanation paths; the audit trail is the
    user's (the hash chain is verified while reading it). With ``recourse``, a refused or
    reviewed user's recourse (:func:`socialrisk.workflow.recourse`, which computes the features
    again; ``workspace`` finds the key the model versions are signed with) is added.
    """
    if hops < 1:
        raise ParameterError(f"The 'hops' parameter of case_file must be >= 1. Got {hops!r} instead.")
    exploration = explore(store, settings, user_id, hops=hops, limit=limit, top=top)
    row = exploration.score
    dims = {c[4:]: (None if pd.isna(row[c]) else float(row[c])) for c in row.index if str(c).startswith("dim_")}
    texts = [r for r in str(row.get("reasons", "") or "").split(";") if r]
    codes = [c for c in str(row.get("reason_codes", "") or "").split(";") if c]
    # both columns are written from one list of reasons, in the same order
    reasons = [(codes[i] if i < len(codes) else "", texts[i] if i < len(texts) else "") for i in range(max(len(codes), len(texts)))]
    on_path = sorted({s for c in exploration.explanation.contributions for p in c.path for s in (p.source, p.target)} | {user_id})
    disputes = store.disputes()
    found = None
    if recourse and str(row.get("decision", "approve")) != "approve":
        found = workflow.recourse(store, settings, user_id, workspace=workspace or ".").to_dict()
    return CaseFile(
        exploration=exploration,
        dimensions=dims,
        reasons=reasons,
        timeline=timeline(store, exploration.view, on_path),
        audit=store.read_audit(user_id),
        disputes=disputes.loc[disputes["user_id"] == user_id].reset_index(drop=True),
        made_by=_actor(),
        made_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        store=store_name,
        recourse=found,
    )

