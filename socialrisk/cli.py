"""The ``socialrisk`` command line."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any, Optional

import pandas as pd
import typer
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from loaders.errors import ParameterError
from loaders.load import LoadReport
from socialrisk import workflow
from socialrisk.cli_common import (
    ConfigOpt,
    EngineOpt,
    StoreOpt,
    WorkspaceOpt,
    _engine,
    _notice,
    _run,
    _settings,
    _steps,
    app,
    err,
    out,
)
from socialrisk.settings import DEFAULT_WORKSPACE

__all__ = ["app", "main"]


def _print_load(report: LoadReport) -> None:
    table = Table(title="load", show_edge=False)
    for col in ("table", "source", "read", "added", "already present", "rejected"):
        table.add_column(col, justify="right" if col not in ("table", "source") else "left")
    for name in report.read:
        table.add_row(
            name,
            report.sources.get(name, ""),
            f"{report.read[name]:,}",
            f"{report.added[name]:,}",
            f"{report.unchanged[name]:,}",
            f"{report.rejected[name]:,}",
        )
    out.print(table)
    for name, made in report.derived.items():
        out.print(f"{name}: {made:,} rows derived (ip_prefix links from IP addresses), counted in 'added' and 'already present'.")
    if len(report.rejects):
        where = f"; every one, with its reason, is in {report.rejects_path}" if report.rejects_path else ""
        first = report.rejects.iloc[0]
        out.print(
            f"{int(sum(report.rejected.values())):,} rows set aside (rows read = loaded + rejected for every table){where}. "
            f"First: {first['source']}, row {first['row']}, column '{first['column']}': got {first['value']!r}, expected {first['expected']}"
        )


@app.command()
def generate(
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Directory to write the tables to.")],
    users: Annotated[int, typer.Option("--users", "-n", min=10, help="Number of users.")] = 10_000,
    seed: Annotated[int, typer.Option(help="Random seed; the same seed gives the same data.")] = 0,
    fmt: Annotated[str, typer.Option("--format", help="parquet, csv or csv.gz.")] = "parquet",
    bias_age_band: Annotated[Optional[str], typer.Option("--bias-age-band", help="Give the good users of this age band (18-24, 25-34, 35-49, 50-64, 65+) a worse recorded history, to test a fairness report.")] = None,
    bias_strength: Annotated[float, typer.Option("--bias-strength", min=0.0, help="How much worse --bias-age-band records them: the latent risk their history is drawn from is this much higher (a fraud ring member's: 1.85).")] = 1.5,
    bias_flag_rate: Annotated[float, typer.Option("--bias-flag-rate", min=0.0, max=1.0, help="Share of the --bias-age-band good users wrongly flagged as fraud, as by unfair past decisions.")] = 0.1,
    emails: Annotated[bool, typer.Option("--emails", help="Also give every user an email link (family mailboxes in households, reused mailboxes and throwaway domains in fraud rings); every other row stays the same.")] = False,
) -> None:
    """Write a synthetic payments-app population in the contract format (plus truth labels)."""

    def body() -> None:
        from loaders.synthetic import generate as make, write_tables

        with _steps("generate") as step:
            step(f"{users:,} users")
            tables = make(n_users=users, seed=seed, bias_age_band=bias_age_band, bias_strength=bias_strength, bias_flag_rate=bias_flag_rate, emails=emails)
            step("writing")
            paths = write_tables(tables, out_dir, fmt=fmt)
        for name, path in paths.items():
            out.print(f"{name:10s} {len(tables[name]):>12,} rows  {path}")

    _run(body)


@app.command("load")
def load_cmd(
    data_dir: Annotated[Path, typer.Argument(help="Directory with users/links/relations/flags tables.")],
    workspace: WorkspaceOpt = Path(DEFAULT_WORKSPACE),
    config: ConfigOpt = None,
    store: StoreOpt = "embedded",
    on_error: Annotated[str, typer.Option("--on-error", help="fail: stop at the first bad value, load nothing. quarantine: set bad rows aside with their reason, load the rest.")] = "fail",
    rejects: Annotated[Optional[Path], typer.Option("--rejects", help="CSV file for the rows set aside (default: <workspace>/rejects/load-<time>.csv).")] = None,
    bulk: Annotated[bool, typer.Option("--bulk", help="With --store neo4j: the first load of an empty database, through neo4j-admin database import (the server of 'socialrisk neo4j start' is stopped while it imports).")] = False,
) -> None:
    """Validate, pseudonymise and load a data directory into the store (idempotent)."""

    def body() -> None:
        settings = _settings(config)
        target = rejects or Path(workspace) / "rejects" / f"load-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.csv"
        if bulk:
            if store != "neo4j":
                raise ParameterError(f"--bulk loads a Neo4j database: give --store neo4j. Got --store {store} instead.")
            with _steps("load") as step:
                report = workflow.bulk_load_into(data_dir, settings, workspace, progress=step, notice=_notice, on_error=on_error, rejects_path=target)
            _print_load(report)
            return
        with workflow.open_store(store, workspace) as st, _steps("load") as step:
            report = workflow.load_into(
                st, data_dir, settings, workspace, progress=step, notice=_notice, on_error=on_error, rejects_path=target
            )
        _print_load(report)

    _run(body)


@app.command("propagate")
def propagate_cmd(
    workspace: WorkspaceOpt = Path(DEFAULT_WORKSPACE),
    config: ConfigOpt = None,
    store: StoreOpt = "embedded",
    top: Annotated[int, typer.Option(help="How many of the most exposed users to list.")] = 10,
    engine: EngineOpt = "single",
) -> None:
    """Spread risk from the flags through the graph and store each user's exposure."""

    def body() -> None:
        settings = _settings(config)
        with workflow.open_store(store, workspace) as st, _steps("propagate") as step:
            if _engine(engine) == "spark":
                from socialrisk import spark_engine

                summary = spark_engine.propagate(st, settings, progress=step)
            else:
                summary = workflow.propagate(st, settings, progress=step)
        frame = summary.frame
        out.print(
            f"propagated over {summary.meta['users']:,} users and {summary.meta['shared_identifiers']:,} shared identifiers "
            f"(layers: {', '.join(summary.meta['layers']) or 'none'})"
        )
        cols = [c for c in frame.columns if c.endswith("_exposure")]
        if cols:
            frame = frame.assign(exposure=frame[cols].max(axis=1)).nlargest(top, "exposure")
            table = Table(title=f"{top} most exposed users", show_edge=False)
            table.add_column("user_id")
            for c in cols:
                table.add_column(c, justify="right")
            for _, r in frame.iterrows():
                table.add_row(str(r["user_id"]), *[f"{r[c]:.3f}" for c in cols])
            out.print(table)

    _run(body)


