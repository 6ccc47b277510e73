"""Fair and lawful decisions, measured: the two outputs under each policy, thin files, recourse, fairness.

Parts (``--parts``, comma-separated; all by default):

``policies``
    On the shared datasets and a generated population, the contract's protocol
    (``evaluate``: train_frac 0.4, seed 0, ``--repeats`` splits) under ``default``,
    ``default`` with ``graph_evidence = "review"`` and ``eu``, on the same splits: AUROC and
    AUPRC of ``risk`` and of ``fraud_risk``, fraud recall at the default cut-off (hidden fraud
    users refused, ``review`` or ``reject``), good users refused and rejected, and the good
    users rejected although neither output would reject them without their graph features;
    on the generated populations (``--users`` and the demo's), also the full scoring with every
    flag: good users nobody flagged rejected on graph evidence alone, and what the family
    members of fraudsters are given.
``thin``
    Generated population, every flag: the refusal rate of thin-file good users (ground truth)
    with the alternative-payment columns and with them dropped, under ``default`` and ``eu``:
    all of them, those with a good record (:data:`GOOD_RECORD`), a poor one and none, beside
    the good users with a full file.
``recourse``
    Generated population (``--recourse-users``), ``eu``: for refused good users (ground truth,
    no flag), the share with a recourse of at most two actions, and the time per user
    (median, p95), features computed once. Timed: run under ``flock /work/bench.lock``.
``fairness``
    Generated population by ``age_band``: adverse impact ratios per output, as generated (no
    effect), with ``bias_age_band=18-24`` (worse history and 10% wrong fraud flags, the
    generator's default bias) and with the worse history only (``bias_flag_rate=0``).

Writes ``benchmarks/results/decisions.json`` (each part under its key; a part run again
replaces its key) with the machine's load average.

    .venv/bin/python benchmarks/decisions.py [--parts policies,thin,recourse,fairness] [--users 50000] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, roc_auc_score

from graph.projection import project
from loaders.load import read_tables
from loaders.pseudonym import parse_key
from loaders.synthetic import generate, write_tables
from scoring.config import ScoringConfig
from scoring.evaluate import evaluate
from scoring.pipeline import FeatureSet, Scorer, dimension_frame
from scoring.policy import policy_named
from scoring.recourse import recourse
from socialrisk.settings import Settings
from socialrisk import workflow

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "decisions.json"
KEY = parse_key("benchmark-key-not-secret-0123456789")
SHARED = ("bitcoin-otc", "tolokers", "amlsim-20k_fanin200cycle200")
POLICIES = {
    "default": policy_named("default"),
    "default+review": replace(policy_named("default"), graph_evidence="review"),
    "eu": policy_named("eu"),
}


def _generated(users: int, seed: int, bias: str | None = None, bias_flag_rate: float = 0.1) -> Path:
    out = ROOT / "benchmarks" / "out" / "decisions" / f"{users}-{seed}{f'-bias-{bias}-flags-{bias_flag_rate:g}' if bias else ''}"
    if not (out / "users.parquet").exists():
        write_tables(generate(n_users=users, seed=seed, bias_age_band=bias, bias_flag_rate=bias_flag_rate), out, fmt="parquet")
    return out


def _full_scoring(scorer: Scorer, tables: Any, truth: pd.DataFrame) -> dict[str, Any]:
    """A generated population scored with every flag, as ``socialrisk score`` (and the demo) do:
    what the good users nobody flagged get, and the family members of fraudsters among them."""
    s = scorer.score(scorer.flags_from(tables.flags)).scores.set_index("user_id")
    t = truth.reindex(s.index)
    good = (t["is_fraud"] == 0) & (s["flag"] == "")
    family = good & (t["role"] == "family")
    graph_alone = s["graph_evidence_only"].astype(bool)
    return {
        "good_unflagged": int(good.sum()),
        "good_rejected": int((good & (s["decision"] == "reject")).sum()),
        "good_rejected_graph_alone": int((good & (s["decision"] == "reject") & graph_alone).sum()),
        "good_reviewed_graph_alone": int((good & (s["decision_basis"] == "graph_evidence_review")).sum()),
        "family": {d: int((family & (s["decision"] == d)).sum()) for d in ("approve", "review", "reject")},
        "fraud_unflagged_refused": float((s["decision"][(t["is_fraud"] == 1) & (s["flag"] == "")] != "approve").mean()),
    }


def _policies(data: Path, repeats: int) -> dict[str, Any]:
    tables = read_tables(data, key=KEY)
    truth = pd.read_parquet(data / "truth.parquet").set_index("user_id") if (data / "truth.parquet").exists() else None
    projection = project(tables, Settings().graph)
    out: dict[str, Any] = {}
    for name, policy in POLICIES.items():
        t0 = time.perf_counter()
        scorer = Scorer(tables, projection, config=ScoringConfig(policy=policy))
        report = evaluate(scorer, train_frac=0.4, repeats=repeats, seed=0)
        runs = []
        for _, p in report.predictions.groupby("repeat"):
            y = p["y"].to_numpy()
            fraud, good = y == 1, y == 0
            runs.append({
                "auroc_risk": roc_auc_score(y, p["risk"]), "auprc_risk": average_precision_score(y, p["risk"]),
                "auroc_fraud_risk": roc_auc_score(y, p["fraud_risk"]), "auprc_fraud_risk": average_precision_score(y, p["fraud_risk"]),
                "auroc_credit_risk": roc_auc_score(y, p["credit_risk"]),
                "fraud_recall": float((p["decision"][fraud] != "approve").mean()),
                "fraud_recall_fraud_output": float((p["fraud_decision"][fraud] != "approve").mean()),
                "good_refused": float((p["decision"][good] != "approve").mean()),
                "good_rejected": int((p["decision"][good] == "reject").sum()),
                "good_rejected_graph_alone": int(((p["decision"] == "reject") & good & p["graph_evidence_only"].astype(bool)).sum()),
                "good_reviewed_graph_alone": int(((p["decision"] == "review") & good & (p["decision_basis"] == "graph_evidence_review")).sum()),
                "hidden_good": int(good.sum()), "hidden_fraud": int(fraud.sum()),
            })
        frame = pd.DataFrame(runs)
        out[name] = {k: float(frame[k].mean()) for k in frame.columns} | {"seconds": round(time.perf_counter() - t0, 1)}
        if truth is not None:
            out[name]["full_scoring"] = _full_scoring(scorer, tables, truth)
        print(f"  {data.name} {name}: " + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in out[name].items()), flush=True)
    return out


def _score(data: Path | dict[str, pd.DataFrame], policy: str) -> pd.DataFrame:
    tables = read_tables(data, key=KEY)
    scorer = Scorer(tables, project(tables, Settings().graph), config=ScoringConfig(policy=policy_named(policy)))
    return scorer.score(scorer.flags_from(tables.flags)).scores


#: A good alternative-payment record: at least this share on time over at least this many months.
GOOD_RECORD = (0.95, 12)


def _thin(users: int, seed: int) -> dict[str, Any]:
    frames = generate(n_users=users, seed=seed)
    truth = frames.pop("truth").set_index("user_id")
    out: dict[str, Any] = {"good_record": {"on_time_share_at_least": GOOD_RECORD[0], "months_at_least": GOOD_RECORD[1]}}
    for policy in ("default", "eu"):
        for alt in (True, False):
            f = dict(frames)
            if not alt:
                f["users"] = f["users"].drop(columns=["altpay_on_time_share", "altpay_months"])
            s = _score(f, policy).set_index("user_id")
            t = truth.reindex(s.index)
            u = frames["users"].set_index("user_id").reindex(s.index)
            good = (t["is_fraud"] == 0) & (s["flag"] == "")
            thin = good & (t["thin_file"] == 1)
            record = thin & u["altpay_months"].notna()
            good_record = record & (u["altpay_on_time_share"] >= GOOD_RECORD[0]) & (u["altpay_months"] >= GOOD_RECORD[1])
            groups = {
                "thin": thin, "good_record": good_record, "poor_record": record & ~good_record, "no_record": thin & ~record,
                "thick": good & (t["thin_file"] == 0),
            }
            refused = s["decision"] != "approve"
            key = f"{policy}_{'with' if alt else 'without'}_alternative_data"
            out[key] = {
                **{f"{g}_good_users": int(m.sum()) for g, m in groups.items()},
                **{f"{g}_refused": float(refused[m].mean()) for g, m in groups.items()},
                "thin_rejected": float((s["decision"][thin] == "reject").mean()),
                # what the refused thin files with a good record are told first
                "good_record_refused_first_reasons": s.loc[good_record & refused, "principal_reason_codes"].str.split(";").str[0].value_counts().head(5).to_dict(),
                "fraud_recall_all": float(refused[t["is_fraud"] == 1].mean()),
            }
            print(f"  thin {key}: {out[key]}", flush=True)
    return out


def _recourse(users: int, seed: int, sample: int) -> dict[str, Any]:
    frames = generate(n_users=users, seed=seed)
    truth = frames.pop("truth").set_index("user_id")
    tables = read_tables(frames, key=KEY)
    projection = project(tables, Settings().graph)
    cfg = ScoringConfig(policy=policy_named("eu"))
    t0 = time.perf_counter()
    scorer = Scorer(tables, projection, config=cfg)
    flags = scorer.flags_from(tables.flags)
    result = scorer.score(flags)
    scored_s = time.perf_counter() - t0
    features = FeatureSet(
        X=result.features, dims=dimension_frame(scorer.column_dims, result.features, scorer.structure, projection.n_users),
        flags=flags, projection=projection, standings=scorer.standings, structure=scorer.structure, rings=scorer.rings,
    )
    s = result.scores
    good = truth.reindex(s["user_id"])["is_fraud"].to_numpy() == 0
    refused = np.flatnonzero((s["decision"] != "approve").to_numpy() & good & (s["flag"] == "").to_numpy())
    rng = np.random.default_rng(0)
    picked = rng.choice(refused, size=min(sample, len(refused)), replace=False)
    times, sizes, approves = [], [], 0
    recourse(features, result.fitted, cfg, row=int(picked[0]))  # warm: thread pools found, sorted standings cached
    for row in picked:
        t = time.perf_counter()
        rc = recourse(features, result.fitted, cfg, row=int(row))
        times.append(time.perf_counter() - t)
        if rc.approves:
            approves += 1
            sizes.append(len(rc.options[0].actions))
    ms = np.array(times) * 1000
    out = {
        "users": users, "refused_good_users": int(len(refused)), "sampled": int(len(picked)),
        "with_an_approving_recourse": approves / len(picked),
        "with_a_recourse_of_at_most_two_actions": sum(1 for k in sizes if k <= 2) / len(picked),
        "actions_median": float(np.median(sizes)) if sizes else None,
        "ms_per_user_median": float(np.median(ms)), "ms_per_user_p95": float(np.percentile(ms, 95)),
        "scoring_seconds": round(scored_s, 1),
    }
    print(f"  recourse: {out}", flush=True)
    return out


def _fairness(users: int, seed: int, only: set[str] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    # as generated; biased history and labels (the generator's default bias); biased history only
    for bias, flag_rate, label in ((None, 0.0, "as_generated"), ("18-24", 0.1, "biased_18-24"), ("18-24", 0.0, "biased_18-24_history_only")):
        if only and label not in only:
            continue
        data = _generated(users, seed, bias, flag_rate)
        for policy in ("default", "eu"):
            settings = Settings(scoring=ScoringConfig(policy=policy_named(policy)))
            report = workflow.fairness_dir(data, settings, segment="age_band", repeats=1)
            t = report.table
            key = f"{policy}_{label}"
            out[key] = {
                o: {
                    "adverse_impact_ratio_min": float(t.loc[t["output"] == o, "adverse_impact_ratio"].min()),
                    "approval_rate": dict(zip(t.loc[t["output"] == o, "segment"], t.loc[t["output"] == o, "approval_rate"].round(4))),
                    "good_refused_rate": dict(zip(t.loc[t["output"] == o, "segment"], t.loc[t["output"] == o, "good_refused_rate"].round(4))),
                }
                for o in ("credit", "fraud")
            }
            print(f"  fairness {key}: " + ", ".join(f"{o} AIR min {v['adverse_impact_ratio_min']:.3f}" for o, v in out[key].items()), flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parts", default="policies,thin,recourse,fairness")
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--datasets", default=",".join(SHARED))
    ap.add_argument("--users", type=int, default=50_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--no-generated", dest="generated", action="store_false", help="policies: the shared datasets only")
    ap.add_argument("--recourse-users", type=int, default=50_000)
    ap.add_argument("--recourse-sample", type=int, default=300)
    ap.add_argument("--untimed", action="store_true", help="recourse: leave the times out (a run outside the bench lock)")
    ap.add_argument("--fairness-populations", default="", help="fairness: only these (as_generated, biased_18-24, biased_18-24_history_only)")
    args = ap.parse_args()
    results: dict[str, Any] = {}
    merged_before = json.loads(OUT.read_text()) if OUT.exists() else {}
    parts = args.parts.split(",")
    conditions = {"load_average": os.getloadavg(), "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "cpus": os.cpu_count()}
    if "policies" in parts:
        pol: dict[str, Any] = {}
        for name in [d for d in args.datasets.split(",") if d and d != "none"]:
            pol[name] = _policies(args.data / name, args.repeats)
        if args.generated:
            pol[f"generated-{args.users}"] = _policies(_generated(args.users, args.seed), args.repeats)
            # the demo's population (socialrisk demo: 20,000 users, seed 7)
            pol["demo-20000"] = _policies(_generated(20_000, 7), args.repeats)
        results["policies"] = {"repeats": args.repeats, "train_frac": 0.4, "seed": 0, "datasets": pol, "conditions": conditions}
    if "thin" in parts:
        results["thin"] = {"users": args.users, **_thin(args.users, args.seed), "conditions": conditions}
    if "recourse" in parts:
        found = _recourse(args.recourse_users, args.seed, args.recourse_sample)
        if args.untimed:
            found = {k: v for k, v in found.items() if not k.startswith("ms_") and k != "scoring_seconds"} | {"timed": False}
        results["recourse"] = {**found, "conditions": {**conditions, "load_average_after": os.getloadavg()}}
    if "fairness" in parts:
        only = set(args.fairness_populations.split(",")) if args.fairness_populations else None
        results["fairness"] = {"users": args.users, **_fairness(args.users, args.seed, only), "conditions": conditions}
        if only and "fairness" in merged_before:
            # populations measured by separate runs are kept side by side
            results["fairness"] = {**merged_before["fairness"], **results["fairness"]}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    # read again just before writing: parts run side by side each replace only their own key
    merged = json.loads(OUT.read_text()) if OUT.exists() else {}
    if "policies" in results and "policies" in merged:
        # datasets measured by separate runs are kept side by side
        results["policies"]["datasets"] = {**merged["policies"].get("datasets", {}), **results["policies"]["datasets"]}
    merged.update(results)
    OUT.write_text(json.dumps(merged, indent=2, default=float) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
