"""Decision policies: two outputs, ``fraud_risk`` and ``credit_risk``, and how they decide.

Fraud detection may read the whole graph; what a creditworthiness assessment may read depends
on the law the lender works under. A :class:`DecisionPolicy` says which feature groups
``credit_risk`` may see, what a refusal that rests on graph evidence alone becomes, and which
route to human review a refused user is told about. :func:`combine_outputs` turns the two
risks into the decision; it is a pure function of arrays, so every path that scores (the
``score`` command, the service, applicants, recourse) decides the same way.

Feature groups (by column prefix, :func:`feature_group`):

``own``
    ``usr_`` features: the user's own input columns (transactions, repayments, identity,
    consumption, alternative payments).
``linked_accounts``
    ``lnk_`` features: identifiers (devices, phones, cards...) shared with other users.
``social_network``
    ``rel_`` features: relations and contacts, the neighbours' columns averaged over them,
    and everything propagated along them.

A feature of any other prefix belongs to no group a policy can grant, so ``credit_risk`` sees
it only under a policy that grants ``all``: a new kind of feature is never let into a
restricted credit assessment by default.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np

from loaders.errors import ParameterError

__all__ = [
    "FEATURE_GROUPS",
    "GRAPH_GROUPS",
    "GRAPH_EVIDENCE",
    "DecisionPolicy",
    "PolicyDecision",
    "POLICIES",
    "policy_named",
    "feature_group",
    "credit_columns",
    "combine_outputs",
    "principal_reasons",
]

#: Feature groups a policy may grant to ``credit_risk``, by column prefix.
FEATURE_GROUPS: Mapping[str, str] = MappingProxyType({"own": "usr_", "linked_accounts": "lnk_", "social_network": "rel_"})
#: The groups that are graph evidence (what ``graph_evidence = "review"`` looks at).
GRAPH_GROUPS: tuple[str, ...] = ("linked_accounts", "social_network")
#: Values of :attr:`DecisionPolicy.graph_evidence`.
GRAPH_EVIDENCE: tuple[str, ...] = ("decide", "review")
_ALL = "all"
_DECISION_RANK = {"approve": 0, "review": 1, "reject": 2}
_DECISIONS = np.array(["approve", "review", "reject"], dtype=object)


@dataclass(frozen=True)
class DecisionPolicy:
    """What each output may see and how the two decide.

    Attributes
    ----------
    name : str
        How configuration and outputs name it.
    credit_features : tuple of str
        Feature groups ``credit_risk`` may use: ``all``, or any of ``own``,
        ``linked_accounts``, ``social_network`` (:data:`FEATURE_GROUPS`). ``fraud_risk``
        always uses every feature. With ``all``, ``credit_risk`` is ``fraud_risk``: one model,
        the behaviour of a single score.
    graph_evidence : {"decide", "review"}
        ``review``: a user who would be rejected only because of graph evidence (linked
        accounts, social network), that is whose risk without the graph features would not
        reject on either output, is sent to ``review`` instead; ``decide`` lets graph evidence
        reject on its own. A user confirmed as fraud by its own flag is not concerned.
    human_review : str
        The route to a human review and to contest the decision, told to every user refused
        (``review`` or ``reject``); empty: no route is printed.
    description : str
        One line for reports and ``--help``.
    """

    name: str
    credit_features: tuple[str, ...] = (_ALL,)
    graph_evidence: str = "decide"
    human_review: str = ""
    description: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ParameterError(f"A decision policy needs a non-empty name. Got {self.name!r} instead.")
        if isinstance(self.credit_features, str):
            raise ParameterError(
                f"The 'credit_features' of policy {self.name!r} must be a list of groups, e.g. ['own']. Got {self.credit_features!r} instead."
            )
        groups = tuple(dict.fromkeys(self.credit_features))
        unknown = [g for g in groups if g != _ALL and g not in FEATURE_GROUPS]
        if unknown:
            raise ParameterError(
                f"Unknown feature group(s) {', '.join(map(repr, unknown))} in 'credit_features' of policy {self.name!r}; "
                f"expected any of {_ALL}, {', '.join(FEATURE_GROUPS)}."
            )
        if not groups:
            raise ParameterError(f"The 'credit_features' of policy {self.name!r} must name at least one group (e.g. 'own').")
        object.__setattr__(self, "credit_features", groups)
        if self.graph_evidence not in GRAPH_EVIDENCE:
            raise ParameterError(
                f"The 'graph_evidence' of policy {self.name!r} must be one of {', '.join(GRAPH_EVIDENCE)}. Got {self.graph_evidence!r} instead."
            )

    @property
    def credit_sees_all(self) -> bool:
        """Whether ``credit_risk`` uses every feature (and so is ``fraud_risk``)."""
        return _ALL in self.credit_features

    def credit_sees(self, group: str) -> bool:
        """Whether ``credit_risk`` may use the feature group ``group``."""
        return self.credit_sees_all or group in self.credit_features


_EU_REVIEW = (
    "You may ask for this decision to be reviewed by a person, give your point of view and contest it: "
    "reply to this notice or contact the lender's review desk."
)

#: The policies shipped; configuration may add others (``[policies.NAME]``).
POLICIES: Mapping[str, DecisionPolicy] = MappingProxyType(
    {
        "default": DecisionPolicy(
            "default",
            credit_features=(_ALL,),
            graph_evidence="decide",
            description="one model over every feature decides (the behaviour of a single score)",
        ),
        "eu": DecisionPolicy(
            "eu",
            credit_features=("own",),
            graph_evidence="review",
            human_review=_EU_REVIEW,
            description=(
                "credit_risk from the user's own financial data only (no social-network, contact or shared-identifier "
                "features); graph evidence alone never rejects; every refusal names the human-review route"
            ),
        ),
    }
)


def policy_named(name: str, *, extra: Mapping[str, DecisionPolicy] | None = None) -> DecisionPolicy:
    """The policy called ``name`` among the shipped ones and ``extra``.

    Raises
    ------
    ParameterError
        No policy has that name.

    Examples
    --------
    >>> policy_named("eu").credit_features
    ('own',)
    """
    known = {**POLICIES, **(extra or {})}
    if name not in known:
        raise ParameterError(f"Unknown decision policy {name!r}; expected one of {', '.join(sorted(known))}.")
    return known[name]


def feature_group(column: str) -> str | None:
    """The group (:data:`FEATURE_GROUPS`) a feature column belongs to, None for none.

    Examples
    --------
    >>> feature_group("rel_nbr1_repayments_late"), feature_group("usr_id_verified"), feature_group("x")
    ('social_network', 'own', None)
    """
    for group, prefix in FEATURE_GROUPS.items():
        if column.startswith(prefix):
            return group
    return None


def credit_columns(columns: Sequence[str], policy: DecisionPolicy) -> list[str]:
    """The feature columns ``credit_risk`` may use under ``policy``, in order."""
    if policy.credit_sees_all:
        return list(columns)
    return [c for c in columns if (g := feature_group(c)) is not None and policy.credit_sees(g)]


@dataclass(frozen=True)
class PolicyDecision:
    """Both outputs and the policy's decision, one entry per user.

    Attributes
    ----------
    risk : ndarray
        The worse of the two risks (the contract's ``risk``).
    decision : ndarray of str
        The policy's decision.
    fraud_decision, credit_decision : ndarray of str
        Each output's own decision at the configured thresholds.
    basis : ndarray of str
        Why the decision is what it is: ``fraud``, ``credit`` or ``fraud+credit`` (the outputs
        that refused), ``graph_evidence_review`` (a rejection on graph evidence alone, turned
        into a review), empty for an approval.
    review_route : ndarray of str
        The policy's human-review route for refused users, empty otherwise.
    graph_evidence_only : ndarray of bool or None
        Users whom the stricter output would reject although neither would without its graph
        features (and not confirmed as fraud by their own flag): rejected under
        ``graph_evidence = "decide"``, reviewed under ``"review"``.
    credit_score : ndarray of int or None
        The score of :attr:`risk`, when the caller adds it (:func:`scoring.pipeline.combine_rows`).
    """

    risk: np.ndarray
    decision: np.ndarray
    fraud_decision: np.ndarray
    credit_decision: np.ndarray
    basis: np.ndarray
    review_route: np.ndarray = field(repr=False)
    graph_evidence_only: np.ndarray | None = None
    credit_score: np.ndarray | None = None


def _decide(risk: np.ndarray, approve_at: int, review_at: int) -> np.ndarray:
    from scoring.credit import credit_score, decide

    return np.asarray(decide(credit_score(risk), approve_at=approve_at, review_at=review_at), dtype=object)


def combine_outputs(
    *,
    fraud_risk: np.ndarray,
    credit_risk: np.ndarray,
    fraud_without_graph: np.ndarray,
    credit_without_graph: np.ndarray,
    own_fraud: np.ndarray,
    policy: DecisionPolicy,
    approve_at: int,
    review_at: int,
) -> PolicyDecision:
    """Decide from the two outputs under ``policy``.

    Each output decides at the thresholds (``approve`` at or above ``approve_at`` points,
    ``review`` at or above ``review_at``); the policy's decision is the stricter of the two.
    Under ``graph_evidence = "review"`` a ``reject`` becomes ``review`` when neither output
    would reject without its graph features and the user is not confirmed as fraud by its own
    flag.

    Parameters
    ----------
    fraud_risk, credit_risk : ndarray
        The two outputs' risks in [0, 1].
    fraud_without_graph, credit_without_graph : ndarray
        The same risks with the graph features set to those of a typical user in good
        standing (equal to the risk when the output sees no graph feature).
    own_fraud : ndarray of bool
        Users confirmed as fraud by their own flag.
    policy : DecisionPolicy
    approve_at, review_at : int
        Credit-score thresholds.

    Returns
    -------
    PolicyDecision

    Examples
    --------
    A user rejected on its links alone is reviewed under ``eu``, rejected under ``default``:

    >>> kw = dict(fraud_risk=np.array([0.9]), credit_risk=np.array([0.1]), fraud_without_graph=np.array([0.1]),
    ...           credit_without_graph=np.array([0.1]), own_fraud=np.array([False]), approve_at=650, review_at=550)
    >>> combine_outputs(policy=POLICIES["eu"], **kw).decision.tolist(), combine_outputs(policy=POLICIES["default"], **kw).decision.tolist()
    (['review'], ['reject'])
    """
    fraud_risk = np.asarray(fraud_risk, dtype=np.float64)
    credit_risk = np.asarray(credit_risk, dtype=np.float64)
    n = len(fraud_risk)
    for name, a in (("credit_risk", credit_risk), ("fraud_without_graph", fraud_without_graph), ("credit_without_graph", credit_without_graph), ("own_fraud", own_fraud)):
        if len(a) != n:
            raise ParameterError(f"The {name!r} of combine_outputs must have one entry per user ({n}). Got {len(a)} instead.")
    fd = _decide(fraud_risk, approve_at, review_at)
    cd = _decide(credit_risk, approve_at, review_at)
    rank_f = np.array([_DECISION_RANK[d] for d in fd], dtype=np.int64)
    rank_c = np.array([_DECISION_RANK[d] for d in cd], dtype=np.int64)
    rank = np.maximum(rank_f, rank_c)
    basis = np.full(n, "", dtype=object)
    refused = rank > 0
    basis[refused & (rank_f == rank) & (rank_c == rank)] = "fraud+credit"
    basis[refused & (rank_f == rank) & (rank_c < rank)] = "fraud"
    basis[refused & (rank_c == rank) & (rank_f < rank)] = "credit"
    fwo = _decide(np.asarray(fraud_without_graph, dtype=np.float64), approve_at, review_at)
    cwo = _decide(np.asarray(credit_without_graph, dtype=np.float64), approve_at, review_at)
    graph_only = (rank == 2) & (fwo != "reject") & (cwo != "reject") & ~np.asarray(own_fraud, dtype=bool)
    if policy.graph_evidence == "review":
        rank = np.where(graph_only, 1, rank)
        basis[graph_only] = "graph_evidence_review"
    decision = _DECISIONS[rank]
    route = np.where(rank > 0, policy.human_review, "").astype(object)
    return PolicyDecision(
        risk=np.maximum(fraud_risk, credit_risk),
        decision=decision,
        fraud_decision=fd,
        credit_decision=cd,
        basis=basis,
        review_route=route,
        graph_evidence_only=graph_only,
    )


#: Reason codes that say nothing the user can check or act on: never a principal reason.
_GENERIC = ("SCORE_TOO_LOW", "LOW_SCORE", "INSUFFICIENT_SCORE")


def principal_reasons(
    decision: Sequence[str],
    basis: Sequence[str],
    fraud_reasons: Sequence[Sequence[tuple[str, str]]],
    credit_reasons: Sequence[Sequence[tuple[str, str]]],
    *,
    max_reasons: int = 4,
) -> list[list[tuple[str, str]]]:
    """The principal reasons of each refusal: at most ``max_reasons``, ranked, specific.

    Only the reasons of the output(s) that refused count (credit before fraud when both did,
    since a credit refusal is what the user can answer; a credit refusal under a policy whose
    ``credit_risk`` sees no graph is never explained by the graph), each output's reasons in
    its own order (most important first); duplicates are dropped, and a generic "score too
    low" never counts. Approved users get none.

    Parameters
    ----------
    decision, basis : sequence of str
        :attr:`PolicyDecision.decision` and :attr:`PolicyDecision.basis`.
    fraud_reasons, credit_reasons : sequence of sequences of (code, text)
        Each output's ranked reasons per user.
    max_reasons : int
        At most four under US Regulation B practice.

    Examples
    --------
    >>> principal_reasons(["reject"], ["credit"], [[("A", "a")]], [[("B", "b"), ("A", "a")]])
    [[('B', 'b'), ('A', 'a')]]
    """
    if max_reasons < 1:
        raise ParameterError(f"The 'max_reasons' parameter of principal_reasons must be >= 1. Got {max_reasons!r} instead.")
    out: list[list[tuple[str, str]]] = []
    for i, d in enumerate(decision):
        if d == "approve":
            out.append([])
            continue
        b = basis[i]
        if b in ("fraud", "graph_evidence_review"):
            order = [fraud_reasons[i]]
        elif b == "credit":
            order = [credit_reasons[i]]
        else:
            order = [credit_reasons[i], fraud_reasons[i]]
        chosen: list[tuple[str, str]] = []
        seen: set[str] = set()
        for reasons in order:
            for code, text in reasons:
                if code in seen or code in _GENERIC:
                    continue
                seen.add(code)
                chosen.append((code, text))
        out.append(chosen[:max_reasons])
    return out
