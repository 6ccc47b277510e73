"""The live graph: the projection of the last load, the users, links and relations that arrived
since, and the propagations kept current by local push, so that one applicant can be placed in
the graph and read in milliseconds.

An applicant (a new user, or a known one with new links and relations) is scored from:

- a **local subgraph** (:meth:`LiveGraph.local`): the applicant, every user of each identifier
  it shares, its relation partners and theirs, with the links and relations that join them.
  The same feature functions that score the population (:mod:`scoring.features`) evaluated on
  it give the applicant's own row exactly: every quantity they compute for a user reads only
  these rows;
- the **propagations** at its node (:meth:`LiveGraph.place`): the applicant's node and its edges
  (weights from the local subgraph's own walk matrices, so by the projection's rules: kind
  weights, hub damping, time decay) are added to each kept local-push state
  (:mod:`graph.propagation.push`) and the residuals pushed; belief propagation is updated around
  the node. Inside :meth:`LiveGraph.trial` this is undone at the end (a what-if); with
  :meth:`LiveGraph.commit` it stays, and later applicants and flags see it.

Personalized PageRank as the batch features solve it sends the walkers of dangling nodes back
to the seeds; the push states keep them where they are (a self-loop). The two agree up to a
normalisation: with ``x`` the solution in which dangling nodes absorb walkers, the batch scores
are ``x / sum(x)``, and the push state holds ``x`` on every node with out-edges and ``x / beta``
on dangling ones (:func:`batch_scores`).
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from graph.config import GraphConfig
from graph.projection import NAT, EncodedGraph, Projection, encode, project_encoded, walk_matrix
from graph.propagation.belief import belief_propagation
from graph.propagation.push import PushState, add_nodes, add_seed, folded, push_state, reserve, set_edges, trial
from loaders.errors import NotFoundError, ParameterError
from loaders.schema import Tables

__all__ = ["LiveGraph", "LocalGraph", "Placement", "LAYERS", "batch_scores", "LiveFull"]

#: The propagation layers kept live: shared identifiers, relations, and both (the service's
#: fraud exposure, which moves served scores).
LAYERS: tuple[str, ...] = ("lnk", "rel", "all")
#: Users padded into every local subgraph, joined to each other only, so that every feature
#: family exists in it (a neighbour mean over no neighbour is then NaN, as in the population,
#: not a missing column).
PAD_USERS = ("\x00pad-a", "\x00pad-b")
#: Identifiers of at most this many users get their users' edges re-weighted when an
#: applicant joins them (the hub damping of a device shared by 2 changes from 1/2 to 1/3);
#: above it the change, at most 1/64 of an edge, waits for the next full scoring.
REWEIGHT_MAX = 64
#: Belief propagation's defaults, as the batch features solve it.
BP_THETA, BP_COUPLING = 0.4, 0.8


class LiveFull(ParameterError):
    """The live graph holds as many added users as it was given room for."""


@dataclass(frozen=True)
class LocalGraph:
    """The subgraph around one applicant.

    Attributes
    ----------
    user_ids : ndarray of str
        Local users; the applicant is row 0 (then co-users, partners, their partners, pads).
    nodes : ndarray of int
        Live node of each local user (-1 for the applicant when it is new).
    tables : Tables
        The local rows: the applicant's links and every link of its identifiers, every
        relation of the applicant and of its partners.
    projection : Projection
        Projected by the configuration's rules (identifier degrees are the global ones).
    ident_nodes : ndarray of int
        Live node of each local shared identifier (-1 for one that becomes shared now).
    new : bool
        Whether the applicant is a user the live graph does not know.
    wider : Tables or None
        :attr:`tables` and, besides, every link of the co-users and every link of their
        identifiers: what the co-users' own identifier sharing is computed from
        (:func:`scoring.features.co_user_sharing`). Its users are a superset of :attr:`tables`'.
    """

    user_ids: np.ndarray
    nodes: np.ndarray
    tables: Tables
    projection: Projection
    ident_nodes: np.ndarray
    ident_keys: np.ndarray
    new: bool
    wider: Tables | None = None


@dataclass(frozen=True)
class Placement:
    """The propagations at the local users with the applicant in the graph.

    Attributes
    ----------
    scores : dict of (layer, seeds) to ndarray
        Batch-normalised personalized PageRank (:func:`batch_scores`) of each local user, for
        ``seeds`` in ``fraud``, ``benign``, ``uniform``.
    belief : dict of layer to ndarray
        Belief propagation's fraud probability of each local user.
    node : int
        The applicant's live node.
    moved : ndarray of int, ndarray of float
        Users whose fraud exposure (layer ``all``) moved, and by how much (seed-weight units).
    in_edges : list of (int, float, object)
        For explanations: live nodes stepping to the applicant, the share of their walk that
        does, and what the step is (identifier key or relation kind).
    """

    scores: dict[tuple[str, str], np.ndarray]
    belief: dict[str, np.ndarray]
    node: int
    moved: tuple[np.ndarray, np.ndarray]
    in_edges: list[tuple[int, float, Any]]
    error_bound: float


def batch_scores(state: PushState, nodes: np.ndarray, *, total: float) -> np.ndarray:
    """Personalized PageRank of ``nodes`` as :func:`~graph.propagation.personalized_pagerank`
    with ``dangling="seeds"`` gives it, from a push state (``dangling="self"``).

    ``total`` is ``sum(x)`` over all nodes (:meth:`LiveGraph.total`)."""
    beta = 1.0 - state.alpha
    p = state.p[nodes]
    x = np.where(state.out_weight[nodes] > 0, p, beta * p)
    return x / total if total > 0 else np.zeros(len(nodes))


def _x_total(state: PushState) -> float:
    beta = 1.0 - state.alpha
    p = state.p
    return float(p.sum() - (1.0 - beta) * p[state.out_weight <= 0].sum())


def _ident_key(kinds: np.ndarray, idents: np.ndarray, kind_code: dict[str, int]) -> np.ndarray:
    """One int64 per (kind, pseudonym): the pseudonym's first 15 hex digits and the kind's code
    (pseudonyms are keyed hashes: 60 bits keep collisions below one in a billion at 10^6)."""
    heads = pd.Series(idents, dtype="string").str.slice(0, 15)
    ints = np.array([_hex(h) for h in heads.tolist()], dtype=np.int64) if len(heads) else np.zeros(0, dtype=np.int64)
    codes = np.array([kind_code.setdefault(str(k), len(kind_code)) for k in kinds.tolist()], dtype=np.int64)
    return (ints << 3) ^ codes  # kinds beyond 8 share bits: the key is checked against the kind


def _hex(text: str) -> int:
    try:
        return int(text, 16)
    except ValueError:  # the pads' identifier: never looked up
        return -1


class _Grouped:
    """Rows grouped by an integer key: ``rows_of(keys)`` in one gather (CSR over sorted keys),
    with rows added later in a dict."""

    def __init__(self, keys: np.ndarray) -> None:
        order = np.argsort(keys, kind="stable")
        self.sorted = keys[order]
        self.order = order
        self.added: dict[int, list[int]] = {}

    def rows_of(self, keys: np.ndarray) -> np.ndarray:
        keys = np.asarray(keys, dtype=np.int64)
        lo = np.searchsorted(self.sorted, keys, side="left")
        hi = np.searchsorted(self.sorted, keys, side="right")
        parts = [self.order[a:b] for a, b in zip(lo.tolist(), hi.tolist()) if b > a]
        for k in keys.tolist():
            if k in self.added:
                parts.append(np.asarray(self.added[k], dtype=np.int64))
        return np.unique(np.concatenate(parts)) if parts else np.zeros(0, dtype=np.int64)

    def add(self, key: int, row: int) -> None:
        self.added.setdefault(int(key), []).append(int(row))


class LiveGraph:
    """The graph of the last load and what arrived since, for applicants.

    Parameters
    ----------
    tables : Tables
        The canonical tables of the load.
    projection : Projection
        Their projection under ``config``.
    config : GraphConfig
    fraud, benign : ndarray, shape (n_users,)
        Seed weights of the flags (:func:`scoring.features.flag_vectors`).
    alpha, tol : float
        As the batch features solve (``ScoringConfig.alpha``, ``tol``).
    capacity : int
        Users that may be added before :meth:`commit` refuses (:class:`LiveFull`).
    eps : float
        Push threshold relative to the mean score of a node (per unit of out-degree).
    exposure : PushState, optional
        The fraud exposure over both layers to keep current (the service's); solved here when
        not given.
    """

    def __init__(
        self, tables: Tables, projection: Projection, *, config: GraphConfig, fraud: np.ndarray, benign: np.ndarray, alpha: float,
        tol: float, capacity: int = 100_000, eps: float = 1e-4, exposure: PushState | None = None,
    ) -> None:
        self.config = config
        self.alpha, self.tol, self.capacity = alpha, tol, capacity
        self.projection = projection
        self.lock = threading.RLock()
        n, m = projection.n_users, projection.n_idents
        self.n_base, self.m_base = n, m
        # -- rows of the load, indexed ---------------------------------------------------------
        self.links = tables.links.reset_index(drop=True)
        self.relations = tables.relations.reset_index(drop=True)
        self.users = tables.users
        self.flags_table = tables.flags
        self.sources = dict(tables.sources)
        self.node_of: dict[str, int] = {str(u): i for i, u in enumerate(projection.user_ids.tolist())}
        self.node_users: list[str] = [str(u) for u in projection.user_ids.tolist()]  # every user; added ones after the load's
        self.user_at: dict[int, str] = {}  # node of each added user (nodes of the load's users are their index)
        self.kind_code: dict[str, int] = {}
        self._link_ident = _ident_key(self.links["kind"].to_numpy(dtype=object), self.links["ident"].to_numpy(dtype=object), self.kind_code)
        self._by_ident = _Grouped(self._link_ident)
        link_user = self._users_of(self.links["user_id"].to_numpy(dtype=object))
        self._by_link_user = _Grouped(link_user)
        src = self._users_of(self.relations["src"].to_numpy(dtype=object))
        dst = self._users_of(self.relations["dst"].to_numpy(dtype=object))
        self._by_rel_user = _Grouped(np.concatenate([src, dst]))
        self._n_rel = len(self.relations)
        self.ident_node: dict[int, int] = {}
        keys = projection.ident_keys.astype(str)
        if m:
            kinds = np.array([k.split(":", 1)[0] for k in keys.tolist()], dtype=object)
            idents = np.array([k.split(":", 1)[1] for k in keys.tolist()], dtype=object)
            for j, key in enumerate(_ident_key(kinds, idents, self.kind_code).tolist()):
                self.ident_node[int(key)] = n + j
        self.node_ident: dict[int, str] = {}
        self.as_of = int(encode(Tables(tables.users.iloc[:0], self.links, self.relations, tables.flags.iloc[:0])).as_of) if (
            len(self.links) or len(self.relations)) else NAT
        # -- added since the load ---------------------------------------------------------------
        self.added_links: list[dict[str, Any]] = []
        self.added_relations: list[dict[str, Any]] = []
        self.added_users: dict[str, dict[str, float]] = {}
        self.pending = 0
        # -- propagations ---------------------------------------------------------------------
        self.fraud = np.concatenate([np.asarray(fraud, dtype=np.float64), np.zeros(m)])
        self.benign = np.concatenate([np.asarray(benign, dtype=np.float64), np.zeros(m)])
        self.states: dict[tuple[str, str], PushState] = {}
        self.fields: dict[str, sp.csr_matrix] = {}
        self.belief: dict[str, np.ndarray] = {}
        self._totals: dict[tuple[str, str], float] = {}
        uniform = np.zeros(n + m)
        uniform[:n] = 1.0
        for layer, links, relations in (("lnk", True, False), ("rel", False, True), ("all", True, True)):
            A = walk_matrix(projection, hub_exponent=config.hub_exponent, hub_exponents=config.hub_exponents, links=links, relations=relations)
            if A.nnz == 0 and layer != "all":
                continue
            for name, seeds in (("fraud", self.fraud), ("benign", self.benign), ("uniform", uniform)):
                if layer == "all" and name != "fraud":
                    continue  # the service's exposure: fraud only
                if seeds.sum() <= 0:
                    continue
                if layer == "all" and exposure is not None:
                    self.states[(layer, name)] = exposure  # the service's own, kept current by its flags
                    continue
                mass = float(seeds.sum())
                state = push_state(A, seeds, alpha=alpha, tol=min(tol, 1e-10), eps=eps * mass / max(n, 1))
                self.states[(layer, name)] = state
            if layer != "all":
                self.fields[layer] = A
        neg = projection.relations_neg
        if neg.nnz and "rel" in self.fields:
            positive = self.fields["rel"][:n, :n]
            signed = sp.csr_matrix(positive - neg - neg.T)
            self.fields["rel"] = sp.block_diag([signed, sp.csr_matrix((m, m))], format="csr")
        for layer, W in self.fields.items():
            if (self.fraud > 0).any() or (self.benign > 0).any():
                r = belief_propagation(W, fraud_seeds=np.minimum(self.fraud, 1.0), benign_seeds=np.minimum(self.benign, 1.0), tol=tol)
                self.belief[layer] = r.scores - 0.5
            else:
                self.belief[layer] = np.zeros(n + m)
        self._undo: dict[str, Any] | None = None
        self._edge_log: list[tuple[tuple[str, str], np.ndarray, np.ndarray, np.ndarray]] = []  # commits' edges, for a re-solve
        self.resolving = False
        self._placed = 0  # commits since the last look at the residuals
        for state in self.states.values():
            reserve(state, 4 * 1024)

    # -- identity ---------------------------------------------------------------------------------

    @property
    def n_nodes(self) -> int:
        return len(self.node_users) + len(self.ident_node)

    def _users_of(self, ids: np.ndarray) -> np.ndarray:
        index = pd.Index(self.node_users)
        return index.get_indexer(pd.Index(np.asarray(ids, dtype=object).astype(str))).astype(np.int64)

    def is_user(self, nodes: np.ndarray) -> np.ndarray:
        """Which of ``nodes`` are users (the others are identifiers)."""
        nodes = np.asarray(nodes, dtype=np.int64)
        out = nodes < self.n_base
        if self.user_at:
            out |= np.isin(nodes, np.fromiter(self.user_at, dtype=np.int64))
        return out

    def user_ids_at(self, nodes: np.ndarray) -> np.ndarray:
        """The user id of each user node."""
        return np.array([self.node_users[k] if k < self.n_base else self.user_at[k] for k in np.asarray(nodes).tolist()], dtype=object)

    def knows(self, user_id: str) -> bool:
        return user_id in self.node_of

    def total(self, key: tuple[str, str]) -> float:
        cached = self._totals.get(key)
        if cached is None:
            cached = self._totals[key] = _x_total(self.states[key])
        return cached

    # -- the local subgraph -----------------------------------------------------------------------

    def local(self, user_id: str, links: pd.DataFrame, relations: pd.DataFrame) -> LocalGraph:
        """The subgraph around ``user_id`` with its new ``links`` and ``relations`` (canonical
        frames, as the loader makes them) added to what it has.

        Raises
        ------
        NotFoundError
            A relation names a user the live graph does not know (listed).
        """
        with self.lock:
            return self._local(user_id, links, relations)

    def _local(self, user_id: str, links: pd.DataFrame, relations: pd.DataFrame) -> LocalGraph:
        own = self.node_of.get(user_id, -1)
        new = own < 0
        others = pd.unique(pd.concat([relations["src"], relations["dst"]]).astype(str).to_numpy()) if len(relations) else np.zeros(0, dtype=object)
        unknown = [o for o in others.tolist() if o != user_id and o not in self.node_of]
        if unknown:
            raise NotFoundError(f"relations name {len(unknown)} unknown user(s): {', '.join(map(repr, unknown[:20]))}")
        # the applicant's links: new ones and, for a known user, those it has
        own_links = links.assign(_row=-1)
        if not new:
            rows = self._link_rows_of_users(np.array([own]))
            own_links = pd.concat([self._link_frame(rows), own_links], ignore_index=True)
        # a link to an identifier the user has already merges with it (as the store keeps it)
        own_links = own_links.drop_duplicates(["kind", "ident"], keep="first").reset_index(drop=True)
        keys = _ident_key(own_links["kind"].to_numpy(dtype=object), own_links["ident"].to_numpy(dtype=object), self.kind_code)
        ident_keys = np.unique(keys)
        co_rows = self._link_rows_of_idents(ident_keys)
        co_links = self._link_frame(co_rows)
        co_links = co_links[co_links["user_id"].astype(str) != user_id]
        # the applicant's relations, its partners' and theirs
        own_rel = relations.assign(_row=-1)
        if not new:
            own_rel = pd.concat([self._relation_frame(self._rel_rows_of_users(np.array([own]))), own_rel], ignore_index=True)
        partners = pd.unique(pd.concat([own_rel["src"], own_rel["dst"]]).astype(str).to_numpy()) if len(own_rel) else np.zeros(0, dtype=object)
        partners = [p for p in partners.tolist() if p != user_id]
        partner_nodes = np.array([self.node_of[p] for p in partners], dtype=np.int64)
        p_rows = self._rel_rows_of_users(partner_nodes) if len(partner_nodes) else np.zeros(0, dtype=np.int64)
        p_rel = self._relation_frame(p_rows)
        if len(p_rel):
            p_rel = p_rel[~p_rel["_row"].isin(own_rel["_row"][own_rel["_row"] >= 0])]
        rel = pd.concat([own_rel, p_rel], ignore_index=True)
        # pads: two users joined by one identifier and one relation, so every family of features exists
        kind0 = (own_links["kind"].iloc[0] if len(own_links) else (self.links["kind"].iloc[0] if len(self.links) else "device"))
        pad_links = pd.DataFrame({"user_id": list(PAD_USERS), "kind": [kind0] * 2, "ident": ["\x00pad"] * 2, "first_seen": pd.NaT,
                                  "last_seen": pd.NaT, "weight": np.nan, "_row": -1})
        rel_kind0 = rel["kind"].iloc[0] if len(rel) else (self.relations["kind"].iloc[0] if len(self.relations) else "contact")
        pad_rel = pd.DataFrame({"src": [PAD_USERS[0]], "dst": [PAD_USERS[1]], "kind": [rel_kind0], "weight": [1.0], "ts": pd.NaT, "_row": -1})
        all_links = pd.concat([own_links.assign(user_id=user_id), co_links, pad_links], ignore_index=True)
        all_rel = pd.concat([rel, pad_rel], ignore_index=True)
        for c in self.relations.columns:
            if c not in all_rel:
                all_rel[c] = np.nan
        users_order = pd.unique(np.concatenate([
            [user_id], co_links["user_id"].astype(str).to_numpy(), np.asarray(partners, dtype=object),
            all_rel["src"].astype(str).to_numpy(), all_rel["dst"].astype(str).to_numpy(), np.asarray(PAD_USERS, dtype=object),
        ]).astype(object))
        users = pd.DataFrame({"user_id": pd.Series(users_order, dtype=object).astype(str)})
        local_tables = Tables(
            users=users,
            links=all_links.drop(columns="_row")[["user_id", "kind", "ident", "first_seen", "last_seen", "weight"]],
            relations=all_rel.drop(columns="_row")[[c for c in self.relations.columns] if len(self.relations.columns) else ["src", "dst", "kind", "weight", "ts"]],
            flags=self.flags_table.iloc[:0],
        )
        enc = encode(local_tables)
        enc = _with_as_of(enc, self.as_of)
        projection = project_encoded(enc, self.config)
        nodes = np.array([self.node_of.get(str(u), -1) for u in projection.user_ids.tolist()], dtype=np.int64)
        lk = projection.ident_keys.astype(str)
        kinds = np.array([k.split(":", 1)[0] for k in lk.tolist()], dtype=object)
        idents = np.array([k.split(":", 1)[1] for k in lk.tolist()], dtype=object)
        ikeys = _ident_key(kinds, idents, self.kind_code) if len(lk) else np.zeros(0, dtype=np.int64)
        ident_nodes = np.array([self.ident_node.get(int(k), -1) for k in ikeys.tolist()], dtype=np.int64)
        ident_nodes[idents == "\x00pad"] = -2  # never placed
        return LocalGraph(user_ids=projection.user_ids, nodes=nodes, tables=local_tables, projection=projection, ident_nodes=ident_nodes,
                          ident_keys=ikeys, new=new, wider=self._wider(local_tables, user_id, co_links))

    def _wider(self, local_tables: Tables, user_id: str, co_links: pd.DataFrame) -> Tables:
        """``local_tables`` with every link of the co-users and of their identifiers added."""
        co_nodes = np.unique(np.array([self.node_of[str(u)] for u in co_links["user_id"].astype(str).tolist() if str(u) in self.node_of], dtype=np.int64))
        if not len(co_nodes):
            return local_tables
        theirs = self._link_frame(self._link_rows_of_users(co_nodes))
        keys = np.unique(_ident_key(theirs["kind"].to_numpy(dtype=object), theirs["ident"].to_numpy(dtype=object), self.kind_code))
        more = self._link_frame(np.union1d(self._link_rows_of_users(co_nodes), self._link_rows_of_idents(keys)))
        # the rows the local tables hold already (the applicant's, its identifiers') stay once
        more = more[(more["user_id"].astype(str) != user_id) & ~more["_row"].isin(co_links["_row"])]
        if not len(more):
            return local_tables
        links = pd.concat([local_tables.links, more[local_tables.links.columns]], ignore_index=True)
        known = set(local_tables.users["user_id"].astype(str).tolist())
        added = pd.unique(more["user_id"].astype(str).to_numpy())
        users = pd.concat([local_tables.users, pd.DataFrame({"user_id": [u for u in added.tolist() if u not in known]})], ignore_index=True)
        return dataclasses.replace(local_tables, users=users, links=links)

    def _link_rows_of_users(self, nodes: np.ndarray) -> np.ndarray:
        return self._by_link_user.rows_of(nodes)

    def _link_rows_of_idents(self, keys: np.ndarray) -> np.ndarray:
        return self._by_ident.rows_of(keys)

    def _rel_rows_of_users(self, nodes: np.ndarray) -> np.ndarray:
        rows = self._by_rel_user.rows_of(nodes)
        n_rel = self._n_rel
        base = rows[rows < 2 * n_rel]
        base = np.where(base >= n_rel, base - n_rel, base)
        return np.unique(np.concatenate([base, rows[rows >= 2 * n_rel] - n_rel]))

    def _link_frame(self, rows: np.ndarray) -> pd.DataFrame:
        rows = np.asarray(rows, dtype=np.int64)
        base = rows[rows < len(self.links)]
        frame = self.links.iloc[base].assign(_row=base)
        extra = [self.added_links[r - len(self.links)] | {"_row": r} for r in rows[rows >= len(self.links)].tolist()]
        if extra:
            frame = pd.concat([frame, pd.DataFrame(extra)], ignore_index=True)
        return frame.reset_index(drop=True)

    def _relation_frame(self, rows: np.ndarray) -> pd.DataFrame:
        rows = np.asarray(rows, dtype=np.int64)
        base = rows[rows < self._n_rel]
        frame = self.relations.iloc[base].assign(_row=base)
        extra = [self.added_relations[r - self._n_rel] | {"_row": r} for r in rows[rows >= self._n_rel].tolist()]
        if extra:
            frame = pd.concat([frame, pd.DataFrame(extra)], ignore_index=True)
        return frame.reset_index(drop=True)

    # -- placing the applicant ----------------------------------------------------------------

    @contextmanager
    def trial(self, local: LocalGraph) -> Iterator[Placement]:
        """The applicant placed in the graph for the block, then taken out again (a what-if):
        every kept state is as before, bit for bit."""
        with self.lock, ExitStack() as stack:
            for state in self.states.values():
                stack.enter_context(trial(state, room=1 + len(local.ident_nodes)))
            self._undo = {"belief": [], "users": len(self.node_users), "idents": []}
            try:
                yield self._place(local)
            finally:
                undo, self._undo = self._undo, None
                for layer, nodes, old in reversed(undo["belief"]):
                    self.belief[layer][nodes] = old
                for u in self.node_users[undo["users"]:]:
                    self.user_at.pop(self.node_of.pop(u, -1), None)
                del self.node_users[undo["users"]:]
                for key in undo["idents"]:
                    self.ident_node.pop(key, None)
                # the states are as before, bit for bit: their totals too

    def commit(self, local: LocalGraph, *, links: pd.DataFrame, relations: pd.DataFrame, features: dict[str, float] | None) -> Placement:
        """Place the applicant for good: later applicants, flags and explanations see its node,
        links and relations.

        Raises
        ------
        LiveFull
            The live graph already holds ``capacity`` added users.
        """
        with self.lock:
            if local.new and len(self.added_users) >= self.capacity:
                raise LiveFull(f"the live graph holds {len(self.added_users):,} added users, its configured capacity; "
                               "a full scoring folds them into the load")
            placement = self._place(local)
            user_id = str(local.user_ids[0])
            node = placement.node
            if user_id not in self.added_users and local.new:
                self.added_users[user_id] = dict(features or {})
            elif features:
                self.added_users.setdefault(user_id, {}).update(features)
            for rec in links.to_dict(orient="records"):
                row = len(self.links) + len(self.added_links)
                self.added_links.append(rec)
                key = int(_ident_key(np.array([rec["kind"]], dtype=object), np.array([rec["ident"]], dtype=object), self.kind_code)[0])
                self._by_ident.add(key, row)
                self._by_link_user.add(node, row)
            for rec in relations.to_dict(orient="records"):
                row = self._n_rel + len(self.added_relations)
                self.added_relations.append(rec)
                for end in (rec["src"], rec["dst"]):
                    end_node = self.node_of[str(end)]
                    self._by_rel_user.add(end_node, row + self._n_rel)  # second half: as the load's dst rows
            self._totals.clear()
            return placement

    def _place(self, local: LocalGraph) -> Placement:
        P = local.projection
        n_loc, m_loc = P.n_users, P.n_idents
        user_id = str(local.user_ids[0])
        # live node of every local node (users then identifiers), new ones appended
        node = int(local.nodes[0])
        if node < 0:
            node = self._new_node()
            self.node_users.append(user_id)
            self.node_of[user_id] = node
            self.user_at[node] = user_id
            for key, state in self.states.items():
                if key[1] == "uniform":  # the global walk restarts at every user, this one too
                    add_seed(state, node, 1.0)
        live = np.empty(n_loc + m_loc, dtype=np.int64)
        live[:n_loc] = local.nodes
        live[0] = node
        idents = local.ident_nodes.copy()
        for j in np.flatnonzero(idents == -1).tolist():
            idents[j] = self._new_node()
            self.ident_node[int(local.ident_keys[j])] = int(idents[j])
            if self._undo is not None:
                self._undo["idents"].append(int(local.ident_keys[j]))
        live[n_loc:] = idents
        pad = np.zeros(n_loc + m_loc, dtype=bool)
        pad[n_loc:] = idents == -2
        pad[:n_loc] = np.isin(local.user_ids.astype(str), PAD_USERS)
        new_ident = np.zeros(n_loc + m_loc, dtype=bool)
        new_ident[n_loc:] = local.ident_nodes == -1
        # the edges to set: the applicant's row and column, new identifiers' rows and columns, and
        # the users' rows into small identifiers the applicant joins (their hub damping changed)
        small = np.zeros(n_loc + m_loc, dtype=bool)
        small[n_loc:] = (P.ident_degree <= REWEIGHT_MAX) | (local.ident_nodes == -1)
        moved = (np.zeros(0, dtype=np.int64), np.zeros(0))
        in_edges: list[tuple[int, float, Any]] = []
        bound = 0.0
        walks = _local_walks(P, self.config)
        for layer in ("lnk", "rel", "all"):
            keys = [k for k in self.states if k[0] == layer]
            if not keys:
                continue
            W = walks[layer]
            C = W.tocoo()
            r, c, w = C.row, C.col, C.data
            touch = (r == 0) | (c == 0) | new_ident[r] | new_ident[c] | (small[c] & (r < n_loc))
            touch &= ~pad[r] & ~pad[c]
            src, dst, wt = live[r[touch]], live[c[touch]], w[touch]
            for key in keys:
                up = set_edges(self.states[key], src, dst, wt, bound=False)
                if self._undo is None:
                    self._edge_log.append((key, src, dst, wt))
                if key == ("all", "fraud"):
                    users = self.is_user(up.nodes) & (up.nodes != node)
                    moved = (up.nodes[users], up.delta[users])
                    state = self.states[key]
                    into = dst == node
                    for s_node, weight in zip(src[into].tolist(), wt[into].tolist()):
                        share = weight / state.out_weight[s_node] if state.out_weight[s_node] > 0 else 0.0
                        in_edges.append((int(s_node), float(share), None))
        # the normaliser of each state (a sum over every node): kept across what-ifs, which move it
        # by the applicant's own seed at most (the global walk's restart at a new user), taken
        # again after a commit
        trying = self._undo is not None
        if not trying:
            self._totals.clear()
        scores: dict[tuple[str, str], np.ndarray] = {}
        users_live = live[:n_loc].copy()
        ok = ~pad[:n_loc]
        for key, state in self.states.items():
            vals = np.zeros(n_loc)
            total = self.total(key) + (1.0 if trying and local.new and key[1] == "uniform" else 0.0)
            vals[ok] = batch_scores(state, users_live[ok], total=total)
            scores[key] = vals
        belief = self._place_belief(P, live, pad, walks)
        self._placed += self._undo is None
        return Placement(scores=scores, belief=belief, node=node, moved=moved, in_edges=in_edges, error_bound=float("nan"))

    # -- bounding the residuals ----------------------------------------------------------------

    @property
    def error_bound(self) -> float:
        """The largest L1 error bound of the kept PageRank states, relative to their seed mass."""
        with self.lock:
            return max((s.error_bound / max(float(s.seeds.sum()), 1e-300) for s in self.states.values()), default=0.0)

    def needs_resolve(self, *, every: int = 50, limit: float = 0.01) -> bool:
        """Whether the residuals of the commits since the last solve pass ``limit`` of the seed
        mass (looked at every ``every`` commits: the look sums every residual)."""
        if self._placed < every or self.resolving:
            return False
        self._placed = 0
        return self.error_bound > limit

    def resolve(self) -> None:
        """Solve every kept state again from its current graph and seeds, outside the lock (seconds
        on a million users: requests go on meanwhile), then put the fresh states in, with what
        was committed or flagged during the solve pushed onto them."""
        with self.lock:
            if self.resolving:
                return
            self.resolving = True
            jobs = {key: (folded(st), st.seeds.copy(), st.alpha, st.eps, st.size) for key, st in self.states.items()}
            mark = len(self._edge_log)
        try:
            fresh = {key: push_state(A, seeds, alpha=alpha, tol=min(self.tol, 1e-10), eps=eps) for key, (A, seeds, alpha, eps, _) in jobs.items()}
            with self.lock:
                for key, st in fresh.items():
                    old = self.states[key]
                    if old.size > st.size:
                        add_nodes(st, old.size - st.size)
                    for k, src, dst, wt in self._edge_log[mark:]:
                        if k == key:
                            set_edges(st, src, dst, wt)
                    changed = np.flatnonzero(old.seeds != st.seeds)
                    for node in changed.tolist():
                        add_seed(st, node, float(old.seeds[node] - st.seeds[node]))
                    reserve(st, 4 * 1024)
                    self.states[key] = st
                del self._edge_log[:]
                self._totals.clear()
        finally:
            self.resolving = False

    def _new_node(self) -> int:
        """One more node in every kept state (the same number everywhere)."""
        node = self.n_nodes
        for state in self.states.values():
            first = add_nodes(state, 1)
            if first != node:
                raise RuntimeError(f"live states out of step: node {first} added where {node} was expected")
        for layer, vals in self.belief.items():
            if len(vals) <= node:
                self.belief[layer] = np.concatenate([vals, np.zeros(max(1024, len(vals) // 4))])
        return node

    # -- belief propagation around the applicant ---------------------------------------------

    def _place_belief(self, P: Projection, live: np.ndarray, pad: np.ndarray, walks: dict[str, sp.csr_matrix]) -> dict[str, np.ndarray]:
        """Belief propagation's fraud probability at the local users with the applicant in:
        Jacobi sweeps of the linearised rule over the applicant and its neighbours in the
        field, every other node held at its kept value (their rows are complete in the local
        subgraph: identifiers with all their users, partners with all their relations)."""
        n_loc = P.n_users
        out: dict[str, np.ndarray] = {}
        for layer in self.belief:
            if layer == "lnk":
                W = walks["lnk"]
            else:
                Wr = walks["rel"]
                n = P.n_users
                neg = P.relations_neg
                if neg.nnz:
                    signed = sp.csr_matrix(Wr[:n, :n] - neg - neg.T)
                    Wr = sp.block_diag([signed, sp.csr_matrix((P.n_idents, P.n_idents))], format="csr")
                W = Wr
            S = _symmetric(sp.csr_matrix(W))
            vals = self.belief[layer]
            p = np.where(live >= 0, vals[np.maximum(live, 0)], 0.0)
            p[pad] = 0.0
            seeds = np.zeros(len(live))
            ok = (live >= 0) & ~pad
            seeds[ok] = BP_THETA * (np.minimum(self._seed("fraud", live[ok]), 1.0) - np.minimum(self._seed("benign", live[ok]), 1.0))
            active = np.zeros(len(live), dtype=bool)
            active[0] = True
            nbr = S.indices[S.indptr[0]:S.indptr[1]]
            active[nbr] = True
            active &= ~pad
            deg = np.asarray(np.abs(S).sum(axis=1)).ravel()
            idx = np.flatnonzero(active)
            for _ in range(50):
                num = S[idx] @ p
                new = np.clip(seeds[idx] + BP_COUPLING * np.divide(num, deg[idx], out=np.zeros(len(idx)), where=deg[idx] > 0), -0.5, 0.5)
                change = float(np.abs(new - p[idx]).sum())
                p[idx] = new
                if change < self.tol:
                    break
            if self._undo is not None:
                self._undo["belief"].append((layer, live[idx].copy(), vals[live[idx]].copy()))
            vals[live[idx]] = p[idx]
            out[layer] = 0.5 + p[:n_loc]
        return out

    def _seed(self, name: str, nodes: np.ndarray) -> np.ndarray:
        seeds = self.fraud if name == "fraud" else self.benign
        nodes = np.asarray(nodes, dtype=np.int64)
        return np.where(nodes < len(seeds), seeds[np.minimum(nodes, len(seeds) - 1)], 0.0) if len(seeds) else np.zeros(len(nodes))

    def set_flag(self, user_id: str, *, fraud: float, benign: float) -> None:
        """A user's seed weights changed (a flag accepted since): pushed through the PageRank
        states; belief propagation takes it at its next solve."""
        with self.lock:
            node = self.node_of.get(user_id)
            if node is None:
                raise NotFoundError(f"unknown user {user_id!r}: not in the live graph")
            for name, value in (("fraud", fraud), ("benign", benign)):
                seeds = self.fraud if name == "fraud" else self.benign
                if node >= len(seeds):
                    seeds = np.concatenate([seeds, np.zeros(node + 1 - len(seeds) + 1024)])
                    setattr(self, name, seeds)
                seeds[node] = value
                for key, state in self.states.items():
                    if key[1] == name:
                        add_seed(state, node, value - float(state.seeds[node]))
            self._totals.clear()


def _local_walks(P: Projection, config: GraphConfig) -> dict[str, sp.csr_matrix]:
    """The walk matrices of a local subgraph, each layer and both (``walk_matrix``'s blocks:
    the layers' entries are disjoint, so both is their sum)."""
    damping = {"hub_exponent": config.hub_exponent, "hub_exponents": config.hub_exponents}
    lnk = sp.csr_matrix(walk_matrix(P, **damping, links=True, relations=False))
    rel = sp.csr_matrix(walk_matrix(P, **damping, links=False, relations=True))
    lnk.eliminate_zeros()
    rel.eliminate_zeros()
    both = sp.csr_matrix(lnk + rel)
    return {"lnk": lnk, "rel": rel, "all": both}


def _symmetric(W: sp.csr_matrix) -> sp.csr_matrix:
    S = sp.csr_matrix((W + W.T) / 2.0)
    S.setdiag(0.0)
    S.eliminate_zeros()
    return S


def _with_as_of(enc: EncodedGraph, as_of: int) -> EncodedGraph:
    import dataclasses

    if as_of == NAT:
        return enc
    return dataclasses.replace(enc, as_of=max(int(enc.as_of), int(as_of)) if enc.as_of != NAT else int(as_of))
