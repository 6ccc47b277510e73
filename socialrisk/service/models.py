"""Request and response bodies of the HTTP API (pydantic; they make the OpenAPI schema)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

__all__ = [
    "MAX_BATCH", "EnrichRequest", "BatchRequest", "Score", "BatchResponse", "FlagRequest", "ScoreChange", "FlagAccepted", "FlagStatus",
    "AppealRequest", "AppealStatus", "Explanation", "Neighbourhood", "Readiness", "Health", "ErrorResponse", "ValidationErrorResponse",
    "ApplicationRequest", "Application", "EventsRequest", "EventsAccepted", "LinkIn", "RelationIn",
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
    events_pending: int = Field(0, description="Committed applications and event batches not yet written to the store.")


class ErrorResponse(BaseModel):
    detail: str = Field(description="What went wrong and what to do about it.")


class ValidationIssue(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class ValidationErrorResponse(BaseModel):
    detail: str = Field(description="The first problems, in one sentence.")
    errors: list[ValidationIssue]


# -- applications and events -----------------------------------------------------------------------

MAX_ITEMS = 1000
Kind = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,31}$"), Field(description="A lowercase word: device, phone, card, ip, email, transfer, contact...")]
Time = Annotated[str, StringConstraints(min_length=1, max_length=40), Field(description="ISO 8601 time, e.g. 2026-11-30T12:00:00Z.")]


class LinkIn(_Request):
    kind: Kind
    value: Annotated[str, StringConstraints(min_length=1, max_length=256)] = Field(
        description="The identifier's raw value (phone number, device id...): normalised and pseudonymised at once, never stored, "
        "logged or echoed."
    )
    first_seen: Time | None = None
    last_seen: Time | None = None
    weight: float | None = Field(None, ge=0, description="Link weight (default 1).")


class RelationIn(_Request):
    user_id: UserId = Field(description="The other user (known to the service, unless create_missing).")
    kind: Kind
    direction: Literal["out", "in", "both"] = Field("out", description="out: from the applicant to the other user; in: the reverse; both.")
    weight: float | None = Field(None, description="Relation weight (negative: distrust); default 1.")
    ts: Time | None = None


class ApplicationRequest(_Request):
    user_id: UserId
    features: dict[Annotated[str, StringConstraints(min_length=1, max_length=128)], float | None] = Field(
        default_factory=dict, max_length=500, description="Profile columns of the users table (repayments_total, tenure_days...)."
    )
    links: list[LinkIn] = Field(default_factory=list, max_length=MAX_ITEMS, description=f"At most {MAX_ITEMS:,} identifiers.")
    relations: list[RelationIn] = Field(default_factory=list, max_length=MAX_ITEMS, description=f"At most {MAX_ITEMS:,} relations.")
    commit: bool = Field(False, description="false: a what-if, nothing stored; true: journaled, added to the live graph and written to the store.")
    create_missing: bool = Field(False, description="Create users that relations name and the service does not know (bare, no profile).")
    recourse: bool = Field(False, description="For a refused or reviewed applicant: also the smallest changes that would bring an approval.")


class RecourseAction(BaseModel):
    code: str = Field(description="REPAY_LATE, VERIFY_IDENTITY, ADD_ALTERNATIVE_PAYMENTS or DISPUTE_LINK.")
    text: str = Field(description="What the user would do, in words.")
    target: str | None = Field(None, description="The identifier a DISPUTE_LINK is about (pseudonymised short label).")


class RecourseOption(BaseModel):
    actions: list[RecourseAction]
    credit_score: int = Field(description="The credit score the model gives once these actions are done.")
    decision: str
    risk: float


class Recourse(BaseModel):
    """The smallest sets of actions open to a refused or reviewed user that would bring an
    approval, each scored with the model (``socialrisk explain --recourse``)."""

    user_id: str
    credit_score: int = Field(description="Today's credit score, on the features the options were scored against.")
    decision: str
    approves: bool = Field(description="Whether some option reaches approve; when none does, the options are the best improvements found.")
    options: list[RecourseOption]
    considered: list[RecourseAction] = Field(description="Every action open to this user.")
    note: str | None = Field(None, description="Why no action can help, when none can.")


class UserRecourse(Recourse):
    model_version: str | None
    snapshot: int
    pending_events: int = Field(description="Committed events not yet written to the store (they are in the live graph).")
    stale: bool


class Application(Score):
    """An applicant's score, as a full scoring would have given it (the fields of a served score,
    then what the application adds)."""

    explanation: list[dict[str, object]] = Field(description="Flagged accounts behind the graph risk and the path from each.")
    new: bool = Field(description="True when the user was not known before this application.")
    committed: bool
    event_id: str | None = Field(description="Journal id of a committed application (null for a what-if).")
    pending_events: int = Field(description="Committed events not yet written to the store when it was scored (they are in the live graph).")
    users_moved: int = Field(description="Other users whose fraud exposure moved (committed applications only).")
    ignored_features: list[str] = Field(description="Features sent that are not profile columns of the load.")
    created: list[str] = Field(default_factory=list, description="Users created for relations (create_missing).")
    recourse: Recourse | None = Field(None, description="Asked for with recourse: true, for an applicant not approved.")


class EventUser(_Request):
    user_id: UserId
    features: dict[Annotated[str, StringConstraints(min_length=1, max_length=128)], float | None] = Field(default_factory=dict, max_length=500)


class EventLink(LinkIn):
    user_id: UserId


class EventRelation(_Request):
    src: UserId
    dst: UserId
    kind: Kind
    weight: float | None = None
    ts: Time | None = None


class EventsRequest(_Request):
    users: list[EventUser] = Field(default_factory=list, max_length=MAX_ITEMS)
    links: list[EventLink] = Field(default_factory=list, max_length=MAX_ITEMS)
    relations: list[EventRelation] = Field(default_factory=list, max_length=MAX_ITEMS)
    create_missing: bool = Field(False, description="Create users that links or relations name and the service does not know.")


class EventsAccepted(BaseModel):
    event_ids: list[str]
    users: int
    links: int
    relations: int
    users_moved: int
    pending_events: int
