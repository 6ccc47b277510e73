"""Recourse: the smallest changes a refused user can make that would bring an approval.

Only actions the user can take are considered, each a concrete change to its own record:

``REPAY_LATE``
    repay the repayments marked late (their count becomes 0);
``VERIFY_IDENTITY``
    verify its identity (the verified flag becomes 1);
``ADD_ALTERNATIVE_PAYMENTS``
    add twelve months of on-time utility, telecom, rent or transit payments to its record;
``DISPUTE_LINK``
    dispute one identifier (device, phone, card...) it shares with accounts confirmed as fraud;
    if the dispute is upheld the link is gone.

Tenure, age, region or any protected attribute (:data:`scoring.config.PROTECTED_COLUMNS`) is
never changed: nothing here reads or writes them. Every candidate set of actions is scored
with the fitted combinations and decided by the configured policy
(:func:`scoring.pipeline.combine_rows`), so the score shown for a recourse is the score the
model would give, not a guess.

What a dispute changes in the features: the identifier's own counts (links, shared
identifiers, co-users, flagged co-users, the co-users' means) are recomputed without it. The
propagated link features (PageRank lifts, belief propagation) are not solved again for one
user: when the disputed identifiers are all those the user shares with flagged fraud, they
are set to those of the typical user in good standing (what the reason codes compare with);
otherwise they are kept, which can only understate what a partial dispute gains.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from threadpoolctl import ThreadpoolController

from loaders.errors import ParameterError

if TYPE_CHECKING:
    from scoring.config import ScoringConfig
    from scoring.pipeline import Combination, FeatureSet

__all__ = ["ACTIONS", "Action", "RecourseOption", "Recourse", "recourse"]

#: Codes of the action kinds, in the order they are offered.
ACTIONS: tuple[str, ...] = ("REPAY_LATE", "VERIFY_IDENTITY", "ADD_ALTERNATIVE_PAYMENTS", "DISPUTE_LINK")
#: Months of on-time alternative payments an ``ADD_ALTERNATIVE_PAYMENTS`` action adds.
ADDED_MONTHS = 12
#: Link features recomputed exactly for a dispute; other ``lnk_`` features are propagated.
_LINK_COUNTS = ("lnk_n_links", "lnk_n_shared", "lnk_co_users", "lnk_max_ident_degree", "lnk_fraud_co_users", "lnk_benign_co_users")


@dataclass(frozen=True)
class Action:
    """One thing the user can do: a stable ``code``, ``text`` for the user and what it targets
    (the identifier's pseudonymised label for a dispute)."""

    code: str
    text: str
    target: str = ""


@dataclass(frozen=True)
class RecourseOption:
    """A set of actions and what the model gives once they are done."""

    actions: tuple[Action, ...]
    credit_score: int
    decision: str
    risk: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "actions": [{"code": a.code, "text": a.text, **({"target": a.target} if a.target else {})} for a in self.actions],
            "credit_score": self.credit_score,
            "decision": self.decision,
            "risk": self.risk,
        }


@dataclass(frozen=True)
class Recourse:
    """A refused user's recourse.

    Attributes
    ----------
    user_id : str
    credit_score, decision : int, str
        Today's.
    options : tuple of RecourseOption
        The smallest sets of actions that bring ``approve`` (fewest actions first, then highest
        score); when none does, the best improvements found, and :attr:`approves` is False.
    approves : bool
        Whether some option reaches ``approve``.
    considered : tuple of Action
        Every action open to this user.
    note : str
        Why no action can help, when none can (a user confirmed as fraud by its own flag).
    """

    user_id: str
    credit_score: int
    decision: str
    options: tuple[RecourseOption, ...]
    approves: bool
    considered: tuple[Action, ...]
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "user_id": self.user_id,
            "credit_score": self.credit_score,
            "decision": self.decision,
            "approves": self.approves,
            "options": [o.to_dict() for o in self.options],
            "considered": [{"code": a.code, "text": a.text, **({"target": a.target} if a.target else {})} for a in self.considered],
            **({"note": self.note} if self.note else {}),
        }


