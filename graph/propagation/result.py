"""The typed result every propagation algorithm returns."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["PropagationResult", "Transition"]


@dataclass(frozen=True)
class PropagationResult:
    """Scores and convergence report of a propagation.

    Attributes
    ----------
    scores : ndarray, shape (n_nodes,) or (n_nodes, n_vectors)
        One score per node (per seed vector when several were solved together).
    n_iter : int
        Iterations run.
    converged : bool
        Whether the change between iterations fell below the tolerance before ``max_iter``.
    residual : float
        The last change between iterations (L1 norm, largest over seed vectors).
    """

    scores: np.ndarray
    n_iter: int
    converged: bool
    residual: float


class Transition(tuple):  # type: ignore[type-arg]
    """``(PT, dangling)``: the transpose of a row-stochastic transition matrix and the mask of
    nodes without out-edges, as :func:`graph.propagation.transition_transpose` returns, and
    whether the walk is reversible.

    A walk is reversible when its adjacency is symmetric up to a diagonal scaling
    (``S A`` symmetric for some positive diagonal ``S``); its transition matrix then has real
    eigenvalues, which lets :func:`~graph.propagation.personalized_pagerank` use Chebyshev
    acceleration. :func:`graph.projection.walk_transition` says so when every relation kind
    is walked both ways. Unpacks as the plain pair.
    """

    reversible: bool

    def __new__(cls, matrix: object, dangling: np.ndarray, *, reversible: bool = False) -> "Transition":
        out = super().__new__(cls, (matrix, dangling))
        out.reversible = bool(reversible)
        return out
