"""Explain a user's graph risk: which flagged accounts it comes from, and along which paths."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.sparse.csgraph import dijkstra

from graph.projection import Projection, walk_transition
from graph.propagation.push import _distinct, _row_entries
from loaders.errors import ParameterError
from loaders.schema import Tables

__all__ = ["PathStep", "Contribution", "Explanation", "ExplainContext", "explain_user", "explain_placed", "ident_label"]

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
    ident : str or None
        For identifiers: the full ``"kind:pseudonym"`` key (``via`` shows its first digits).
    """

    source: str
    target: str
    via: str
    kind: str
    when: str | None = None
    forward: bool = True
    ident: str | None = None


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


class ExplainContext:
    """What explanations need, built once per graph and reused for every user (a notebook,
    the service): the walk matrix, flag dates and a sorted index of relations.

    Parameters
    ----------
    tables, projection
        The graph.
    fraud : ndarray, shape (n_users,)
        Seed weights (severity) of confirmed fraud per user.
    hub_exponent, hub_exponents, alpha
        As used for scoring.
    eps : float
        Finest reverse-push threshold: a seed contributing less than ``eps`` (in probability
        units) may be missed.
    first_eps : float
        Threshold of the first pass; explanations refine towards ``eps`` only while they find no
        flagged account. Shares are exact to about ``first_eps`` per seed.
    """

    def __init__(
        self, tables: Tables, projection: Projection, fraud: np.ndarray, *, hub_exponent: float = 1.0, alpha: float = 0.85, eps: float = 1e-7,
        first_eps: float = 1e-4, hub_exponents: Mapping[str, float] | None = None,
    ) -> None:
        if not 0.0 < alpha < 1.0:
            raise ParameterError(f"The 'alpha' parameter of ExplainContext must be in (0, 1). Got {alpha!r} instead.")
        self.tables, self.projection, self.alpha, self.eps, self.first_eps = tables, projection, alpha, eps, first_eps
        n = projection.n_users
        self.PT, self.dangling = walk_transition(projection, hub_exponent=hub_exponent, hub_exponents=hub_exponents)
        self.seeds = np.zeros(self.PT.shape[0])
        self.seeds[:n] = np.asarray(fraud, dtype=np.float64)
        flags = tables.flags
        order = flags.assign(_o=np.arange(len(flags))).sort_values(["ts", "_o"], na_position="first")
        latest = order.drop_duplicates("user_id", keep="last")
        self.flagged_on = {
            str(u): (None if pd.isna(t) else pd.Timestamp(t).strftime("%Y-%m-%d")) for u, t in zip(latest["user_id"], latest["ts"])
        }
        rel = tables.relations
        src = projection.index_of(rel["src"].astype(str).to_numpy()) if len(rel) else np.zeros(0, dtype=np.int64)
        dst = projection.index_of(rel["dst"].astype(str).to_numpy()) if len(rel) else np.zeros(0, dtype=np.int64)
        pair = src.astype(np.int64) * n + dst
        self._rel_order = np.argsort(pair, kind="stable")
        self._rel_pair = pair[self._rel_order]
        self._rel_kind = rel["kind"].astype(str).to_numpy()
        self._rel_ts = rel["ts"]

    def explain(self, user_id: str, *, top: int = 5) -> Explanation:
        """Decompose a user's personalized PageRank exposure into per-seed contributions.

        PPR is linear in its seeds: the score of ``v`` from seed set ``S`` is
        ``sum_s w_s * y_s`` with ``y = (1 - alpha) * sum_k alpha^k P^k e_v``, the contribution
        vector of ``v``, computed by local reverse push (Andersen, Borgs, Chayes, Hopcroft,
        Mirrokni, Teng, "Local computation of PageRank contributions", WAW 2007) so the work
        stays near ``v``. Each top seed is then joined to ``v`` by its most probable walk
        (shortest path under ``-log`` transition probability) inside the pushed region.
        """
        if top < 1:
            raise ParameterError(f"The 'top' parameter of explain_user must be >= 1. Got {top!r} instead.")
        projection = self.projection
        v = int(projection.index_of([user_id])[0])
        # coarse first, finer only while no flagged account is found: near exposure is cheap
        eps = max(self.eps, self.first_eps)
        while True:
            y, touched = _reverse_push(self.PT, self.dangling, v, self.alpha, eps)
            seeds = self.seeds[touched].copy()
            seeds[touched == v] = 0.0  # the user's own flag is not graph exposure
            contrib = seeds * y[touched]
            total = float(contrib.sum())
            if total > 0 or eps <= self.eps:
                break
            eps = max(eps / 30.0, self.eps)
        if total <= 0:
            return Explanation(user_id=user_id, contributions=[], exposure=0.0)
        best = np.argsort(-contrib, kind="stable")[:top]
        best = best[contrib[best] > 0]
        paths = self._paths(v, touched, touched[best])
        out = []
        for b in best.tolist():
            s = int(touched[b])
            seed_id = str(projection.user_ids[s])
            out.append(
                Contribution(
                    seed=seed_id, label="fraud", flagged_on=self.flagged_on.get(seed_id), share=float(contrib[b] / total), path=paths.get(s, [])
                )
            )
        return Explanation(user_id=user_id, contributions=out, exposure=total)

    def _paths(self, v: int, region: np.ndarray, targets: np.ndarray) -> dict[int, list[PathStep]]:
        """Most probable walks from each target seed to ``v``, searched inside ``region``."""
        start = int(np.searchsorted(region, v))  # region is sorted and holds v
        sub = self.PT[region][:, region].tocsr()
        sub.data = -np.log(np.clip(sub.data, 1e-300, None))
        _, pred = dijkstra(sub, directed=True, indices=start, return_predecessors=True)
        out = {}
        for t in targets.tolist():
            nodes = [int(np.searchsorted(region, t))]
            while nodes[-1] != start and pred[nodes[-1]] >= 0 and len(nodes) < 50:
                nodes.append(int(pred[nodes[-1]]))
            out[int(t)] = self._steps([int(region[i]) for i in nodes]) if nodes[-1] == start else []
        return out

    def _relation(self, a: int, b: int) -> tuple[str, str | None] | None:
        n = self.projection.n_users
        key = a * n + b
        lo, hi = np.searchsorted(self._rel_pair, [key, key + 1])
        if lo == hi:
            return None
        rows = self._rel_order[lo:hi]
        ts = self._rel_ts.iloc[rows].max()
        return str(self._rel_kind[rows[-1]]), (None if pd.isna(ts) else pd.Timestamp(ts).strftime("%Y-%m-%d"))

    def _steps(self, nodes: list[int]) -> list[PathStep]:
        projection = self.projection
        n = projection.n_users
        steps: list[PathStep] = []
        i = 0
        while i < len(nodes) - 1:
            a, b = nodes[i], nodes[i + 1]
            if b >= n:  # a -> identifier -> c
                c = nodes[i + 2]
                key = str(projection.ident_keys[b - n])
                steps.append(PathStep(str(projection.user_ids[a]), str(projection.user_ids[c]), ident_label(key), "identifier", ident=key))
                i += 2
                continue
            ua, ub = str(projection.user_ids[a]), str(projection.user_ids[b])
            fwd = self._relation(a, b)
            found = fwd or self._relation(b, a)
            kind, when = found if found else ("relation", None)
            steps.append(PathStep(ua, ub, kind, "relation", when, forward=fwd is not None))
            i += 1
        return steps


