"""The HTTP routes. Thin: each validates its input (pydantic), calls the runtime, and answers."""

from __future__ import annotations

from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Header, Path, Query, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from loaders.errors import ParameterError
from socialrisk.service.deps import KeyId, RuntimeDep, require_key
from socialrisk.service.metrics import CONTENT_TYPE_LATEST
from socialrisk.service.models import (
    AppealRequest,
    AppealStatus,
    Application,
    UserRecourse,
    ApplicationRequest,
    EventsAccepted,
    EventsRequest,
    BatchRequest,
    BatchResponse,
    EnrichRequest,
    ErrorResponse,
    Explanation,
    FlagAccepted,
    FlagRequest,
    FlagStatus,
    Health,
    Neighbourhood,
    Readiness,
    Score,
    ValidationErrorResponse,
)

__all__ = ["scores", "flags", "appeals", "applications", "users", "health", "MAX_NEIGHBOURHOOD"]

#: Neighbourhoods are bounded: ``limit ** hops`` may not pass this.
MAX_NEIGHBOURHOOD = 100_000

_RETRY = {"Retry-After": {"description": "Seconds to wait before trying again.", "schema": {"type": "integer"}}}
_AUTH: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorResponse, "description": "Missing or invalid API key."},
    422: {"model": ValidationErrorResponse, "description": "Malformed input; the message says which field and why."},
    503: {"model": ErrorResponse, "description": "Not available now (store down, graph loading); retry after Retry-After.", "headers": _RETRY},
}
_404: dict[int | str, dict[str, Any]] = {404: {"model": ErrorResponse, "description": "Unknown user (or id)."}}

UserPath = Annotated[str, Path(min_length=1, max_length=256, description="The user id.")]
_secured = [Depends(require_key)]


class JSONBytes(Response):
    """A body already rendered to JSON bytes (orjson)."""

    media_type = "application/json"


scores = APIRouter(prefix="/v1", tags=["scores"], dependencies=_secured, responses=_AUTH)


@scores.post("/enrich", response_model=Score, responses=_404, summary="One user's score, graph risk, decision and reasons")
async def enrich(body: EnrichRequest, runtime: RuntimeDep) -> Response:
    """The precomputed score of a user, as last scored and moved since by flags.

    ``stale`` is true while the store is unreachable (the answer comes from the service's copy).
    An unknown user gets 404, or a neutral score (``neutral: true``) when the service is
    configured with ``unknown_user = "neutral"``."""
    return JSONBytes(runtime.enrich(body.user_id))


@scores.post("/enrich/batch", response_model=BatchResponse, summary="Scores of up to 1,000 users")
def enrich_batch(body: BatchRequest, runtime: RuntimeDep) -> Response:
    """Scores of several users in one call, in the order asked; users without a score are listed
    in ``unknown`` (or get neutral scores when so configured)."""
    return JSONBytes(runtime.enrich_many(body.user_ids))


@scores.post("/scores/reload", response_model=Readiness, summary="Reload the scores from the store now")
def reload_scores(runtime: RuntimeDep) -> Any:
    """Read the store's latest ``scores`` result now instead of at the next refresh. Flags
    accepted since that scoring are applied to it again."""
    return runtime.reload()


flags = APIRouter(prefix="/v1", tags=["flags"], dependencies=_secured, responses=_AUTH)


@flags.post("/flags", status_code=202, response_model=FlagAccepted, responses=_404, summary="Record a new or cleared flag")
def create_flag(body: FlagRequest, runtime: RuntimeDep, key_id: KeyId) -> Any:
    """Flag a user (``fraud``, or ``benign`` to clear a fraud flag) and apply it at once.

    The flag is journaled on disk before this answers, and the served scores that it moves are
    updated before this answers; it is written to the store (and the audit log) right after, in
    the background, retried while the store is down. ``status_url`` tells when it is there."""
    return runtime.flag(body.user_id, body.label, body.severity, note=body.note, actor=body.actor or key_id)


@flags.get("/flags/{flag_id}", response_model=FlagStatus, responses=_404, summary="Whether a flag is in the store yet")
def flag_status(flag_id: Annotated[str, Path(min_length=1, max_length=64)], runtime: RuntimeDep) -> Any:
    return runtime.flag_state(flag_id)


applications = APIRouter(prefix="/v1", tags=["applications"], dependencies=_secured, responses=_AUTH)


@applications.post("/applications", response_model=Application, responses=_404, summary="Score an applicant at application time")
def create_application(
    body: ApplicationRequest, runtime: RuntimeDep, key_id: KeyId,
    idempotency_key: Annotated[str | None, Header(min_length=1, max_length=128, description="Repeating a committed application with the "
                                                  "same key returns the first answer and adds nothing.")] = None,
) -> Any:
    """Score a user (new, or known with new links and relations) from what its application
    carries, as a full scoring would have scored it: the identifiers are normalised and
    pseudonymised at once (never stored, logged or echoed), the user is placed in the live
    graph (its exposure from local push) and scored with the current model version.

    ``commit: false`` is a what-if: nothing is stored and the graph is unchanged.
    ``commit: true`` journals the application (synced to disk) before answering, keeps the user
    and its edges in the live graph (``enrich`` answers it at once; the exposure of the users
    its edges reach moves) and writes it to the store in the background, in acceptance order."""
    return runtime.application(body.model_dump(), idempotency_key=idempotency_key, actor=key_id)