@app.command("score")
def score_cmd(
    data_dir: Annotated[Optional[Path], typer.Argument(help="Data directory to load first; omit to score the workspace as loaded.")] = None,
    out_path: Annotated[Optional[Path], typer.Option("--out", "-o", help="CSV file for the scores.")] = None,
    workspace: WorkspaceOpt = Path(DEFAULT_WORKSPACE),
    config: ConfigOpt = None,
    store: StoreOpt = "embedded",
    model: Annotated[Optional[str], typer.Option("--model", help="Score with this model version instead of the current one (see 'socialrisk models').")] = None,
    engine: EngineOpt = "single",
) -> None:
    """Load DATA_DIR (if given), propagate, combine the dimensions and write one row per user.

    The combination is the store's current model version; the first scoring of a store fits
    one. 'socialrisk calibrate' fits a new one on the current labels. With --engine spark the
    propagations run on Spark and --out must be a .parquet file."""

    def body() -> None:
        settings = _settings(config)
        if _engine(engine) == "spark" and out_path is not None and out_path.suffix != ".parquet":
            raise ParameterError(f"--engine spark writes the scores as Parquet: give --out a .parquet file. Got {out_path} instead.")
        report = None
        with workflow.open_store(store, workspace) as st:
            if data_dir is not None:
                with _steps("load") as step:
                    report = workflow.load_into(st, data_dir, settings, workspace, progress=step, notice=_notice)
                _print_load(report)
            with _steps("score") as step:
                if engine == "spark":
                    from socialrisk import spark_engine

                    result = spark_engine.score(st, settings, workspace=workspace, model=model, progress=step)
                else:
                    result = workflow.score(st, settings, workspace=workspace, model=model, progress=step)
        frame = result.scores
        if report is not None:
            # SCORES.csv holds DATA_DIR's users; earlier loads into the workspace still shape the graph
            mine = frame["user_id"].isin(report.user_ids)
            others = int((~mine).sum())
            if others:
                _notice(
                    f"the workspace {workspace} also holds {others:,} users from earlier loads: they are part of the "
                    f"graph but not of {out_path or 'the output'}. Use a fresh --workspace to score {data_dir} alone."
                )
            frame = frame.loc[mine]
        if out_path is not None:
            out_path.parent.mkdir(parents=True, exist_ok=True)
            if engine == "spark":
                frame.to_parquet(out_path, index=False)
            else:
                frame.to_csv(out_path, index=False, float_format="%.6g")
        counts = frame["decision"].value_counts()
        out.print(
            f"scored {len(frame):,} users with the {result.combination} combination "
            f"(model {result.meta['model_version']}, config {result.meta['config_hash']}, snapshot {result.meta['snapshot']}): "
            + ", ".join(f"{counts.get(d, 0):,} {d}" for d in ("approve", "review", "reject"))
            + (f"; written to {out_path}" if out_path else "")
        )

    _run(body)


@app.command("explain")
def explain_cmd(
    user: Annotated[str, typer.Argument(help="The user id to explain.")],
    workspace: WorkspaceOpt = Path(DEFAULT_WORKSPACE),
    config: ConfigOpt = None,
    store: StoreOpt = "embedded",
    top: Annotated[int, typer.Option(help="Flagged accounts to show.")] = 5,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")] = False,
    with_recourse: Annotated[bool, typer.Option("--recourse", help="For a refused or reviewed user: the smallest changes it can make that would bring an approval, each with the score the model would give (computes the features again).")] = False,
) -> None:
    """Why a user has its score: reasons, dimensions, and the flagged accounts and paths behind its graph risk."""

    def body() -> None:
        settings = _settings(config)
        with workflow.open_store(store, workspace) as st:
            row, explanation, meta = workflow.explain(st, settings, user, top=top)
            found = None
            if with_recourse:
                with _steps("recourse") as step:
                    found = workflow.recourse(st, settings, user, workspace=workspace, progress=step)
        policy_part = _policy_payload(row)
        dims = {c[4:]: (None if pd.isna(row[c]) else float(row[c])) for c in row.index if c.startswith("dim_")}
        if as_json:
            payload = {
                "user_id": user,
                "risk": float(row["risk"]),
                "graph_risk": float(row["graph_risk"]),
                "credit_score": int(row["credit_score"]),
                "decision": row["decision"],
                "reasons": [r for r in str(row["reasons"]).split(";") if r],
                "reason_codes": [r for r in str(row["reason_codes"]).split(";") if r],
                "dimensions": dims,
                "contributions": [
                    {
                        "seed": c.seed,
                        "share": c.share,
                        "flagged_on": c.flagged_on,
                        "sentence": c.sentence(user),
                        "path": [vars(s) for s in c.path],
                    }
                    for c in explanation.contributions
                ],
                "provenance": {k: meta.get(k) for k in ("model_version", "config_hash", "snapshot", "written_at")},
                **policy_part,
                **({"recourse": found.to_dict()} if found is not None else {}),
            }
            out.print_json(json.dumps(payload, default=str))
            return
        out.print(
            f"{user}: credit score {int(row['credit_score'])}, decision {row['decision']}, "
            f"risk {float(row['risk']):.3f} (graph {float(row['graph_risk']):.3f})"
        )
        reasons = [r for r in str(row["reasons"]).split(";") if r]
        out.print("reasons:" if reasons else "reasons: nothing lowers this score")
        for r in reasons:
            out.print(f"  - {r}")
        table = Table(title="dimensions (0 = nothing wrong, 1 = worst)", show_edge=False)
        table.add_column("dimension")
        table.add_column("score", justify="right")
        for d, v in dims.items():
            table.add_row(d, "n/a (no data: neutral)" if v is None else f"{v:.3f}")
        out.print(table)
        if explanation.contributions:
            out.print("graph risk comes from:")
            for c in explanation.contributions:
                out.print(f"  {c.share:6.1%}  {c.sentence(user)}")
        else:
            out.print("no flagged account reaches this user through the graph")
        if policy_part:
            out.print(
                f"policy {policy_part['policy']}: fraud risk {policy_part['fraud_risk']:.3f} ({policy_part['fraud_decision']}), "
                f"credit risk {policy_part['credit_risk']:.3f} ({policy_part['credit_decision']})"
                + (f"; decided by {policy_part['decision_basis']}" if policy_part["decision_basis"] else "")
            )
            if policy_part["principal_reasons"]:
                out.print("principal reasons:")
                for r in policy_part["principal_reasons"]:
                    out.print(f"  {r}")
            if policy_part["review_route"]:
                out.print(f"human review: {policy_part['review_route']}")
        if found is not None:
            _print_recourse(found)

    _run(body)


