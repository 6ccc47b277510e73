"""The HTTP scoring service (FastAPI): ``socialrisk serve``.

Precomputed scores in memory, kept current by flags, with explanations, appeals and
neighbourhoods; see ``docs/service.md``.
"""

from socialrisk.service.app import create_app
from socialrisk.service.auth import ApiKeys, api_keys
from socialrisk.service.runtime import ServiceRuntime, Unavailable

__all__ = ["create_app", "ServiceRuntime", "Unavailable", "ApiKeys", "api_keys"]
