"""Propagation algorithms: pure functions over sparse matrices, one family per module."""

from graph.propagation.pagerank import personalized_pagerank, transition_transpose
from graph.propagation.result import PropagationResult

__all__ = ["PropagationResult", "personalized_pagerank", "transition_transpose"]
