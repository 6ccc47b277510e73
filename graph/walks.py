"""The single-machine propagation engine of the scoring features: the walk operators of the
two graph layers, prepared once per projection, and the solves the features ask for.

:class:`Walks` is what the scoring's label features call (:mod:`scoring.features`); the Spark
engine, :class:`graph.spark.walks.SparkWalks`, stands in for it with the same methods and solves
in Spark instead. Names of the optional propagations are those of
:data:`scoring.config.PROPAGATIONS` (``belief_propagation``, ``label_spreading``, ``trustrank``).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import scipy.sparse as sp

from graph.projection import Projection, walk_matrix, walk_transition
from graph.propagation import belief_propagation, label_spreading, personalized_pagerank, trustrank

__all__ = ["Walks", "propagation_features"]


class Walks:
    """Random-walk operators of the two graph layers, prepared once per projection.

    ``links``: users and shared identifiers (hub-damped); ``relations``: user-to-user relations.
    Each carries its transition matrix and the global PageRank (restart uniform over users),
    the baseline that turns a personalized score into a lift. :attr:`fields` keeps, per layer,
    the weights that the undirected propagations (belief propagation, label spreading) run on:
    the walk matrix itself for ``lnk`` and ``rel``, and for ``rel_signed`` the relations with
    negative ones (distrust) as negative weights, for belief propagation.
    """

    def __init__(
        self, projection: Projection, *, hub_exponent: float, alpha: float, tol: float, hub_exponents: Mapping[str, float] | None = None
    ) -> None:
        self.projection = projection
        self.alpha = alpha
        self.tol = tol
        self.layers: dict[str, tuple[int, tuple[sp.csr_matrix, np.ndarray], np.ndarray]] = {}
        self.fields: dict[str, sp.csr_matrix] = {}
        n = projection.n_users
        for name, links, relations in (("lnk", True, False), ("rel", False, True)):
            A = walk_matrix(projection, hub_exponent=hub_exponent, hub_exponents=hub_exponents, links=links, relations=relations)
            if A.nnz == 0:
                continue
            # as a plain pair: features are solved by power iteration, step for step as the Spark
            # engine solves them (same iteration counts, parity within 1e-6), not by the
            # Chebyshev steps a reversible transition would get
            PT, dangling = walk_transition(projection, hub_exponent=hub_exponent, hub_exponents=hub_exponents, links=links, relations=relations)
            transition = (PT, dangling)
            uniform = np.zeros(A.shape[0])
            uniform[:n] = 1.0
            base = personalized_pagerank(A, uniform, alpha=alpha, tol=tol, transition=transition).scores[:n]
            self.layers[name] = (A.shape[0], transition, base)
            self.fields[name] = A
        neg = projection.relations_neg
        if neg.nnz:
            positive = self.fields.get("rel", sp.csr_matrix((n, n)))[:n, :n]
            self.fields["rel_signed"] = sp.csr_matrix(positive - neg - neg.T)

    def lifts(self, name: str, seeds: np.ndarray, *, kind: str = "") -> np.ndarray:
        """PPR from each seed column divided by the global PageRank (1 = average exposure).

        ``kind`` (``fraud`` or ``benign``) names the seeds, for engines that keep each
        propagation rather than solve it (the applicant path)."""
        size, transition, base = self.layers[name]
        n = self.projection.n_users
        out = np.zeros((n, seeds.shape[1]))
        mass = seeds.sum(axis=0)
        live = np.flatnonzero(mass > 0)
        if len(live):
            S = np.zeros((size, len(live)))
            S[:n] = seeds[:, live]
            scores = personalized_pagerank(
                transition[0], S, alpha=self.alpha, tol=self.tol, transition=transition
            ).scores[:n]
            out[:, live] = scores / base[:, None]
        return out

    def propagation_features(self, method: str, F: np.ndarray, Bn: np.ndarray) -> list[tuple[str, np.ndarray, bool]]:
        """One optional propagation (:data:`PROPAGATIONS`) on every layer: (feature name, users x
        seed columns, converged). Engines that solve elsewhere (Spark) override the solves it
        asks for (:meth:`field_name`, :meth:`solve_trust`, :meth:`solve_field`) and :meth:`lifts`."""
        return propagation_features(self, method, F, Bn)

    def field_name(self, layer: str, method: str) -> str | None:
        """The field ``method`` runs on for ``layer``: the signed relations for belief propagation
        on the relation layer when there are negative ones, the layer's walk otherwise; None
        when the layer is empty."""
        if layer == "rel" and method == "belief_propagation" and "rel_signed" in self.fields:
            return "rel_signed"
        return layer if layer in self.fields else None

    def solve_trust(self, layer: str, benign: np.ndarray) -> tuple[np.ndarray, bool]:
        """TrustRank from each column of ``benign`` (users x k) on ``layer``: users x k scores
        and whether every column converged."""
        size, transition, _ = self.layers[layer]
        n = self.projection.n_users
        seeds = np.zeros((size, benign.shape[1]))
        seeds[:n] = benign
        r = trustrank(transition[0], benign_seeds=seeds, alpha=self.alpha, tol=self.tol, transition=transition)
        return r.scores[:n], r.converged

    def solve_field(self, field: str, method: str, fraud: np.ndarray, benign: np.ndarray) -> tuple[np.ndarray, bool]:
        """Belief propagation or label spreading over the field named ``field`` from the seed
        columns ``fraud`` and ``benign`` (users x k each): users x k scores, converged."""
        A = self.fields[field]
        n = self.projection.n_users
        f, b = np.zeros((A.shape[0], fraud.shape[1])), np.zeros((A.shape[0], benign.shape[1]))
        f[:n], b[:n] = fraud, benign
        if method == "belief_propagation":
            r = belief_propagation(A, fraud_seeds=f, benign_seeds=b, tol=self.tol)
        else:
            r = label_spreading(A, fraud_seeds=f, benign_seeds=b, tol=self.tol)
        return r.scores[:n], r.converged


def propagation_features(walks: Walks, method: str, F: np.ndarray, Bn: np.ndarray) -> list[tuple[str, np.ndarray, bool]]:
    """One optional propagation on every layer: (feature name, users x seed columns, converged).

    The same for every engine: which columns have seeds, the defaults of columns without, the
    clipping of belief propagation's seeds; the solves themselves are the walks object's."""
    n = walks.projection.n_users
    results = []
    if method == "trustrank":
        for layer in ("lnk", "rel"):
            if layer not in walks.layers:
                continue
            values, ok = np.zeros((n, F.shape[1])), True
            live = np.flatnonzero((Bn > 0).any(axis=0))
            if len(live):
                scores, ok = walks.solve_trust(layer, Bn[:, live])
                values[:, live] = scores * n
            results.append((f"{layer}_trust", values, ok))
        return results
    short = {"belief_propagation": "bp", "label_spreading": "ls"}[method]
    for layer in ("lnk", "rel"):
        field = walks.field_name(layer, method)
        if field is None:
            continue
        values, ok = np.full((n, F.shape[1]), 0.5), True
        live = np.flatnonzero((F > 0).any(axis=0) | (Bn > 0).any(axis=0))
        if len(live):
            f, b = F[:, live], Bn[:, live]
            if method == "belief_propagation":
                f, b = np.minimum(f, 1.0), np.minimum(b, 1.0)
            scores, ok = walks.solve_field(field, method, f, b)
            values[:, live] = scores
        results.append((f"{layer}_{short}_fraud", values, ok))
    return results