def _policy_payload(row: pd.Series) -> dict[str, Any]:
    """The decision policy's columns of a stored score (none for scores written before them)."""
    if "fraud_risk" not in row.index:
        return {}
    text = lambda c: "" if pd.isna(row.get(c)) else str(row.get(c))  # noqa: E731
    return {
        "policy": text("policy"),
        "fraud_risk": float(row["fraud_risk"]),
        "fraud_decision": text("fraud_decision"),
        "credit_risk": float(row["credit_risk"]),
        "credit_decision": text("credit_decision"),
        "decision_basis": text("decision_basis"),
        "principal_reasons": [r for r in text("principal_reasons").split(";") if r],
        "principal_reason_codes": [r for r in text("principal_reason_codes").split(";") if r],
        "review_route": text("review_route"),
    }


def _print_recourse(found: Any) -> None:
    if found.note:
        out.print(f"recourse: {found.note}")
        return
    if not found.options:
        out.print("recourse: no action open to this user raises its score")
        return
    head = "recourse (what would bring an approval):" if found.approves else "recourse: no set of actions brings an approval; the best found:"
    out.print(head)
    for k, o in enumerate(found.options, 1):
        out.print(f"  {k}. credit score {found.credit_score} -> {o.credit_score} ({o.decision}):")
        for a in o.actions:
            out.print(f"     - {a.text}")


_RING_KINDS_HELP = {
    "components": "users joined, directly or in a chain, by shared identifiers",
    "communities": "Louvain communities of users, shared identifiers and relations",
    "dense": "the densest blocks of users x shared identifiers (FRAUDAR)",
}


def _some(items: list[str], limit: int) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f", +{len(items) - limit} more" if len(items) > limit else "")


@app.command("rings")
def rings_cmd(
    top: Annotated[int, typer.Option("--top", "-n", min=1, help="How many rings to list (for dense: how many blocks to look for).")] = 10,
    kind: Annotated[str, typer.Option("--kind", "-k", help="components, communities or dense.")] = "components",
    seed: Annotated[int, typer.Option(help="Seed of the Louvain communities (--kind communities).")] = 0,
    workspace: WorkspaceOpt = Path(DEFAULT_WORKSPACE),
    config: ConfigOpt = None,
    store: StoreOpt = "embedded",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    html_path: Annotated[Optional[Path], typer.Option("--html", help="Also write the rings as interactive network views (one self-contained HTML file).")] = None,
) -> None:
    """The rings holding the most risk: members, shared identifiers and flags (run 'score' first)."""

    def body() -> None:
        settings = _settings(config)
        with workflow.open_store(store, workspace) as st, _steps("rings") as step:
            summary = workflow.rings(st, settings, kind=kind, top=top, seed=seed, progress=step)
            if html_path is not None:
                from socialrisk import investigate, views

                step("drawing")
                views.write_html(html_path, views.rings_html(*investigate.ring_views(st, settings, summary=summary)))
                _notice(f"rings drawn in {html_path} (self-contained; open it in a browser)")
        frame, meta = summary.frame, summary.meta
        if meta["unscored"]:
            _notice(f"{meta['unscored']:,} users of the graph have no stored score (loaded after the last 'socialrisk score'); they count as risk 0")
        if as_json:
            payload = {
                "kind": summary.kind,
                "top": top,
                "rings_found": meta["rings"],
                "users_in_rings": meta["users_in_rings"],
                "seed": meta["seed"],
                "rings": json.loads(frame.to_json(orient="records")),
                "scores": meta["scores"],
            }
            out.print_json(json.dumps(payload, default=str))
            return
        found = meta["rings"]
        out.print(
            f"{found:,} ring{'s' if found != 1 else ''} ({_RING_KINDS_HELP[summary.kind]}) hold{'s' if found == 1 else ''} {meta['users_in_rings']:,} users; "
            f"{'the one' if len(frame) == 1 else f'the {len(frame):,}'} with the most risk (sum of the members' risk):"
        )
        if frame.empty:
            out.print("no rings found")
            return
        table = Table(show_edge=False)
        for col in ("#", "ring", "size", "risk mass", "density", "fraud", "benign", "shared ids"):
            table.add_column(col, justify="left" if col == "ring" else "right")
        for r in frame.itertuples(index=False):
            table.add_row(
                str(r.rank), r.ring_id, f"{r.size:,}", f"{r.risk_mass:.2f}", f"{r.density:.3f}", f"{r.fraud:,}", f"{r.benign:,}", f"{r.n_identifiers:,}"
            )
        out.print(table)
        for r in frame.itertuples(index=False):
            out.print(f"\n{r.rank}. {r.ring_id}")
            out.print(f"   members: {_some(r.members, 12)}")
            out.print(f"   shares:  {_some(r.identifiers, 8) or 'no identifier (held together by relations)'}")
            if r.fraud:
                out.print(f"   fraud:   {_some(r.fraud_members, 12)}")
            if r.benign:
                out.print(f"   benign:  {_some(r.benign_members, 12)}")

    _run(body)


