"""Link recovery: the share of true links kept when identifiers are written in other formats.

A generated population with emails (``socialrisk generate --emails``) has one spelling per
identifier; a share of its phone numbers, device ids and email addresses is then rewritten
(``loaders.synthetic.vary_formats``, only in spellings the normalisation rules undo). A true
link is a pair of users sharing an identifier in the generated data; it is recovered when the
two users' pseudonyms are still equal, hashed with normalisation (``loaders.normalise``,
``default_region="US"``, the default email provider rules) and without (the raw value hashed, as
before normalisation existed).
Writes ``benchmarks/results/linking.json``.

    .venv/bin/python benchmarks/linking.py [--users 50000] [--shares 0.1,0.3,0.5]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from loaders.normalise import Normalisation, normalise_identifiers
from loaders.pseudonym import pseudonymise
from loaders.synthetic import generate, vary_formats

ROOT = Path(__file__).resolve().parents[1]
KEY = b"linking-benchmark-key-0123456789"
KINDS = ("phone", "device", "email")


def recovered(truth: pd.Series, ident: pd.Series) -> tuple[int, int]:
    """True pairs (users sharing a ``truth`` value) and those whose ``ident`` is still equal."""
    frame = pd.DataFrame({"truth": truth.to_numpy(), "ident": ident.to_numpy()})
    pairs = lambda sizes: int((sizes * (sizes - 1) // 2).sum())  # noqa: E731
    return pairs(frame.groupby("truth").size()), pairs(frame.groupby(["truth", "ident"]).size())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=50_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--shares", default="0.1,0.3,0.5")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "linking.json")
    args = parser.parse_args()
    links = generate(n_users=args.users, seed=args.seed, emails=True)["links"]
    links = links[links["kind"].isin(KINDS)].drop_duplicates(["user_id", "kind", "value"]).reset_index(drop=True)
    config = Normalisation(default_region="US")
    rows = []
    for share in [float(s) for s in args.shares.split(",")]:
        varied = vary_formats(links, share=share, seed=args.seed, email_providers=config.email_providers)
        kinds = varied["kind"].astype("string")
        t0 = time.perf_counter()
        canonical = normalise_identifiers(kinds, varied["value"].astype("string"), config=config)
        seconds = time.perf_counter() - t0
        assert not canonical.failed, canonical.failed
        raw = pseudonymise(kinds, varied["value"].astype("string"), key=KEY)
        normal = pseudonymise(kinds, canonical.values, key=KEY)
        truth = kinds + ":" + links["value"].astype("string")
        for kind in KINDS:
            mask = (kinds == kind).to_numpy()
            true_pairs, kept_raw = recovered(truth[mask], raw[mask])
            _, kept_norm = recovered(truth[mask], normal[mask])
            rows.append({
                "share_rewritten": share, "kind": kind, "rows": int(mask.sum()), "true_pairs": true_pairs,
                "recovered_without": kept_raw / true_pairs if true_pairs else None,
                "recovered_with": kept_norm / true_pairs if true_pairs else None,
            })
        rows[-1]["normalise_seconds_all_kinds"] = round(seconds, 2)
        print(f"share {share:.0%}: " + "; ".join(f"{r['kind']} {r['recovered_without']:.3f} -> {r['recovered_with']:.3f}" for r in rows[-len(KINDS):]), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "users": args.users, "seed": args.seed, "results": rows}, indent=2))
    print()
    print("| share rewritten | kind | true links (pairs) | recovered without normalisation | with |")
    print("|---:|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r['share_rewritten']:.0%} | {r['kind']} | {r['true_pairs']:,} | {r['recovered_without']:.3f} | {r['recovered_with']:.3f} |")
    print(f"\nwritten {args.out}")


if __name__ == "__main__":
    main()
