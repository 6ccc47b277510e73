"""Figures of an evaluation: score distributions by label, ROC and precision-recall curves, the
trade-off between fraud refused and good users refused, and calibration.

Presentation only: each function draws numbers computed elsewhere (:mod:`scoring.evaluate`,
:mod:`scoring.misjudgment`, :mod:`scoring.curves`) and returns a matplotlib
:class:`~matplotlib.figure.Figure` made without ``pyplot``, so no global state or GUI backend
is touched (a notebook shows it with ``display(fig)``, or as the last expression of a cell).
:func:`write_evaluation_plots` writes them all, as ``socialrisk evaluate --plots DIR`` does.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from loaders.errors import ParameterError
from scoring.curves import pr_points, roc_points
from scoring.evaluate import EvaluationReport

__all__ = [
    "score_distributions",
    "roc_curves",
    "precision_recall_curves",
    "tradeoff_plot",
    "calibration_plot",
    "write_evaluation_plots",
    "fairness_plot",
    "PLOTS",
]

FRAUD, GOOD = "#d73027", "#1a9850"
#: The figures :func:`write_evaluation_plots` writes, by file stem.
PLOTS = ("score_distributions", "roc", "precision_recall", "tradeoff", "calibration")


def _figure(width: float = 6.4, height: float = 4.4) -> tuple[Figure, Axes]:
    fig = Figure(figsize=(width, height), dpi=110, layout="constrained")
    return fig, fig.add_subplot()


def _check_predictions(predictions: pd.DataFrame) -> None:
    missing = {"repeat", "y", "risk", "credit_score"} - set(predictions.columns)
    if missing or predictions.empty:
        raise ParameterError(
            "The plots need an evaluation's per-user predictions (EvaluationReport.predictions: repeat, y, risk, credit_score); "
            f"got {'an empty table' if predictions.empty else 'a table without ' + ', '.join(sorted(missing))}."
        )


def score_distributions(predictions: pd.DataFrame, *, approve_at: int = 650, review_at: int = 550, title: str = "") -> Figure:
    """Histograms of the hidden users' credit scores, fraud against benign (all repeats pooled),
    with the decision cut-offs.

    Parameters
    ----------
    predictions : DataFrame
        :attr:`scoring.evaluate.EvaluationReport.predictions`.
    approve_at, review_at : int
        Cut-offs drawn as vertical lines.
    """
    _check_predictions(predictions)
    fig, ax = _figure()
    bins = [float(b) for b in range(350, 951, 25)]
    for y, colour, name in ((0, GOOD, "benign"), (1, FRAUD, "fraud")):
        scores = predictions.loc[predictions["y"] == y, "credit_score"].to_numpy(dtype=np.float64)
        ax.hist(scores, bins=bins, color=colour, alpha=0.55, label=f"{name} ({len(scores):,})", density=True, edgecolor="white", linewidth=0.5)
    ax.axvline(review_at, color="#555", linestyle=":", linewidth=1)
    ax.axvline(approve_at, color="#555", linestyle="--", linewidth=1)
    top = ax.get_ylim()[1]
    ax.text(review_at, top * 0.97, f" review {review_at}", fontsize=8, va="top", color="#333")
    ax.text(approve_at, top * 0.97, f" approve {approve_at}", fontsize=8, va="top", color="#333")
    ax.set_xlabel("credit score (hidden users, all repeats)")
    ax.set_ylabel("density")
    ax.set_title(title or "Credit scores of hidden users by label")
    ax.legend(loc="upper left", frameon=False)
    return fig


def roc_curves(predictions: pd.DataFrame, *, title: str = "") -> Figure:
    """ROC curve of each repeat (thin) and of all repeats pooled (thick), AUROC in the legend."""
    _check_predictions(predictions)
    fig, ax = _figure(5.2, 4.8)
    aucs = []
    for _, part in predictions.groupby("repeat"):
        points, auc = roc_points(part["y"].to_numpy(), part["risk"].to_numpy())
        aucs.append(auc)
        ax.plot(points["false_positive_rate"], points["true_positive_rate"], color="#7b8a99", linewidth=0.8, alpha=0.7)
    points, pooled = roc_points(predictions["y"].to_numpy(), predictions["risk"].to_numpy())
    spread = f" ± {np.std(aucs, ddof=1):.3f}" if len(aucs) > 1 else ""
    ax.plot(points["false_positive_rate"], points["true_positive_rate"], color=FRAUD, linewidth=2,
            label=f"pooled (AUROC {pooled:.3f}); repeats: {np.mean(aucs):.3f}{spread}")
    ax.plot([0, 1], [0, 1], color="#999", linestyle=":", linewidth=1, label="chance")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("false positive rate (benign users above the threshold)")
    ax.set_ylabel("true positive rate (fraud found)")
    ax.set_title(title or "ROC on hidden labels")
    ax.legend(loc="lower right", fontsize=8, frameon=False)
    return fig


def precision_recall_curves(predictions: pd.DataFrame, *, title: str = "") -> Figure:
    """Precision-recall curve of each repeat (thin) and pooled (thick), average precision in
    the legend, the share of fraud among the hidden users as the chance level."""
    _check_predictions(predictions)
    fig, ax = _figure(5.2, 4.8)
    aps = []
    for _, part in predictions.groupby("repeat"):
        points, ap = pr_points(part["y"].to_numpy(), part["risk"].to_numpy())
        aps.append(ap)
        ax.step(points["recall"], points["precision"], where="post", color="#7b8a99", linewidth=0.8, alpha=0.7)
    points, pooled = pr_points(predictions["y"].to_numpy(), predictions["risk"].to_numpy())
    spread = f" ± {np.std(aps, ddof=1):.3f}" if len(aps) > 1 else ""
    ax.step(points["recall"], points["precision"], where="post", color=FRAUD, linewidth=2,
            label=f"pooled (AUPRC {pooled:.3f}); repeats: {np.mean(aps):.3f}{spread}")
    base = float(predictions["y"].mean())
    ax.axhline(base, color="#999", linestyle=":", linewidth=1, label=f"chance ({base:.2f} fraud)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("recall (fraud found)")
    ax.set_ylabel("precision (fraud among those found)")
    ax.set_title(title or "Precision-recall on hidden labels")
    ax.legend(loc="lower left", fontsize=8, frameon=False)
    return fig


def tradeoff_plot(tradeoff: pd.DataFrame, *, approve_at: int = 650, title: str = "") -> Figure:
    """Fraud refused against good users refused, per credit-score cut-off: all refusals, and
    those for the graph alone (the collateral rate); the approve cut-off marked.

    Parameters
    ----------
    tradeoff : DataFrame
        :attr:`scoring.evaluate.EvaluationReport.tradeoff` (``credit_score_cutoff``,
        ``fraud_recall``, ``good_refused``, ``collateral_rate``).
    """
    if tradeoff.empty:
        raise ParameterError("The trade-off plot needs an evaluation's trade-off table (EvaluationReport.tradeoff); it is empty.")
    t = tradeoff.sort_values("credit_score_cutoff")
    fig, ax = _figure()
    ax.plot(t["good_refused"], t["fraud_recall"], marker="o", markersize=3.5, color="#2c7fb8", label="good users refused (any reason)")
    ax.plot(t["collateral_rate"], t["fraud_recall"], marker="s", markersize=3.5, color="#e08214", label="good users refused for their graph alone")
    for r in t.itertuples():
        if r.credit_score_cutoff % 50 == 0 or r.credit_score_cutoff == approve_at:
            ax.annotate(str(r.credit_score_cutoff), (r.good_refused, r.fraud_recall), textcoords="offset points", xytext=(4, -9), fontsize=7, color="#333")
    mark = t.loc[t["credit_score_cutoff"] == approve_at]
    if len(mark):
        ax.scatter(mark["good_refused"], mark["fraud_recall"], s=90, facecolors="none", edgecolors="black", linewidths=1.5, zorder=3,
                   label=f"approve_at ({approve_at})")
    ax.set_xlabel("share of good users refused (below the cut-off)")
    ax.set_ylabel("share of fraud refused (recall)")
    ax.set_ylim(0, 1.02)
    ax.set_xlim(left=0)
    ax.set_title(title or "Recall against collateral, per credit-score cut-off")
    ax.legend(loc="lower right", fontsize=8, frameon=False)
    return fig


def calibration_plot(reliability: pd.DataFrame, *, title: str = "") -> Figure:
    """Reliability diagram: per risk bin, the observed fraud rate against the mean risk (marker
    area: users in the bin), the diagonal being perfect calibration.

    Parameters
    ----------
    reliability : DataFrame
        :attr:`scoring.evaluate.EvaluationReport.reliability` (``users``, ``mean_risk``,
        ``fraud_rate``).
    """
    if reliability.empty:
        raise ParameterError("The calibration plot needs an evaluation's reliability table (EvaluationReport.reliability); it is empty.")
    fig, ax = _figure(5.2, 4.8)
    users = reliability["users"].to_numpy(dtype=np.float64)
    ax.plot([0, 1], [0, 1], color="#999", linestyle=":", linewidth=1, label="perfect calibration")
    ax.plot(reliability["mean_risk"], reliability["fraud_rate"], color="#555", linewidth=1)
    ax.scatter(reliability["mean_risk"], reliability["fraud_rate"], s=20 + 280 * users / max(users.max(), 1), color=FRAUD, alpha=0.7,
               edgecolors="white", label="risk bins (area: users)")
    for r in reliability.itertuples():
        ax.annotate(f"{int(r.users):,}", (r.mean_risk, r.fraud_rate), textcoords="offset points", xytext=(5, 4), fontsize=7, color="#333")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("mean predicted risk in the bin")
    ax.set_ylabel("observed share of fraud")
    ax.set_title(title or "Calibration on hidden labels")
    ax.legend(loc="lower right", fontsize=8, frameon=False)
    return fig


def write_evaluation_plots(
    report: EvaluationReport, directory: str | Path, *, approve_at: int = 650, review_at: int = 550, fmt: str = "png", name: str = ""
) -> dict[str, Path]:
    """Write every figure of an evaluation into ``directory`` (created if needed).

    Parameters
    ----------
    report : EvaluationReport
    directory : path
    approve_at, review_at : int
        The decision cut-offs to mark (``settings.scoring.approve_at`` / ``review_at``).
    fmt : {"png", "svg", "pdf"}
    name : str
        Prefix of the titles (the data set's name).

    Returns
    -------
    dict of str to Path
        File of each figure of :data:`PLOTS`.
    """
    if fmt not in ("png", "svg", "pdf"):
        raise ParameterError(f"The 'fmt' parameter of write_evaluation_plots must be png, svg or pdf. Got {fmt!r} instead.")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    prefix = f"{name}: " if name else ""
    figures = {
        "score_distributions": score_distributions(report.predictions, approve_at=approve_at, review_at=review_at,
                                                   title=f"{prefix}credit scores of hidden users by label"),
        "roc": roc_curves(report.predictions, title=f"{prefix}ROC on hidden labels"),
        "precision_recall": precision_recall_curves(report.predictions, title=f"{prefix}precision-recall on hidden labels"),
        "tradeoff": tradeoff_plot(report.tradeoff, approve_at=approve_at, title=f"{prefix}fraud refused against good users refused"),
        "calibration": calibration_plot(report.reliability, title=f"{prefix}calibration on hidden labels"),
    }
    out = {}
    for stem, fig in figures.items():
        path = directory / f"{stem}.{fmt}"
        fig.savefig(path, format=fmt)
        out[stem] = path
    return out


def fairness_plot(table: pd.DataFrame, *, segment: str, four_fifths: float = 0.8) -> Figure:
    """Approval rate and good users refused per segment value, one panel per output, with the
    four-fifths line of the adverse impact screen (:func:`scoring.fairness.fairness_table`)."""
    outputs = list(dict.fromkeys(table["output"]))
    if not outputs:
        raise ParameterError("The fairness table is empty: nothing to draw.")
    fig = Figure(figsize=(6.4 * len(outputs), 4.4), dpi=110, layout="constrained")
    axes = fig.subplots(1, len(outputs), squeeze=False)[0]
    for ax, name in zip(axes, outputs):
        t = table.loc[table["output"] == name]
        x = np.arange(len(t))
        ax.bar(x - 0.2, t["approval_rate"], 0.4, label="approved", color=GOOD)
        ax.bar(x + 0.2, t["good_refused_rate"], 0.4, label="good users refused", color=FRAUD)
        best = float(np.nanmax(t["approval_rate"])) if len(t) else 1.0
        ax.axhline(four_fifths * best, color="black", lw=1, ls="--", label=f"{four_fifths:.0%} of the highest approval rate")
        for xi, air in zip(x, t["adverse_impact_ratio"]):
            ax.annotate(f"AIR {air:.2f}", (xi - 0.2, 0.02), ha="center", fontsize=8, rotation=90, color="white")
        ax.set_xticks(x, t["segment"].tolist(), rotation=30, ha="right")
        ax.set_ylim(0, 1.05)
        ax.set_title(f"{name}_risk by {segment}")
        ax.set_ylabel("share of users")
        ax.legend(loc="lower right", fontsize=8)
    return fig