@applications.post("/events", status_code=202, response_model=EventsAccepted, responses=_404, summary="Users, links and relations that happened")
def create_events(body: EventsRequest, runtime: RuntimeDep, key_id: KeyId) -> Any:
    """Account changes for existing or new users (up to 1,000 of each), journaled, placed in the
    live graph and written to the store as committed applications are."""
    return runtime.account_events(body.model_dump(), actor=key_id)


appeals = APIRouter(prefix="/v1", tags=["appeals"], dependencies=_secured, responses=_AUTH)


@appeals.post("/appeals", status_code=202, response_model=AppealStatus, responses=_404, summary="Apply an appeal action")
def create_appeal(body: AppealRequest, runtime: RuntimeDep, key_id: KeyId) -> Any:
    """Dispute or withdraw a link, clear or overturn a fraud flag, or record counter-evidence
    (see ``socialrisk appeal``). Every user is rescored with the current model version, which
    takes seconds to minutes, so the answer is a status to poll at ``status_url``; flags
    accepted before are written first."""
    return runtime.appeal(body.user_id, body.action, other=body.other, target=body.target, reason=body.reason, note=body.note, actor=key_id)


@appeals.get("/appeals/{appeal_id}", response_model=AppealStatus, responses=_404, summary="The state and outcome of an appeal")
def appeal_status(appeal_id: Annotated[str, Path(min_length=1, max_length=64)], runtime: RuntimeDep) -> Any:
    return runtime.appeal_state(appeal_id)


users = APIRouter(prefix="/v1/users", tags=["users"], dependencies=_secured, responses=_AUTH)


@users.get("/{user_id}/explanation", response_model=Explanation, responses=_404, summary="Why a user has its score")
def explanation(
    user_id: UserPath, runtime: RuntimeDep, top: Annotated[int, Query(ge=1, le=20, description="Flagged accounts to list.")] = 5
) -> Any:
    """The served score with its reasons and dimensions, and the flagged accounts behind its
    graph risk with the most probable path from each (``socialrisk explain``)."""
    return runtime.explanation(user_id, top=top)


@users.get("/{user_id}/recourse", response_model=UserRecourse, responses=_404, summary="What would bring a refused user an approval")
def user_recourse(user_id: UserPath, runtime: RuntimeDep) -> Any:
    """For a refused or reviewed user: the smallest sets of actions it can take (repay late
    repayments, verify its identity, add alternative-payment history, dispute a link) that
    would bring ``approve``, each with the score the current model gives, computed on the live
    graph (``socialrisk explain --recourse``). 422 for an approved user."""
    return runtime.recourse(user_id)


@users.get("/{user_id}/neighbourhood", response_model=Neighbourhood, responses=_404, summary="A bounded neighbourhood with risks")
async def neighbourhood(
    user_id: UserPath,
    runtime: RuntimeDep,
    hops: Annotated[int, Query(ge=1, le=3, description="Steps from the user (a link to an identifier is one, a relation one).")] = 2,
    limit: Annotated[int, Query(ge=1, le=100, description="Neighbours expanded per node, riskiest first.")] = 50,
) -> Any:
    """Users and shared identifiers around a user, with served risks; from Neo4j when it is the
    store (503 with Retry-After when it does not answer within the service's store timeout),
    from the graph in memory otherwise. ``limit ** hops`` may be at most 100,000."""
    if limit**hops > MAX_NEIGHBOURHOOD:
        raise ParameterError(f"limit ** hops must be at most {MAX_NEIGHBOURHOOD:,}. Got limit {limit} and hops {hops} ({limit**hops:,}) instead; "
                             "ask for fewer hops or a smaller limit")
    if runtime.store_kind == "embedded":
        body = await run_in_threadpool(runtime.local_neighbourhood, user_id, hops=hops, limit=limit)
    else:
        body = await runtime.store_neighbourhood(user_id, hops=hops, limit=limit)
    # thousands of nodes at 2 hops: rendered by orjson from the typed body the runtime builds,
    # not validated field by field again and rendered by the standard library (most of a
    # request's time in the service)
    return JSONBytes(orjson.dumps(body))


health = APIRouter(tags=["health"])


@health.get("/healthz", response_model=Health, summary="The process is alive")
async def healthz() -> Any:
    return {"status": "ok"}


@health.get("/readyz", response_model=Readiness, responses={503: {"model": Readiness, "description": "Not ready: see which part."}},
            summary="Store reachable, scores and model loaded")
async def readyz(runtime: RuntimeDep) -> Any:
    state = runtime.readiness()
    return JSONResponse(Readiness.model_validate(state).model_dump(mode="json"), status_code=200 if state["ready"] else 503)


@health.get("/metrics", response_class=Response, summary="Prometheus metrics",
            responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}, "description": "Prometheus text format."}})
async def metrics(runtime: RuntimeDep) -> Response:
    runtime.metrics.stale.set(1 if runtime.stale else 0)
    return Response(runtime.metrics.render(), media_type=CONTENT_TYPE_LATEST)
