"""Fairness report: how each output treats the segments of a population.

For each output (``credit_risk`` and ``fraud_risk``, each with its own decision) and each value
of a segment column (region, age band...), the report gives:

``approval_rate``
    share of the segment's users approved;
``adverse_impact_ratio``
    the segment's approval rate over the highest approval rate of any segment (the
    "four-fifths" screen of US employment and lending practice flags a ratio under 0.8);
``good_refused_rate``
    share of the segment's good users (labelled benign, or 0 in a ground truth) refused
    (``review`` or ``reject``);
``auroc``
    how well the output ranks the segment's fraud above its good users.

Approval rates are measured on every user scored; the good-user refusals and AUROC on users
whose label the model did not see (the hidden users of :func:`scoring.evaluate.evaluate`), so
that a model's memory of its training labels does not pass for fairness.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from loaders.errors import DataError

__all__ = ["OUTPUTS", "FOUR_FIFTHS", "check_segment", "fairness_table"]

#: The outputs reported, each with the ``{output}_risk`` and ``{output}_decision`` columns it reads.
OUTPUTS: tuple[str, ...] = ("credit", "fraud")
#: The adverse impact ratio under which a segment is flagged.
FOUR_FIFTHS = 0.8


def check_segment(users: pd.DataFrame, column: str, *, source: str = "users") -> pd.Series:
    """The segment of each user (indexed by ``user_id``), checked.

    Raises
    ------
    DataError
        The column is not in the users table, or it has fewer than two values.

    Examples
    --------
    >>> check_segment(pd.DataFrame({"user_id": ["a", "b"], "band": ["x", "x"]}), "band")
    Traceback (most recent call last):
    ...
    loaders.errors.DataError: users: the segment column 'band' has one value ('x'): there is nothing to compare; give a column with at least two values
    """
    if column not in users.columns or column == "user_id":
        known = ", ".join(c for c in users.columns if c != "user_id" and not str(c).startswith("_")) or "none"
        raise DataError(f"{source}: no segment column {column!r}; the columns are: {known}")
    seg = users.drop_duplicates("user_id", keep="last").set_index("user_id")[column]
    values = seg.dropna().astype(str).unique()
    if len(values) < 2:
        got = f"one value ({values[0]!r})" if len(values) else "no value"
        raise DataError(f"{source}: the segment column {column!r} has {got}: there is nothing to compare; give a column with at least two values")
    return seg.astype("string")


def _auroc(y: np.ndarray, s: np.ndarray) -> float:
    if len(np.unique(y)) < 2:
        return float("nan")
    return float(roc_auc_score(y, s))


def fairness_table(
    scores: pd.DataFrame, hidden: pd.DataFrame, segment: pd.Series, *, outputs: Sequence[str] = OUTPUTS
) -> pd.DataFrame:
    """One row per output and segment value.

    Parameters
    ----------
    scores : DataFrame
        Every user scored: ``user_id`` and ``{output}_decision`` for each output.
    hidden : DataFrame
        Users whose label the model did not see: ``user_id``, ``y`` (1 fraud, 0 good),
        ``{output}_risk`` and ``{output}_decision`` (a user may appear once per repeat).
    segment : Series
        Segment value by ``user_id`` (:func:`check_segment`); users without one are left out.
    outputs : sequence of str

    Returns
    -------
    DataFrame
        ``output``, ``segment``, ``users``, ``approval_rate``, ``adverse_impact_ratio``,
        ``flagged`` (ratio under :data:`FOUR_FIFTHS`), ``good_users``, ``good_refused_rate``,
        ``fraud_users``, ``auroc``.

    Examples
    --------
    >>> scores = pd.DataFrame({"user_id": list("abcd"), "credit_decision": ["approve", "reject", "approve", "approve"]})
    >>> hidden = pd.DataFrame({"user_id": list("abcd"), "y": [0, 1, 0, 1], "credit_risk": [0.1, 0.9, 0.2, 0.3],
    ...                        "credit_decision": ["approve", "reject", "approve", "approve"]})
    >>> t = fairness_table(scores, hidden, pd.Series(["x", "x", "y", "y"], index=list("abcd")), outputs=["credit"])
    >>> t[["segment", "approval_rate", "adverse_impact_ratio"]].to_dict("records")
    [{'segment': 'x', 'approval_rate': 0.5, 'adverse_impact_ratio': 0.5}, {'segment': 'y', 'approval_rate': 1.0, 'adverse_impact_ratio': 1.0}]
    """
    seg_all = segment.reindex(scores["user_id"].astype(str)).to_numpy(dtype=object)
    seg_hidden = segment.reindex(hidden["user_id"].astype(str)).to_numpy(dtype=object)
    values = sorted({str(v) for v in seg_all if isinstance(v, str)})
    rows = []
    for out in outputs:
        approved = (scores[f"{out}_decision"] == "approve").to_numpy()
        y = hidden["y"].to_numpy(dtype=np.int64)
        risk = hidden[f"{out}_risk"].to_numpy(dtype=np.float64)
        refused = (hidden[f"{out}_decision"] != "approve").to_numpy()
        block = []
        for v in values:
            m = seg_all == v
            h = seg_hidden == v
            good = h & (y == 0)
            block.append(
                {
                    "output": out,
                    "segment": v,
                    "users": int(m.sum()),
                    "approval_rate": float(approved[m].mean()) if m.any() else float("nan"),
                    "good_users": int(good.sum()),
                    "good_refused_rate": float(refused[good].mean()) if good.any() else float("nan"),
                    "fraud_users": int((h & (y == 1)).sum()),
                    "auroc": _auroc(y[h], risk[h]),
                }
            )
        best = max((b["approval_rate"] for b in block if b["approval_rate"] == b["approval_rate"]), default=float("nan"))
        for b in block:
            b["adverse_impact_ratio"] = b["approval_rate"] / best if best and best == best else float("nan")
            b["flagged"] = bool(b["adverse_impact_ratio"] < FOUR_FIFTHS)
        rows.extend(block)
    cols = ["output", "segment", "users", "approval_rate", "adverse_impact_ratio", "flagged", "good_users", "good_refused_rate", "fraud_users", "auroc"]
    return pd.DataFrame(rows, columns=cols)
