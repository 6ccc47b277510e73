"""Propagation algorithms: pure functions over sparse matrices, one family per module."""

from graph.propagation.belief import belief_propagation
from graph.propagation.pagerank import personalized_pagerank, transition_transpose
from graph.propagation.push import PushState, PushUpdate, add_edge, add_seed, push_state
from graph.propagation.result import PropagationResult
from graph.propagation.spreading import label_spreading, trustrank

__all__ = [
    "PropagationResult",
    "PushState",
    "PushUpdate",
    "add_edge",
    "add_seed",
    "push_state",
    "belief_propagation",
    "label_spreading",
    "personalized_pagerank",
    "transition_transpose",
    "trustrank",
]
