"""Graph stores: the seam between socialrisk and where the graph is kept."""

from graph.store.audit import AuditEntry
from graph.store.base import GraphStore
from graph.store.embedded import EmbeddedStore
from graph.store.models import new_model_version

__all__ = ["GraphStore", "EmbeddedStore", "AuditEntry", "new_model_version"]
