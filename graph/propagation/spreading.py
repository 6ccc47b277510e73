"""Label spreading over two classes (fraud, benign), and TrustRank from known-good seeds."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from numpy.typing import ArrayLike

from graph.propagation.belief import _check_iteration, _require_evidence, _seed_matrix, _seed_pair, _square, _symmetrised_python
from graph.propagation.pagerank import personalized_pagerank
from graph.propagation.result import PropagationResult
from loaders.errors import ParameterError

__all__ = ["label_spreading", "trustrank"]


def label_spreading(
    adjacency: sp.spmatrix | sp.sparray,
    *,
    fraud_seeds: ArrayLike | None = None,
    benign_seeds: ArrayLike | None = None,
    alpha: float = 0.9,
    prior: float = 0.5,
    tol: float = 1e-8,
    max_iter: int = 1000,
) -> PropagationResult:
    r"""Fraud score of every node by label spreading with fraud and benign seeds.

    Solves Zhou et al.'s [1]_ iteration :math:`F = \alpha S F + (1 - \alpha) Y` with
    :math:`S = D^{-1/2} W D^{-1/2}`, starting from :math:`F = Y`, where :math:`Y` holds two
    columns (fraud and benign seed weights) and :math:`W` the symmetrised weights. The
    spectral radius of :math:`S` is at most 1, so the iteration converges geometrically with
    ratio ``alpha``. The fraud score is the normalised class mass
    :math:`F_{fraud} / (F_{fraud} + F_{benign})`: the :math:`D^{1/2}` factor of :math:`F`
    cancels in it, so hubs are not favoured.

    With fraud seeds only, every node they reach scores 1 (and with benign seeds only, 0):
    the score says which class's evidence is nearer, and ranks only when both are present.

    Parameters
    ----------
    adjacency : sparse matrix, shape (n, n)
        Non-negative edge weights; symmetrised as ``(A + A.T) / 2`` and the diagonal dropped
        (``W_ii = 0``, as in [1]_).
    fraud_seeds, benign_seeds : array-like of shape (n,) or (n, k), optional
        Boolean masks or non-negative weights (the rows of :math:`Y`). Both take the same
        shape; ``k`` columns are ``k`` independent seed sets solved together.
    alpha : float
        Share of a node's mass received from its neighbours at each step, in (0, 1);
        ``1 - alpha`` is the share kept from its own seed weight.
    prior : float
        Score, in [0, 1], of a node that no seed reaches (no mass of either class), e.g. an
        isolated node.
    tol : float
        Stop when the L1 change of every class column of :math:`F` is below ``tol``.
    max_iter : int
        Iteration limit; the result says whether it converged before it.

    Returns
    -------
    PropagationResult
        ``scores``: fraud score in [0, 1], of the seeds' shape.

    Raises
    ------
    ParameterError
        On a non-square or negative adjacency, seeds of the wrong shape or negative, a seed
        column with no fraud and no benign seed, or parameters out of range.

    References
    ----------
    .. [1] D. Zhou, O. Bousquet, T. N. Lal, J. Weston, B. Schölkopf, "Learning with local and
       global consistency", NIPS 2004.

    Examples
    --------
    On the path 0 - 1 - 2 with a fraud seed at 0, a benign seed at 2 and ``alpha = 1/2``,
    the fraud column is ``(7/12, sqrt(2)/6, 1/12)`` and the benign one its mirror image:

    >>> import numpy as np, scipy.sparse as sp
    >>> A = sp.csr_matrix(np.array([[0, 1, 0], [1, 0, 1], [0, 1, 0]], dtype=float))
    >>> r = label_spreading(A, fraud_seeds=np.array([1.0, 0, 0]), benign_seeds=np.array([0, 0, 1.0]), alpha=0.5)
    >>> bool(r.converged), [round(float(v), 4) for v in r.scores]  # 7/8, 1/2, 1/8
    (True, [0.875, 0.5, 0.125])
    """
    name = "label_spreading"
    if not 0.0 < alpha < 1.0:
        raise ParameterError(f"The 'alpha' parameter of {name} must be in (0, 1). Got {alpha!r} instead.")
    if not 0.0 <= prior <= 1.0:
        raise ParameterError(f"The 'prior' parameter of {name} must be in [0, 1]. Got {prior!r} instead.")
    _check_iteration(name, tol, max_iter)
    A = _square(name, adjacency)
    if A.nnz and A.data.min() < 0:
        raise ParameterError(f"The adjacency of {name} must have non-negative weights (use belief_propagation for signed edges).")
    n = A.shape[0]
    Fs, Bs, vector = _seed_pair(name, fraud_seeds, benign_seeds, n, upper=None)
    _require_evidence(name, Fs, Bs)
    k = Fs.shape[1]
    S = _normalized_adjacency(A)
    Y = np.hstack([Fs, Bs])
    restart = (1.0 - alpha) * Y
    F = Y.copy()
    residual = np.inf
    n_iter = 0
    converged = False
    for n_iter in range(1, int(max_iter) + 1):
        F_new = S @ F
        F_new *= alpha
        F_new += restart
        residual = float(np.abs(F_new - F).sum(axis=0).max())
        F = F_new
        if residual < tol:
            converged = True
            break
    fraud, benign = F[:, :k], F[:, k:]
    mass = fraud + benign
    scores = np.full_like(mass, prior)
    live = mass > 0
    scores[live] = fraud[live] / mass[live]
    return PropagationResult(scores=scores[:, 0] if vector else scores, n_iter=n_iter, converged=converged, residual=residual)


def trustrank(
    adjacency: sp.spmatrix | sp.sparray,
    *,
    benign_seeds: ArrayLike,
    alpha: float = 0.85,
    tol: float = 1e-10,
    max_iter: int = 500,
    transition: tuple[sp.csr_matrix, np.ndarray] | None = None,
) -> PropagationResult:
    r"""TrustRank: trust propagated from known-good seeds, the counter-evidence to fraud risk.

    Gyöngyi et al. [1]_ observe that good nodes seldom point to bad ones, so a walk that
    restarts at hand-checked good seeds visits mostly good nodes: its stationary
    distribution is a *trust* score, low for nodes that the good part of the graph does not
    reach. This is personalized PageRank (:func:`personalized_pagerank`) with the restart
    spread over the benign seeds in proportion to their weight (the paper's normalised
    oracle scores); trust splits over a node's out-edges in proportion to their weights.

    Parameters
    ----------
    adjacency : sparse matrix, shape (n, n)
        Non-negative edge weights; ``adjacency[i, j]`` is the weight of the step ``i -> j``
        (trust flows along the direction in which good nodes vouch for others).
    benign_seeds : array-like of shape (n,) or (n, k)
        Known-good nodes: boolean mask or non-negative weights; each column is normalised to
        sum 1. Several columns are solved together.
    alpha : float
        Probability of continuing the walk at each step (the paper's decay factor
        :math:`\alpha_B`), in (0, 1); ``1 - alpha`` is the probability of restarting at a seed.
    tol : float
        Stop when the L1 change of every column between iterations is below ``tol``.
    max_iter : int
        Iteration limit; the result says whether it converged before it.
    transition : tuple, optional
        Precomputed ``transition_transpose(adjacency)``, to reuse across calls.

    Returns
    -------
    PropagationResult
        ``scores``: trust in [0, 1], each column summing to 1; 0 for nodes that no benign
        seed reaches.

    Raises
    ------
    ParameterError
        On a seed column without any benign seed (no trust to propagate), and as
        :func:`personalized_pagerank` does for the adjacency and parameters.

    References
    ----------
    .. [1] Z. Gyöngyi, H. Garcia-Molina, J. Pedersen, "Combating web spam with TrustRank",
       VLDB 2004.

    Examples
    --------
    >>> import numpy as np, scipy.sparse as sp
    >>> A = sp.csr_matrix(np.array([[0, 1, 0], [1, 0, 1], [0, 1, 0]], dtype=float))
    >>> r = trustrank(A, benign_seeds=np.array([True, False, False]), alpha=0.5)
    >>> bool(r.converged), [round(float(v), 4) for v in r.scores]  # 7/12, 4/12, 1/12
    (True, [0.5833, 0.3333, 0.0833])
    """
    name = "trustrank"
    n = adjacency.shape[0]
    S = _seed_matrix(name, "benign_seeds", benign_seeds, n, upper=None)
    empty = np.flatnonzero(~(S > 0).any(axis=0))
    if len(empty):
        where = f"Seed column {int(empty[0])} of {name} has" if S.shape[1] > 1 else f"{name} got"
        raise ParameterError(f"{where} no benign seed (all weights are 0): there is no trust to propagate. Flag at least one user as benign.")
    seeds = S[:, 0] if np.ndim(benign_seeds) == 1 else S
    return personalized_pagerank(adjacency, seeds, alpha=alpha, tol=tol, max_iter=max_iter, transition=transition)


def _normalized_adjacency(A: sp.csr_matrix) -> sp.csr_matrix:
    """``D^-1/2 W D^-1/2`` of the symmetrised, loop-free weights (0 rows for isolated nodes)."""
    W = sp.csr_matrix((A + A.T) * 0.5)
    W = sp.csr_matrix(W - sp.diags(W.diagonal()))
    W.eliminate_zeros()
    degree = np.asarray(W.sum(axis=1)).ravel()
    inv_sqrt = np.zeros_like(degree)
    inv_sqrt[degree > 0] = 1.0 / np.sqrt(degree[degree > 0])
    D = sp.diags(inv_sqrt)
    return sp.csr_matrix(D @ W @ D)


def _label_spreading_python(
    edges: dict[int, dict[int, float]],
    n: int,
    *,
    fraud: dict[int, float],
    benign: dict[int, float],
    alpha: float = 0.9,
    prior: float = 0.5,
    tol: float = 1e-13,
    max_iter: int = 100_000,
) -> list[float]:
    """Reference implementation on plain dicts, for tests (as networkx keeps ``_pagerank_python``).

    ``edges[i][j]`` is the weight of the edge ``i -> j``; it is symmetrised like the fast path.
    """
    w = _symmetrised_python(edges, n)
    degree = [sum(w[i].values()) for i in range(n)]
    y = [[fraud.get(i, 0.0), benign.get(i, 0.0)] for i in range(n)]
    f = [row[:] for row in y]
    for _ in range(max_iter):
        nxt = []
        for i in range(n):
            row = [(1 - alpha) * y[i][c] for c in range(2)]
            for j, x in w[i].items():
                s = x / (degree[i] * degree[j]) ** 0.5
                for c in range(2):
                    row[c] += alpha * s * f[j][c]
            nxt.append(row)
        done = max(sum(abs(nxt[i][c] - f[i][c]) for i in range(n)) for c in range(2)) < tol
        f = nxt
        if done:
            break
    return [f[i][0] / (f[i][0] + f[i][1]) if f[i][0] + f[i][1] > 0 else prior for i in range(n)]
