"""The demo: a generated population taken through every step, ending in an HTML report."""

from __future__ import annotations

import html
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, roc_auc_score

from socialrisk import workflow
from socialrisk.settings import Settings

__all__ = ["DemoSummary", "run_demo"]


@dataclass
class DemoSummary:
    """Printed lines and the files written."""

    lines: list[str] = field(default_factory=list)
    report: Path | None = None
    scores: Path | None = None


def run_demo(
    out_dir: str | Path,
    *,
    users: int = 20_000,
    seed: int = 7,
    repeats: int = 3,
    progress: Callable[[str], None] | None = None,
    notice: Callable[[str], None] | None = None,
) -> DemoSummary:
    """Generate ``users`` users, load, propagate, score, evaluate, explain, and report."""
    from loaders.synthetic import generate, write_tables

    say = progress or (lambda _m: None)
    out = Path(out_dir)
    data_dir, workspace = out / "data", out / "workspace"
    settings = Settings()
    timings: dict[str, float] = {}

    t = time.perf_counter()
    say(f"generating {users:,} users")
    tables = generate(n_users=users, seed=seed)
    write_tables(tables, data_dir, fmt="parquet")
    truth = tables["truth"].set_index("user_id")
    timings["generate"] = time.perf_counter() - t

    t = time.perf_counter()
    store = workflow.open_store("embedded", workspace)
    report = workflow.load_into(store, data_dir, settings, workspace, progress=say, notice=notice)
    timings["load"] = time.perf_counter() - t
    t = time.perf_counter()
    workflow.propagate(store, settings, progress=say)
    timings["propagate"] = time.perf_counter() - t
    t = time.perf_counter()
    result = workflow.score(store, settings, workspace=workspace, progress=say)
    timings["score"] = time.perf_counter() - t
    scores = result.scores
    scores_path = out / "scores.csv"
    scores.to_csv(scores_path, index=False, float_format="%.6g")

    t = time.perf_counter()
    say("evaluating on hidden labels")
    evaluation = workflow.evaluate_dir(data_dir, settings, train_frac=0.4, repeats=repeats, seed=0, progress=say)
    timings["evaluate"] = time.perf_counter() - t

    # against the generator's truth, on users nobody flagged
    frame = scores.join(truth, on="user_id")
    unflagged = frame["flag"] == ""
    y = frame.loc[unflagged, "is_fraud"].to_numpy()
    r = frame.loc[unflagged, "risk"].to_numpy()
    truth_auroc = float(roc_auc_score(y, r)) if 0 < y.sum() < len(y) else float("nan")
    truth_auprc = float(average_precision_score(y, r)) if 0 < y.sum() < len(y) else float("nan")
    by_role = frame.groupby("role")["decision"].value_counts().unstack(fill_value=0)
    for d in ("approve", "review", "reject"):
        if d not in by_role:
            by_role[d] = 0
    by_role = by_role[["approve", "review", "reject"]]

    say("explaining examples")
    examples = []
    pick = frame.loc[unflagged & (frame["is_fraud"] == 1)].nlargest(1, "risk")
    family = frame.loc[(frame["role"] == "family") & (frame["decision"] != "approve")].nlargest(1, "risk")
    for _, row in pd.concat([pick, family]).iterrows():
        _, explanation, _ = workflow.explain(store, settings, str(row["user_id"]), top=3)
        examples.append((row, explanation))

    summary = DemoSummary(scores=scores_path)
    m = evaluation.summary()
    counts = scores["decision"].value_counts()
    summary.lines += [
        f"generated {users:,} users ({int(truth['is_fraud'].sum()):,} fraud in truth) into {data_dir}",
        f"loaded {sum(report.read.values()):,} rows; scored with the {result.combination} combination",
        "decisions: " + ", ".join(f"{counts.get(d, 0):,} {d}" for d in ("approve", "review", "reject")),
        f"evaluate ({repeats} repeats, 40% of labels kept): AUROC {m['auroc']['mean']:.4f}, AUPRC {m['auprc']['mean']:.4f}, Rec@K {m['rec_at_k']['mean']:.4f}",
        f"against the generator's truth on unflagged users: AUROC {truth_auroc:.4f}, AUPRC {truth_auprc:.4f}",
    ]
    fam = by_role.loc["family"] if "family" in by_role.index else None
    if fam is not None:
        summary.lines.append(
            f"good users who share a device with a fraudster (family): {int(fam['approve'])} approved, "
            f"{int(fam['review'])} in review, {int(fam['reject'])} rejected: the cases an appeal must clear"
        )
    if "graph_evidence_only" in frame:
        # users the stricter output rejects although neither would without their graph features
        alone = frame["graph_evidence_only"].astype(bool) & (frame["is_fraud"] == 0)
        rejected = int((alone & (frame["decision"] == "reject")).sum())
        policy = settings.scoring.policy
        summary.lines.append(
            f"good users rejected on graph evidence alone: {rejected} of {int(alone.sum())} (policy {policy.name}, "
            f"graph_evidence = {policy.graph_evidence!r})"
            + ("; graph_evidence = 'review' (on in the eu policy) sends each of them to review instead" if policy.graph_evidence != "review" else "")
        )
    for row, _ in examples:
        summary.lines.append(f"example {row['user_id']} ({row['role']}): score {int(row['credit_score'])}, {row['decision']}: {row['reasons'] or 'no reasons'}")
    report_path = out / "report.html"
    report_path.write_text(
        _html(users, seed, report, result.combination, evaluation.summary(), truth_auroc, truth_auprc, by_role, scores, frame, examples, timings),
        encoding="utf-8",
    )
    summary.report = report_path
    summary.lines.append(f"scores: {scores_path}   report: {report_path}")
    return summary


