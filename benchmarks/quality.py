"""Quality on the labelled graphs in ../shared/data, beside the reference figures.

Runs the contract's protocol (``socialrisk evaluate``: train_frac 0.4, 5 repeats, seed 0)
with the default configuration on every dataset and writes
``benchmarks/results/quality.json`` and a Markdown table.

``--propagation NAMES`` replaces the default set of optional propagation features
(comma-separated names of ``scoring.config.PROPAGATIONS``, or ``none``) and writes
``benchmarks/results/quality-propagation-<names joined by +>.json`` instead, so that feature
sets can be compared run by run.

    .venv/bin/python benchmarks/quality.py [--data ../shared/data] [--propagation belief_propagation,trustrank]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path
from typing import Any

from scoring.config import PROPAGATIONS
from socialrisk.settings import Settings
from socialrisk.workflow import evaluate_dir

ROOT = Path(__file__).resolve().parents[1]

#: Best reference figures from ../shared/data/README.md (AUROC, AUPRC, method).
REFERENCE = {
    "bitcoin-otc": (0.989, 0.992, "share of negative ratings received"),
    "tolokers": (0.844, 0.573, "boosting on features + neighbour means + propagation"),
    "amlsim-20k_fanin200cycle200": (0.834, 0.459, "boosting on features + neighbour means + propagation"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--propagation",
        default=None,
        help=f"comma-separated optional propagation features ({', '.join(PROPAGATIONS)}) or 'none'; default: the configured default",
    )
    args = parser.parse_args()
    settings = Settings()
    out = ROOT / "benchmarks" / "results" / "quality.json"
    if args.propagation is not None:
        names = tuple(p.strip() for p in args.propagation.split(",") if p.strip() and p.strip() != "none")
        unknown = [p for p in names if p not in PROPAGATIONS]
        if unknown:
            parser.error(f"unknown propagation {unknown[0]!r}; expected any of {', '.join(PROPAGATIONS)} or none")
        settings = Settings(scoring=dataclasses.replace(settings.scoring, propagation=names))
        out = out.with_name(f"quality-propagation-{'+'.join(names) or 'none'}.json")
    print(f"propagation features: {', '.join(settings.scoring.propagation) or 'none'}", flush=True)
    rows: list[dict[str, Any]] = []
    for name, (ref_auroc, ref_auprc, method) in REFERENCE.items():
        t0 = time.perf_counter()
        report = evaluate_dir(args.data / name, settings, train_frac=0.4, repeats=args.repeats, seed=0)
        m = report.summary()
        rows.append(
            {
                "data": name,
                "auroc": m["auroc"],
                "auprc": m["auprc"],
                "rec_at_k": m["rec_at_k"],
                "reference_auroc": ref_auroc,
                "reference_auprc": ref_auprc,
                "reference_method": method,
                "combination": report.combination,
                # what known-good users pay, calibration and segments (scoring/misjudgment.py)
                "misjudgment": {k: m[k]["mean"] for k in ("good_refused", "collateral", "collateral_rate", "brier", "ece") if k in m},
                "segments": {k: (None if m[k]["mean"] != m[k]["mean"] else m[k]["mean"]) for k in m if k.startswith(("auroc_", "auprc_"))},
                "segment_users": {k: v["users"] for k, v in report.segments.items()},
                "seconds": round(time.perf_counter() - t0, 1),
                # per repeat, for paired comparisons between configurations (same splits)
                "runs": {k: report.runs[k].round(6).tolist() for k in ("auroc", "auprc", "rec_at_k")},
            }
        )
        print(f"{name}: AUROC {m['auroc']['mean']:.4f}, AUPRC {m['auprc']['mean']:.4f} ({rows[-1]['seconds']} s)", flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "config_hash": settings.config_hash(),
        "date": time.strftime("%Y-%m-%d"),
        "propagation": list(settings.scoring.propagation),
        "results": rows,
    }
    out.write_text(json.dumps(payload, indent=2))
    print()
    print("| data | AUROC (mean ± std) | best reference AUROC | AUPRC (mean ± std) | best reference AUPRC | Rec@K |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['data']} | {r['auroc']['mean']:.3f} ± {r['auroc']['std']:.3f} | {r['reference_auroc']:.3f} | "
            f"{r['auprc']['mean']:.3f} ± {r['auprc']['std']:.3f} | {r['reference_auprc']:.3f} | {r['rec_at_k']['mean']:.3f} |"
        )
    print()
    print("| data | good users refused | of them, for the graph alone | Brier | ECE | AUROC high / low degree |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        g, sg = r["misjudgment"], r["segments"]
        hi, lo = sg.get("auroc_high_degree"), sg.get("auroc_low_degree")
        print(
            f"| {r['data']} | {g['good_refused']:.3f} | {g['collateral']:.3f} | {g['brier']:.3f} | {g['ece']:.3f} | "
            f"{'-' if hi is None else f'{hi:.3f}'} / {'-' if lo is None else f'{lo:.3f}'} |"
        )
    print(f"\nwritten {out}")


if __name__ == "__main__":
    main()
