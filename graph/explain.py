"""Explain a user's graph risk: which flagged accounts it comes from, and along which paths."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.sparse.csgraph import dijkstra

from graph.projection import Projection, walk_matrix
from graph.propagation.pagerank import transition_transpose
from loaders.errors import ParameterError
from loaders.schema import Tables

__all__ = ["PathStep", "Contribution", "Explanation", "explain_user", "ident_label"]

_KIND_WORD = {"ip": "IP address", "account": "bound account", "card": "card", "device": "device", "phone": "phone"}


def ident_label(key: str) -> str:
    """Short display of a pseudonymised identifier: ``device d-3f9a``."""
    kind, _, digest = key.partition(":")
    return f"{_KIND_WORD.get(kind, kind)} {kind[:1]}-{digest[:4]}"


@dataclass(frozen=True)
class PathStep:
    """One hop of an explanation path, in walk order (from the flagged account to the user).

    Attributes
    ----------
    source, target : str
        Users at either end of the hop.
    via : str
        The shared identifier (``device d-3f9a``) or the relation kind (``transfer``).
    kind : {"identifier", "relation"}
    when : str or None
        Date of the latest relation of that kind between the two.
    forward : bool
        For relations: whether the relation points from ``source`` to ``target``.
    """

    source: str
    target: str
    via: str
    kind: str
    when: str | None = None
    forward: bool = True


@dataclass(frozen=True)
class Contribution:
    """A flagged account's share of the user's exposure and the most likely path from it."""

    seed: str
    label: str
    flagged_on: str | None
    share: float
    path: list[PathStep] = field(default_factory=list)

    def sentence(self, user_id: str) -> str:
        """The contribution in plain words, e.g. ``shares device d-3f9a with account u123,
        confirmed fraud on 2026-03-01``."""
        confirmed = "confirmed fraud" + (f" on {self.flagged_on}" if self.flagged_on else "")
        if len(self.path) == 1:
            step = self.path[0]
            if step.kind == "identifier":
                return f"shares {step.via} with account {self.seed}, {confirmed}"
            when = f" ({step.when})" if step.when else ""
            if step.forward:
                return f"received a {step.via}{when} from account {self.seed}, {confirmed}"
            return f"sent a {step.via}{when} to account {self.seed}, {confirmed}"
        if not self.path:
            return f"account {self.seed}, {confirmed}, reaches this user only through long walks"
        hops = self.path[0].source + "".join(f" -[{s.via}]-> {s.target}" for s in self.path)
        return f"{len(self.path)} steps from account {self.seed}, {confirmed}: {hops}"


@dataclass(frozen=True)
class Explanation:
    """Top flagged accounts behind a user's graph exposure."""

    user_id: str
    contributions: list[Contribution]
    exposure: float

    def sentences(self) -> list[str]:
        return [c.sentence(self.user_id) for c in self.contributions]


def explain_user(
    tables: Tables,
    projection: Projection,
    user_id: str,
    fraud: np.ndarray,
    *,
    hub_exponent: float = 1.0,
    alpha: float = 0.85,
    top: int = 5,
    tol: float = 1e-10,
    max_iter: int = 500,
) -> Explanation:
    """Decompose a user's personalized PageRank exposure into per-seed contributions.

    PPR is linear in its seeds: the score of ``v`` from seed set ``S`` is
    ``sum_s w_s * y_s`` with ``y = (1 - alpha) * sum_k alpha^k P^k e_v``. One iteration over
    ``P`` gives every seed's contribution at once; each top seed is then joined to ``v`` by
    its most probable walk (shortest path under ``-log`` transition probability).

    Parameters
    ----------
    tables, projection
        The graph.
    user_id : str
        The user to explain.
    fraud : ndarray
        Seed weights (severity) of confirmed fraud per user.
    hub_exponent, alpha
        As used for scoring.
    top : int
        Number of flagged accounts to report.

    Returns
    -------
    Explanation
        Contributions sorted by share (shares sum to 1 over all seeds, not only the top).
    """
    if top < 1:
        raise ParameterError(f"The 'top' parameter of explain_user must be >= 1. Got {top!r} instead.")
    v = int(projection.index_of([user_id])[0])
    n = projection.n_users
    A = walk_matrix(projection, hub_exponent=hub_exponent)
    PT, _ = transition_transpose(A)
    P = sp.csr_matrix(PT.T)
    e = np.zeros(A.shape[0])
    e[v] = 1.0
    y = e.copy()
    for _ in range(max_iter):
        y_new = alpha * (P @ y) + (1 - alpha) * e
        done = np.abs(y_new - y).sum() < tol
        y = y_new
        if done:
            break
    seeds = np.zeros(A.shape[0])
    seeds[:n] = fraud
    seeds[v] = 0.0  # the user's own flag is not graph exposure
    contrib = seeds * y
    total = float(contrib.sum())
    if total <= 0:
        return Explanation(user_id=user_id, contributions=[], exposure=0.0)
    order = np.argsort(-contrib)[:top]
    order = order[contrib[order] > 0]
    # most probable paths: distances from v over the reversed walk (edge weight -log p)
    R = sp.csr_matrix(PT)
    R.data = -np.log(np.clip(R.data, 1e-300, None))
    _, pred = dijkstra(R, directed=True, indices=v, return_predecessors=True, limit=60.0)
    flags = tables.flags.assign(_o=np.arange(len(tables.flags))).sort_values(["ts", "_o"], na_position="first").drop_duplicates("user_id", keep="last").set_index("user_id")
    out = []
    for s in order:
        seed_id = str(projection.user_ids[s])
        ts = flags["ts"].get(seed_id) if seed_id in flags.index else None
        flagged_on = None if ts is None or pd.isna(ts) else pd.Timestamp(ts).strftime("%Y-%m-%d")
        out.append(
            Contribution(
                seed=seed_id,
                label="fraud",
                flagged_on=flagged_on,
                share=float(contrib[s] / total),
                path=_path(tables, projection, pred, int(s), v),
            )
        )
    return Explanation(user_id=user_id, contributions=out, exposure=total)


def _path(tables: Tables, projection: Projection, pred: np.ndarray, seed: int, v: int) -> list[PathStep]:
    """Walk predecessors from the seed back to ``v`` (the tree is rooted at ``v`` over reversed edges)."""
    n = projection.n_users
    nodes = [seed]
    while nodes[-1] != v and pred[nodes[-1]] >= 0 and len(nodes) < 50:
        nodes.append(int(pred[nodes[-1]]))
    if nodes[-1] != v:
        return []
    steps: list[PathStep] = []
    rel = tables.relations
    i = 0
    while i < len(nodes) - 1:
        a, b = nodes[i], nodes[i + 1]
        if b >= n:  # a -> identifier -> c
            c = nodes[i + 2]
            via = ident_label(str(projection.ident_keys[b - n]))
            steps.append(PathStep(str(projection.user_ids[a]), str(projection.user_ids[c]), via, "identifier"))
            i += 2
            continue
        ua, ub = str(projection.user_ids[a]), str(projection.user_ids[b])
        fwd = rel[(rel["src"] == ua) & (rel["dst"] == ub)]
        between = fwd if len(fwd) else rel[(rel["src"] == ub) & (rel["dst"] == ua)]
        kind = str(between["kind"].iloc[-1]) if len(between) else "relation"
        ts = between["ts"].max() if len(between) else None
        when = None if ts is None or pd.isna(ts) else pd.Timestamp(ts).strftime("%Y-%m-%d")
        steps.append(PathStep(ua, ub, kind, "relation", when, forward=bool(len(fwd))))
        i += 1
    return steps