_CONTROLLER: list[ThreadpoolController] = []
#: The identifier -> users matrix of a projection (by id, the projection kept alive with it).
_MEMBERS: dict[int, tuple[Any, sp.csr_matrix]] = {}


def _controller() -> ThreadpoolController:
    # finding the thread pools walks the loaded libraries: once per process, not per user
    if not _CONTROLLER:
        _CONTROLLER.append(ThreadpoolController())
    return _CONTROLLER[0]


def _members(projection: Any) -> sp.csr_matrix:
    cached = _MEMBERS.get(id(projection))
    if cached is None or cached[0] is not projection:
        _MEMBERS.clear()
        cached = (projection, sp.csr_matrix(sp.csr_matrix(projection.shared).T))
        _MEMBERS[id(projection)] = cached
    return cached[1]


def _col(columns: list[str], name: str) -> int | None:
    try:
        return columns.index(name)
    except ValueError:
        return None


def _actions(features: "FeatureSet", row: int, config: "ScoringConfig", ident_label: Any, max_disputes: int) -> list[tuple[Action, Any]]:
    """The actions open to the user of ``row`` and how each edits its feature row."""
    X = features.X
    cols = list(X.columns)
    x = X.iloc[row]
    out: list[tuple[Action, Any]] = []
    repay = next((s for s in config.columns.get("repayment", ()) if s.denominator), None)
    if repay is not None and (j := _col(cols, f"usr_{repay.column}")) is not None and np.nan_to_num(x.iloc[j]) > 0:
        n_late = int(x.iloc[j])
        out.append((Action("REPAY_LATE", f"repay the {n_late} repayment{'s' if n_late != 1 else ''} marked late"), lambda v, j=j: v.__setitem__(j, 0.0)))
    ident = next((s for s in config.columns.get("identity", ()) if "verif" in s.column), None)
    if ident is not None and (j := _col(cols, f"usr_{ident.column}")) is not None and not np.nan_to_num(x.iloc[j]) >= 1:
        out.append((Action("VERIFY_IDENTITY", "verify your identity"), lambda v, j=j: v.__setitem__(j, 1.0)))
    alt = {s.column: s for s in config.columns.get("alternative_payments", ())}
    jm = next((_col(cols, f"usr_{c}") for c in alt if "month" in c), None)
    js = next((_col(cols, f"usr_{c}") for c in alt if "time" in c or "share" in c), None)
    if jm is not None and js is not None:

        def add_alt(v: np.ndarray, jm: int = jm, js: int = js) -> None:
            months = 0.0 if np.isnan(v[jm]) else float(v[jm])
            share = 1.0 if np.isnan(v[js]) else float(v[js])
            v[js] = (share * months + ADDED_MONTHS) / (months + ADDED_MONTHS)
            v[jm] = months + ADDED_MONTHS

        out.append((Action("ADD_ALTERNATIVE_PAYMENTS", f"add {ADDED_MONTHS} months of on-time utility, telecom, rent or transit payments"), add_alt))
    out.extend(_disputes(features, row, ident_label, max_disputes))
    return out


