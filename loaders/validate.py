"""Validate raw tables against the contract and convert them to canonical frames.

A bad value raises :class:`~loaders.errors.DataError` naming the source, the 1-based data row,
the column, the value and what was expected. Checks are vectorised: the first offending row
of each check is reported.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import numpy as np
import pandas as pd

from loaders.errors import DataError
from loaders.normalise import IP_PREFIX_KIND, Normalisation, normalise_identifiers
from loaders.pseudonym import pseudonymise
from loaders.read import RawTable
from loaders.schema import REQUIRED_COLUMNS

__all__ = [
    "DEFAULT_LABEL_MAP",
    "MAX_ID_LENGTH",
    "KIND_PATTERN",
    "validate_users",
    "validate_links",
    "validate_relations",
    "validate_flags",
    "redact",
]

#: Flag labels accepted out of the box and what they mean; extend with ``[labels]`` in the config.
DEFAULT_LABEL_MAP: dict[str, str] = {
    "fraud": "fraud",
    "benign": "benign",
    "mule": "fraud",
    "scam": "fraud",
    "good": "benign",
}
MAX_ID_LENGTH = 256
#: Times before this are refused (a parse of a two-digit year, a zero date).
EARLIEST_TIME = pd.Timestamp("1900-01-01", tz="UTC")
KIND_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,31}$")
_KIND_EXPECTED = "a kind: a lowercase word of letters, digits and '_' (at most 32), such as device, phone, transfer"


def validate_users(raw: RawTable) -> pd.DataFrame:
    """Users: ``user_id`` plus features (numeric columns to float64, others kept as text)."""
    frame = _require(raw)
    out = pd.DataFrame({"user_id": _ids(raw, frame, "user_id")})
    for column in frame.columns:
        if column == "user_id":
            continue
        out[column] = _feature(raw, frame, column)
    return out


def validate_links(raw: RawTable, *, key: bytes, normalisation: Normalisation | None = None) -> pd.DataFrame:
    """Links: ids, kinds, normalised then pseudonymised values, times and weights.

    Each value is normalised by its kind's rule (:mod:`loaders.normalise`) before it is
    hashed, so that one phone or mailbox written two ways is one identifier. Raw values are
    dropped here. A value its kind's rule refuses (an unparsable phone, a malformed email or
    IP address, a card number failing the Luhn check) is a :class:`DataError` naming the row
    and what was expected, its value redacted.

    With ``normalisation.ip_prefix``, the network of every IP address follows the links as one
    more link of kind ``ip_prefix`` (same user, times and weight); ``frame.attrs["derived"]``
    holds the 0-based input row each derived link comes from.
    """
    frame = _require(raw)
    user_id = _ids(raw, frame, "user_id")
    kind = _kinds(raw, frame, "kind")
    value = _ids(raw, frame, "value", expected="a non-empty identifier value")
    config = normalisation or Normalisation()
    canonical = normalise_identifiers(kind, value, config=config)
    for which, positions, expected in canonical.failed:
        bad = pd.Series(False, index=frame.index)
        bad.iloc[positions] = True
        _fail_where(raw, bad, "value", frame["value"], f"for kind {which}: {expected}")
    first_seen = _timestamps(raw, frame, "first_seen")
    last_seen = _timestamps(raw, frame, "last_seen")
    both = first_seen.notna() & last_seen.notna()
    _fail_where(raw, both & (first_seen > last_seen), "last_seen", frame.get("last_seen"), "a time at or after first_seen")
    weight = _numbers(raw, frame, "weight", low=0.0, expected="a finite number >= 0")
    out = pd.DataFrame(
        {
            "user_id": user_id,
            "kind": kind,
            "ident": pseudonymise(kind, canonical.values, key=key),
            "first_seen": first_seen,
            "last_seen": last_seen,
            "weight": weight,
        }
    )
    derived = np.zeros(0, dtype=np.int64)
    if canonical.prefixes is not None:
        derived = np.flatnonzero(canonical.prefixes.notna().to_numpy())
        if len(derived):
            extra = out.iloc[derived].copy()
            kinds = pd.Series(IP_PREFIX_KIND, index=extra.index, dtype="string")
            extra["kind"] = kinds
            extra["ident"] = pseudonymise(kinds, canonical.prefixes.iloc[derived], key=key)
            out = pd.concat([out, extra], ignore_index=True)
    out.attrs["derived"] = derived
    return out


def validate_relations(raw: RawTable) -> pd.DataFrame:
    """Relations: endpoints, kind, signed weight (default 1), time, and extra numeric attributes."""
    frame = _require(raw)
    src = _ids(raw, frame, "src")
    dst = _ids(raw, frame, "dst")
    # Self-relations (a transfer between one's own accounts) are kept as data; the
    # projection leaves them out of propagation because they carry no evidence about others.
    out = pd.DataFrame(
        {
            "src": src,
            "dst": dst,
            "kind": _kinds(raw, frame, "kind"),
            "weight": _numbers(raw, frame, "weight", expected="a finite number (negative for distrust)").fillna(1.0),
            "ts": _timestamps(raw, frame, "ts"),
        }
    )
    for column in frame.columns:
        if column in out.columns:
            continue
        out[column] = _feature(raw, frame, column)
    return out


def validate_flags(raw: RawTable, *, label_map: Mapping[str, str] | None = None) -> pd.DataFrame:
    """Flags: ``label`` mapped to ``fraud``/``benign``, ``severity`` in 0..1 (default 1)."""
    mapping = {k.lower(): v for k, v in (label_map or DEFAULT_LABEL_MAP).items()}
    frame = _require(raw)
    user_id = _ids(raw, frame, "user_id")
    text = frame["label"].astype("string").str.strip().str.lower()
    mapped = text.map(mapping, na_action="ignore")
    known = ", ".join(sorted(mapping))
    _fail_where(
        raw,
        mapped.isna(),
        "label",
        frame["label"],
        f"one of {known} (map other labels to fraud or benign under [labels] in the config)",
    )
    severity = _numbers(raw, frame, "severity", low=0.0, high=1.0, expected="a number from 0 to 1").fillna(1.0)
    source = frame["source"].astype("string").str.strip() if "source" in frame.columns else pd.Series(pd.NA, index=frame.index, dtype="string")
    return pd.DataFrame(
        {
            "user_id": user_id,
            "label": mapped.astype("string"),
            "severity": severity,
            "source": source.fillna(""),
            "ts": _timestamps(raw, frame, "ts"),
        }
    )


# -- checks ---------------------------------------------------------------------------------


def _require(raw: RawTable) -> pd.DataFrame:
    frame = raw.frame
    missing = [c for c in REQUIRED_COLUMNS[raw.name] if c not in frame.columns]
    if missing:
        found = ", ".join(map(str, frame.columns)) or "none"
        raise DataError(
            f"{raw.source}: missing required column(s) {', '.join(missing)} "
            f"for table '{raw.name}' (found: {found})",
            source=raw.source,
            column=missing[0],
            expected=f"columns {', '.join(REQUIRED_COLUMNS[raw.name])}",
        )
    return frame


def _fail_where(raw: RawTable, bad: pd.Series, column: str, values: pd.Series | None, expected: str) -> None:
    bad = bad.fillna(False).astype(bool)
    if bool(bad.any()):
        positions = np.flatnonzero(bad.to_numpy())
        shown = [None if values is None else _shown(raw, column, values.iloc[int(p)]) for p in positions]
        raise DataError(
            source=raw.source, row=int(positions[0]) + 1, column=column, value=shown[0], expected=expected, positions=positions, values=shown
        )


def redact(value: object) -> str:
    """How a raw identifier value appears in errors and reject files: never itself."""
    return f"<identifier value, {len(str(value))} characters>"


def _shown(raw: RawTable, column: str, value: object) -> object:
    if value is not None and value is pd.NA:
        return None
    if raw.name == "links" and column == "value" and value is not None:
        return redact(value)  # a raw phone number or card number must not reach a log
    return value


def _ids(raw: RawTable, frame: pd.DataFrame, column: str, *, expected: str = "a non-empty id") -> pd.Series:
    series = frame[column]
    if pd.api.types.is_float_dtype(series):
        # 12.0 read from a numeric parquet column means the id 12
        whole = series.notna() & (series % 1 == 0)
        text = series.astype("string").where(~whole, series.astype("Int64").astype("string"))
    else:
        text = series.astype("string")
    text = text.str.strip()
    _fail_where(raw, text.isna() | (text.str.len() == 0), column, series, expected)
    _fail_where(raw, text.str.len() > MAX_ID_LENGTH, column, series, f"at most {MAX_ID_LENGTH} characters")
    return text


def _kinds(raw: RawTable, frame: pd.DataFrame, column: str) -> pd.Series:
    text = frame[column].astype("string").str.strip().str.lower()
    codes, uniques = pd.factorize(text)
    ok = np.array([bool(KIND_PATTERN.match(u)) for u in uniques], dtype=bool)
    bad = (codes < 0) | ~ok[np.maximum(codes, 0)] if len(uniques) else codes < 0
    _fail_where(raw, pd.Series(bad, index=frame.index), column, frame[column], _KIND_EXPECTED)
    return text


def _numbers(
    raw: RawTable,
    frame: pd.DataFrame,
    column: str,
    *,
    low: float | None = None,
    high: float | None = None,
    expected: str = "a finite number",
) -> pd.Series:
    if column not in frame.columns:
        return pd.Series(np.nan, index=frame.index, dtype="float64")
    series = frame[column]
    if pd.api.types.is_numeric_dtype(series):
        values = series.astype("float64")
        present = series.notna()
    else:
        text = series.astype("string").str.strip()
        present = text.notna() & (text.str.len() > 0)
        values = pd.to_numeric(text.where(present), errors="coerce").astype("float64")
    bad = present & ~np.isfinite(values.fillna(0.0).to_numpy()) | (present & values.isna())
    if low is not None:
        bad |= present & (values < low)
    if high is not None:
        bad |= present & (values > high)
    _fail_where(raw, bad, column, series, expected)
    return values.where(present)


def _timestamps(raw: RawTable, frame: pd.DataFrame, column: str) -> pd.Series:
    if column not in frame.columns:
        return pd.Series(pd.NaT, index=frame.index, dtype="datetime64[ns, UTC]")
    series = frame[column]
    if pd.api.types.is_datetime64_any_dtype(series):
        values = series if getattr(series.dt, "tz", None) is not None else series.dt.tz_localize("UTC")
        values = values.dt.tz_convert("UTC")
        _check_time_range(raw, values, column, series)
        return values.astype("datetime64[ns, UTC]")
    text = series.astype("string").str.strip()
    present = text.notna() & (text.str.len() > 0)
    values = pd.to_datetime(text.where(present), utc=True, format="ISO8601", errors="coerce")
    _fail_where(raw, present & values.isna(), column, series, "an ISO 8601 time such as 2026-03-01 or 2026-03-01T12:00:00Z")
    _check_time_range(raw, values, column, series)
    return values.astype("datetime64[ns, UTC]")


def _check_time_range(raw: RawTable, values: pd.Series, column: str, series: pd.Series) -> None:
    # before converting to nanoseconds, which cannot hold years past 2262
    _fail_where(raw, values > _latest_time(), column, series, "a time that is not in the future (clock skew of a day is allowed)")
    _fail_where(raw, values < EARLIEST_TIME, column, series, f"a time from {EARLIEST_TIME.year} on")


def _latest_time() -> pd.Timestamp:
    """Times later than this are refused: a future date is a typo or a broken clock, and it
    would make every real link look old to time decay."""
    return pd.Timestamp.now(tz="UTC") + pd.Timedelta(days=1)


def _feature(raw: RawTable, frame: pd.DataFrame, column: str) -> pd.Series:
    """An attribute column: numeric when every present value is a number, text otherwise."""
    series = frame[column]
    if pd.api.types.is_bool_dtype(series):
        return series.astype("float64")
    if pd.api.types.is_numeric_dtype(series):
        values = series.astype("float64")
        _fail_where(raw, values.notna() & ~np.isfinite(values.fillna(0.0)), column, series, "a finite number or an empty cell")
        return values
    if pd.api.types.is_datetime64_any_dtype(series):
        return series.astype("string")
    text = series.astype("string").str.strip()
    present = text.notna() & (text.str.len() > 0)
    values = pd.to_numeric(text.where(present), errors="coerce")
    if bool((present & values.isna()).any()):
        return text.where(present)  # categorical / free text attribute
    values = values.astype("float64")
    _fail_where(raw, present & ~np.isfinite(values.fillna(0.0)), column, series, "a finite number or an empty cell")
    return values
