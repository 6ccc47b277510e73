"""The figure tables of the documentation, generated from ``benchmarks/results/*.json``.

A page holds a generated table between two markers::

    <!-- table: quality-ranking -->
    | ... the table, as this script writes it ... |
    <!-- /table -->

``python benchmarks/tables.py`` rewrites every such block of ``docs/*.md`` from the results
files; ``--check`` changes nothing and exits 1 naming the blocks that differ from what the
results say (``tests/test_docs.py`` runs it, so a figure in the docs cannot drift from its
results file). Each table names the results file it comes from, under the table.

Run a benchmark, then this script: the benchmark writes the results file, this script the docs.
"""

from __future__ import annotations

import argparse
import inspect
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: the project's packages beside it
    sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results"
DOCS = ROOT / "docs"

__all__ = ["TABLES", "render", "update", "main"]

BLOCK = re.compile(r"(<!-- table: (?P<name>[\w.-]+) -->\n)(?P<body>.*?)(<!-- /table -->)", re.S)
SHARED = ("bitcoin-otc", "tolokers", "amlsim-20k_fanin200cycle200")
#: Every shared dataset the quality tables rank (the propagation comparison predates the last).
RANKED = (*SHARED, "afd-registration-20k")


class MissingResults(Exception):
    """A table's results file is absent or lacks a figure the table needs."""


def _load(name: str) -> dict[str, Any]:
    path = RESULTS / name
    if not path.is_file():
        raise MissingResults(f"{path.relative_to(ROOT)} is missing: run the benchmark that writes it")
    return json.loads(path.read_text())


