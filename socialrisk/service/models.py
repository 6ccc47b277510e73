"""Request and response bodies of the HTTP API (pydantic; they make the OpenAPI schema)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

__all__ = [
    "MAX_BATCH", "EnrichRequest", "BatchRequest", "Score", "BatchResponse", "FlagRequest", "ScoreChange", "FlagAccepted", "FlagStatus",
    "AppealRequest", "AppealStatus", "Explanation", "Neighbourhood", "Readiness", "Health", "ErrorResponse", "ValidationErrorResponse",
]

MAX_BATCH = 1000

UserId = Annotated[str, StringConstraints(min_length=1, max_length=256), Field(description="The user id, as in the input tables.", examples=["u0000567"])]
Decision = Literal["approve", "review", "reject"]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EnrichRequest(_Request):
    user_id: UserId


class BatchRequest(_Request):
    user_ids: Annotated[list[UserId], Field(min_length=1, max_length=MAX_BATCH, description=f"1 to {MAX_BATCH:,} user ids.")]


class Score(BaseModel):
    """A user's served score."""

    user_id: str
    risk: float = Field(ge=0, le=1, description="0..1, higher is riskier; a probability-like number.")
    graph_risk: float = Field(ge=0, le=1, description="The part of risk that comes from the graph.")
    credit_score: int = Field(ge=350, le=950, description="350..950, higher is better.")
    decision: Decision
    dimensions: dict[str, float | None] = Field(description="Score per dimension, 0 = nothing wrong, 1 = worst; null = no data (neutral).")
    reasons: list[str] = Field(description="Reasons in words, most important first; empty when nothing lowers the score.")
    reason_codes: list[str] = Field(description="Stable codes of the same reasons, for systems.")
    flag: Literal["fraud", "benign"] | None = Field(description="The user's own latest flag.")
    ring_id: str | None = Field(description="The ring (users joined by shared identifiers) the user belongs to.")
    model_version: str | None = Field(description="The model version that made the score (null: the transparent scorecard).")
    snapshot: int = Field(description="The store's data snapshot the score was computed on.")
    stale: bool = Field(description="True when the store is unreachable and the score comes from the service's copy.")
    updated: bool = Field(
        description="True when a flag recorded through this service since the last full scoring moved this score: graph risk and risk "
        "moved by the exposure rule described in docs/service.md, the user's own fraud flag sets its risk to at least its severity. "
        "The next full scoring replaces it."
    )
    neutral: bool = Field(description="True for a user without a score when the service is configured to answer with a neutral one.")
    fraud_risk: float | None = Field(None, ge=0, le=1, description="Fraud risk, from every graph signal (as of the last full scoring).")
    credit_risk: float | None = Field(
        None, ge=0, le=1, description="Creditworthiness risk, from the features the decision policy lets it see (as of the last full scoring)."
    )
    fraud_decision: Decision | None = Field(None, description="The fraud output's own decision at the thresholds.")
    credit_decision: Decision | None = Field(None, description="The credit output's own decision at the thresholds.")
    principal_reasons: list[str] = Field(
        default_factory=list, description="For a refusal (review or reject): at most four specific principal reasons, most important first."
    )
    principal_reason_codes: list[str] = Field(default_factory=list, description="Stable codes of the principal reasons.")
    decision_basis: str = Field(
        "", description="What refused: fraud, credit, fraud+credit, or graph_evidence_review (a rejection on graph evidence alone, reviewed instead)."
    )
    review_route: str = Field("", description="For a refusal under a policy that names one: how to obtain a human review and contest it.")
    policy: str | None = Field(None, description="The decision policy the score was made under.")


class BatchResponse(BaseModel):
    results: list[Score] = Field(description="Scores, in the order asked (unknown users left out unless neutral scores are configured).")
    unknown: list[str] = Field(description="Users without a score.")


class FlagRequest(_Request):
    user_id: UserId
    label: Annotated[str, StringConstraints(min_length=1, max_length=64)] = Field(
        description="fraud (or a label mapped to it: mule, scam...), or benign / good to clear a fraud flag.", examples=["fraud"]
    )
    severity: float = Field(1.0, gt=0, le=1, description="Seed weight of a fraud flag, in (0, 1].")
    note: Annotated[str, StringConstraints(max_length=2000)] = Field("", description="Kept in the audit log.")
    actor: Annotated[str, StringConstraints(min_length=1, max_length=100)] | None = Field(
        None, description="Who flags, for the audit log; default: the id of the API key used."
    )


class ScoreChange(BaseModel):
    user_id: str
    risk_before: float
    risk_after: float
    credit_score_before: int
    credit_score_after: int
    decision_before: Decision
    decision_after: Decision