def explain_user(
    tables: Tables,
    projection: Projection,
    user_id: str,
    fraud: np.ndarray,
    *,
    hub_exponent: float = 1.0,
    hub_exponents: Mapping[str, float] | None = None,
    alpha: float = 0.85,
    top: int = 5,
) -> Explanation:
    """One user's explanation (see :meth:`ExplainContext.explain`); to explain many users of
    one graph, build an :class:`ExplainContext` once.

    Returns
    -------
    Explanation
        Contributions sorted by share (shares sum to 1 over all seeds, not only the top).
    """
    if top < 1:
        raise ParameterError(f"The 'top' parameter of explain_user must be >= 1. Got {top!r} instead.")
    return ExplainContext(tables, projection, fraud, hub_exponent=hub_exponent, hub_exponents=hub_exponents, alpha=alpha).explain(user_id, top=top)


def _reverse_push(PT: sp.csr_matrix, dangling: np.ndarray, v: int, alpha: float, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """Contribution vector of ``v``, ``y = (1 - alpha) sum_k alpha^k P^k e_v``, by reverse push:
    every entry within ``eps``; returns the dense estimate and the nodes pushed (sorted), the
    only ones where it is not 0.

    Dangling nodes keep their walkers (a self-loop), as in incremental updates; a walk from a
    seed reaching a dead end adds nothing to anyone else.
    """
    r0 = np.zeros(PT.shape[0])
    r0[v] = 1.0
    return _reverse_push_vector(PT, dangling, r0, alpha, eps)


def explain_placed(
    context: ExplainContext, user_id: str, in_edges: list[tuple[int, float, object]], node: int, *, node_users: list[str],
    state: object | None = None, top: int = 5,
) -> list[dict[str, object]]:
    """The flagged accounts behind the exposure of a user placed in the live graph after
    ``context`` was built (an applicant), and the path from each.

    The user's contribution vector is that of the nodes stepping to it, weighted by the share
    of their walk that does (``in_edges``: live node, share, unused), so the reverse push of
    :meth:`ExplainContext.explain` starts from them. An in-neighbour the context does not know
    (an identifier shared only since) is stepped through once by hand, from its users in
    ``state`` (the live exposure state's rows).

    Returns
    -------
    list of dict
        ``seed``, ``share``, ``flagged_on``, ``sentence`` and ``path`` (steps as
        ``{source, target, via, kind, when, forward, ident}``), largest share first.
    """
    if top < 1:
        raise ParameterError(f"The 'top' parameter of explain_placed must be >= 1. Got {top!r} instead.")
    PT, alpha = context.PT, context.alpha
    size = PT.shape[0]
    projection = context.projection
    n = projection.n_users
    r = np.zeros(size)
    first: dict[int, tuple[float, object]] = {}
    for j, share, _ in in_edges:
        if share <= 0:
            continue
        if j < size:
            r[j] += alpha * share
            first[j] = (-np.log(share), ("ident", j) if j >= n else ("user", j))
        elif state is not None and j in getattr(state, "extra", {}):
            users, weights = state.extra[j]  # an identifier shared since: its users step into it
            for v in users.tolist():
                if v < n and v != node:
                    vi, vw = state.extra.get(v, (None, None)) if v in state.extra else (None, None)
                    out = float(state.out_weight[v])
                    w = float(vw[vi == j].sum()) if vi is not None else 0.0
                    if out > 0 and w > 0:
                        r[v] += alpha * share * alpha * w / out
                        first[v] = (-np.log(share * w / out), ("new_ident", j))
    if not first:
        return []
    y, touched = _reverse_push_vector(PT, context.dangling, r, alpha, context.first_eps)
    seeds = context.seeds[touched]
    contrib = seeds * y[touched]
    total = float(contrib.sum())
    if total <= 0:
        return []
    best = np.argsort(-contrib, kind="stable")[:top]
    best = best[contrib[best] > 0]
    starts = np.array(sorted(first), dtype=np.int64)
    region = _distinct(np.concatenate([touched, starts]))
    sub = PT[region][:, region].tocsr()
    sub.data = -np.log(np.clip(sub.data, 1e-300, None))
    at = np.searchsorted(region, starts)
    dist, pred = dijkstra(sub, directed=True, indices=at, return_predecessors=True)
    out = []
    for b in best.tolist():
        t = int(touched[b])
        ti = int(np.searchsorted(region, t))
        cost = dist[:, ti] + np.array([first[int(s)][0] for s in starts])
        k = int(np.argmin(cost))
        steps: list[PathStep] = []
        if np.isfinite(cost[k]):
            nodes = [ti]
            while nodes[-1] != at[k] and pred[k, nodes[-1]] >= 0 and len(nodes) < 50:
                nodes.append(int(pred[k, nodes[-1]]))
            path = [int(region[i]) for i in nodes]
            how = first[int(starts[k])][1]
            if how[0] == "ident":  # ... -> c -> identifier -> the applicant
                key = str(projection.ident_keys[int(how[1]) - n])
                steps = context._steps(path[:-1]) + [PathStep(str(projection.user_ids[path[-2]]), user_id, ident_label(key), "identifier",
                                                              ident=key)] if len(path) >= 2 else []
            elif how[0] == "new_ident":
                steps = context._steps(path) + [PathStep(str(projection.user_ids[path[-1]]), user_id, "a shared identifier", "identifier")]
            else:
                steps = context._steps(path) + [PathStep(str(projection.user_ids[path[-1]]), user_id, "relation", "relation")]
        seed_id = str(projection.user_ids[t])
        c = Contribution(seed=seed_id, label="fraud", flagged_on=context.flagged_on.get(seed_id), share=float(contrib[b] / total), path=steps)
        out.append({"seed": c.seed, "share": c.share, "flagged_on": c.flagged_on, "sentence": c.sentence(user_id),
                    "path": [{"source": s.source, "target": s.target, "via": s.via, "kind": s.kind, "when": s.when, "forward": bool(s.forward),
                              "ident": s.ident} for s in c.path]})
    return out


def _reverse_push_vector(PT: sp.csr_matrix, dangling: np.ndarray, r0: np.ndarray, alpha: float, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_reverse_push` from a residual vector instead of one node."""
    n = PT.shape[0]
    y = np.zeros(n)
    r = r0.astype(np.float64).copy()
    frontier = np.flatnonzero(r > eps)
    pushed = [frontier]
    while frontier.size:
        vals = r[frontier].copy()
        r[frontier] = 0.0
        y[frontier] += (1 - alpha) * vals
        idx, counts = _row_entries(PT.indptr, frontier)
        t = PT.indices[idx]
        np.add.at(r, t, alpha * np.repeat(vals, counts) * PT.data[idx])
        d = dangling[frontier]
        if d.any():
            r[frontier[d]] += alpha * vals[d]
        cand = _distinct(np.concatenate([t, frontier[d]]).astype(np.int64))
        frontier = cand[r[cand] > eps]
        pushed.append(frontier)
    return y, _distinct(np.concatenate(pushed).astype(np.int64))
