"""Belief propagation with fraud and benign seeds, in the linearised, convergent SybilSCAR form."""

from __future__ import annotations

from typing import Literal

import numpy as np
import scipy.sparse as sp
from numpy.typing import ArrayLike

from graph.propagation.result import PropagationResult
from loaders.errors import ParameterError

__all__ = ["belief_propagation", "NORMALIZATIONS"]

#: How edge weights become couplings; see :func:`belief_propagation`.
NORMALIZATIONS: tuple[str, ...] = ("max_degree", "degree")
Normalization = Literal["max_degree", "degree"]


def belief_propagation(
    adjacency: sp.spmatrix | sp.sparray,
    *,
    fraud_seeds: ArrayLike | None = None,
    benign_seeds: ArrayLike | None = None,
    theta: float = 0.4,
    coupling: float = 0.8,
    normalization: Normalization = "degree",
    tol: float = 1e-8,
    max_iter: int = 1000,
) -> PropagationResult:
    r"""Fraud probability of every node by linearised loopy belief propagation.

    The graph is a pairwise Markov random field over the binary state fraud / benign of each
    node. SybilBelief [1]_ runs loopy belief propagation on it, which may not converge;
    SybilSCAR [2]_ replaces the message passing by a linear local rule on *residuals*
    (probability minus 0.5), which this function solves:

    .. math:: p = \operatorname{clip}_{[-1/2,\,1/2]}\left(q + c\, M p\right)

    where :math:`q = \theta\,(f - b)` is the residual prior (:math:`+\theta` on a fraud seed,
    :math:`-\theta` on a benign seed, 0 elsewhere; ``f`` and ``b`` the seed weights),
    :math:`M` the coupling matrix (the residual homophily strengths, doubled) and ``c`` the
    ``coupling``. The fraud probability is :math:`0.5 + p`.

    Convergence is guaranteed: every row of :math:`|M|` sums to at most 1 (see
    ``normalization``) and clipping never increases a distance, so each iteration shrinks the
    largest error by a factor ``coupling`` < 1 and the iteration reaches the unique fixed
    point from any start. SybilSCAR-C's constant homophily ``1/(2 d_max)`` is
    ``normalization="max_degree"`` with ``coupling=1``, which may oscillate forever on a
    regular component (two nodes and one edge already do); hence ``coupling`` < 1.

    Robustness to label noise is the point of the residual prior: a seed's label is evidence
    of weight ``theta``, not a clamped value, so a wrong seed among consistent neighbours is
    outvoted and stays a local dent, instead of pinning its neighbourhood to the wrong label.

    Parameters
    ----------
    adjacency : sparse matrix, shape (n, n)
        Edge weights. The field is undirected: the matrix is symmetrised as
        ``(A + A.T) / 2`` and the diagonal (self-loops) is ignored. A positive weight is
        homophily (neighbours tend to share the state), a negative one heterophily: an edge of
        negative weight to a fraud makes a node *less* likely to be fraud.
    fraud_seeds, benign_seeds : array-like of shape (n,) or (n, k), optional
        Known frauds and known benign nodes: boolean masks, or weights in [0, 1] (confidence
        of the label, e.g. a flag's severity). Both take the same shape; ``k`` columns are ``k``
        independent seed sets solved together. A node in both sets gets the prior
        ``theta * (f - b)``, so equal weights cancel.
    theta : float
        Strength of a seed's evidence: the residual prior of a fraud seed of weight 1, in
        (0, 0.5]. A fraud seed without neighbours scores ``0.5 + theta``.
    coupling : float
        Share of the neighbours' residual passed on at each step, in (0, 1); the influence of
        a seed decays at least geometrically with this ratio per hop.
    normalization : {"max_degree", "degree"}
        How weights become couplings, with ``d`` the weighted degree ``sum_j |W_ij|``:
        ``"max_degree"`` divides every weight by the largest ``d`` (a constant homophily
        strength, as SybilSCAR-C), ``"degree"`` divides node ``i``'s row by ``d_i``, so
        that a node's prior is updated by the weighted mean of its neighbours' residuals
        (a degree-dependent strength: a node with a thousand neighbours is not pushed a
        thousand times harder).
    tol : float
        Stop when the L1 change of every column between iterations is below ``tol``.
    max_iter : int
        Iteration limit; the result says whether it converged before it.

    Returns
    -------
    PropagationResult
        ``scores``: the fraud probability ``0.5 + p`` in [0, 1], of the seeds' shape. 0.5 means
        no evidence either way: a node that no seed reaches (an isolated one, say) scores
        exactly 0.5.

    Raises
    ------
    ParameterError
        On a non-square adjacency or non-finite weights, seeds of the wrong shape or outside
        [0, 1], a seed column with no fraud and no benign seed (no evidence to propagate), or
        parameters out of range.

    References
    ----------
    .. [1] N. Z. Gong, M. Frank, P. Mittal, "SybilBelief: A semi-supervised learning approach
       for structure-based Sybil detection", IEEE Transactions on Information Forensics and
       Security 9(6), 2014.
    .. [2] B. Wang, L. Zhang, N. Z. Gong, "SybilSCAR: Sybil detection in online social
       networks via local rule based propagation", IEEE INFOCOM 2017; B. Wang, J. Jia,
       L. Zhang, N. Z. Gong, "Structure-based Sybil detection in social networks via local
       rule-based propagation", IEEE Transactions on Network Science and Engineering, 2019.

    Examples
    --------
    On the path 0 - 1 - 2 with a fraud seed at 0 and ``c = 1/2``, each node adds half the
    mean residual of its neighbours to its prior: ``p0 = 0.4 + p1/2``,
    ``p1 = (p0 + p2)/4``, ``p2 = p1/2``, so ``p = (7/15, 2/15, 1/15)``.

    >>> import numpy as np, scipy.sparse as sp
    >>> A = sp.csr_matrix(np.array([[0, 1, 0], [1, 0, 1], [0, 1, 0]], dtype=float))
    >>> r = belief_propagation(A, fraud_seeds=np.array([True, False, False]), coupling=0.5)
    >>> bool(r.converged), [round(float(v), 4) for v in r.scores]
    (True, [0.9667, 0.6333, 0.5667])
    """
    name = "belief_propagation"
    if not 0.0 < theta <= 0.5:
        raise ParameterError(f"The 'theta' parameter of {name} must be in (0, 0.5]. Got {theta!r} instead.")
    if not 0.0 < coupling < 1.0:
        raise ParameterError(f"The 'coupling' parameter of {name} must be in (0, 1). Got {coupling!r} instead.")
    if normalization not in NORMALIZATIONS:
        raise ParameterError(
            f"The 'normalization' parameter of {name} must be one of {', '.join(NORMALIZATIONS)}. Got {normalization!r} instead."
        )
    _check_iteration(name, tol, max_iter)
    A = _square(name, adjacency)
    n = A.shape[0]
    F, B, vector = _seed_pair(name, fraud_seeds, benign_seeds, n, upper=1.0)
    _require_evidence(name, F, B)
    M = _coupling_matrix(A, normalization) * coupling
    q = theta * (F - B)
    p = q.copy()
    residual = np.inf
    n_iter = 0
    converged = False
    for n_iter in range(1, int(max_iter) + 1):
        p_new = M @ p
        p_new += q
        np.clip(p_new, -0.5, 0.5, out=p_new)
        residual = float(np.abs(p_new - p).sum(axis=0).max())
        p = p_new
        if residual < tol:
            converged = True
            break
    scores = 0.5 + p
    return PropagationResult(scores=scores[:, 0] if vector else scores, n_iter=n_iter, converged=converged, residual=residual)