def _table(frame: pd.DataFrame) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    rows = []
    for _, r in frame.iterrows():
        cells = []
        for v in r:
            text = f"{v:.3f}" if isinstance(v, (float, np.floating)) else str(v)
            cells.append(f"<td>{html.escape(text)}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _html(users, seed, load_report, combination, metrics, truth_auroc, truth_auprc, by_role, scores, frame, examples, timings) -> str:  # type: ignore[no-untyped-def]
    e = html.escape
    load_rows = pd.DataFrame(
        {
            "table": list(load_report.read),
            "read": list(load_report.read.values()),
            "added": [load_report.added[k] for k in load_report.read],
            "rejected": [load_report.rejected[k] for k in load_report.read],
        }
    )
    metric_rows = pd.DataFrame(
        {"metric": ["AUROC", "AUPRC", "Rec@K"], "mean": [metrics[k]["mean"] for k in ("auroc", "auprc", "rec_at_k")], "std": [metrics[k]["std"] for k in ("auroc", "auprc", "rec_at_k")]}
    )
    top = frame.loc[frame["flag"] == ""].nlargest(15, "risk")[["user_id", "role", "risk", "graph_risk", "credit_score", "decision", "reasons"]]
    dims = scores[[c for c in scores.columns if c.startswith("dim_")]].describe().T[["mean", "50%", "max"]].reset_index().rename(columns={"index": "dimension"})
    ex_html = []
    for row, explanation in examples:
        items = "".join(f"<li>{c.share:.0%}: {e(c.sentence(str(row['user_id'])))}</li>" for c in explanation.contributions) or "<li>no flagged account reaches this user</li>"
        reasons = "".join(f"<li>{e(r)}</li>" for r in str(row["reasons"]).split(";") if r) or "<li>none</li>"
        ex_html.append(
            f"<h3>{e(str(row['user_id']))} ({e(str(row['role']))}): score {int(row['credit_score'])}, {e(str(row['decision']))}</h3>"
            f"<p>Reasons</p><ul>{reasons}</ul><p>Graph risk comes from</p><ul>{items}</ul>"
        )
    timing = ", ".join(f"{k} {v:.1f} s" for k, v in timings.items())
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>socialrisk demo report</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 70em; color: #222; }}
table {{ border-collapse: collapse; margin: 0.5em 0 1.5em; }}
th, td {{ border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; font-size: 0.9em; }}
th {{ background: #f3f3f3; }}
</style></head><body>
<h1>socialrisk demo report</h1>
<p>{users:,} generated users (seed {seed}); combination: {e(combination)}; {e(timing)}.</p>
<h2>Load</h2>{_table(load_rows)}
<h2>Evaluation on hidden labels (40% of labels kept)</h2>{_table(metric_rows)}
<p>Against the generator's truth on users nobody flagged: AUROC {truth_auroc:.4f}, AUPRC {truth_auprc:.4f}.</p>
<h2>Decisions by true role</h2>{_table(by_role.reset_index())}
<p>"family" users are good users who share a device with a fraudster: when they are refused, it is by association, and their reasons say so.</p>
<h2>Dimension scores</h2>{_table(dims)}
<h2>Riskiest unflagged users</h2>{_table(top)}
<h2>Explained examples</h2>{''.join(ex_html)}
</body></html>
"""
