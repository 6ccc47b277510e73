"""The service's own error: it cannot answer now, and says when to retry (a 503).

Apart from the runtime so that every part of the service (the runtime, the applicant desk, the
routes) can raise it without importing the runtime.
"""

from __future__ import annotations

import numpy as np

from loaders.errors import SocialRiskError

__all__ = ["Unavailable"]


class Unavailable(SocialRiskError):
    """The service cannot answer this now (store down, graph still loading): 503 with
    ``Retry-After``."""

    def __init__(self, message: str, *, retry_after: float = 5.0) -> None:
        super().__init__(message)
        self.retry_after = max(1, int(np.ceil(retry_after)))
