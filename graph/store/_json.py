"""Plain JSON values, and the one canonical encoding that hashes are taken over."""

from __future__ import annotations

import datetime as _dt
import json
from typing import Any

from loaders.errors import ParameterError

__all__ = ["canonical_json", "plain_json"]


def canonical_json(value: Any) -> str:
    """``value`` as compact JSON with sorted keys: equal values give equal text, so hashes match."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)


def plain_json(value: Any, *, what: str) -> Any:
    """``value`` as it will read back from JSON (numpy scalars to Python, datetimes to ISO text).

    Stored records are normalised once, before hashing, so an entry hashes the same before
    it is written and after it is read back.

    Raises
    ------
    ParameterError
        A value JSON cannot hold (an object, NaN or infinity); ``what`` names the field.
    """
    try:
        return json.loads(json.dumps(value, default=_default, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise ParameterError(f"{what} must hold only JSON values (text, numbers, true/false, null, lists, objects). Got {exc}.") from exc


def _default(value: Any) -> Any:
    item = getattr(value, "item", None)
    if callable(item) and type(value).__module__ == "numpy":
        return item()
    if isinstance(value, (_dt.datetime, _dt.date)):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} {value!r:.60} is not JSON")