@app.command("score-application")
def score_application_cmd(
    application: Annotated[Path, typer.Argument(help="JSON file: {user_id, features, links: [{kind, value, first_seen?}], relations: [{user_id, kind, direction, weight?, ts?}]} (the body of POST /v1/applications).")],
    commit: Annotated[bool, typer.Option("--commit", help="Also write the applicant, its links and relations to the store (the next scoring includes them).")] = False,
    workspace: WorkspaceOpt = Path(DEFAULT_WORKSPACE),
    config: ConfigOpt = None,
    store: StoreOpt = "embedded",
    top: Annotated[int, typer.Option(help="Flagged accounts to show.")] = 5,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")] = False,
) -> None:
    """Score an applicant from what its application carries, as a full scoring would: placed in the graph, scored with the current model version."""

    def body() -> None:
        settings = _settings(config)
        try:
            payload = json.loads(application.read_text())
        except (OSError, ValueError) as exc:
            raise ParameterError(f"{application}: not a JSON application ({exc})") from exc
        with workflow.open_store(store, workspace) as st:
            res = workflow.score_application(st, settings, workspace, payload, commit=commit, top=top)
        row = res.row
        if as_json:
            out.print_json(json.dumps({**row, "explanation": res.explanation, "new": res.new, "committed": res.committed,
                                       "ignored_features": res.ignored_features, "model_version": res.model_version, "snapshot": res.snapshot,
                                       "written": res.written}, default=str))
            return
        user = row["user_id"]
        out.print(f"{user}{' (new)' if res.new else ''}: credit score {row['credit_score']}, decision {row['decision']}, "
                  f"risk {row['risk']:.3f} (graph {row['graph_risk']:.3f}); model {res.model_version}, snapshot {res.snapshot}")
        out.print("reasons:" if row["reasons"] else "reasons: nothing lowers this score")
        for r in row["reasons"]:
            out.print(f"  - {r}")
        table = Table(title="dimensions (0 = nothing wrong, 1 = worst)", show_edge=False)
        table.add_column("dimension")
        table.add_column("score", justify="right")
        for d, v in row["dimensions"].items():
            table.add_row(d, "n/a (no data: neutral)" if v is None else f"{v:.3f}")
        out.print(table)
        if res.explanation:
            out.print("graph risk comes from:")
            for c in res.explanation:
                out.print(f"  {c['share']:6.1%}  {c['sentence']}")
        else:
            out.print("no flagged account reaches this user through the graph")
        if res.ignored_features:
            out.print(f"not used (not profile columns of the load): {', '.join(res.ignored_features)}")
        if res.written is not None:
            out.print("written to the store: " + ", ".join(f"{v:,} {k}" for k, v in res.written.items()))

    _run(body)


@app.command("apply-events")
def apply_events_cmd(
    events: Annotated[Path, typer.Argument(help="A JSON file {users, links, relations} (the body of POST /v1/events) or a data directory of those tables.")],
    workspace: WorkspaceOpt = Path(DEFAULT_WORKSPACE),
    config: ConfigOpt = None,
    store: StoreOpt = "embedded",
    on_error: Annotated[str, typer.Option("--on-error", help="fail: stop at the first bad value, write nothing. quarantine: set bad rows aside with their reason, write the rest.")] = "fail",
    rejects: Annotated[Optional[Path], typer.Option("--rejects", help="CSV file for the rows set aside.")] = None,
) -> None:
    """Add users, links and relations that happened since the last load (validated and pseudonymised as a load is; applying the same rows twice adds nothing)."""

    def body() -> None:
        settings = _settings(config)
        source = workflow.events_source(events)
        with _steps("applying events") as step, workflow.open_store(store, workspace) as st:
            report = workflow.load_into(st, source, settings, workspace, progress=step, notice=_notice, on_error=on_error,
                                        rejects_path=rejects or (Path(workspace) / "rejects" / f"events-{time.strftime('%Y%m%dT%H%M%S')}.csv"))
        _print_load(report)

    _run(body)


@app.command("flag")
def flag_cmd(
    user: Annotated[str, typer.Argument(help="The user id to flag.")],
    label: Annotated[str, typer.Option(help="Flag label: fraud (or mule, scam), or benign/good to clear a fraud flag.")] = "fraud",
    severity: Annotated[float, typer.Option(help="Seed weight of a fraud flag, in (0, 1].")] = 1.0,
    workspace: WorkspaceOpt = Path(DEFAULT_WORKSPACE),
    config: ConfigOpt = None,
    store: StoreOpt = "embedded",
    top: Annotated[int, typer.Option(help="How many of the most moved users to list.")] = 10,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")] = False,
) -> None:
    """Flag a user (or clear a flag) and update the fraud exposure incrementally: only the scores near the user are touched."""

    def body() -> None:
        settings = _settings(config)
        with workflow.open_store(store, workspace) as st, _steps("flag") as step:
            update = workflow.flag(st, settings, workspace, user, label, severity=severity, top=top, progress=step)
        if as_json:
            payload = {
                "user_id": update.user_id,
                "label": update.label,
                "rebuilt": update.rebuilt,
                "update_ms": round(update.seconds * 1e3, 3),
                "pushes": update.pushes,
                "error_bound": update.error_bound,
                "moved": update.moved.to_dict(orient="records"),
            }
            typer.echo(json.dumps(payload, indent=2))
            return
        out.print(
            f"flagged {update.user_id} as {update.label}: {update.pushes:,} pushes in {update.seconds * 1e3:.1f} ms"
            f"{' (after solving the exposure from scratch)' if update.rebuilt else ''}; "
            f"error bound {update.error_bound:.1e} (L1, against a full recompute)"
        )
        table = Table(title=f"{len(update.moved)} most moved users (fraud exposure)", show_edge=False)
        for c in ("user_id", "before", "after", "change"):
            table.add_column(c, justify="left" if c == "user_id" else "right")
        for r in update.moved.itertuples():
            table.add_row(str(r.user_id), f"{r.before:.2e}", f"{r.after:.2e}", f"{r.change:+.2e}")
        out.print(table)

    _run(body)


