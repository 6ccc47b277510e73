"""The FastAPI application: routes, error handlers, metrics, and the runtime's life cycle."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from graph.store import GraphStore
from loaders.errors import ConfigError, DataError, NotFoundError, ParameterError, StoreError
from socialrisk import __version__
from socialrisk.service import routes
from socialrisk.service.auth import ApiKeys, api_keys
from socialrisk.service.metrics import MetricsMiddleware
from socialrisk.service.requests import RequestIdMiddleware
from socialrisk.service.runtime import ServiceRuntime, Unavailable
from socialrisk.settings import DEFAULT_WORKSPACE, Settings

__all__ = ["create_app"]

log = logging.getLogger("socialrisk.service")

DESCRIPTION = """\
Enrich credit and fraud decisions with graph risk: precomputed scores (risk, graph risk, credit
score, decision, dimensions, reason codes, ring), kept current by flags, with explanations,
appeals and analysts' neighbourhoods.

Every `/v1` route needs `Authorization: Bearer KEY` with a key from `SOCIALRISK_API_KEYS`.
Malformed input gets 422 with a message naming the field; a store that does not answer gets 503
with `Retry-After`, and `enrich` goes on answering from the service's copy with `stale: true`.
"""


def create_app(
    settings: Settings,
    store_kind: str = "embedded",
    workspace: str | Path = DEFAULT_WORKSPACE,
    *,
    runtime: ServiceRuntime | None = None,
    keys: ApiKeys | None = None,
    open_store: Callable[[str, str | Path], GraphStore] | None = None,
) -> FastAPI:
    """The HTTP service over the workspace (and store) that ``load`` and ``score`` produced.

    Parameters
    ----------
    settings : Settings
        Its ``service`` part configures the service (keys, unknown users, timeouts).
    store_kind : {"embedded", "neo4j"}
    workspace : path
    runtime : ServiceRuntime, optional
        A runtime made (and maybe started) by the caller; by default one is made here and
        started when the app starts.
    keys : ApiKeys, optional
        Default: :func:`socialrisk.service.auth.api_keys` from the environment and settings.
    open_store : callable, optional
        Passed to the runtime (tests use fakes).

    Raises
    ------
    ConfigError
        No API key configured, or a weak one.
    """
    keys = keys if keys is not None else api_keys(settings.service)
    runtime = runtime or ServiceRuntime(settings, store_kind, workspace, open_store=open_store)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime.start()
        try:
            yield
        finally:
            await run_in_threadpool(runtime.stop)

    app = FastAPI(
        title="socialrisk", version=__version__, description=DESCRIPTION, lifespan=lifespan,
        openapi_tags=[
            {"name": "scores", "description": "Served scores."},
            {"name": "flags", "description": "New and cleared flags, applied at once."},
            {"name": "appeals", "description": "Appeal actions (rescoring)."},
            {"name": "users", "description": "Explanations and neighbourhoods."},
            {"name": "health", "description": "Liveness, readiness and metrics (no key needed)."},
        ],
    )
    app.state.runtime = runtime
    app.state.keys = keys
    for router in (routes.scores, routes.flags, routes.applications, routes.appeals, routes.users, routes.health):
        app.include_router(router)
    _handlers(app)
    app.add_middleware(MetricsMiddleware, metrics=runtime.metrics)
    app.add_middleware(RequestIdMiddleware)  # outermost: errors and metrics see the id too
    return app


def _handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"loc": [p if isinstance(p, (str, int)) else str(p) for p in e.get("loc", ())], "msg": str(e.get("msg", "")),
                   "type": str(e.get("type", ""))} for e in exc.errors()]
        parts = []
        for e, raw in zip(errors[:3], exc.errors()[:3]):
            where = ".".join(str(p) for p in e["loc"][1:]) or (str(e["loc"][0]) if e["loc"] else "request")
            shown = raw.get("input")
            got = f" (got {shown!r})" if isinstance(shown, (str, int, float, bool)) and len(repr(shown)) <= 60 and e["type"] != "missing" else ""
            parts.append(f"{where}: {e['msg']}{got}")
        more = f"; and {len(errors) - 3} more" if len(errors) > 3 else ""
        return JSONResponse({"detail": "; ".join(parts) + more, "errors": errors}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400:
            # a body that is not even text (FastAPI says 400): malformed input like any other, 422
            msg = "the request body is not JSON text (it could not be decoded as UTF-8)"
            return JSONResponse({"detail": f"body: {msg}", "errors": [{"loc": ["body"], "msg": msg, "type": "json_invalid"}]}, status_code=422)
        return JSONResponse({"detail": str(exc.detail)}, status_code=exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(ParameterError)
    async def bad_parameter(request: Request, exc: ParameterError) -> JSONResponse:
        return JSONResponse({"detail": str(exc), "errors": [{"loc": ["body"], "msg": str(exc), "type": "value_error"}]}, status_code=422)

    @app.exception_handler(DataError)
    async def bad_data(request: Request, exc: DataError) -> JSONResponse:
        # the loader's message: where and what was expected, identifier values redacted
        return JSONResponse({"detail": str(exc), "errors": [{"loc": ["body"], "msg": str(exc), "type": "value_error"}]}, status_code=422)

    @app.exception_handler(NotFoundError)
    async def not_found(request: Request, exc: NotFoundError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @app.exception_handler(Unavailable)
    async def unavailable(request: Request, exc: Unavailable) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=503, headers={"Retry-After": str(exc.retry_after)})

    @app.exception_handler(StoreError)
    async def store_failed(request: Request, exc: StoreError) -> JSONResponse:
        runtime: ServiceRuntime = request.app.state.runtime
        runtime.metrics.store_errors.labels("request").inc()
        return JSONResponse({"detail": f"the store failed: {exc}"}, status_code=503,
                            headers={"Retry-After": str(max(1, int(2 * runtime.config.health_seconds)))})

    @app.exception_handler(ConfigError)
    async def misconfigured(request: Request, exc: ConfigError) -> JSONResponse:
        log.error("configuration error: %s", exc)
        return JSONResponse({"detail": f"the service is misconfigured: {exc}"}, status_code=500)

    @app.exception_handler(Exception)
    async def crashed(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse({"detail": f"internal error ({type(exc).__name__}); the service log has the details"}, status_code=500)