def _disputes(features: "FeatureSet", row: int, ident_label: Any, max_disputes: int) -> list[tuple[Action, Any]]:
    p = features.projection
    if not p.n_idents:
        return []
    B = p.shared
    fraud = features.flags.fraud > 0
    benign = features.flags.benign > 0
    mine = B.indices[B.indptr[row] : B.indptr[row + 1]]
    if not len(mine):
        return []
    BT = _members(p)
    members = {int(i): BT.indices[BT.indptr[i] : BT.indptr[i + 1]] for i in mine}
    bad = [(int(fraud[m[m != row]].sum()), i) for i, m in members.items()]
    bad = sorted([b for b in bad if b[0] > 0], key=lambda b: (-b[0], b[1]))[:max_disputes]
    out = []
    for n_bad, i in bad:
        kind = p.ident_kinds[int(p.ident_kind[i])]
        label = ident_label(str(p.ident_keys[i]))
        text = f"dispute the link to {label} (shared with {n_bad} account{'s' if n_bad != 1 else ''} confirmed as fraud)"
        out.append((Action("DISPUTE_LINK", text, target=label), ("dispute", i, members[i], int(fraud[members[i][members[i] != row]].sum()), int(benign[members[i][members[i] != row]].sum()))))
    return out


@dataclass(frozen=True)
class _Scored:
    decision: np.ndarray
    credit_score: np.ndarray
    risk: np.ndarray


def _apply_disputes(
    v: np.ndarray, cols: list[str], features: "FeatureSet", row: int, disputed: list[tuple[Any, ...]], all_bad: bool, reference: np.ndarray
) -> None:
    """Edit the feature row ``v`` as if the disputed identifiers were unlinked."""
    p = features.projection
    deg = p.ident_degree.astype(np.float64)
    for _, i, members, n_fraud, n_benign in disputed:
        kind = p.ident_kinds[int(p.ident_kind[i])]
        edits = {
            "lnk_n_links": -1.0,
            "lnk_n_shared": -1.0,
            f"lnk_shared_{kind}": -1.0,
            "lnk_co_users": -max(deg[i] - 1.0, 0.0),
            "lnk_fraud_co_users": -float(n_fraud),
            "lnk_benign_co_users": -float(n_benign),
        }
        for name, delta in edits.items():
            j = _col(cols, name)
            if j is not None and np.isfinite(v[j]):
                v[j] = max(0.0, v[j] + delta)
    # the largest remaining identifier degree and the co-users' means, over what is left
    B = p.shared
    gone = {d[1] for d in disputed}
    left = [int(i) for i in B.indices[B.indptr[row] : B.indptr[row + 1]] if int(i) not in gone]
    j = _col(cols, "lnk_max_ident_degree")
    if j is not None:
        v[j] = float(deg[left].max()) if left else 0.0
    nbr = [(k, c[len("lnk_nbr_"):]) for k, c in enumerate(cols) if c.startswith("lnk_nbr_")]
    if nbr:
        BT = _members(p)
        others = np.unique(np.concatenate([BT.indices[BT.indptr[i] : BT.indptr[i + 1]] for i in left])) if left else np.zeros(0, dtype=np.int64)
        others = others[others != row]
        X = features.X
        for k, c in nbr:
            src = f"usr_{c}"
            if src in X.columns and len(others):
                vals = X[src].to_numpy(dtype=np.float64)[others]
                v[k] = float(np.nanmean(vals)) if np.isfinite(vals).any() else np.nan
            else:
                v[k] = np.nan
    if all_bad:
        for k, c in enumerate(cols):
            if c.startswith("lnk_") and c not in _LINK_COUNTS and not c.startswith(("lnk_shared_", "lnk_nbr_")):
                v[k] = reference[k]


def recourse(
    features: "FeatureSet",
    combination: "Combination",
    config: "ScoringConfig",
    *,
    row: int,
    max_actions: int = 3,
    max_options: int = 3,
    max_disputes: int = 3,
    ident_label: Any = None,
) -> Recourse:
    """The smallest sets of actions that would bring the user of ``row`` to ``approve``.

    Every subset of the open actions of at most ``max_actions`` is scored at once (one batch
    through each fitted combination and the policy); the options are the smallest subsets that
    approve, highest score first.

    Parameters
    ----------
    features : FeatureSet
        The features the user was scored with (:class:`scoring.pipeline.FeatureSet`).
    combination : Combination
        The fitted combination (with its credit combination under a restricting policy).
    config : ScoringConfig
    row : int
        The user's row in ``features``.
    max_actions, max_options, max_disputes : int
        Largest set of actions tried, options returned, identifiers offered for dispute.
    ident_label : callable, optional
        How an identifier is named to the user (its pseudonymised short label).

    Returns
    -------
    Recourse

    Raises
    ------
    ParameterError
        The user is approved already (recourse is for refused or reviewed users), or the
        combination is the transparent scorecard with no learned model to re-score with.
    """
    with _controller().limit(limits=1, user_api="openmp"):
        return _recourse(features, combination, config, row=row, max_actions=max_actions, max_options=max_options, max_disputes=max_disputes, ident_label=ident_label)


