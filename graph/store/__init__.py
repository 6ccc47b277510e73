"""Graph stores: the seam between socialrisk and where the graph is kept."""

from graph.store.base import GraphStore
from graph.store.embedded import EmbeddedStore

__all__ = ["GraphStore", "EmbeddedStore"]
