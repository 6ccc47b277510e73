"""The served scores: the ``scores`` result in memory, one row per user, found in O(1).

Columns are numpy arrays indexed by row; a dict maps user id to row. Rows are rendered to JSON
bytes with orjson on each request (microseconds), so there is no second copy of the table.
Flags applied by the service change rows in place under :attr:`ScoreTable.lock`; a new full
scoring replaces the whole table (one reference swap).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd

from scoring.config import DIMENSIONS
from scoring.credit import credit_score, decide

__all__ = ["ScoreTable", "FlagEvent", "NEW_FRAUD_REASON", "CONFIRMED_FRAUD_REASON", "save_cache", "load_cache"]

#: Reason added to users whose risk a flag raised since the last full scoring.
NEW_FRAUD_REASON = ("LINKED_NEW_FRAUD", "linked to an account confirmed as fraud since the last full scoring")
#: The reason a fraud flag gives its own user (as the scoring pipeline words it).
CONFIRMED_FRAUD_REASON = ("CONFIRMED_FRAUD", "account confirmed as fraud")


@dataclass
class FlagEvent:
    """A flag as applied to served scores, kept so it can be applied again to scores reloaded
    from a scoring that did not include it yet.

    Attributes
    ----------
    flag_id, user_id, label, severity
        The flag (``label`` canonical: ``fraud`` or ``benign``).
    moved : ndarray of str
        Other users whose graph risk the flag moves (users whose fraud exposure moved by too
        little to change it are left out: the event is kept until a scoring includes the flag).
    shift : ndarray of float
        The change of their graph risk (:func:`socialrisk.service.incremental.exposure_shift`),
        never 0.
    cleared_risk : float
        Estimated risk of the flagged user without a fraud flag (used when a fraud flag from the
        last scoring is cleared).
    persisted_snapshot : int or None
        Store snapshot after the flag was written (None until then); a scoring of that snapshot
        or later includes it.
    """

    flag_id: str
    user_id: str
    label: str
    severity: float
    moved: np.ndarray
    shift: np.ndarray
    cleared_risk: float
    persisted_snapshot: int | None = None


#: Columns of a ``scores`` result served as they were written (the decision policy's outputs).
POLICY_COLUMNS: tuple[str, ...] = (
    "fraud_risk", "credit_risk", "fraud_decision", "credit_decision", "principal_reasons", "principal_reason_codes",
    "decision_basis", "review_route", "policy",
)


@dataclass
class ScoreTable:
    """Scores of every user, in memory.

    Served ``risk`` is ``max(base, floor)``: ``base`` is the risk without the user's own fraud
    flag (NaN when the last scoring does not tell it: users flagged fraud then), ``floor`` the
    severity of its own fraud flag (the stored risk of a user flagged fraud at scoring time).
    """

    user_ids: np.ndarray
    index: dict[str, int]
    risk: np.ndarray
    graph_risk: np.ndarray
    credit_score: np.ndarray
    decision: np.ndarray
    reasons: np.ndarray
    reason_codes: np.ndarray
    flag: np.ndarray
    ring_id: np.ndarray
    dims: dict[str, np.ndarray]
    model_version: np.ndarray
    snapshot: np.ndarray
    base: np.ndarray
    floor: np.ndarray
    shifted: np.ndarray
    updated: np.ndarray
    meta: dict[str, Any]
    source: str
    #: The two outputs and the policy's decision of the last full scoring (:data:`POLICY_COLUMNS`).
    policy_columns: dict[str, np.ndarray] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, meta: dict[str, Any], *, source: str) -> "ScoreTable":
        """Build from a ``scores`` result (the last row of a user wins)."""
        frame = frame.drop_duplicates("user_id", keep="last").reset_index(drop=True)
        n = len(frame)
        ids = frame["user_id"].astype(str).to_numpy(dtype=object)

        def text(col: str) -> np.ndarray:
            if col not in frame:
                return np.full(n, "", dtype=object)
            return frame[col].astype(object).where(frame[col].notna(), "").astype(str).to_numpy(dtype=object)

        risk = frame["risk"].to_numpy(dtype=np.float64).copy()
        flag = text("flag")
        fraud = flag == "fraud"
        version = frame["model_version"] if "model_version" in frame else pd.Series([meta.get("model_version")] * n)
        snap = frame["snapshot"] if "snapshot" in frame else pd.Series([meta.get("snapshot", 0)] * n)
        return cls(
            user_ids=ids,
            index=dict(zip(ids.tolist(), range(n))),
            risk=risk,
            graph_risk=frame["graph_risk"].to_numpy(dtype=np.float64).copy(),
            credit_score=frame["credit_score"].to_numpy(dtype=np.int64).copy(),
            decision=text("decision"),
            reasons=text("reasons"),
            reason_codes=text("reason_codes"),
            flag=flag,
            ring_id=text("ring_id"),
            dims={d: frame[f"dim_{d}"].to_numpy(dtype=np.float64) for d in DIMENSIONS if f"dim_{d}" in frame},
            model_version=version.astype(object).where(version.notna(), None).to_numpy(dtype=object),
            snapshot=pd.to_numeric(snap, errors="coerce").fillna(0).to_numpy(dtype=np.int64),
            base=np.where(fraud, np.nan, risk),
            floor=np.where(fraud, risk, 0.0),
            shifted=np.zeros(n),
            updated=np.zeros(n, dtype=bool),
            meta=dict(meta),
            source=source,
            policy_columns={
                c: (frame[c].to_numpy(dtype=np.float64) if c.endswith("_risk") else np.array([sys.intern(v) for v in text(c)], dtype=object))
                for c in POLICY_COLUMNS
                if c in frame
            },
        )

    def __len__(self) -> int:
        return len(self.user_ids)

    def provenance(self) -> dict[str, Any]:
        """What identifies the scoring this table came from."""
        return {k: self.meta.get(k) for k in ("model_version", "config_hash", "snapshot", "written_at")}

    # -- reading -------------------------------------------------------------------------------

    def record(self, i: int, *, stale: bool) -> dict[str, Any]:
        """Row ``i`` as the API's ``Score`` object."""
        flag = self.flag[i]
        ring = self.ring_id[i]
        snapshot = int(self.snapshot[i])
        return {
            "user_id": self.user_ids[i],
            "risk": float(self.risk[i]),
            "graph_risk": float(self.graph_risk[i]),
            "credit_score": int(self.credit_score[i]),
            "decision": self.decision[i],
            "dimensions": {d: (None if v != v else float(v)) for d, a in self.dims.items() for v in (a[i],)},
            "reasons": [r for r in self.reasons[i].split(";") if r],
            "reason_codes": [r for r in self.reason_codes[i].split(";") if r],
            "flag": flag or None,
            "ring_id": ring or None,
            "model_version": self.model_version[i],
            "snapshot": snapshot,
            "stale": stale,
            "updated": bool(self.updated[i]),
            "neutral": False,
            **self._policy_record(i),
        }

    def _policy_record(self, i: int) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for c, a in self.policy_columns.items():
            v = a[i]
            if c.endswith("_risk"):
                out[c] = None if v != v else float(v)
            elif c in ("principal_reasons", "principal_reason_codes"):
                out[c] = [r for r in v.split(";") if r]
            elif c in ("fraud_decision", "credit_decision", "policy"):
                out[c] = v or None
            else:
                out[c] = v
        return out

    def render(self, user_id: str, *, stale: bool) -> bytes | None:
        """The JSON of one user's score, or None for a user without one."""
        i = self.index.get(user_id)
        if i is None:
            return None
        with self.lock:
            return orjson.dumps(self.record(i, stale=stale))

    # -- flags ---------------------------------------------------------------------------------

    def apply(
        self, event: FlagEvent, *, approve_at: int, review_at: int, min_reason_share: float, max_reasons: int, graph_evidence: str = "decide"
    ) -> list[dict[str, Any]]:
        """Apply a flag to the served rows; returns the rows whose score changed (before/after).

        Under ``graph_evidence = "review"`` (the decision policy's), a user whom the flag of
        another account would move to ``reject`` is sent to ``review``: that move is graph
        evidence alone.

        The flagged user: a fraud flag raises its risk to at least the severity; clearing a flag
        drops that floor, and when its stored risk held a fraud flag from the last scoring, its
        risk becomes ``event.cleared_risk``. Every other moved user: ``base`` and ``graph_risk``
        move by ``event.shift`` (clipped to [0, 1]); the risk of users flagged fraud stays at
        least their flag's severity.
        """
        rows = np.array([self.index.get(u, -1) for u in event.moved.tolist()], dtype=np.int64)
        keep = rows >= 0
        rows, shift = rows[keep], event.shift[keep]
        own = self.index.get(event.user_id, -1)
        candidates = np.unique(np.concatenate([rows, [own] if own >= 0 else []]).astype(np.int64))
        if not len(candidates):
            return []
        with self.lock:
            old_risk = self.risk[candidates].copy()
            old_graph = self.graph_risk[candidates].copy()
            old_score = self.credit_score[candidates].copy()
            old_decision = self.decision[candidates].copy()
            if len(rows):
                self.graph_risk[rows] = np.clip(self.graph_risk[rows] + shift, 0.0, 1.0)
                self.base[rows] = np.clip(self.base[rows] + shift, 0.0, 1.0)  # NaN (flagged at scoring) stays NaN
                self.shifted[rows] += shift
            if own >= 0:
                if event.label == "fraud":
                    self.floor[own] = event.severity
                    self.flag[own] = "fraud"
                else:
                    if np.isnan(self.base[own]):
                        self.base[own] = float(np.clip(event.cleared_risk, 0.0, 1.0))
                    self.floor[own] = 0.0
                    self.flag[own] = "benign"
            base = self.base[candidates]
            self.risk[candidates] = np.maximum(np.where(np.isnan(base), 0.0, base), self.floor[candidates])
            moved = (self.risk[candidates] != old_risk) | (self.graph_risk[candidates] != old_graph) | (candidates == own)
            changed = candidates[moved]
            scores = credit_score(self.risk[changed])
            self.credit_score[changed] = scores
            # the table outlives the flags: one string object per decision and per wording of the
            # reasons, not one per row moved (every flag would leave thousands behind)
            decided = np.asarray(decide(scores, approve_at=approve_at, review_at=review_at), dtype=object)
            if graph_evidence == "review":
                graph_only = (decided == "reject") & (changed != own) & (self.flag[changed] != "fraud") & (self.decision[changed] != "reject")
                decided[graph_only] = "review"
                basis = self.policy_columns.get("decision_basis")
                if basis is not None:
                    basis[changed[graph_only]] = "graph_evidence_review"
            self.decision[changed] = [sys.intern(str(d)) for d in decided]
            self.updated[changed] = True
            for r in changed.tolist():
                self._reword(r, min_reason_share=min_reason_share, max_reasons=max_reasons)
            changes = [
                {
                    "user_id": self.user_ids[r], "risk_before": float(old_risk[k]), "risk_after": float(self.risk[r]),
                    "credit_score_before": int(old_score[k]), "credit_score_after": int(self.credit_score[r]),
                    "decision_before": str(old_decision[k]), "decision_after": str(self.decision[r]),
                }
                for k, r in zip(np.flatnonzero(moved).tolist(), changed.tolist())
            ]
        changes.sort(key=lambda c: -abs(c["risk_after"] - c["risk_before"]))
        return changes

    def _reword(self, r: int, *, min_reason_share: float, max_reasons: int) -> None:
        """Keep the reasons in step: the own fraud flag first while it holds, the new-fraud
        reason while the shift since the last scoring is at least ``min_reason_share``."""
        codes = [c for c in self.reason_codes[r].split(";") if c]
        texts = [t for t in self.reasons[r].split(";") if t]
        pairs = list(zip(codes, texts)) if len(codes) == len(texts) else [(c, c) for c in codes]
        pairs = [p for p in pairs if p[0] not in (CONFIRMED_FRAUD_REASON[0], NEW_FRAUD_REASON[0])]
        if self.shifted[r] >= min_reason_share:
            pairs.insert(0, NEW_FRAUD_REASON)
        if self.flag[r] == "fraud":
            pairs.insert(0, CONFIRMED_FRAUD_REASON)
        pairs = pairs[:max_reasons]
        self.reason_codes[r] = sys.intern(";".join(p[0] for p in pairs))
        self.reasons[r] = sys.intern(";".join(p[1] for p in pairs))


# -- the local cache (a copy of the last scores read from the store) -----------------------------


def save_cache(folder: Path, frame: pd.DataFrame, meta: dict[str, Any]) -> None:
    """Keep a copy of the scores read from the store, to answer from when the store is down at
    start-up. Written to temporary names and renamed, the metadata last."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, write in (("scores.parquet", lambda p: frame.to_parquet(p, index=False)),
                        ("scores.json", lambda p: Path(p).write_text(json.dumps(meta, default=str)))):
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", dir=folder)
        os.close(fd)
        try:
            write(tmp)
            os.replace(tmp, folder / name)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def load_cache(folder: Path) -> tuple[pd.DataFrame, dict[str, Any]] | None:
    """The cached scores and their provenance, or None when there is no complete copy."""
    data, meta = folder / "scores.parquet", folder / "scores.json"
    if not (data.exists() and meta.exists()):
        return None
    try:
        return pd.read_parquet(data), dict(json.loads(meta.read_text()))
    except (OSError, ValueError):
        return None
