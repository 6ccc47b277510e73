"""Quality on the labelled graphs in ../shared/data (and on generated data), beside the reference figures.

Runs the contract's protocol (``socialrisk evaluate``: train_frac 0.4, 5 repeats, seed 0)
with the default configuration on every dataset and writes
``benchmarks/results/quality.json`` and Markdown tables: ranking, what good users pay, and the
trade-off between fraud refused and good users refused (for their graph alone) per credit-score
cut-off.

Variants, each written to its own ``benchmarks/results/quality-<variant>.json`` so that they can
be compared run by run (same splits):

- ``--propagation NAMES``: the optional propagation features (comma-separated names of
  ``scoring.config.PROPAGATIONS``, or ``none``) instead of the default set
  (``quality-propagation-<names joined by +>.json``);
- ``--hub-exponent X``: ``GraphConfig.hub_exponent`` (0 = no hub damping;
  ``quality-hub-exponent-<X>.json``); only data with shared identifiers has hubs;
- ``--unsigned``: relation signs ignored, a negative weight read as its magnitude, as a graph
  without signs would hold it (``quality-unsigned.json``); only data with negative relations
  changes;
- ``--without FAMILY``: the per-kind identifier evidence (``per-kind``: co-users, the co-users'
  own sharing, flagged co-users and their shares per identifier kind), the same-person evidence
  (``same-person``) or the velocity (``velocity``) taken out of the model
  (``quality-without-<family>.json``);
- ``--split time``: the out-of-time protocol (``evaluate --split time``) beside the random one,
  on the datasets that have times (``quality-time.json``);
- ``--no-benign``: benign flags stay training labels of the combination but seed no graph
  feature, so that the benign counter-evidence (benign PageRank lifts, the benign side of belief
  propagation) is gone (``quality-no-benign.json``). The hidden users are the same.

``--generated USERS`` adds a generated population (``socialrisk generate --users USERS --seed
--generated-seed``, written once to ``benchmarks/out/quality-generated/``) as a dataset;
``--datasets`` chooses the shared datasets (``none`` for the generated one alone).

    .venv/bin/python benchmarks/quality.py [--data ../shared/data] [--generated 50000] [--unsigned]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Any

from graph.projection import project
from loaders.errors import DataError
from loaders.load import read_tables
from loaders.pseudonym import new_key, parse_key
from loaders.schema import Tables
from loaders.synthetic import generate, write_tables
from scoring.config import PROPAGATIONS
from scoring.evaluate import EvaluationReport, evaluate, evaluate_time
from scoring.pipeline import Scorer
from socialrisk.settings import ENV_KEY, Settings

ROOT = Path(__file__).resolve().parents[1]

#: Best reference figures from ../shared/data/README.md (AUROC, AUPRC, method).
REFERENCE = {
    "bitcoin-otc": (0.989, 0.992, "share of negative ratings received"),
    "tolokers": (0.844, 0.573, "boosting on features + neighbour means + propagation"),
    "amlsim-20k_fanin200cycle200": (0.834, 0.459, "boosting on features + neighbour means + propagation"),
    "afd-registration-20k": (0.991, 0.959, "boosting on features + identifier-sharing counts per kind + cross-fitted share of known fraud among co-users + co-user means"),
}
#: Feature families that ``--without`` takes away, by the column names they make.
ABLATIONS = {
    "per-kind": lambda c: any(c.startswith(f"lnk_{p}") for p in ("co_users_", "fraud_co_users_", "benign_co_users_", "fraud_share_", "benign_share_", "fraud_rate_", "via_")),
    "same-person": lambda c: c.startswith("lnk_same_person"),
    "velocity": lambda c: c.startswith("lnk_joined_"),
}
#: Cut-offs shown in the printed trade-off table (all are in the results file).
SHOWN_CUTOFFS = (550, 600, 650, 700, 750)


def unsigned(tables: Tables) -> Tables:
    """The tables with every relation weight replaced by its magnitude: no relation is negative."""
    return dataclasses.replace(tables, relations=tables.relations.assign(weight=tables.relations["weight"].abs()))


def _without(families: list[str]) -> Any:
    """Feature-column predicate of the families taken away (None: nothing)."""
    if not families:
        return None
    tests = [ABLATIONS[f] for f in families]
    return lambda c: any(t(c) for t in tests)


def evaluate_variant(
    source: Path, settings: Settings, *, repeats: int, ignore_signs: bool, benign_seeds: bool, without: list[str] | None = None,
    split: str = "random",
) -> tuple[EvaluationReport, dict[str, int]]:
    """``workflow.evaluate_dir`` with the variant's changes: the same reading, projection and protocol."""
    import scoring.features as features

    configured = os.environ.get(ENV_KEY) or settings.config_key
    key = parse_key(configured) if configured else parse_key(new_key())
    tables = read_tables(source, key=key, label_map=settings.label_map, normalisation=settings.normalise)
    graph = {
        "negative_relations": int((tables.relations["weight"] < 0).sum()),
        "relations": len(tables.relations),
    }
    if ignore_signs:
        tables = unsigned(tables)
    projection = project(tables, settings.graph)
    graph["shared_identifiers"] = projection.n_idents
    graph["largest_identifier_users"] = int(projection.ident_degree.max()) if projection.n_idents else 0
    drop = _without(without or [])
    structural, direct = features.structural_features, features.direct_label_features
    if drop is not None:
        # the families are left out where they are made, so that the model never sees them
        features.structural_features = lambda t, p: (lambda f: f[[c for c in f.columns if not drop(c)]])(structural(t, p))
        features.direct_label_features = lambda p, F, B: {k: v for k, v in direct(p, F, B).items() if not drop(k)}
        import scoring.pipeline as pipeline

        pipeline.structural_features = features.structural_features
    try:
        if split == "time":
            return evaluate_time(tables, graph_config=settings.graph, config=settings.scoring), graph
        scorer = Scorer(tables, projection, graph_config=settings.graph, config=settings.scoring)
        return evaluate(scorer, train_frac=0.4, repeats=repeats, seed=0, benign_seeds=benign_seeds), graph
    finally:
        if drop is not None:
            import scoring.pipeline as pipeline

            features.structural_features, features.direct_label_features = structural, direct
            pipeline.structural_features = structural