def _recourse(
    features: "FeatureSet", combination: "Combination", config: "ScoringConfig", *, row: int, max_actions: int, max_options: int,
    max_disputes: int, ident_label: Any,
) -> Recourse:
    # a few dozen rows: OpenMP threads would cost more to start than the trees take to walk
    from scoring.pipeline import combine_rows

    label = ident_label or (lambda name: name)
    user = str(np.asarray(features.projection.user_ids)[row])
    base = features.X.iloc[row].to_numpy(dtype=np.float64)
    actions = _actions(features, row, config, label, max_disputes)
    considered = tuple(a for a, _ in actions)
    cols = list(features.X.columns)
    reference = combination.reference if combination.reference is not None else np.zeros(len(cols))
    n_bad = sum(1 for _, e in actions if isinstance(e, tuple))
    subsets = [s for k in range(1, min(max_actions, len(actions)) + 1) for s in combinations(range(len(actions)), k)]
    # row 0 is the user as it is: one batch through the model for today and every candidate
    rows = np.empty((len(subsets) + 1, len(cols)))
    rows[0] = base
    for r, subset in enumerate(subsets, start=1):
        v = base.copy()
        disputed = []
        for a in subset:
            edit = actions[a][1]
            if isinstance(edit, tuple):
                disputed.append(edit)
            else:
                edit(v)
        if disputed:
            _apply_disputes(v, cols, features, row, disputed, len(disputed) == n_bad, reference)
        rows[r] = v
    all_scored = combine_rows(features, combination, config, X=rows, rows=np.full(len(rows), row))
    assert all_scored.credit_score is not None
    score, decision = int(all_scored.credit_score[0]), str(all_scored.decision[0])
    if decision == "approve":
        raise ParameterError(f"User {user!r} is approved (credit score {score}): recourse is for refused or reviewed users.")
    if features.flags.fraud[row] > 0:
        return Recourse(
            user, score, decision, (), False, considered,
            note="the account is confirmed as fraud by its own flag: no change to the record can approve it; ask for a human review to contest the flag",
        )
    if not actions:
        return Recourse(user, score, decision, (), False, considered, note="no action open to this user changes the model's inputs")
    scored = _Scored(all_scored.decision[1:], all_scored.credit_score[1:], all_scored.risk[1:])
    order = sorted(range(len(subsets)), key=lambda r: (scored.decision[r] != "approve", len(subsets[r]), -int(scored.credit_score[r]), r))
    approving = [r for r in order if scored.decision[r] == "approve"]
    if approving:
        fewest = len(subsets[approving[0]])
        chosen = [r for r in approving if len(subsets[r]) == fewest][:max_options]
    else:
        better = sorted(range(len(subsets)), key=lambda r: (-int(scored.credit_score[r]), len(subsets[r]), r))
        chosen = [r for r in better if int(scored.credit_score[r]) > score][:max_options]
    options = tuple(
        RecourseOption(
            actions=tuple(actions[a][0] for a in subsets[r]),
            credit_score=int(scored.credit_score[r]),
            decision=str(scored.decision[r]),
            risk=float(scored.risk[r]),
        )
        for r in chosen
    )
    return Recourse(user, score, decision, options, bool(approving), considered)
