"""The analyst's views on the command line: ``explore``, ``path`` and ``case``.

Registered on :data:`socialrisk.cli_common.app` (the ``socialrisk`` command) when
:mod:`socialrisk.cli` imports this module, after its own commands. The views themselves are gathered by :mod:`socialrisk.investigate`
and drawn by :mod:`socialrisk.views`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Optional

import pandas as pd
import typer
from rich.table import Table

from socialrisk import investigate, workflow
from socialrisk.cli_common import ConfigOpt, StoreOpt, WorkspaceOpt, _run, _settings, _steps, app, out
from socialrisk.settings import DEFAULT_WORKSPACE

__all__ = ["explore_cmd", "path_cmd", "case_cmd"]


def _num(v: Any, digits: int = 3) -> str:
    if v is None or v is pd.NA or (isinstance(v, float) and v != v):
        return "-"
    return f"{float(v):.{digits}f}"


def _count(n: int, word: str) -> str:
    return f"{n:,} {word}{'' if n == 1 else 's'}"


def _int(v: Any) -> str:
    return "-" if v is None or v is pd.NA or (isinstance(v, float) and v != v) else f"{int(v):,}"


def _print_neighbourhood(view: investigate.NetworkView) -> None:
    nodes, edges = view.nodes, view.edges
    users = nodes.loc[nodes["node_type"] == "user"]
    users = users.assign(_r=users["risk"].fillna(-1.0)).sort_values(["hop", "_r"], ascending=[True, False], kind="stable")
    table = Table(title=f"users ({len(users)})", show_edge=False, title_justify="left")
    for col in ("hop", "user", "risk", "score", "decision", "flag", "ring", "path"):
        table.add_column(col, justify="right" if col in ("hop", "risk", "score") else "left")
    for r in users.itertuples():
        table.add_row(str(r.hop), r.name, _num(r.risk), _int(r.credit_score), r.decision or "-", r.flag or "", r.ring_id or "", "*" if r.on_path else "")
    out.print(table)
    idents = nodes.loc[nodes["node_type"] == "identifier"].sort_values(["hop", "degree"], ascending=[True, False], kind="stable")
    if len(idents):
        table = Table(title=f"shared identifiers ({len(idents)})", show_edge=False, title_justify="left")
        for col in ("hop", "identifier", "kind", "shared by", "path"):
            table.add_column(col, justify="right" if col in ("hop", "shared by") else "left")
        hub = view.hub_max_degree
        for r in idents.itertuples():
            note = " (hub)" if hub is not None and r.degree is not pd.NA and int(r.degree) > hub else ""
            table.add_row(str(r.hop), r.label, str(r.ident_kind), f"{_int(r.degree)} users{note}", "*" if r.on_path else "")
        out.print(table)
    rel = edges.loc[edges["type"] == "RELATES"]
    if len(rel):
        table = Table(title=f"relations ({len(rel)})", show_edge=False, title_justify="left")
        for col in ("from", "to", "kind", "relations", "total weight", "latest", "path"):
            table.add_column(col, justify="right" if col in ("relations", "total weight") else "left")
        for r in rel.itertuples():
            latest = "-" if pd.isna(r.ts) else r.ts.strftime("%Y-%m-%d")
            mark = "*" if r.on_path else ""
            if r.disputed:
                mark += f" disputed ({r.disputed})"
            table.add_row(r.source, r.target, r.kind, f"{r.count:,}", f"{r.weight:,.2f}", latest, mark)
        out.print(table)


@app.command("explore")
def explore_cmd(
    user: Annotated[str, typer.Argument(help="The user whose neighbourhood to show.")],
    hops: Annotated[int, typer.Option("--hops", min=1, max=4, help="Edges away from the user (a shared identifier counts as one hop, so 2 reaches the users sharing an identifier with it).")] = 2,
    limit: Annotated[int, typer.Option("--limit", min=1, max=1000, help="Neighbours expanded per node: shared identifiers first, then the riskiest users.")] = 50,
    top: Annotated[int, typer.Option(help="Flagged accounts of the explanation whose paths are highlighted.")] = 5,
    html_path: Annotated[Optional[Path], typer.Option("--html", help="Also write an interactive network view (one self-contained HTML file).")] = None,
    workspace: WorkspaceOpt = Path(DEFAULT_WORKSPACE),
    config: ConfigOpt = None,
    store: StoreOpt = "embedded",
    as_json: Annotated[bool, typer.Option("--json", help="Print the nodes and edges as JSON instead of tables.")] = False,
) -> None:
    """A user's neighbourhood: users, shared identifiers, relations, risks and flags, with the
    paths of its explanation marked (run 'score' first). --html writes the network view: nodes
    coloured by risk and shaped by kind, flagged accounts marked, explanation paths highlighted;
    zoom, pan and click for details."""

    def body() -> None:
        settings = _settings(config)
        with workflow.open_store(store, workspace) as st, _steps("explore") as step:
            step(f"{hops}-hop neighbourhood of {user}")
            exploration = investigate.explore(st, settings, user, hops=hops, limit=limit, top=top)
        view = exploration.view
        if html_path is not None:
            from socialrisk import views

            views.write_html(html_path, views.explore_html(exploration))
        if as_json:
            payload = {
                "user_id": user, "hops": hops, "limit": limit,
                "nodes": json.loads(view.nodes.drop(columns=["reasons"]).to_json(orient="records", date_format="iso")),
                "edges": json.loads(view.edges.to_json(orient="records", date_format="iso")),
                "explanation": [{"seed": c.seed, "share": c.share, "sentence": c.sentence(user)} for c in exploration.explanation.contributions],
                "html": str(html_path) if html_path else None,
            }
            typer.echo(json.dumps(payload, indent=2, default=str))
            return
        row = exploration.score
        n_users = int((view.nodes["node_type"] == "user").sum())
        out.print(
            f"{user}: credit score {int(row['credit_score'])}, {row['decision']}, risk {float(row['risk']):.3f} "
            f"(graph {float(row['graph_risk']):.3f}){', flagged ' + str(row['flag']) if row.get('flag') else ''}"
        )
        out.print(
            f"{hops}-hop neighbourhood: {_count(n_users, 'user')}, {_count(len(view.nodes) - n_users, 'shared identifier')}, "
            f"{_count(len(view.edges), 'edge')} "
            f"(at most {limit} neighbours expanded per node; * = on an explanation path)"
        )
        _print_neighbourhood(view)
        if exploration.explanation.contributions:
            out.print("explanation paths (graph risk comes from):")
            for c in exploration.explanation.contributions:
                out.print(f"  {c.share:6.1%}  {c.sentence(user)}")
        else:
            out.print("no flagged account reaches this user through the graph")
        if html_path is not None:
            out.print(f"network view written to {html_path} (self-contained; open it in a browser: zoom, pan, click for details)")

    _run(body)


@app.command("path")
def path_cmd(
    user_a: Annotated[str, typer.Argument(help="One user.")],
    user_b: Annotated[str, typer.Argument(help="The other user.")],
    max_hops: Annotated[int, typer.Option("--max-hops", min=1, max=12, help="Longest path searched, in edges (a shared identifier counts as two: in and out).")] = 8,
    limit: Annotated[int, typer.Option("--limit", min=1, help="At most this many paths.")] = 5,
    workspace: WorkspaceOpt = Path(DEFAULT_WORKSPACE),
    store: StoreOpt = "embedded",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")] = False,
) -> None:
    """The shortest paths between two users through shared identifiers and relations (either direction)."""

    def body() -> None:
        with workflow.open_store(store, workspace) as st, _steps("path") as step:
            step(f"{user_a} to {user_b}")
            found = investigate.paths(st, user_a, user_b, max_hops=max_hops, limit=limit)
        if as_json:
            typer.echo(json.dumps({"from": user_a, "to": user_b, "max_hops": max_hops, "paths": found}, indent=2, default=str))
            return
        if not found:
            out.print(f"no path between {user_a} and {user_b} within {max_hops} edges" if user_a != user_b else f"{user_a} is the same user")
            return
        length = len(found[0]["nodes"]) - 1
        out.print(
            f"{len(found)} shortest path{'s' if len(found) > 1 else ''} between {user_a} and {user_b} "
            f"({length} edge{'s' if length != 1 else ''}{', the first ' + str(limit) if len(found) == limit else ''}):"
        )
        users: dict[str, dict[str, Any]] = {}
        for i, p in enumerate(found, start=1):
            out.print(f"{i:3d}. {investigate.path_text(p)}")
            users.update(p["users"])
        out.print("users on these paths:")
        for name, info in users.items():
            if info["risk"] is None:
                out.print(f"  {name}: no stored score")
            else:
                flag = f", flagged {info['flag']}" if info["flag"] else ""
                out.print(f"  {name}: risk {info['risk']:.3f}, {info['decision']}{flag}")

    _run(body)


@app.command("case")
def case_cmd(
    user: Annotated[str, typer.Argument(help="The user the case is about.")],
    out_path: Annotated[Path, typer.Option("--out", "-o", help="The case file to write (HTML).")],
    hops: Annotated[int, typer.Option("--hops", min=1, max=4, help="Edges away from the user in the network view.")] = 2,
    limit: Annotated[int, typer.Option("--limit", min=1, max=1000, help="Neighbours expanded per node.")] = 50,
    top: Annotated[int, typer.Option(help="Flagged accounts in the explanation.")] = 5,
    workspace: WorkspaceOpt = Path(DEFAULT_WORKSPACE),
    config: ConfigOpt = None,
    store: StoreOpt = "embedded",
    with_recourse: Annotated[bool, typer.Option("--recourse", help="Add a refused user's recourse (computes the features again).")] = False,
) -> None:
    """Write a self-contained case file (one HTML file that opens offline): the network view, the
    explanation, a timeline of links, relations and flags, the dimension scores as a bar chart,
    the reason codes and the audit trail (run 'score' first)."""

    def body() -> None:
        from socialrisk import views

        settings = _settings(config)
        with workflow.open_store(store, workspace) as st, _steps("case") as step:
            step(f"gathering the case of {user}")
            case = investigate.case_file(
                st, settings, user, hops=hops, limit=limit, top=top, store_name=store, recourse=with_recourse, workspace=str(workspace)
            )
            step("writing")
            path = views.write_html(out_path, views.case_html(case))
        row = case.exploration.score
        out.print(
            f"case file of {user} written to {path} ({path.stat().st_size / 1024:,.0f} KiB, self-contained): credit score "
            f"{int(row['credit_score'])}, {row['decision']}; {case.exploration.view.n_nodes:,} nodes in view, "
            f"{len(case.exploration.explanation.contributions)} flagged accounts explained, {len(case.timeline):,} timeline events, "
            f"{len(case.audit):,} audit entries"
        )

    _run(body)