def _coupling_matrix(A: sp.csr_matrix, normalization: str) -> sp.csr_matrix:
    """Symmetrised, loop-free weights scaled so that every row of ``|M|`` sums to at most 1."""
    W = sp.csr_matrix((A + A.T) * 0.5)
    W = sp.csr_matrix(W - sp.diags(W.diagonal()))
    W.eliminate_zeros()
    degree = np.asarray(abs(W).sum(axis=1)).ravel()
    if normalization == "max_degree":
        top = float(degree.max()) if degree.size else 0.0
        return sp.csr_matrix(W * (1.0 / top)) if top > 0 else W
    inv = np.zeros_like(degree)
    inv[degree > 0] = 1.0 / degree[degree > 0]
    return sp.csr_matrix(sp.diags(inv) @ W)


# -- shared checks (label spreading uses them too) -----------------------------------------------


def _check_iteration(name: str, tol: float, max_iter: int) -> None:
    if not tol > 0:
        raise ParameterError(f"The 'tol' parameter of {name} must be > 0. Got {tol!r} instead.")
    if int(max_iter) < 1:
        raise ParameterError(f"The 'max_iter' parameter of {name} must be >= 1. Got {max_iter!r} instead.")


def _square(name: str, adjacency: sp.spmatrix | sp.sparray) -> sp.csr_matrix:
    shape = adjacency.shape
    if len(shape) != 2 or shape[0] != shape[1]:
        raise ParameterError(f"The adjacency of {name} must be square. Got shape {shape} instead.")
    A = sp.csr_matrix(adjacency, dtype=np.float64)
    if A.nnz and not np.all(np.isfinite(A.data)):
        raise ParameterError(f"The adjacency of {name} must have finite weights.")
    return A


