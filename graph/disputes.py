"""Disputed links: what an analyst said about a link, folded from the audit log.

A dispute never deletes anything. The link stays in the store; the audit log holds the
dispute (who, when, why), and the projection weights the link by what the configured
:attr:`~graph.config.GraphConfig.dispute_weights` leave of it for that reason (0: ignored).
A later ``withdraw_dispute`` entry for the same link restores it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pandas as pd

__all__ = ["DISPUTE", "WITHDRAW", "TARGETS", "active_disputes", "dispute_record"]

DISPUTE = "dispute_link"
WITHDRAW = "withdraw_dispute"
#: What a dispute can be about: the user's link to a shared identifier, or its relations with another user.
TARGETS = ("identifier", "relation")
COLUMNS = ["user_id", "target", "other", "reason", "note", "seq", "at", "actor"]


def dispute_record(user_id: str, target: str, other: str, reason: str, note: str = "", *, withdraw: bool = False) -> dict[str, Any]:
    """The audit record of a dispute (or its withdrawal) of ``user_id``'s link to ``other``.

    ``other`` is an identifier key (``"device:<pseudonym>"``) for ``target="identifier"``,
    another user id for ``target="relation"``.
    """
    if target not in TARGETS:
        raise ValueError(f"dispute target {target!r} must be one of {', '.join(TARGETS)}")
    link = {"target": target, "other": other}
    if withdraw:
        return {"action": WITHDRAW, "user_id": user_id, "before": {**link, "disputed": True}, "after": {**link, "disputed": False}, "detail": {"note": note}}
    return {
        "action": DISPUTE, "user_id": user_id, "before": {**link, "disputed": False},
        "after": {**link, "disputed": True, "reason": reason}, "detail": {"note": note},
    }


def active_disputes(entries: Iterable[Any]) -> pd.DataFrame:
    """The disputes in force after the audit ``entries`` (in log order): one row per disputed
    link, the latest dispute of each, dropping withdrawn ones.

    Returns
    -------
    DataFrame
        ``user_id``, ``target``, ``other``, ``reason``, ``note``, ``seq``, ``at``, ``actor``.
    """
    live: dict[tuple[str, str, str], dict[str, Any]] = {}
    for e in entries:
        if e.action not in (DISPUTE, WITHDRAW):
            continue
        key = (str(e.user_id), str(e.after.get("target")), str(e.after.get("other")))
        if e.action == WITHDRAW:
            live.pop(key, None)
            continue
        live[key] = {
            "user_id": key[0], "target": key[1], "other": key[2], "reason": str(e.after.get("reason", "other")),
            "note": str(e.detail.get("note", "")), "seq": e.seq, "at": e.at, "actor": e.actor,
        }
    return pd.DataFrame(list(live.values()), columns=COLUMNS)
