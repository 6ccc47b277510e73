"""socialrisk: graph-based social risk analysis for credit and fraud decisions.

The application package (CLI, settings, workflows). The libraries are ``loaders``, ``graph``
and ``scoring``.
"""

from loaders.errors import SocialRiskError

__version__ = "0.1.0"
__all__ = ["SocialRiskError", "__version__"]