def _seed_pair(
    name: str, fraud: ArrayLike | None, benign: ArrayLike | None, n: int, *, upper: float | None
) -> tuple[np.ndarray, np.ndarray, bool]:
    """Fraud and benign seed weights as float (n, k) matrices, and whether they were vectors."""
    given = {k: v for k, v in (("fraud_seeds", fraud), ("benign_seeds", benign)) if v is not None}
    if not given:
        raise ParameterError(f"{name} got no fraud_seeds and no benign_seeds: there is no evidence to propagate. Flag at least one user.")
    mats = {k: _seed_matrix(name, k, v, n, upper=upper) for k, v in given.items()}
    shapes = {k: m.shape for k, m in mats.items()}
    if len(set(shapes.values())) > 1:
        raise ParameterError(
            f"The 'fraud_seeds' and 'benign_seeds' of {name} must have the same shape. "
            f"Got {shapes['fraud_seeds']} and {shapes['benign_seeds']} instead."
        )
    vector = np.ndim(next(iter(given.values()))) == 1
    shape = next(iter(shapes.values()))
    F = mats.get("fraud_seeds", np.zeros(shape))
    B = mats.get("benign_seeds", np.zeros(shape))
    return F, B, vector


def _seed_matrix(name: str, param: str, values: ArrayLike, n: int, *, upper: float | None) -> np.ndarray:
    S = np.asarray(values)
    if S.ndim not in (1, 2) or S.shape[0] != n:
        raise ParameterError(f"The '{param}' of {name} must have {n} rows, one per node. Got shape {S.shape} instead.")
    S = S.astype(np.float64)
    if not np.all(np.isfinite(S)) or (S < 0).any() or (upper is not None and (S > upper).any()):
        expected = f"in [0, {upper:g}]" if upper is not None else ">= 0"
        raise ParameterError(f"The '{param}' of {name} must be a boolean mask or finite weights {expected}.")
    return S[:, None] if S.ndim == 1 else S


def _require_evidence(name: str, F: np.ndarray, B: np.ndarray) -> None:
    empty = np.flatnonzero(~((F > 0).any(axis=0) | (B > 0).any(axis=0)))
    if len(empty):
        where = f"Seed column {int(empty[0])} of {name} has" if F.shape[1] > 1 else f"{name} got"
        raise ParameterError(f"{where} no fraud and no benign seed (all weights are 0): there is no evidence to propagate. Flag at least one user.")


def _symmetrised_python(edges: dict[int, dict[int, float]], n: int) -> dict[int, dict[int, float]]:
    """``(A + A^T) / 2`` on plain dicts, self-loops dropped: the graph the reference
    implementations work on (as the fast paths symmetrise the matrix)."""
    w: dict[int, dict[int, float]] = {i: {} for i in range(n)}
    for i, nbrs in edges.items():
        for j, x in nbrs.items():
            if i != j:
                w[i][j] = w[i].get(j, 0.0) + x / 2
                w[j][i] = w[j].get(i, 0.0) + x / 2
    return w


def _belief_propagation_python(
    edges: dict[int, dict[int, float]],
    n: int,
    *,
    fraud: dict[int, float],
    benign: dict[int, float],
    theta: float = 0.4,
    coupling: float = 0.8,
    normalization: str = "degree",
    tol: float = 1e-13,
    max_iter: int = 100_000,
) -> list[float]:
    """Reference implementation on plain dicts, for tests (as networkx keeps ``_pagerank_python``).

    ``edges[i][j]`` is the weight of the edge ``i -> j``; it is symmetrised like the fast path.
    """
    w = _symmetrised_python(edges, n)
    degree = [sum(abs(x) for x in w[i].values()) for i in range(n)]
    top = max(degree, default=0.0)
    scale = [
        (1.0 / top if top > 0 else 0.0) if normalization == "max_degree" else (1.0 / degree[i] if degree[i] > 0 else 0.0)
        for i in range(n)
    ]
    q = [theta * (fraud.get(i, 0.0) - benign.get(i, 0.0)) for i in range(n)]
    p = q[:]
    for _ in range(max_iter):
        nxt = [q[i] + coupling * scale[i] * sum(x * p[j] for j, x in w[i].items()) for i in range(n)]
        nxt = [min(0.5, max(-0.5, v)) for v in nxt]
        done = sum(abs(a - b) for a, b in zip(nxt, p)) < tol
        p = nxt
        if done:
            break
    return [0.5 + v for v in p]
