"""Request ids: every request gets one, its response says it (``X-Request-Id``), and the
service's log lines and journal records written while it runs carry it, so that a decision
can be traced from the caller's logs to ours and to the audit trail.

A caller may send its own ``X-Request-Id`` (1 to 128 printable ASCII characters, no spaces);
anything else is replaced by a fresh id, never echoed.
"""

from __future__ import annotations

import logging
import re
import uuid
from contextvars import ContextVar
from typing import Any

__all__ = ["REQUEST_ID", "RequestIdFilter", "RequestIdMiddleware", "current_request_id", "LOG_FORMAT"]

#: The id of the request being handled ("" outside requests: the service's own threads).
REQUEST_ID: ContextVar[str] = ContextVar("socialrisk_request_id", default="")
#: What a caller's own id may be.
_VALID = re.compile(rb"[!-~]{1,128}")
#: The log line of ``socialrisk serve``.
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"


def current_request_id() -> str:
    return REQUEST_ID.get()


class RequestIdFilter(logging.Filter):
    """Adds ``request_id`` to every record (``-`` outside a request) for :data:`LOG_FORMAT`."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = REQUEST_ID.get() or "-"
        return True


class RequestIdMiddleware:
    """Pure ASGI middleware: sets :data:`REQUEST_ID` for the request and the response header."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = next((v for k, v in scope.get("headers", ()) if k == b"x-request-id"), None)
        rid = given.decode("ascii") if given is not None and _VALID.fullmatch(given) else uuid.uuid4().hex
        token = REQUEST_ID.set(rid)

        async def send_with_id(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), (b"x-request-id", rid.encode("ascii"))]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            REQUEST_ID.reset(token)
