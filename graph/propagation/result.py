"""The typed result every propagation algorithm returns."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["PropagationResult"]


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
