"""Quality on the labelled graphs in ../shared/data, beside the reference figures.

Runs the contract's protocol (``socialrisk evaluate``: train_frac 0.4, 5 repeats, seed 0)
with the default configuration on every dataset and writes
``benchmarks/results/quality.json`` and a Markdown table.

    .venv/bin/python benchmarks/quality.py [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

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
    args = parser.parse_args()
    settings = Settings()
    rows = []
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
                "seconds": round(time.perf_counter() - t0, 1),
            }
        )
        print(f"{name}: AUROC {m['auroc']['mean']:.4f}, AUPRC {m['auprc']['mean']:.4f} ({rows[-1]['seconds']} s)", flush=True)
    out = ROOT / "benchmarks" / "results" / "quality.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"config_hash": settings.config_hash(), "date": time.strftime("%Y-%m-%d"), "results": rows}, indent=2))
    print()
    print("| data | AUROC (mean ± std) | best reference AUROC | AUPRC (mean ± std) | best reference AUPRC | Rec@K |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['data']} | {r['auroc']['mean']:.3f} ± {r['auroc']['std']:.3f} | {r['reference_auroc']:.3f} | "
            f"{r['auprc']['mean']:.3f} ± {r['auprc']['std']:.3f} | {r['reference_auprc']:.3f} | {r['rec_at_k']['mean']:.3f} |"
        )
    print(f"\nwritten {out}")


if __name__ == "__main__":
    main()
