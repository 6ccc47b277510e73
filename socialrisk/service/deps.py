"""Dependencies of the handlers, as ``Annotated`` aliases: the runtime and the API key check."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from socialrisk.service.auth import ApiKeys
from socialrisk.service.runtime import ServiceRuntime

__all__ = ["RuntimeDep", "KeyId", "require_key"]

_bearer = HTTPBearer(auto_error=False, description="An API key from SOCIALRISK_API_KEYS or the [service] api_keys of the config file.")


async def _runtime(request: Request) -> ServiceRuntime:
    runtime: ServiceRuntime = request.app.state.runtime
    return runtime


async def require_key(request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> str:
    """The id of the API key sent as ``Authorization: Bearer KEY``; 401 without a valid one."""
    challenge = {"WWW-Authenticate": "Bearer"}
    if credentials is None:
        raise HTTPException(401, "missing API key: send the header 'Authorization: Bearer KEY'", headers=challenge)
    keys: ApiKeys = request.app.state.keys
    key_id = keys.check(credentials.credentials)
    if key_id is None:
        raise HTTPException(401, "invalid API key: it is not one of the keys this service was started with", headers=challenge)
    return key_id


RuntimeDep = Annotated[ServiceRuntime, Depends(_runtime)]
KeyId = Annotated[str, Depends(require_key)]