def _rows(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {r["data"]: r for r in results["results"]}


def _table(header: list[str], align: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(":---" if a == "l" else "---:" for a in align) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _source(*files: str, date: str | None = None, command: str | None = None) -> str:
    where = ", ".join(f"`benchmarks/results/{f}`" for f in files)
    parts = [f"Generated from {where}"]
    if date:
        parts.append(f"measured on {date}")
    if command:
        parts.append(f"by `{command}`")
    return "<small>" + "; ".join(parts) + ".</small>"


def _f(x: float | None, digits: int = 3) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def _ms(x: float) -> str:
    return f"{x:,.0f} ms" if x >= 1000 else f"{x:.1f} ms" if x >= 10 else f"{x:.2f} ms"


def _int(x: float) -> str:
    return f"{int(round(x)):,}"


# -- quality --------------------------------------------------------------------------------------


def quality_ranking() -> str:
    q = _load("quality.json")
    rows = _rows(q)
    out = []
    for name in RANKED:
        r = rows[name]
        auroc, auprc = r["auroc"], r["auprc"]
        a = f"{auroc['mean']:.3f} ± {auroc['std']:.3f}"
        p = f"{auprc['mean']:.3f} ± {auprc['std']:.3f}"
        if auroc["mean"] > r["reference_auroc"]:
            a = f"**{auroc['mean']:.3f}** ± {auroc['std']:.3f}"
        if auprc["mean"] > r["reference_auprc"]:
            p = f"**{auprc['mean']:.3f}** ± {auprc['std']:.3f}"
        out.append([name, a, f"{r['reference_auroc']:.3f}", p, f"{r['reference_auprc']:.3f}", _f(r["rec_at_k"]["mean"])])
    table = _table(
        ["data", "AUROC (mean ± std)", "best reference AUROC", "AUPRC (mean ± std)", "best reference AUPRC", "Rec@K"],
        ["l", "r", "r", "r", "r", "r"], out,
    )
    seconds = ", ".join(f"{rows[n]['seconds']:.1f} s" for n in RANKED)
    return table + "\n\n" + _source("quality.json", date=q["date"], command="python benchmarks/quality.py") + (
        f" <small>Seconds per dataset, all repeats: {seconds}.</small>"
    )


def quality_misjudgment() -> str:
    q = _load("quality.json")
    out = []
    for name, r in _rows(q).items():
        m, s = r["misjudgment"], r["segments"]
        out.append([
            name, _f(m["good_refused"]), _f(m["collateral"]), _f(m["collateral_rate"], 4), _f(m["brier"]), _f(m["ece"]),
            f"{_f(s['auroc_high_degree'])} / {_f(s['auroc_low_degree'])}",
        ])
    table = _table(
        ["data", "good refused", "of them, graph alone", "collateral rate", "Brier", "ECE", "AUROC high / low degree"],
        ["l", "r", "r", "r", "r", "r", "r"], out,
    )
    return table + "\n\n" + _source("quality.json", date=q["date"])


def quality_tradeoff() -> str:
    q = _load("quality.json")
    rows = _rows(q)
    names = list(rows)
    approve = q.get("approve_at", 650)
    cutoffs = [550, 600, 650, 700, 750]
    out = []
    for c in cutoffs:
        points = {n: {t["credit_score_cutoff"]: t for t in rows[n]["tradeoff"]}[c] for n in names}
        label = f"**{c}** (approve_at)" if c == approve else str(c)
        risk = points[names[0]]["risk_threshold"]
        out.append([label, _f(risk)] + [
            f"{p['fraud_recall']:.3f} / {p['good_refused']:.4f} / {p['collateral_rate']:.4f}" for p in (points[n] for n in names)
        ])
    table = _table(["credit-score cut-off", "risk above"] + names, ["r"] * (2 + len(names)), out)
    return table + "\n\n" + _source("quality.json", date=q["date"])


VARIANTS = (
    ("default", "quality.json"),
    ("no hub damping", "quality-hub-exponent-0.json"),
    ("no per-kind identifier evidence", "quality-without-per-kind.json"),
    ("no same-person evidence", "quality-without-same-person.json"),
    ("no velocity", "quality-without-velocity.json"),
    ("unsigned", "quality-unsigned.json"),
    ("no benign counter-evidence", "quality-no-benign.json"),
)


def quality_ablation() -> str:
    loaded = {label: _rows(_load(f)) for label, f in VARIANTS}
    default = loaded["default"]
    out = []
    for name in default:
        for label, _file in VARIANTS:
            if name not in loaded[label]:
                continue  # a variant of the identifier evidence is run on the data that has identifiers
            r = loaded[label][name]
            if label != "default" and r["runs"] == default[name]["runs"] and r["at_approve"] == default[name]["at_approve"]:
                out.append([name, label] + ["="] * 5)
                continue
            a = r["at_approve"]
            out.append([
                name, label, f"{r['auroc']['mean']:.4f}", f"{r['auprc']['mean']:.4f}",
                f"{a['good_refused']:.4f}", f"{a['collateral_rate']:.4f}", f"{a['fraud_recall']:.3f}",
            ])
    table = _table(
        ["data", "variant", "AUROC", "AUPRC", "good refused", "collateral rate", "fraud recall"],
        ["l", "l", "r", "r", "r", "r", "r"], out,
    )
    return table + "\n\n" + _source(*(f for _, f in VARIANTS))


def quality_time() -> str:
    """Out-of-time figures (``--split time``) beside the random split's, for the data with times."""
    timed, default = _load("quality-time.json"), _rows(_load("quality.json"))
    out = []
    for r in timed["results"]:
        d, sp = default.get(r["data"]), r.get("split", {})
        out.append([
            r["data"], str(sp.get("at", "-"))[:10], f"{sp['train']['users']:,} ({sp['train']['fraud']:,}) / {sp['test']['users']:,} ({sp['test']['fraud']:,})",
            f"{r['auroc']['mean']:.4f}", f"{r['auprc']['mean']:.4f}",
            f"{d['auroc']['mean']:.4f}" if d else "-", f"{d['auprc']['mean']:.4f}" if d else "-",
        ])
    table = _table(["data", "cut", "labelled users (fraud) before / after the cut", "AUROC out of time", "AUPRC out of time", "AUROC random split", "AUPRC random split"],
                   ["l", "l", "r", "r", "r", "r", "r"], out)
    return table + "\n\n" + _source("quality-time.json", "quality.json", date=timed["date"], command="python benchmarks/quality.py --split time")


PROPAGATION_SETS = (
    ("none (PageRank lifts only)", "none"),
    ("**belief_propagation** (default)", "belief_propagation"),
    ("label_spreading", "label_spreading"),
    ("trustrank", "trustrank"),
    ("belief_propagation + label_spreading", "belief_propagation+label_spreading"),
    ("belief_propagation + trustrank", "belief_propagation+trustrank"),
    ("label_spreading + trustrank", "label_spreading+trustrank"),
    ("all three", "belief_propagation+label_spreading+trustrank"),
)


def quality_propagation() -> str:
    out, files, dates = [], [], set()
    for label, key in PROPAGATION_SETS:
        f = f"quality-propagation-{key}.json"
        files.append(f)
        q = _load(f)
        dates.add(q["date"])
        rows = _rows(q)
        cells = [f"{rows[n]['auroc']['mean']:.4f} / {rows[n]['auprc']['mean']:.4f}" for n in SHARED]
        mean_a = sum(rows[n]["auroc"]["mean"] for n in SHARED) / len(SHARED)
        mean_p = sum(rows[n]["auprc"]["mean"] for n in SHARED) / len(SHARED)
        out.append([label] + cells + [f"{mean_a:.4f} / {mean_p:.4f}"])
    table = _table(["optional propagation features", *SHARED, "mean of the three"], ["l", "r", "r", "r", "r"], out)
    return table + "\n\n" + _source("quality-propagation-*.json", date=", ".join(sorted(dates)))


def linking_recovery() -> str:
    r = _load("linking.json")
    rows = [[f"{x['share_rewritten']:.0%}", x["kind"], _int(x["true_pairs"]), _f(x["recovered_without"]), _f(x["recovered_with"])]
            for x in r["results"]]
    table = _table(["share rewritten", "kind", "true links (pairs)", "recovered without normalisation", "with normalisation"],
                   ["r", "l", "r", "r", "r"], rows)
    return table + "\n\n" + _source("linking.json", date=r["date"], command=f"python benchmarks/linking.py --users {r['users']} --seed {r['seed']}")


# -- speed ----------------------------------------------------------------------------------------


def propagation_speed() -> str:
    p = _load("propagation-1000000.json")
    s, inc, ex = p["socialrisk"], p["incremental"], p["explanation"]
    nx, ig = p["networkx"], p["igraph"]
    cold, warm = s["end_to_end_cold_s"], s["end_to_end_s"]
    runs = lambda xs: ", ".join(f"{x:.2f}" for x in xs)  # noqa: E731
    rows = [
        [f"PPR end to end, cold: the first propagation after a load (project {s['project_s']:.2f} s + walk and transition "
         f"matrices {s['walk_s']:.2f} s + solve {s['solve_s']:.2f} s; runs {runs(s['end_to_end_cold_runs_s'])} s)",
         f"{cold:.2f} s", f"networkx {nx['s']:.1f} s: {nx['speedup_cold']:.1f}x", "50x faster than networkx",
         "yes" if nx["speedup_cold"] >= 50 else "no"],
        ["same", f"{cold:.2f} s", f"igraph {ig['s']:.2f} s: {ig['speedup_cold']:.1f}x", "5x faster than igraph",
         "yes" if ig["speedup_cold"] >= 5 else "no"],
        [f"PPR end to end, warm: from the projection the store keeps for its snapshot (read {s['cached_projection_read_s']:.2f} s; "
         f"runs {runs(s['end_to_end_runs_s'])} s)", f"{warm:.2f} s", f"networkx {nx['speedup']:.1f}x, igraph {ig['speedup']:.1f}x",
         "as above", "yes, both" if nx["speedup"] >= 50 and ig["speedup"] >= 5 else "no"],
        [f"cost per matrix product ({s['iterations']} products to tolerance {p['tol']:g})", f"{s['per_iteration_ms']:.2f} ms",
         f"bare float64 scipy SpMV on the same matrix {p['bare_spmv_ms']:.2f} ms: {p['per_iteration_vs_spmv']:.2f}x", "at most 1.0x",
         "yes" if p["per_iteration_vs_spmv"] <= 1.0 else "no"],
        ["propagation working memory (peak traced allocation of the transition matrix and the solve)",
         f"{s['working_memory_bytes_per_stored_edge']:.1f} bytes per stored edge", "", "at most 40",
         "yes" if s["working_memory_bytes_per_stored_edge"] <= 40 else "no"],
        [f"incremental new flag, median of the updates (max {inc['max_ms']:.1f} ms; {inc['median_users_moved']:.0f} users moved)",
         f"{inc['median_ms']:.2f} ms", f"full recompute {inc['full_recompute_s']:.2f} s: {inc['speedup']:.0f}x",
         "at most 10 ms, 100x faster", "yes" if inc["median_ms"] <= 10 and inc["speedup"] >= 100 else "no"],
        ["error of the kept scores after those updates, against an exact solve",
         f"L1 {inc['l1_error']:.1e} of the seed mass (bound {inc['l1_error_bound']:.1e}); at most {inc['max_node_error']:.1e} at one user",
         "", "bounded and measured", "yes" if inc["l1_error"] <= inc["l1_error_bound"] * (1 + 1e-9) else "no"],
        [f"explanation of one user, median of the exposed users explained (max {ex['max_ms']:.1f} ms)", f"{ex['median_ms']:.1f} ms",
         "", "at most 50 ms", "yes" if ex["median_ms"] <= 50 else "no"],
    ]
    table = _table(["measure", "socialrisk", "peer or floor", "target", "met"], ["l", "r", "r", "l", "l"], rows)
    graph = (f"<small>{p['users']:,} users: {p['stored_edges']:,} stored links and relations, a walk matrix of "
             f"{p['walk_nodes']:,} nodes and {p['walk_entries']:,} entries; {p['seeds']:,} seeds; damping {p['alpha']}.</small>")
    return table + "\n\n" + graph + " " + _source("propagation-1000000.json", date=p["date"],
                                                   command="python benchmarks/propagation.py --users 1000000 --updates 10 --explanations 10")


def scale() -> str:
    s = _load("scale-1000000.json")
    labels = {
        "generate": "generate",
        "load": "load (validate, pseudonymise, write Parquet, keep the integer codes)",
        "score": "score (project, propagate with cross-fitting incl. belief propagation, learn, reasons)",
    }
    rows = [[labels.get(st["step"], st["step"]), f"{st['wall_s']:.1f} s", f"{st['peak_rss_gib']:.2f} GiB"] for st in s["steps"]]
    table = _table(["step", "wall time", "peak memory"], ["l", "r", "r"], rows)
    r = s["rows"]
    return table + "\n\n" + (
        f"<small>{s['users']:,} users, {r['links']:,} links, {r['relations']:,} relations, {r['flags']:,} flags.</small> "
    ) + _source("scale-1000000.json", date=s["date"], command="python benchmarks/scale.py --users 1000000")


def service_speed() -> str:
    s = _load("service.json")
    n = _load("service-neighbourhood.json")
    e, nb = s["enrich_sustained"], n["neighbourhood_neo4j"]

    def errors(run: dict[str, Any]) -> str:
        return str(sum((run.get("errors") or {}).values()))

    ok_e = e["p50_ms"] <= 2 and e["p99_ms"] <= 10 and not run_errors(e)
    ok_n = nb["p99_ms"] <= 50 and not run_errors(nb)
    steps = s["enrich_steps"]
    best = s["enrich_max_rate_p99_10ms"]
    at_best = next((st for st in steps if st["rate"] == best), None)
    above = next((st for st in steps if st["rate"] > best), None)
    step_text = f"{best:,.0f}/s" + (f" (p99 {at_best['p99_ms']:.1f} ms" if at_best else "") + (
        f"; at {above['rate']:,.0f}/s p99 {above['p99_ms']:.1f} ms)" if above else ")" if at_best else "")
    rows = [
        [f"enrich, {e['rate']:,.0f}/s for {e['seconds']:.0f} s, {s['users']:,} users", _ms(e["p50_ms"]), _ms(e["p95_ms"]),
         _ms(e["p99_ms"]), _ms(e["max_ms"]), errors(e), "p50 <= 2 ms, p99 <= 10 ms, 0 errors", "yes" if ok_e else "no"],
        [f"enrich, highest rate with p99 <= 10 ms and no errors (steps of {steps[0]['seconds']:.0f} s: "
         f"{steps[0]['rate']:,.0f} to {steps[-1]['rate']:,.0f}/s)", step_text, "", "", "", "0", "report it", ""],
        [f"neighbourhood on Neo4j, {nb['hops']} hops, limit {nb['limit']}, {nb['rate']:.0f}/s for {nb['seconds']:.0f} s, {nb['users']:,} users",
         _ms(nb["p50_ms"]), _ms(nb["p95_ms"]), _ms(nb["p99_ms"]), _ms(nb["max_ms"]), errors(nb), "p99 <= 50 ms", "yes" if ok_n else "no"],
    ]
    table = _table(["measure", "p50", "p95", "p99", "max", "errors", "target", "met"], ["l", "r", "r", "r", "r", "r", "l", "l"], rows)
    return table + "\n\n" + _source("service.json", date=s["date"], command=s["command"]) + " " + _source(
        "service-neighbourhood.json", date=n["date"], command=n["command"])


def run_errors(run: dict[str, Any]) -> int:
    return int(sum((run.get("errors") or {}).values()))


def soak_routes() -> str:
    s = _load("soak.json")
    rows = []
    for route, r in s["latency_ms"].items():
        window = str(r["5xx_in_window"])
        if r["5xx_in_window"] and route != "all":
            window += " (503 with `Retry-After`)" if not s["errors"].get("503_without_retry_after") else ""
        rows.append([route, _int(r["requests"]), _ms(r["p50_ms"]), _ms(r["p99_ms"]), _ms(r["max_ms"]), window, str(r["5xx_outside_window"])])
    table = _table(["route", "requests", "p50", "p99", "max", "5xx in the restart window", "5xx outside it"],
                   ["l", "r", "r", "r", "r", "r", "r"], rows)
    return table + "\n\n" + _source("soak.json", date=s.get("date"), command=s["command"]) + (
        f" <small>{s['users']:,} users, {s['rate']} requests/s for {s['duration_s']} s, Neo4j restarted at {s['restart_at_s']:.0f} s.</small>"
    )


def soak_acceptance() -> str:
    s = _load("soak.json")
    f, m, r, a = s["flags"], s["memory"], s["restart"], s["acceptance"]
    lat = s["latency_ms"]["all"]
    yes = lambda ok: "yes" if ok else "no"  # noqa: E731
    rows = [
        ["no lost flag update",
         f"{f['checked']} accepted ({f['accepted']} in the soak, {f['accepted_in_window']} of them in the window, and "
         f"{f['warmup_accepted']} in the warm-up); {f['lost']} lost, {f['duplicated_in_store']} written twice; all written "
         f"{f['written_s_after_the_load']:.1f} s after the load ended" if f["all_written"] else "not all written",
         yes(a["no_lost_flags"] and a["no_flag_written_twice"])],
        ["no 5xx outside the restart window; 503 with `Retry-After` inside it",
         f"{lat['5xx_outside_window']} outside; {lat['5xx_in_window']} inside, "
         f"{s['errors']['503_without_retry_after']} of them without `Retry-After`",
         yes(a["no_5xx_outside_restart_window"] and a["only_503_with_retry_after_in_window"])],
        ["memory growth under 10%",
         f"{m['rss_start_mib']:.1f} MiB after the warm-up, {m['rss_end_mib']:.1f} MiB after the soak: {m['growth'] * 100:+.1f}% "
         f"(at most {m['rss_max_during_soak_mib']:.1f} MiB during it)", yes(a["memory_growth_below_10_percent"])],
        ["recovery without a restart",
         f"Neo4j stopped in {r['stop_s']:.1f} s and started in {r['start_s']:.1f} s; `/readyz` was 503 {r['readyz_503_after_s']:.1f} s "
         f"into the stop and 200 again {r['ready_after_start_s']:.1f} s after the start (window {r['window_s']:.1f} s)",
         yes(a["restart_recovered"])],
    ]
    table = _table(["acceptance", "measured", "met"], ["l", "l", "l"], rows)
    return table + "\n\n" + _source("soak.json", date=s.get("date"))


def neo4j_store() -> str:
    n = _load("neo4j-120000.json")
    neo, emb = n["neo4j"], n["embedded"]
    lo, hi = neo["projection_edges_per_s_range"]
    rows = [
        ["load (validate, pseudonymise, write)", f"{neo['load_s']:.1f} s: {neo['load_relationships_per_s']:,} relationships/s",
         f"{emb['load_s']:.1f} s: {emb['load_relationships_per_s']:,} relationships/s"],
        [f"projection (stream the graph into CSR), median of {len(neo['projection_runs_s'])}",
         f"{neo['projection_s']:.1f} s: {neo['projection_edges_per_s']:,} edges/s (runs: {lo:,}-{hi:,})",
         f"{emb['projection_s']:.1f} s: {emb['projection_edges_per_s']:,} edges/s"],
        ["write-back of scores to the user nodes", f"{neo['write_back_s']:.1f} s: {neo['write_back_users_per_s']:,} users/s",
         f"{emb['write_back_s']:.2f} s"],
    ]
    table = _table(["step", "Neo4j store", "embedded store"], ["l", "r", "r"], rows)
    return table + "\n\n" + f"<small>{n['users']:,} users, {n['relationships']:,} relationships.</small> " + _source(
        "neo4j-120000.json", date=n["date"], command="python benchmarks/neo4j_store.py --users 120000")


def gds_peer() -> str:
    g = _load("gds-peer-120000.json")
    s, d = g["socialrisk"], g["gds"]
    rows = [
        ["graph into memory", f"{s['stream_and_matrix_s']:.2f} s (stream out of Neo4j, build CSR)",
         f"{d['project_s']:.2f} s (`gds.graph.project`, inside the server)", f"{d['project_s'] / s['stream_and_matrix_s']:.2f}"],
        ["personalized PageRank", f"{s['ppr_s']:.2f} s ({s['ppr_iterations']} iterations, {'converged' if s['converged'] else 'not converged'})",
         f"{d['pagerank_stream_s']:.2f} s (`gds.pageRank.stream` with `sourceNodes`)", f"{g['ratio_algorithm_gds_over_socialrisk']:.1f}"],
        ["end to end", f"{s['total_s']:.2f} s", f"{d['total_s']:.2f} s", f"{g['ratio_total_gds_over_socialrisk']:.2f}"],
    ]
    table = _table(["", "socialrisk", "OpenGDS", "GDS / socialrisk"], ["l", "r", "r", "r"], rows)
    return table + "\n\n" + (
        f"<small>{g['nodes']:,} nodes, {g['undirected_edges']:,} undirected edges, {g['seeds']:,} seeds, tolerance {g['tolerance']:g}.</small> "
    ) + _source("gds-peer-120000.json", date=g["date"], command="python benchmarks/gds_peer.py --users 120000")


def spark() -> str:
    runs = [(_load(f"spark-{n}.json"), n) for n in (1000000, 300000)]
    header = ["measure"]
    for r, n in runs:
        header += [f"{int(n):,} users: single machine", f"spark, {r['spark']['master']}"]
    rows: list[list[str]] = [["walk-matrix entries"], ["propagate, end to end"],
                             ["wall time per iteration (longest loop)"], ["shuffle written per iteration"],
                             ["shuffle written / read, whole loop"]]
    for r, _n in runs:
        si, sp = r["single"], r["spark"]
        sh = sp["shuffle"]
        rows[0] += [f"{si['walk_entries']:,}", ""]
        rows[1] += [f"{si['wall_seconds']:.2f} s", f"{sp['wall_seconds']:.1f} s"]
        rows[2] += [f"{si['seconds_per_iteration'] * 1000:.2f} ms", f"{sp['seconds_per_iteration']:.2f} s ({sp['loop_iterations']} iterations)"]
        rows[3] += ["", f"{sh['write_bytes_per_iteration'] / 1e6:.1f} MB ({sh['write_bytes_per_iteration'] / sp['walk_entries']:.1f} bytes per entry)"]
        rows[4] += ["", f"{sh['write_bytes_loop'] / 1e6:,.1f} MB / {sh['read_bytes_loop'] / 1e6:,.1f} MB"]
    table = _table(header, ["l"] + ["r"] * (len(header) - 1), rows)
    ex = runs[0][0]["extrapolation_1e9_edges"]
    cl = ex["cluster"]
    others = "; ".join(
        f"from the {int(n):,}-user run: {r['extrapolation_1e9_edges']['seconds_per_iteration_at_target']:.0f} s and "
        f"{r['extrapolation_1e9_edges']['minutes_total_at_target']:.0f} minutes"
        for r, n in runs[1:] if "extrapolation_1e9_edges" in r
    )
    extra = (f"**Extrapolated** from the {int(runs[0][1]):,}-user run to {ex['target_walk_entries']:.0e} walk entries on "
             f"{cl['executors']} executors ({cl['cores']} cores, {cl['memory_per_executor']} each, {cl['network_gbit_per_executor']} Gbit/s): "
             f"{ex['shuffle_bytes_per_iteration_at_target'] / 1e9:.1f} GB shuffled and about {ex['seconds_per_iteration_at_target']:.1f} s "
             f"per iteration, {ex['minutes_total_at_target']:.0f} minutes for the {ex['iterations']} iterations"
             + (f" ({others})" if others else "") + f". The {len(ex['assumptions'])} assumptions are listed in the results file.")
    return table + "\n\n" + _source("spark-1000000.json", "spark-300000.json", date=runs[0][0]["date"],
                                    command=runs[0][0]["command"]) + "\n\n" + extra


# -- CI -------------------------------------------------------------------------------------------


def ci_tiers() -> str:
    c = _load("ci-tiers.json")
    tiers = c["tiers"]
    rows = []
    for name, r in tiers.items():
        la = r["load_average_1min"]
        result = r["summary"] or ("stopped by hand before it finished" if r["exit_code"] < 0 else f"exit {r['exit_code']}")
        wall = f"{r['wall_s'] / 60:.1f} min ({r['wall_s']:.0f} s)" + (", unfinished" if r["exit_code"] < 0 else "")
        rows.append([f"`{name}`", wall, result,
                     f"{la['before']:.1f} / {la['after']:.1f}", r["date"], f"`{r.get('commit', '')}`", f"`{r['command']}`"])
    table = _table(["tier", "wall time", "result", "load average before / after", "ended", "commit", "command"], ["l", "r", "l", "r", "l", "l", "l"], rows)
    parts = [table, _source("ci-tiers.json", command="python benchmarks/ci_tiers.py TIER ...")]
    for name, r in tiers.items():
        slow = [s for s in r["slowest"] if s["phase"] == "call"][:15]
        if slow and (name.startswith("spark") or name.startswith("fresh-clone")):
            lines = "\n".join(f"| {s['seconds']:.1f} s | `{s['test']}` |" for s in slow)
            parts.append(f"Slowest tests of `{name}`:\n\n| time | test |\n|---:|:---|\n" + lines)
    return "\n\n".join(parts)


# -- configuration reference ---------------------------------------------------------------------


def _attributes(cls: type) -> dict[str, str]:
    """The numpydoc ``Attributes`` section of a class: name -> description (one line)."""
    doc = inspect.getdoc(cls) or ""
    m = re.search(r"^Attributes\n-+\n(?P<body>.*?)(?:\n\S[^\n]*\n-+\n|\Z)", doc, re.S | re.M)
    out: dict[str, str] = {}
    if not m:
        return out
    name: list[str] = []
    for line in m.group("body").splitlines():
        if line and not line.startswith(" "):
            name = [n.strip() for n in line.split(":")[0].split(",")]
            for n in name:
                out[n] = ""
        elif name and line.strip():
            for n in name:
                out[n] = (out[n] + " " + line.strip()).strip()
    return out


def _constraint(field: Any) -> str:
    parts = []
    for meta in field.metadata:
        for attr, op in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            value = getattr(meta, attr, None)
            if value is not None:
                parts.append(f"{op} {value}")
    return ", ".join(parts)


def _type(annotation: Any) -> str:
    text = str(annotation).replace("typing.", "").replace("<class '", "").replace("'>", "")
    text = re.sub(r"socialrisk\.settings\._(\w+)Model", r"\1", text)
    text = re.sub(r"^Optional\[(.*)\]$", r"\1", text.replace(" | None", "").replace("NoneType", "").strip())
    return re.sub(r"Literal\[(.*?)\]", lambda m: " or ".join(m.group(1).split(", ")), text)


def _md(text: str) -> str:
    """Docstring prose as a Markdown table cell: rst roles and literals as code, pipes escaped."""
    text = re.sub(r":\w+:`~?([^`]+)`", r"`\1`", text).replace("``", "`")
    text = re.sub(r"`([^`]*\|[^`]*)`", r"\1", text)  # a table cell cannot hold a pipe inside code
    return text.replace("|", "\\|")


def _default(value: Any) -> str:
    if hasattr(value, "__dataclass_fields__"):
        value = {f: getattr(value, f) for f in value.__dataclass_fields__}
    if isinstance(value, dict) or hasattr(value, "items"):
        value = dict(value)
        if any(hasattr(v, "__dataclass_fields__") or isinstance(v, tuple) for v in value.values()):
            return "see below" if not value else ", ".join(sorted(map(str, value)))
    text = repr(value) if not isinstance(value, str) else f'"{value}"'
    return text if len(text) <= 80 else text[:77] + "..."


#: The resolved configuration class behind each table of the file (defaults and docstrings).
CONFIG_CLASSES = {
    "graph": ("graph.config", "GraphConfig"),
    "scoring": ("scoring.config", "ScoringConfig"),
    "service": ("socialrisk.settings", "ServiceConfig"),
    "normalise": ("loaders.normalise", "Normalisation"),
}


def applications_latency() -> str:
    r = _load("applications-latency-embedded-1000000.json")
    rows = []
    for label, key, beside in (("what-if", "whatif", "enrich_beside_whatif"), ("committed", "commit", "enrich_beside_commit")):
        m, e = r[key], r[beside]
        errors = sum(m["errors"].values()) if m["errors"] else 0
        rows.append([label, f"{m['rate']:g}/s", f"{m['answered']:,} of {m['sent']:,}", f"{errors:,}", _f(m["p50_ms"], 1), _f(m["p99_ms"], 1),
                     f"{e['rate']:g}/s", _f(e["p50_ms"], 1), _f(e["p99_ms"], 1)])
    for step in r.get("steps", []):
        errors = sum(step["errors"].values()) if step["errors"] else 0
        rows.append(["what-if (rate step)", f"{step['rate']:g}/s", f"{step['answered']:,} of {step['sent']:,}", f"{errors:,}", _f(step["p50_ms"], 1),
                     _f(step["p99_ms"], 1), "-", "-", "-"])
    table = _table(["applications", "rate", "answered", "timed out or failed", "p50 ms", "p99 ms", "enrich beside", "enrich p50 ms", "enrich p99 ms"],
                   ["l", "r", "r", "r", "r", "r", "r", "r", "r"], rows)
    load = ", ".join(f"{x:.1f}" for x in r["load_before"])
    return table + "\n\n" + _source("applications-latency-embedded-1000000.json", date=r["machine"]["at"][:16].replace("T", " "),
                                     command=f"python benchmarks/applications.py latency --users {r['users']}") + f" <small>Load average before: {load}.</small>"


def applications_parity() -> str:
    rows, files = [], []
    for path in sorted(RESULTS.glob("applications-parity-*.json")):
        r = json.loads(path.read_text())
        files.append(path.name)
        for label, name in (("same_model", "same model version"), ("refitted", "refitted")):
            m = r[label]
            rows.append([r["dataset"], f"{r['held_out']:,} of {r['users']:,}", name, _f(m["spearman_risk"], 3), f"{100 * m['decision_agreement']:.1f}%",
                         f"{m['mean_abs_risk_diff']:.1e}", f"{m['max_abs_risk_diff']:.3f}"])
    if not rows:
        raise MissingResults("benchmarks/results/applications-parity-*.json is missing: run benchmarks/applications.py parity")
    table = _table(["data", "held out", "full scoring", "Spearman of risk", "decisions agree", "mean abs risk diff", "max abs risk diff"],
                   ["l", "r", "l", "r", "r", "r", "r"], rows)
    return table + "\n\n" + _source(*files, command="python benchmarks/applications.py parity [--dataset DIR]")


def config_reference() -> str:
    import importlib

    from pydantic import BaseModel

    from loaders import DEFAULT_LABEL_MAP
    from socialrisk import settings as s

    top = s._FileModel.model_fields  # noqa: SLF001 - the configuration file's own model
    rows = [["`pseudonym_key`", _type(top["pseudonym_key"].annotation), "(none)",
             "the pseudonymisation key; `SOCIALRISK_PSEUDONYM_KEY` takes precedence (see [privacy](../concepts/privacy.md))"],
            ["`[labels]`", "table of str to `fraud` or `benign`", _md(_default(dict(DEFAULT_LABEL_MAP))),
             "maps other flag labels (`chargeback = \"fraud\"`) to the two classes"]]
    known = {"pseudonym_key", "labels"}
    parts = ["### Top level\n\n" + _table(["key", "type", "default", "meaning"], ["l", "l", "l", "l"], rows)]
    for table, field in top.items():
        model = field.annotation
        if table in known:
            continue
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            raise MissingResults(f"config-reference: the file's key {table!r} is neither a table nor documented here")
        module, name = CONFIG_CLASSES.get(table, (None, None))
        if module is not None:
            cls = getattr(importlib.import_module(module), name)
            defaults: Any = cls()
            docs = _attributes(cls)
        else:  # a table read straight into Settings: its attributes are named <table>_<key>
            defaults = None
            settings_docs = _attributes(s.Settings)
            docs = {k: settings_docs.get(f"{table}_{k}", settings_docs.get(k, "")) for k in model.model_fields}
        rows = []
        for key, f in model.model_fields.items():
            allowed = _constraint(f)
            kind = _type(f.annotation) + (f" ({allowed})" if allowed else "")
            default = _default(getattr(defaults, key)) if hasattr(defaults, key) else _default(f.default)
            rows.append([f"`{key}`", _md(kind), _md(default), _md(docs.get(key, ""))])
        parts.append(f"### `[{table}]`\n\n" + _table(["key", "type", "default", "meaning"], ["l", "l", "l", "l"], rows))
    return "\n\n".join(parts) + "\n\n<small>Generated from the settings model (`socialrisk/settings.py`) and the docstrings of " \
        + ", ".join(f"`{n}`" for _m, n in CONFIG_CLASSES.values()) + ", `Settings`.</small>"

# -- decisions (benchmarks/decisions.py) -----------------------------------------------------------

_POLICY_NAMES = {"default": "`default`", "default+review": "`default` + `graph_evidence = \"review\"`", "eu": "`eu`"}


def _when(part: dict[str, Any]) -> str:
    # a part measured by the first, partial run carries no conditions of its own: the file's
    c = part.get("conditions") or _load("decisions.json").get("conditions", {})
    load = c.get("load_average") or c.get("load_average_at_transcription")
    return f"{c.get('date', '?')[:16].replace('T', ' ')}, load average {load[0]:.1f}" if load else str(c.get("date", "?"))


def decisions_policies() -> str:
    part = _load("decisions.json")["policies"]
    rows = []
    for data, by_policy in part["datasets"].items():
        for name, m in by_policy.items():
            rows.append([data, _POLICY_NAMES.get(name, f"`{name}`"), _f(m["auroc_risk"], 4), _f(m["auprc_risk"], 4), _f(m["auroc_fraud_risk"], 4),
                         _f(m["auprc_fraud_risk"], 4), _f(m.get("auroc_credit_risk"), 4), f"{m['fraud_recall']:.1%}", f"{m['good_refused']:.1%}",
                         f"{m['good_rejected_graph_alone']:g}", f"{m.get('good_reviewed_graph_alone', 0):g}"])
    table = _table(["data", "policy", "AUROC `risk`", "AUPRC `risk`", "AUROC `fraud_risk`", "AUPRC `fraud_risk`", "AUROC `credit_risk`",
                    "fraud recall", "good refused", "good rejected on graph evidence alone", "good sent to review on graph evidence alone"],
                   ["l", "l", "r", "r", "r", "r", "r", "r", "r", "r", "r"], rows)
    return table + "\n\n" + _source("decisions.json", date=_when(part), command=f"python benchmarks/decisions.py --parts policies --repeats {part['repeats']}")


def decisions_full_scoring() -> str:
    part = _load("decisions.json")["policies"]
    rows = []
    for data, by_policy in part["datasets"].items():
        for name, m in by_policy.items():
            f = m.get("full_scoring")
            if f is None:
                continue
            fam = f["family"]
            rows.append([data, _POLICY_NAMES.get(name, f"`{name}`"), f"{f['good_unflagged']:,}", f"{f['good_rejected']:,}", f"{f['good_rejected_graph_alone']:,}",
                         f"{f['good_reviewed_graph_alone']:,}", f"{fam['approve']} / {fam['review']} / {fam['reject']}", f"{f['fraud_unflagged_refused']:.1%}"])
    table = _table(["data", "policy", "good users nobody flagged", "rejected", "rejected on graph evidence alone", "sent to review on graph evidence alone",
                    "family members of fraudsters: approved / review / rejected", "unflagged fraud refused"], ["l", "l", "r", "r", "r", "r", "r", "r"], rows)
    return table + "\n\n" + _source("decisions.json", date=_when(part), command=f"python benchmarks/decisions.py --parts policies --repeats {part['repeats']}")


def decisions_thin() -> str:
    part = _load("decisions.json")["thin"]
    rows = []
    for policy in ("default", "eu"):
        for alt in ("with", "without"):
            m = part.get(f"{policy}_{alt}_alternative_data")
            if m is None:
                continue
            cell = lambda g: f"{m[g + '_refused']:.2%} ({m[g + '_good_users']:,})"  # noqa: E731
            rows.append([f"`{policy}`", alt if alt == "with" else "without (columns dropped)", cell("thin"), cell("good_record"),
                         cell("poor_record"), cell("no_record"), cell("thick"), f"{m['fraud_recall_all']:.1%}"])
    good = part["good_record"]
    table = _table(["policy", "alternative data", "thin file: all", f"good record (>= {good['on_time_share_at_least']:.0%} on time, >= {good['months_at_least']} months)",
                    "poor record", "no record", "full file", "fraud refused (all)"], ["l", "l", "r", "r", "r", "r", "r", "r"], rows)
    return table + "\n\n" + _source("decisions.json", date=_when(part), command=f"python benchmarks/decisions.py --parts thin --users {part['users']}")


def decisions_recourse() -> str:
    r = _load("decisions.json")["recourse"]
    timed = "ms_per_user_median" in r
    rows = [[f"{r['users']:,}", f"{r['refused_good_users']:,}", f"{r['sampled']:,}", f"{r['with_an_approving_recourse']:.1%}",
             f"{r['with_a_recourse_of_at_most_two_actions']:.1%}", _f(r.get("actions_median"), 1),
             f"{r['ms_per_user_median']:.1f} ms" if timed else "not timed", f"{r['ms_per_user_p95']:.1f} ms" if timed else "not timed"]]
    table = _table(["users", "refused good users", "sampled", "with an approving recourse", "within two actions", "actions (median)",
                    "time per user (median)", "p95"], ["r", "r", "r", "r", "r", "r", "r", "r"], rows)
    return table + "\n\n" + _source("decisions.json", date=_when(r), command=f"python benchmarks/decisions.py --parts recourse --recourse-users {r['users']}")


def decisions_fairness() -> str:
    part = _load("decisions.json")["fairness"]
    rows = []
    for key, outs in part.items():
        if not isinstance(outs, dict) or "credit" not in outs:
            continue
        policy, _, how = key.partition("_")
        for o in ("credit", "fraud"):
            v = outs[o]
            rates = ", ".join(f"{seg} {rate:.1%}" for seg, rate in sorted(v["approval_rate"].items()))
            rows.append([f"`{policy}`", how.replace("_", " "), f"`{o}_risk`", _f(v["adverse_impact_ratio_min"]), rates])
    table = _table(["policy", "population", "output", "lowest adverse impact ratio", "approval rate by age band"], ["l", "l", "l", "r", "l"], rows)
    return table + "\n\n" + _source("decisions.json", date=_when(part), command=f"python benchmarks/decisions.py --parts fairness --users {part['users']}")


def neo4j_scale() -> str:
    files = sorted(RESULTS.glob("neo4j-scale-*.json"), key=lambda f: int(f.stem.rsplit("-", 1)[1]))
    if not files:
        raise MissingResults("benchmarks/results/neo4j-scale-*.json is missing: run benchmarks/neo4j_scale.py")
    load_rows, read_rows, ppr_rows, names, dates = [], [], [], [], set()
    for f in files:
        r = json.loads(f.read_text())
        names.append(f.name)
        dates.add(r["date"])
        n = f"{r['users']:,}"
        b, o = r["bulk_load"], r.get("online_load")
        load_rows.append([n, f"{b['rows']:,}", f"{b['wall_s']:.1f}", f"{b['rows_per_s']:,}",
                          f"{o['rows']:,}" if o else "-", f"{o['wall_s']:.1f}" if o else "-", f"{o['relationships_per_s']:,}" if o else "-"])
        rd = r.get("read", {})
        base = rd.get("tables_then_encode", {}).get("median_s")
        for way, m in rd.items():
            if not isinstance(m, dict) or "median_s" not in m:
                continue
            read_rows.append([n, way.replace("_", " "), f"{m['median_s']:.2f}", f"{m['edges_per_s']:,}",
                              f"{base / m['median_s']:.1f}x" if base and m["median_s"] else "-"])
        pr = r.get("pagerank")
        if pr:
            sr, g = pr["socialrisk"], pr.get("gds")
            ppr_rows.append([n, f"{pr['nodes']:,}", f"{sr['read_and_matrix_s']:.2f} + {sr['ppr_s']:.2f} = {sr['total_s']:.2f}",
                             f"{g['project_s']:.2f} + {g['pagerank_stream_s']:.2f} = {g['total_s']:.2f}" if g and "total_s" in g else (g or {}).get("error", "not run"),
                             f"{pr['ratio_total_gds_over_socialrisk']:.2f}" if pr.get("ratio_total_gds_over_socialrisk") else "-"])
    t1 = _table(["users", "rows", "bulk first load s", "rows/s", "online rows after", "online s", "online rows/s", ],
                ["r", "r", "r", "r", "r", "r", "r"], load_rows)
    t2 = _table(["users", "read", "median s", "edges/s", "faster than the tables read"], ["r", "l", "r", "r", "r"], read_rows)
    t3 = _table(["users", "nodes", "socialrisk s: read and matrix + PageRank", "OpenGDS s: project + pageRank.stream", "GDS / socialrisk"],
                ["r", "r", "r", "r", "r"], ppr_rows)
    phases: list[str] = []
    peaks: dict[str, dict[str, str]] = {}
    for f in files:
        r = json.loads(f.read_text())
        for phase, m in r.get("peak_memory_mb", {}).items():
            if phase not in phases:
                phases.append(phase)
            peaks.setdefault(phase, {})[f"{r['users']:,}"] = f"{m.get('neo4j_jvm_mb', 0):,} / {m.get('python_mb', 0):,}"
    sizes = [f"{json.loads(f.read_text())['users']:,}" for f in files]
    t4 = _table(["peak resident MiB, Neo4j JVM / Python", *(f"{n} users" for n in sizes)], ["l", *("r" for _ in sizes)],
                [[phase.replace("_", " ").replace(":", ": "), *(peaks[phase].get(n, "-") for n in sizes)] for phase in phases])
    return "\n\n".join([t1, t2, t3, t4]) + "\n\n" + _source(*names, date=", ".join(sorted(dates)), command="SOCIALRISK_NEO4J_GDS=1 python benchmarks/neo4j_scale.py --users N")


TABLES: dict[str, Callable[[], str]] = {
    "applications-latency": applications_latency,
    "applications-parity": applications_parity,
    "decisions-policies": decisions_policies,
    "decisions-full-scoring": decisions_full_scoring,
    "decisions-thin": decisions_thin,
    "decisions-recourse": decisions_recourse,
    "decisions-fairness": decisions_fairness,
    "quality-ranking": quality_ranking,
    "quality-misjudgment": quality_misjudgment,
    "quality-tradeoff": quality_tradeoff,
    "quality-ablation": quality_ablation,
    "quality-time": quality_time,
    "quality-propagation": quality_propagation,
    "linking-recovery": linking_recovery,
    "propagation-speed": propagation_speed,
    "scale": scale,
    "service-speed": service_speed,
    "soak-routes": soak_routes,
    "soak-acceptance": soak_acceptance,
    "neo4j-store": neo4j_store,
    "neo4j-scale": neo4j_scale,
    "gds-peer": gds_peer,
    "spark": spark,
    "config-reference": config_reference,
    "ci-tiers": ci_tiers,
}


def render(name: str) -> str:
    """The Markdown of one generated table (with its source line), from the results files."""
    if name not in TABLES:
        raise KeyError(f"unknown table {name!r}; expected one of {', '.join(TABLES)}")
    try:
        return TABLES[name]().rstrip() + "\n"
    except KeyError as exc:
        raise MissingResults(f"table {name!r}: a results file lacks the figure {exc.args[0]!r}") from None


def update(*, check: bool = False, docs: Path = DOCS) -> list[str]:
    """Rewrite every generated block of the docs (or, with ``check``, only report them).

    Returns
    -------
    list of str
        ``page: table`` for every block whose text differed from what the results say.
    """
    stale = []
    for page in sorted(docs.rglob("*.md")):
        text = page.read_text()

        def fill(m: re.Match[str]) -> str:
            body = render(m.group("name"))
            if body != m.group("body"):
                stale.append(f"{page.relative_to(ROOT) if page.is_relative_to(ROOT) else page}: {m.group('name')}")
            return m.group(1) + body + m.group(4)

        new = BLOCK.sub(fill, text)
        if new != text and not check:
            page.write_text(new)
    return stale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a generated table is stale")
    args = parser.parse_args(argv)
    try:
        stale = update(check=args.check)
    except MissingResults as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.check and stale:
        print("generated tables differ from benchmarks/results (run python benchmarks/tables.py):\n  " + "\n  ".join(stale), file=sys.stderr)
        return 1
    print(("stale: " if args.check else "rewrote: ") + (", ".join(stale) if stale else "nothing"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
