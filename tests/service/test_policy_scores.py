"""The served table keeps the decision policy: a flag on another account never rejects under review."""

from __future__ import annotations

import numpy as np
import pandas as pd

from socialrisk.service.scores import FlagEvent, ScoreTable


def _table() -> ScoreTable:
    frame = pd.DataFrame(
        {
            "user_id": ["a", "b", "f"],
            "risk": [0.30, 0.30, 0.10],
            "graph_risk": [0.0, 0.0, 0.0],
            "credit_score": [661, 661, 758],
            "decision": ["approve", "approve", "approve"],
            "reasons": ["", "", ""],
            "reason_codes": ["", "", ""],
            "flag": ["", "fraud", ""],
            "ring_id": ["", "", ""],
            "fraud_risk": [0.30, 0.30, 0.10],
            "credit_risk": [0.05, 0.05, 0.05],
            "decision_basis": ["", "", ""],
            "policy": ["eu", "eu", "eu"],
        }
    )
    return ScoreTable.from_frame(frame, {"model_version": "m"}, source="store")


def _flag(table: ScoreTable, graph_evidence: str) -> dict[str, str]:
    # f is flagged fraud; its exposure pushes a (and b) by 0.6
    event = FlagEvent("x", "f", "fraud", 1.0, np.array(["a", "b"]), np.array([0.6, 0.6]), 0.1)
    table.apply(event, approve_at=650, review_at=550, min_reason_share=0.02, max_reasons=4, graph_evidence=graph_evidence)
    return dict(zip(table.user_ids.tolist(), table.decision.tolist()))


def test_graph_exposure_alone_reviews_under_review_and_rejects_otherwise() -> None:
    # b was flagged fraud at scoring (its stored risk is its flag's floor: exposure does not move it)
    assert _flag(_table(), "decide") == {"a": "reject", "b": "approve", "f": "reject"}
    reviewed = _table()
    # a is moved by another account's flag alone: review; f is rejected on its own new flag
    assert _flag(reviewed, "review") == {"a": "review", "b": "approve", "f": "reject"}
    record = orjson_record(reviewed, "a")
    assert record["decision_basis"] == "graph_evidence_review" and record["policy"] == "eu"
    assert record["credit_risk"] == 0.05


def orjson_record(table: ScoreTable, user: str) -> dict:  # type: ignore[type-arg]
    return table.record(table.index[user], stale=False)
