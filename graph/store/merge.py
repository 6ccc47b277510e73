"""How new canonical rows merge into stored ones: the same rules for every store.

- users: upsert by id (a present value replaces the stored one), order kept;
- links: one row per (user, kind, identifier); first/last sightings widen;
- relations and flags: a row is identified by its content hash and its occurrence number among
  identical rows of one load, so loading the same rows twice adds nothing while repeated
  identical events inside one load are all kept.

Every merge returns the stored rows first, in stored order, then new rows in input order, so
a row's position is stable across loads and across stores.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from loaders.load import WriteCounts

__all__ = ["merge_table", "row_hash"]


def merge_table(name: str, old: pd.DataFrame | None, new: pd.DataFrame) -> tuple[pd.DataFrame, WriteCounts]:
    """Merge ``new`` rows of table ``name`` into ``old``; returns the merged table and counts."""
    if name == "users":
        return _merge_users(old, new)
    if name == "links":
        return _merge_links(old, new)
    return _merge_events(old, new)


def row_hash(frame: pd.DataFrame, columns: list[str]) -> np.ndarray:
    if not len(frame):
        return np.zeros(0, dtype=np.uint64)
    part = frame[columns].copy()
    for column in columns:
        if isinstance(part[column].dtype, pd.DatetimeTZDtype):
            part[column] = part[column].astype("int64")
    return pd.util.hash_pandas_object(part, index=False).to_numpy()


def _merge_events(old: pd.DataFrame | None, new: pd.DataFrame) -> tuple[pd.DataFrame, WriteCounts]:
    """Relations and flags: a row is identified by its content and its occurrence number."""
    columns = sorted(c for c in new.columns if not c.startswith("_"))
    new = new.copy()
    new["_key"] = row_hash(new, columns)
    new["_occ"] = new.groupby("_key").cumcount().astype("int64")
    if old is None or not len(old):
        return new.reset_index(drop=True), WriteCounts(added=len(new), unchanged=0)
    seen = pd.MultiIndex.from_arrays([old["_key"], old["_occ"]])
    present = pd.MultiIndex.from_arrays([new["_key"], new["_occ"]]).isin(seen)
    fresh = new.loc[~present]
    frame = pd.concat([old, fresh], ignore_index=True) if len(fresh) else old
    return frame, WriteCounts(added=len(fresh), unchanged=int(present.sum()))


def _merge_users(old: pd.DataFrame | None, new: pd.DataFrame) -> tuple[pd.DataFrame, WriteCounts]:
    """Users: upsert by id; a present value in the new load replaces the stored one.

    Order is kept: stored users first, in stored order, then new users in input order.
    """
    new = new.drop_duplicates("user_id", keep="last")
    if old is None or not len(old):
        return new.reset_index(drop=True), WriteCounts(added=len(new), unchanged=0)
    old_i = old.set_index("user_id")
    new_i = new.set_index("user_id")
    order = old_i.index.append(new_i.index[~new_i.index.isin(old_i.index)])
    columns = list(old_i.columns) + [c for c in new_i.columns if c not in old_i.columns]
    merged = new_i.reindex(index=order, columns=columns).combine_first(old_i.reindex(index=order, columns=columns))
    merged = merged.reindex(index=order, columns=columns)
    common = new_i.index.intersection(old_i.index)
    before = old_i.reindex(index=common, columns=columns)
    after = merged.loc[common, columns]
    same = np.ones(len(common), dtype=bool)
    for c in columns:
        a, b = before[c], after[c]
        same &= ((a == b).fillna(False) | (a.isna() & b.isna())).to_numpy(dtype=bool)
    unchanged = int(same.sum())
    added = len(new_i) - unchanged
    merged.index.name = "user_id"
    return merged.reset_index(), WriteCounts(added=added, unchanged=unchanged)


def _merge_links(old: pd.DataFrame | None, new: pd.DataFrame) -> tuple[pd.DataFrame, WriteCounts]:
    """Links: one row per (user, kind, identifier); times widen to the union of sightings."""
    keys = ["user_id", "kind", "ident"]
    n_new = len(new)
    combined = new if old is None else pd.concat([old, new], ignore_index=True)
    if not len(combined):
        return combined, WriteCounts(0, 0)
    grouped = combined.groupby(keys, sort=False, dropna=False)
    merged = grouped.agg(first_seen=("first_seen", "min"), last_seen=("last_seen", "max"), weight=("weight", "last")).reset_index()
    merged["weight"] = merged["weight"].astype("float64")
    if old is None or not len(old):
        n_unique_new = len(merged)
        return merged, WriteCounts(added=n_unique_new, unchanged=n_new - n_unique_new)
    cols = keys + ["first_seen", "last_seen", "weight"]
    changed = int((~np.isin(row_hash(merged, cols), row_hash(old, cols))).sum())
    return merged, WriteCounts(added=min(changed, n_new), unchanged=n_new - min(changed, n_new))