def generated_dir(users: int, seed: int) -> Path:
    """A generated population in ``benchmarks/out/quality-generated/``, written on first use."""
    out = ROOT / "benchmarks" / "out" / "quality-generated" / f"{users}-seed{seed}"
    if not (out / "flags.parquet").exists():
        print(f"generating {users:,} users (seed {seed}) into {out}", flush=True)
        write_tables(generate(n_users=users, seed=seed), out)
    return out


def _fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None or value != value else f"{value:.{digits}f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--datasets", default=",".join(REFERENCE), help=f"comma-separated shared datasets ({', '.join(REFERENCE)}) or 'none'")
    parser.add_argument("--generated", type=int, default=None, metavar="USERS", help="also evaluate a generated population of USERS users")
    parser.add_argument("--generated-seed", type=int, default=0, help="seed of the generated population")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--propagation",
        default=None,
        help=f"comma-separated optional propagation features ({', '.join(PROPAGATIONS)}) or 'none'; default: the configured default",
    )
    parser.add_argument("--hub-exponent", type=float, default=None, help="GraphConfig.hub_exponent (0 = no hub damping)")
    parser.add_argument("--unsigned", action="store_true", help="read negative relation weights as their magnitude")
    parser.add_argument("--no-benign", action="store_true", help="benign flags train the combination but seed no graph feature")
    parser.add_argument("--without", default="", help=f"comma-separated feature families to take away ({', '.join(ABLATIONS)})")
    parser.add_argument("--split", choices=("random", "time"), default="random", help="time: the out-of-time protocol, on datasets with times")
    parser.add_argument("--out", type=Path, default=None, help="results file; default: benchmarks/results/quality[-<variant>].json")
    args = parser.parse_args()
    settings = Settings()
    variant: list[str] = []
    if args.propagation is not None:
        names = tuple(p.strip() for p in args.propagation.split(",") if p.strip() and p.strip() != "none")
        unknown = [p for p in names if p not in PROPAGATIONS]
        if unknown:
            parser.error(f"unknown propagation {unknown[0]!r}; expected any of {', '.join(PROPAGATIONS)} or none")
        settings = Settings(graph=settings.graph, scoring=dataclasses.replace(settings.scoring, propagation=names))
        variant.append(f"propagation-{'+'.join(names) or 'none'}")
    if args.hub_exponent is not None:
        if not args.hub_exponent >= 0:
            parser.error(f"--hub-exponent must be >= 0; got {args.hub_exponent}")
        settings = Settings(graph=dataclasses.replace(settings.graph, hub_exponent=args.hub_exponent), scoring=settings.scoring)
        variant.append(f"hub-exponent-{args.hub_exponent:g}")
    if args.unsigned:
        variant.append("unsigned")
    if args.no_benign:
        variant.append("no-benign")
    without = [w.strip() for w in args.without.split(",") if w.strip()]
    unknown_families = [w for w in without if w not in ABLATIONS]
    if unknown_families:
        parser.error(f"unknown feature family {unknown_families[0]!r}; expected any of {', '.join(ABLATIONS)}")
    if without:
        variant.append("without-" + "+".join(without))
    if args.split == "time":
        variant.append("time")
    datasets = [d.strip() for d in args.datasets.split(",") if d.strip() and d.strip() != "none"]
    unknown = [d for d in datasets if d not in REFERENCE]
    if unknown:
        parser.error(f"unknown dataset {unknown[0]!r}; expected any of {', '.join(REFERENCE)} or none")
    sources = [(name, args.data / name) for name in datasets]
    if args.generated is not None:
        sources.append((f"generated-{args.generated}", generated_dir(args.generated, args.generated_seed)))
    if not sources:
        parser.error("no dataset to evaluate: name some with --datasets or add --generated USERS")
    out = args.out or ROOT / "benchmarks" / "results" / (f"quality-{'-'.join(variant)}.json" if variant else "quality.json")
    approve_at = settings.scoring.approve_at
    print(
        f"variant: {', '.join(variant) or 'default'}; propagation features: {', '.join(settings.scoring.propagation) or 'none'}; "
        f"hub_exponent {settings.graph.hub_exponent:g}",
        flush=True,
    )
    rows: list[dict[str, Any]] = []
    for name, path in sources:
        t0 = time.perf_counter()
        try:
            report, graph = evaluate_variant(
                path, settings, repeats=args.repeats, ignore_signs=args.unsigned, benign_seeds=not args.no_benign, without=without, split=args.split
            )
        except DataError as exc:
            if args.split != "time":
                raise
            print(f"{name}: no time-true figure ({exc})", flush=True)
            continue
        m = report.summary()
        ref_auroc, ref_auprc, method = REFERENCE.get(name, (None, None, None))
        curve = report.tradeoff.set_index("credit_score_cutoff")
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
                "labelled": report.n_labelled,
                "fraud": report.n_fraud,
                "graph": graph,
                # what known-good users pay, calibration and segments (scoring/misjudgment.py)
                "misjudgment": {k: m[k]["mean"] for k in ("good_refused", "collateral", "collateral_rate", "brier", "ece") if k in m},
                "segments": {k: (None if m[k]["mean"] != m[k]["mean"] else m[k]["mean"]) for k in m if k.startswith(("auroc_", "auprc_"))},
                "segment_users": {k: v["users"] for k, v in report.segments.items()},
                # hidden users of all repeats pooled, per credit-score cut-off
                "tradeoff": report.to_dict()["tradeoff"],
                "at_approve": {k: float(curve.loc[approve_at, k]) for k in ("fraud_recall", "good_refused", "collateral_rate")},
                "seconds": round(time.perf_counter() - t0, 1),
                # per repeat, for paired comparisons between configurations (same splits)
                "runs": {k: report.runs[k].round(6).tolist() for k in ("auroc", "auprc", "rec_at_k", "good_refused", "collateral_rate")},
                **({"split": report.meta["split"]} if "split" in report.meta else {}),
            }
        )
        print(f"{name}: AUROC {m['auroc']['mean']:.4f}, AUPRC {m['auprc']['mean']:.4f} ({rows[-1]['seconds']} s)", flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "config_hash": settings.config_hash(),
        "date": time.strftime("%Y-%m-%d"),
        "variant": {
            "name": "-".join(variant) or "default",
            "propagation": list(settings.scoring.propagation),
            "hub_exponent": settings.graph.hub_exponent,
            "unsigned": args.unsigned,
            "benign_seeds": not args.no_benign,
            "without": without,
            "split": args.split,
        },
        "propagation": list(settings.scoring.propagation),
        "approve_at": approve_at,
        "generated": None if args.generated is None else {"users": args.generated, "seed": args.generated_seed},
        "results": rows,
    }
    out.write_text(json.dumps(payload, indent=2))
    print()
    print("| data | AUROC (mean ± std) | best reference AUROC | AUPRC (mean ± std) | best reference AUPRC | Rec@K |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['data']} | {r['auroc']['mean']:.3f} ± {r['auroc']['std']:.3f} | {_fmt(r['reference_auroc'])} | "
            f"{r['auprc']['mean']:.3f} ± {r['auprc']['std']:.3f} | {_fmt(r['reference_auprc'])} | {r['rec_at_k']['mean']:.3f} |"
        )
    print()
    print("| data | good users refused | of them, for the graph alone | Brier | ECE | AUROC high / low degree |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        g, sg = r["misjudgment"], r["segments"]
        print(
            f"| {r['data']} | {g['good_refused']:.3f} | {_fmt(g['collateral'])} | {g['brier']:.3f} | {g['ece']:.3f} | "
            f"{_fmt(sg.get('auroc_high_degree'))} / {_fmt(sg.get('auroc_low_degree'))} |"
        )
    print()
    print(f"Trade-off (hidden users of all repeats; refused below the cut-off; decisions refuse below {approve_at}):")
    print()
    print("| data | credit-score cut-off | risk above | fraud refused | good refused | good refused for the graph alone |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        for point in r["tradeoff"]:
            if point["credit_score_cutoff"] in SHOWN_CUTOFFS:
                mark = " (approve_at)" if point["credit_score_cutoff"] == approve_at else ""
                print(
                    f"| {r['data']} | {point['credit_score_cutoff']}{mark} | {point['risk_threshold']:.3f} | {_fmt(point['fraud_recall'])} | "
                    f"{_fmt(point['good_refused'])} | {_fmt(point['collateral_rate'], 4)} |"
                )
    print()
    print(f"Variant {', '.join(variant) or 'default'} in one row per dataset (at the approve cut-off, {approve_at}):")
    print()
    print("| data | AUROC | AUPRC | good refused | collateral rate | fraud recall |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        a = r["at_approve"]
        print(
            f"| {r['data']} | {r['auroc']['mean']:.4f} | {r['auprc']['mean']:.4f} | {_fmt(a['good_refused'])} | "
            f"{_fmt(a['collateral_rate'], 4)} | {_fmt(a['fraud_recall'])} |"
        )
    print(f"\nwritten {out}")


if __name__ == "__main__":
    main()
