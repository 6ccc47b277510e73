"""Dimension scores in [0, 1], 0 when nothing is wrong, higher when riskier.

Input-column dimensions use the user's standing in the population: each mapped column is
turned into the share of users doing better (its oriented percentile ``q``), and contributes
``max(0, 2q - 1)``: nothing at or better than the median, 1 for the worst user. A dimension is
the mean of its columns; a dimension with no column present is NaN, which means neutral.

Graph dimensions compare the user's exposure to confirmed fraud against its exposure to
known-good users: ``max(0, L_f - L_b) / (L_f + L_b + 1)`` with ``L`` the personalized
PageRank lift (1 = as exposed as the average user).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from scoring.config import DIMENSIONS, ColumnSpec, ScoringConfig

__all__ = ["ColumnStanding", "column_standings", "column_dimensions", "graph_dimension", "feature_dimension"]


@dataclass(frozen=True)
class ColumnStanding:
    """One mapped column, oriented: ``value`` (ratio when a denominator is set) and ``worse``,
    the share of users with a better value, per user (NaN when the value is missing)."""

    spec: ColumnSpec
    value: np.ndarray
    denominator: np.ndarray | None
    worse: np.ndarray


def column_standings(
    users: pd.DataFrame, config: ScoringConfig, *, population: dict[str, list[ColumnStanding]] | None = None
) -> dict[str, list[ColumnStanding]]:
    """Standing of every mapped column that is present, per dimension.

    Parameters
    ----------
    users : DataFrame
        The input columns of the users to place.
    config : ScoringConfig
    population : dict, optional
        Standings of a scored population (a previous call): each user of ``users`` is then
        placed against that population (the share of its users doing strictly better) instead
        of against ``users`` themselves. An applicant is placed so, as it would be had it been
        in the population scored.
    """
    out: dict[str, list[ColumnStanding]] = {}
    for dim, specs in config.columns.items():
        placed = {s.spec.column: s for s in population.get(dim, [])} if population is not None else None
        for spec in specs:
            if placed is not None and spec.column not in placed:
                continue
            if spec.column not in users.columns:
                if placed is None:
                    continue
                value = np.full(len(users), np.nan)
            else:
                value = users[spec.column].to_numpy(dtype=np.float64)
            denominator = None
            oriented = value
            if spec.denominator is not None:
                if spec.denominator not in users.columns and placed is None:
                    continue
                denominator = users[spec.denominator].to_numpy(dtype=np.float64) if spec.denominator in users.columns else np.full(len(users), np.nan)
                with np.errstate(invalid="ignore", divide="ignore"):
                    oriented = np.where(denominator > 0, value / np.where(denominator > 0, denominator, 1.0), np.nan)
            if not spec.higher_is_riskier:
                oriented = -oriented
            if placed is not None:
                worse = _placed(oriented, placed[spec.column])
            else:
                ranks = pd.Series(oriented).rank(method="average", pct=True, na_option="keep").to_numpy()
                # share of users strictly better, so ties at the best value score 0
                low = pd.Series(oriented).rank(method="min", pct=True, na_option="keep").to_numpy()
                n_present = np.isfinite(oriented).sum()
                worse = np.where(np.isnan(ranks), np.nan, (low * n_present - 1) / max(n_present, 1)) if n_present else ranks
            out.setdefault(dim, []).append(ColumnStanding(spec=spec, value=value, denominator=denominator, worse=worse))
    return out


#: Sorted oriented values of the population standings placed against (by id, with the standing
#: kept alive so its id is not reused): sorting a million values per applicant would cost more
#: than the rest of its scoring.
_SORTED: dict[int, tuple[ColumnStanding, np.ndarray]] = {}


def _placed(oriented: np.ndarray, standing: ColumnStanding) -> np.ndarray:
    """Share of a population's users strictly better (lower oriented value) than each value."""
    cached = _SORTED.get(id(standing))
    if cached is None or cached[0] is not standing:
        if len(_SORTED) > 64:
            _SORTED.clear()
        cached = (standing, _sorted_reference(standing))
        _SORTED[id(standing)] = cached
    ref = cached[1]
    if not len(ref):
        return np.full(len(oriented), np.nan)
    below = np.searchsorted(ref, np.where(np.isfinite(oriented), oriented, 0.0), side="left")
    return np.where(np.isfinite(oriented), below / len(ref), np.nan)


def _sorted_reference(standing: ColumnStanding) -> np.ndarray:
    ref = standing.value
    if standing.spec.denominator is not None and standing.denominator is not None:
        with np.errstate(invalid="ignore", divide="ignore"):
            ref = np.where(standing.denominator > 0, ref / np.where(standing.denominator > 0, standing.denominator, 1.0), np.nan)
    if not standing.spec.higher_is_riskier:
        ref = -ref
    return np.sort(ref[np.isfinite(ref)])


def column_dimensions(standings: dict[str, list[ColumnStanding]], n: int) -> pd.DataFrame:
    """Scores of the input-column dimensions (NaN = neutral, no data)."""
    out = {}
    for dim in DIMENSIONS:
        parts = standings.get(dim)
        if not parts:
            continue
        contrib = np.vstack([np.maximum(0.0, 2.0 * p.worse - 1.0) for p in parts])
        present = ~np.isnan(contrib)
        total = np.where(present, contrib, 0.0).sum(axis=0)
        count = present.sum(axis=0)
        out[dim] = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    return pd.DataFrame(out, index=pd.RangeIndex(n))


def graph_dimension(lift_fraud: np.ndarray, lift_benign: np.ndarray) -> np.ndarray:
    """Exposure to fraud net of exposure to known-good users, in [0, 1)."""
    return np.maximum(0.0, lift_fraud - lift_benign) / (lift_fraud + lift_benign + 1.0)


def feature_dimension(feature: str, config: ScoringConfig) -> str:
    """The dimension a model feature belongs to (for explanations)."""
    if feature.startswith("lnk_"):
        return "linked_accounts"
    if feature.startswith("rel_"):
        return "social_network"
    column = feature[4:] if feature.startswith("usr_") else feature
    for dim, specs in config.columns.items():
        for spec in specs:
            if column in (spec.column, spec.denominator):
                return dim
    return "profile"