def _short(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else ("-" if v in (None, "") else str(v))


def _entry_line(e: Any) -> str:
    change = ", ".join(f"{k}: {_short(e.before.get(k))} -> {_short(v)}" for k, v in e.after.items() if e.before.get(k) != v)
    note = e.detail.get("note") if isinstance(e.detail, dict) else None
    return f"#{e.seq} {e.at} {e.actor} {e.action}" + (f" {e.user_id}" if e.user_id else "") + (f": {change}" if change else "") + (
        f" ({note})" if note else ""
    )


@app.command("appeal")
def appeal_cmd(
    user: Annotated[str, typer.Argument(help="The user who appeals.")],
    dispute: Annotated[Optional[str], typer.Option("--dispute", help="Dispute the user's link to this identifier key (kind:pseudonym, as 'appeal USER' lists it) or, with --relation, this user.")] = None,
    withdraw: Annotated[Optional[str], typer.Option("--withdraw", help="Withdraw a dispute of the link to this identifier key or user.")] = None,
    relation: Annotated[bool, typer.Option("--relation", help="The disputed link is a relation with another user, not a shared identifier.")] = False,
    reason: Annotated[str, typer.Option(help="Why the link is disputed: stolen_device, public_terminal, family_member, shared_household, other (configurable: graph.dispute_weights).")] = "other",
    clear_flag: Annotated[bool, typer.Option("--clear-flag", help="Clear the user's fraud flag (it stays in the history).")] = False,
    overturn_flag: Annotated[bool, typer.Option("--overturn-flag", help="Overturn the user's fraud flag: it was wrong.")] = False,
    counter_evidence: Annotated[Optional[str], typer.Option("--counter-evidence", help="Record verified counter-evidence (e.g. '24 months of utility payments'): the user becomes a known-good seed.")] = None,
    note: Annotated[str, typer.Option(help="The analyst's note, kept in the audit log.")] = "",
    workspace: WorkspaceOpt = Path(DEFAULT_WORKSPACE),
    config: ConfigOpt = None,
    store: StoreOpt = "embedded",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")] = False,
) -> None:
    """Handle an appeal. Without an action: the user's score and reasons, the paths behind its graph
    risk, and what the score would be without each of its links on those paths. With one action
    (--dispute, --withdraw, --clear-flag, --overturn-flag, --counter-evidence): apply it, rescore
    with the current model version, and show the new score, decision and reasons. Every action
    is appended to the audit log ('socialrisk audit USER')."""

    def body() -> None:
        settings = _settings(config)
        actions = [a for a, on in (("dispute", dispute), ("withdraw", withdraw), ("clear_flag", clear_flag),
                                   ("overturn_flag", overturn_flag), ("counter_evidence", counter_evidence)) if on]
        if len(actions) > 1:
            raise ParameterError(f"one appeal action at a time; got {', '.join(actions)}")
        with workflow.open_store(store, workspace) as st:
            if not actions:
                with _steps("appeal") as step:
                    step("what would change the decision")
                    view = workflow.appeal_view(st, settings, workspace, user)
                _print_appeal_view(view, as_json)
                return
            action = actions[0]
            with _steps("appeal") as step:
                done = workflow.appeal(
                    st, settings, workspace, user, action, other=dispute or withdraw, target="relation" if relation else "identifier",
                    reason=reason, note=counter_evidence if action == "counter_evidence" else note, progress=step,
                )
        if as_json:
            keep = ["risk", "credit_score", "decision", "reasons", "reason_codes", "flag"]
            typer.echo(json.dumps({
                "user_id": done.user_id, "action": done.action, "users_moved": done.moved, "error_bound": done.error_bound,
                "before": {k: _jsonable(done.before.get(k)) for k in keep}, "after": {k: _jsonable(done.after.get(k)) for k in keep},
            }, indent=2))
            return
        what = {"dispute": f"disputed the link to {dispute} ({reason})", "withdraw": f"withdrew the dispute of the link to {withdraw}",
                "clear_flag": "cleared the fraud flag", "overturn_flag": "overturned the fraud flag",
                "counter_evidence": f"recorded counter-evidence: {counter_evidence}"}[action]
        moved = f"; the fraud exposure of {done.moved:,} users moved (error bound {done.error_bound:.1e})" if done.error_bound is not None else ""
        out.print(f"{user}: {what}{moved}")
        out.print(
            f"credit score {int(done.before['credit_score'])} {done.before['decision']} -> {int(done.after['credit_score'])} "
            f"{done.after['decision']} (risk {float(done.before['risk']):.3f} -> {float(done.after['risk']):.3f})"
        )
        out.print("reasons now: " + (str(done.after["reasons"]) or "none"))

    _run(body)


def _jsonable(v: Any) -> Any:
    if hasattr(v, "item"):
        return v.item()
    return v


def _print_appeal_view(view: Any, as_json: bool) -> None:
    row = view.score
    if as_json:
        payload = {
            "user_id": view.user_id,
            "score": {k: _jsonable(row.get(k)) for k in ("risk", "graph_risk", "credit_score", "decision", "reasons", "reason_codes", "flag", "model_version")},
            "contributions": [
                {"seed": c.seed, "share": c.share, "sentence": c.sentence(view.user_id), "path": [vars(s) for s in c.path]}
                for c in view.explanation.contributions
            ],
            "what_if": [vars(w) for w in view.what_if],
            "disputes": view.disputes.to_dict(orient="records"),
            "audit": [e.to_dict() for e in view.audit],
        }
        typer.echo(json.dumps(payload, indent=2, default=str))
        return
    out.print(
        f"{view.user_id}: credit score {int(row['credit_score'])}, {row['decision']} (risk {float(row['risk']):.3f}, "
        f"of which graph {float(row['graph_risk']):.3f}; model {row.get('model_version')})"
    )
    out.print("reasons: " + (str(row["reasons"]) or "none"))
    if view.explanation.contributions:
        out.print("paths behind the graph risk (largest shares):")
        for c in view.explanation.contributions[:5]:
            out.print(f"  {c.share:6.1%}  {c.sentence(view.user_id)}")
    for w in view.what_if:
        link = f"link to {w.link}" if w.target == "identifier" else w.link
        out.print(f"without its {link} the score would be {w.credit_score}, {w.decision}  (dispute it: --dispute {w.other}"
                  + (" --relation" if w.target == "relation" else "") + ")")
    if not view.what_if:
        out.print("no link of this user carries flagged accounts' risk to it: the graph does not lower its score")
    for d in view.disputes.itertuples():
        out.print(f"disputed: {d.target} link to {d.other} ({d.reason}) by {d.actor} on {d.at}")
    if view.audit:
        out.print("audit trail:")
        for e in view.audit:
            out.print("  " + _entry_line(e))


@app.command("audit")
def audit_cmd(
    user: Annotated[Optional[str], typer.Argument(help="The user whose trail to print; omit for the whole log.")] = None,
    workspace: WorkspaceOpt = Path(DEFAULT_WORKSPACE),
    store: StoreOpt = "embedded",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")] = False,
) -> None:
    """The audit log: every flag change, dispute, appeal decision and recalibration, who made it,
    when, and the values before and after. The hash chain is verified on every read."""

    def body() -> None:
        with workflow.open_store(store, workspace) as st:
            entries = workflow.audit_trail(st, user)
        if as_json:
            typer.echo(json.dumps([e.to_dict() for e in entries], indent=2, default=str))
            return
        if not entries:
            out.print(f"no audit entries{' for ' + user if user else ''}")
        for e in entries:
            out.print(_entry_line(e))

    _run(body)


@app.command("calibrate")
def calibrate_cmd(
    workspace: WorkspaceOpt = Path(DEFAULT_WORKSPACE),
    config: ConfigOpt = None,
    store: StoreOpt = "embedded",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")] = False,
) -> None:
    """Refit the combination on the current labels as a new model version, rescore, and report what
    changed: the population stability index of the score, the shift of each dimension, and the
    approval rate at the current thresholds. The previous version stays usable (score --model)."""

    def body() -> None:
        settings = _settings(config)
        with workflow.open_store(store, workspace) as st, _steps("calibrate") as step:
            cal = workflow.calibrate(st, settings, workspace=workspace, progress=step)
        if as_json:
            typer.echo(json.dumps({
                "previous": cal.previous, "current": cal.current, "psi": cal.psi, "approval": cal.approval,
                "shift": None if cal.shift is None else cal.shift.to_dict(orient="records"),
            }, indent=2, default=str))
            return
        out.print(f"model version {cal.current} is current (previous: {cal.previous or 'none'})")
        if cal.psi is not None:
            level = "stable" if cal.psi < 0.1 else "moderate shift" if cal.psi < 0.25 else "major shift"
            out.print(f"population stability index of the credit score, previous run against this one: {cal.psi:.4f} ({level})")
        if cal.shift is not None:
            table = Table(title="shift per dimension (users scored both times)", show_edge=False)
            for c in ("dimension", "users", "mean before", "mean after", "shift", "PSI"):
                table.add_column(c, justify="left" if c == "dimension" else "right")
            for r in cal.shift.itertuples():
                cells = [f"{v:.4f}" if v == v else "-" for v in (r.mean_before, r.mean_after, r.mean_shift, r.psi)]
                table.add_row(str(r.dimension), f"{int(r.users) if r.users == r.users else 0:,}", *cells)
            out.print(table)
        before, after = cal.approval["before"], cal.approval["after"]
        shares = lambda a: ", ".join(f"{k} {v:.1%}" for k, v in a.items())  # noqa: E731
        out.print(f"approval at the current thresholds: {shares(before) + ' -> ' if before else ''}{shares(after)}")

    _run(body)


@app.command("forget")
def forget_cmd(
    user: Annotated[str, typer.Argument(help="The user whose personal data to erase.")],
    note: Annotated[str, typer.Option(help="Why (a request reference), kept in the audit log.")] = "",
    workspace: WorkspaceOpt = Path(DEFAULT_WORKSPACE),
    config: ConfigOpt = None,
    store: StoreOpt = "embedded",
) -> None:
    """Erase a user's personal data: its features, its links to identifiers no one else uses, its
    scores. Relations, shared links and flags stay (other users' records, fraud evidence). The
    erasure is recorded in the audit log; later scoring leaves the user out, and later loads skip
    its rows (the store keeps its id as a tombstone)."""

    def body() -> None:
        settings = _settings(config)
        with workflow.open_store(store, workspace) as st:
            removed = workflow.forget(st, settings, user, note=note)
        out.print(
            f"erased {user}: {removed.get('feature_values', 0)} feature values, {removed.get('links', 0)} links to identifiers "
            f"only this user had, {removed.get('scores', 0)} score rows; recorded in the audit log. "
            "Later loads set aside every row that names the user (reason: erased user)."
        )

    _run(body)


@app.command("models")
def models_cmd(
    workspace: WorkspaceOpt = Path(DEFAULT_WORKSPACE),
    store: StoreOpt = "embedded",
) -> None:
    """The stored model versions, oldest first, and which one is current."""

    def body() -> None:
        with workflow.open_store(store, workspace) as st:
            models = st.list_models()
        if not models:
            out.print("no model versions yet: 'socialrisk score' fits the first")
        for m in models:
            labels = m.get("labels") or {}
            out.print(
                f"{'*' if m.get('current') else ' '} {m['version']}  {m.get('created_at', '')}  {m.get('combination', '')}, "
                f"{labels.get('fraud', 0)} fraud / {labels.get('benign', 0)} benign labels  ({m.get('reason', '')})"
            )

    _run(body)


@app.command("fairness")
def fairness_cmd(
    data_dir: Annotated[Path, typer.Argument(help="Data directory with flags of both labels.")],
    segment: Annotated[str, typer.Option("--segment", help="The users column to compare (region, age band...).")],
    config: ConfigOpt = None,
    train_frac: Annotated[float, typer.Option("--train-frac", help="Share of labelled users whose labels are kept.")] = 0.4,
    repeats: Annotated[int, typer.Option(help="Number of random splits for the hidden-label figures.")] = 3,
    seed: Annotated[int, typer.Option(help="Seed of the splits.")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    plot: Annotated[Optional[Path], typer.Option("--plot", help="Write the figure (PNG) to this file.")] = None,
) -> None:
    """Approval rate, adverse impact ratio, good users refused and AUROC per segment, for credit_risk and fraud_risk apart."""

    def body() -> None:
        settings = _settings(config)
        with _steps("fairness") as step:
            report = workflow.fairness_dir(data_dir, settings, segment=segment, train_frac=train_frac, repeats=repeats, seed=seed, progress=step)
        written = None
        if plot is not None:
            from socialrisk.plots import fairness_plot

            plot.parent.mkdir(parents=True, exist_ok=True)
            fairness_plot(report.table, segment=segment).savefig(plot)
            written = str(plot)
        if as_json:
            payload = report.to_dict()
            payload["data"] = str(data_dir)
            if written:
                payload["plot"] = written
            out.print_json(json.dumps(payload))
            return
        for name in ("credit", "fraud"):
            t = report.table.loc[report.table["output"] == name]
            table = Table(title=f"{name}_risk by {segment} (policy {report.policy}; {report.users:,} users, {report.hidden:,} hidden labelled)", show_edge=False)
            for col, just in (("segment", "left"), ("users", "right"), ("approved", "right"), ("impact ratio", "right"), ("good refused", "right"), ("AUROC", "right")):
                table.add_column(col, justify=just)  # type: ignore[arg-type]
            fmt = lambda v, f: "-" if v != v else format(v, f)  # noqa: E731
            for r in t.itertuples():
                table.add_row(
                    str(r.segment), f"{r.users:,}", fmt(r.approval_rate, ".1%"),
                    fmt(r.adverse_impact_ratio, ".3f") + (" (under 0.8)" if r.flagged else ""), fmt(r.good_refused_rate, ".1%"), fmt(r.auroc, ".3f"),
                )
            out.print(table)
        if written:
            out.print(f"figure written to {written}")

    _run(body)


@app.command("evaluate")
def evaluate_cmd(
    data_dir: Annotated[Path, typer.Argument(help="Data directory with flags of both labels.")],
    train_frac: Annotated[float, typer.Option("--train-frac", help="Share of labelled users whose labels are kept.")] = 0.4,
    repeats: Annotated[int, typer.Option(help="Number of random splits.")] = 5,
    seed: Annotated[int, typer.Option(help="Seed of the splits.")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    config: ConfigOpt = None,
    plots: Annotated[Optional[Path], typer.Option("--plots", help="Write figures into this directory: score distributions by label, ROC, precision-recall, recall against collateral, calibration (PNG).")] = None,
    split: Annotated[str, typer.Option("--split", help="random (the contract's protocol) or time: labels known before the cut train, later ones are judged, and nothing dated after the cut enters the graph the model is fitted on.")] = "random",
    at: Annotated[Optional[str], typer.Option("--at", help="The cut of --split time (ISO 8601); default: where --train-frac of the dated labels fall before it.")] = None,
) -> None:
    """Hide a stratified share of the labels (or the later ones, --split time), score with the rest, report AUROC, AUPRC and Rec@K."""

    def body() -> None:
        settings = _settings(config)
        t0 = time.perf_counter()
        with Progress(
            SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(),
            console=err, transient=True,
        ) as bar:
            task = bar.add_task("evaluate: preparing", total=repeats)

            def step(message: str) -> None:
                bar.update(task, description=f"evaluate: {message}")

            def done(i: int, n: int) -> None:
                bar.update(task, completed=i, description="evaluate: repeats")

            report = workflow.evaluate_dir(
                data_dir, settings, train_frac=train_frac, repeats=repeats, seed=seed, progress=step, repeat_progress=done, split=split, at=at
            )
        summary = report.summary()
        written = {}
        if plots is not None:
            from socialrisk.plots import write_evaluation_plots

            written = write_evaluation_plots(
                report, plots, approve_at=settings.scoring.approve_at, review_at=settings.scoring.review_at, name=data_dir.name
            )
        if as_json:
            payload = report.to_dict()
            payload["data"] = str(data_dir)
            payload["seconds"] = round(time.perf_counter() - t0, 2)
            if written:
                payload["plots"] = {k: str(v) for k, v in written.items()}
            out.print_json(json.dumps(payload))
            return
        if "split" in report.meta:
            sp_ = report.meta["split"]
            out.print(
                f"time split at {sp_['at']}: {sp_['train']['users']:,} labelled users before it train ({sp_['train']['fraud']:,} fraud), "
                f"{sp_['test']['users']:,} after it are judged ({sp_['test']['fraud']:,} fraud); {sp_['undated']:,} labelled users without a time left out"
            )
        table = Table(title=f"{data_dir}: {report.n_labelled:,} labelled ({report.n_fraud:,} fraud), {report.combination}", show_edge=False)
        table.add_column("metric")
        table.add_column("mean", justify="right")
        table.add_column("std", justify="right")
        rows = (
            ("auroc", "AUROC"), ("auprc", "AUPRC"), ("rec_at_k", "Rec@K"),
            ("good_refused", "good users refused (reject or review)"), ("collateral", "  of them, refused for the graph alone"),
            ("brier", "Brier score"), ("ece", "expected calibration error"),
            ("auroc_high_degree", "AUROC, high-degree users"), ("auroc_low_degree", "AUROC, low-degree users"),
            ("auroc_hub_only", "AUROC, users linked only through hubs"),
        )
        for name, label in rows:
            m = summary.get(name)
            if m is None or m["mean"] != m["mean"]:  # absent, or no users of both labels in that segment
                table.add_row(label, "-", "-")
            else:
                table.add_row(label, f"{m['mean']:.4f}", f"{m['std']:.4f}")
        out.print(table)
        if len(report.tradeoff):
            approve_at = settings.scoring.approve_at
            curve = Table(title=f"trade-off: users refused below each credit-score cut-off (* approve_at, {approve_at})", show_edge=False)
            for c in ("cut-off", "risk above", "fraud refused", "good refused", "of all good, for the graph alone"):
                curve.add_column(c, justify="right")
            for r in report.tradeoff.itertuples():
                cells = [f"{r.fraud_recall:.3f}", f"{r.good_refused:.3f}", f"{r.collateral_rate:.4f}"]
                cutoff = f"{r.credit_score_cutoff}{' *' if r.credit_score_cutoff == approve_at else ''}"
                curve.add_row(cutoff, f"{r.risk_threshold:.3f}", *("-" if v == "nan" else v for v in cells))
            out.print(curve)
        if written:
            out.print(f"figures written to {plots}: " + ", ".join(p.name for p in written.values()))
        out.print(f"train_frac {train_frac}, {repeats} repeats, seed {seed}; {time.perf_counter() - t0:.1f} s")

    _run(body)


@app.command()
def demo(
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Directory for the demo's data, workspace, scores and report.")] = Path("demo"),
    users: Annotated[int, typer.Option("--users", "-n", min=100, help="Users to generate.")] = 20_000,
    seed: Annotated[int, typer.Option(help="Seed of the generated population.")] = 7,
) -> None:
    """Generate a population, load it, score it, evaluate it, and write an HTML report."""

    def body() -> None:
        from socialrisk.demo import run_demo

        with _steps("demo") as step:
            summary = run_demo(out_dir, users=users, seed=seed, progress=step, notice=_notice)
        for line in summary.lines:
            out.print(line)

    _run(body)


neo4j_app = typer.Typer(help="Run a local Neo4j server (provisioned from Maven Central on first use).", no_args_is_help=True)
app.add_typer(neo4j_app, name="neo4j")


@neo4j_app.command("start")
def neo4j_start() -> None:
    """Provision (first time), start on loopback with auth on, and wait until Bolt answers."""

    def body() -> None:
        from socialrisk import neo4j_server

        settings = neo4j_server.server_settings()
        with _steps("neo4j") as step:
            state = neo4j_server.start(settings, log=step)
        out.print(f"Neo4j {neo4j_server.NEO4J_VERSION} running on {state['bolt']} (pid {state['pid']}, home {state['home']})")

    _run(body)


@neo4j_app.command("stop")
def neo4j_stop() -> None:
    """Stop the server started by 'socialrisk neo4j start'."""

    def body() -> None:
        from socialrisk import neo4j_server

        stopped = neo4j_server.stop(neo4j_server.server_settings())
        out.print("Neo4j stopped" if stopped else "Neo4j was not running")

    _run(body)


@neo4j_app.command("status")
def neo4j_status() -> None:
    """Whether the server runs, its Bolt address and home; exit 1 when it is not running."""

    def body() -> None:
        from socialrisk import neo4j_server

        state = neo4j_server.status(neo4j_server.server_settings())
        out.print(" ".join(f"{k}={v}" for k, v in state.items()))
        if not state["running"]:
            raise typer.Exit(1)

    _run(body)


def _service_logging() -> None:
    """The service's log lines on stderr, each with the id of the request it was written in."""
    import logging

    from socialrisk.service.requests import LOG_FORMAT, RequestIdFilter

    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    handler.addFilter(RequestIdFilter())
    logger = logging.getLogger("socialrisk")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


@app.command("serve")
def serve_cmd(
    workspace: WorkspaceOpt = Path(DEFAULT_WORKSPACE),
    config: ConfigOpt = None,
    store: StoreOpt = "embedded",
    host: Annotated[Optional[str], typer.Option("--host", help="Address to listen on; default 127.0.0.1 (loopback only), or \\[service] host.")] = None,
    port: Annotated[Optional[int], typer.Option("--port", min=1, max=65535, help="Port; default 8000, or \\[service] port.")] = None,
    access_log: Annotated[bool, typer.Option("--access-log/--no-access-log", help="Log every request (off: it costs time at high rates).")] = False,
) -> None:
    """Serve the scores over HTTP: enrich, flags, appeals, explanations, neighbourhoods (see docs/service.md).

    Needs API keys: SOCIALRISK_API_KEYS (comma-separated) or \\[service] api_keys in the config.
    Serves the workspace (and store) that 'load' and 'score' produced; one uvicorn worker."""

    def body() -> None:
        import uvicorn

        from socialrisk.service import ServiceRuntime, create_app

        settings = _settings(config)
        runtime = ServiceRuntime(settings, store, workspace)
        application = create_app(settings, store, workspace, runtime=runtime)  # refuses to start without API keys
        bind_host, bind_port = host or settings.service.host, port or settings.service.port
        if bind_host not in ("127.0.0.1", "localhost", "::1"):
            _notice(f"listening on {bind_host}: reachable from other machines, and the API has no TLS; put a TLS proxy in front")
        _service_logging()
        with _steps("serve") as step:
            step("loading scores")
            runtime.start()
        try:
            served = f"{len(runtime.table):,} users" if runtime.table is not None else "no scores yet (the store is unreachable)"
            out.print(f"serving {served} from the {store} store on http://{bind_host}:{bind_port} (API docs at /docs; Ctrl-C stops)")
            uvicorn.run(application, host=bind_host, port=bind_port, workers=1, access_log=access_log, log_level="info")
        finally:
            runtime.stop()

    _run(body)


def main() -> None:
    """Entry point of the ``socialrisk`` script."""
    app()


if __name__ == "__main__":  # pragma: no cover
    main()

# explore, path and case, registered on the same app after the commands above (help lists them last)
from socialrisk import cli_views  # noqa: E402,F401