class FlagAccepted(BaseModel):
    flag_id: str
    user_id: str
    label: Literal["fraud", "benign"]
    severity: float
    persisted: bool = Field(description="Whether the flag is in the store yet (it is journaled on disk already; see status_url).")
    users_moved: int = Field(description="Users whose fraud exposure moved.")
    error_bound: float = Field(description="L1 bound of the kept exposure against a full recompute, as a share of the seed mass.")
    scores_changed: list[ScoreChange] = Field(description="The (at most 20) served scores that moved most.")
    scores_changed_total: int
    status_url: str


class FlagStatus(BaseModel):
    flag_id: str
    user_id: str
    label: Literal["fraud", "benign"]
    persisted: bool
    failed: str | None = Field(description="Why the store refused the flag for good (it stays in the journal).")
    snapshot: int | None = Field(description="The store snapshot after the flag was written.")


class AppealRequest(_Request):
    user_id: UserId
    action: Literal["dispute", "withdraw", "clear_flag", "overturn_flag", "counter_evidence"]
    other: Annotated[str, StringConstraints(min_length=1, max_length=512)] | None = Field(
        None, description="For dispute and withdraw: the identifier key (kind:pseudonym) or, with target relation, the other user."
    )
    target: Literal["identifier", "relation"] = "identifier"
    reason: Annotated[str, StringConstraints(min_length=1, max_length=64)] = Field(
        "other", description="Why a link is disputed: stolen_device, public_terminal, family_member, shared_household, other (configurable)."
    )
    note: Annotated[str, StringConstraints(max_length=2000)] = Field("", description="The analyst's note; for counter_evidence, the evidence.")

    @model_validator(mode="after")
    def _needs_link(self) -> "AppealRequest":
        if self.action in ("dispute", "withdraw") and not self.other:
            raise ValueError(f"'{self.action}' needs 'other': the disputed identifier key (kind:pseudonym) or, with target relation, a user id")
        return self


class AppealScore(BaseModel):
    risk: float | None = None
    credit_score: int | None = None
    decision: Decision | None = None
    reasons: str | None = None
    reason_codes: str | None = None
    flag: str | None = None


class AppealStatus(BaseModel):
    appeal_id: str
    user_id: str
    action: str
    status: Literal["queued", "running", "done", "failed"]
    error: str | None
    before: AppealScore | None
    after: AppealScore | None
    users_moved: int | None
    actor: str
    status_url: str


class PathStep(BaseModel):
    source: str
    target: str
    via: str
    kind: Literal["identifier", "relation"]
    when: str | None
    forward: bool
    ident: str | None


class Contribution(BaseModel):
    seed: str = Field(description="The flagged account.")
    share: float = Field(description="Its share of the user's fraud exposure.")
    flagged_on: str | None
    sentence: str
    path: list[PathStep]


class Explanation(Score):
    contributions: list[Contribution] = Field(description="The flagged accounts behind the graph risk, largest share first, with paths.")


class NeighbourNode(BaseModel):
    id: str = Field(description="User id, or identifier key (kind:pseudonym).")
    type: Literal["user", "identifier"]
    hop: int
    ident_kind: str | None
    risk: float | None
    credit_score: int | None
    decision: Decision | None
    fraud_flag: bool | None


class NeighbourEdge(BaseModel):
    source: str
    target: str
    type: Literal["USES", "RELATES"]
    kind: str
    weight: float | None = Field(description="Neo4j: the relationship's weight; embedded: the link weight, or the number of relations of that kind.")
    ts: str | None


class Neighbourhood(BaseModel):
    user_id: str
    hops: int
    limit: int
    store: Literal["embedded", "neo4j"]
    stale: bool
    nodes: list[NeighbourNode]
    edges: list[NeighbourEdge]


class Health(BaseModel):
    status: Literal["ok"]


class StoreHealth(BaseModel):
    kind: str
    reachable: bool
    error: str | None


class ScoresHealth(BaseModel):
    users: int
    source: Literal["store", "cache"]
    stale: bool
    model_version: str | None = None
    config_hash: str | None = None
    snapshot: int | None = None
    written_at: str | None = None


class ModelHealth(BaseModel):
    loaded: bool
    version: str | None
    error: str | None


class Readiness(BaseModel):
    ready: bool
    store: StoreHealth
    scores: ScoresHealth | None
    model: ModelHealth
    graph: str = Field(description="Whether the graph is in memory (flags, explanations and embedded neighbourhoods need it).")
    flags_pending: int = Field(description="Accepted flags not yet written to the store.")


class ErrorResponse(BaseModel):
    detail: str = Field(description="What went wrong and what to do about it.")


class ValidationIssue(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class ValidationErrorResponse(BaseModel):
    detail: str = Field(description="The first problems, in one sentence.")
    errors: list[ValidationIssue]
