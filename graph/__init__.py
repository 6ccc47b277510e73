"""Graph: stores, the sparse projection, propagation and explanations."""

from graph.config import GraphConfig, RelationKind
from graph.projection import Projection, project, walk_matrix, walk_transition
from graph.propagation import PropagationResult, personalized_pagerank
from graph.store import EmbeddedStore, GraphStore

__all__ = [
    "GraphConfig",
    "RelationKind",
    "Projection",
    "project",
    "walk_matrix",
    "walk_transition",
    "PropagationResult",
    "personalized_pagerank",
    "EmbeddedStore",
    "GraphStore",
]
