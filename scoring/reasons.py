"""Reason codes: what lowered a user's score, in words the user can understand."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from graph.projection import Projection
from scoring.dimensions import ColumnStanding

__all__ = ["Reason", "linked_account_reasons", "same_person_reasons", "social_reasons", "column_reason", "plural"]

_KIND_NOUN = {
    "device": "a device",
    "phone": "a phone number",
    "card": "a bank card",
    "ip": "an IP address",
    "account": "a bound account",
    "email": "an email address",
    "address": "an address",
    "ip_prefix": "an IP network",
}


_KIND_PLURAL = {
    "device": "devices", "phone": "phone numbers", "card": "bank cards", "ip": "IP addresses", "account": "bound accounts",
    "email": "email addresses", "address": "addresses", "ip_prefix": "IP networks",
}


#: The order kinds are named in within a reason: the strongest same-person evidence first.
_KIND_ORDER = ("phone", "device", "card", "email", "account", "address", "ip", "ip_prefix")


def _kinds_in_reading_order(projection: Projection) -> list[tuple[str, np.ndarray]]:
    rank = {k: i for i, k in enumerate(_KIND_ORDER)}
    return sorted(projection.shared_kinds, key=lambda kc: (rank.get(kc[0], len(rank)), kc[0]))


@dataclass(frozen=True)
class Reason:
    """One reason: a stable ``code`` for systems and ``text`` for people."""

    code: str
    text: str


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def _distinct_partners(M: sp.csr_matrix, rows: np.ndarray, fraud: np.ndarray, *, via: sp.csr_matrix | None = None) -> np.ndarray:
    """Per row in ``rows``: distinct fraud users (other than the row's own user) one step away.

    One step is ``M`` (users x users), or, with ``via`` (users x identifiers), sharing an
    identifier: ``via[rows] @ via[fraud].T``. Only the rows asked for and the fraud columns are
    multiplied, so a hub shared by 10,000 users never becomes a 10,000 x 10,000 block.
    """
    cols = np.flatnonzero(fraud > 0)
    if not len(cols) or not len(rows):
        return np.zeros(len(rows), dtype=np.int64)
    if via is not None:
        sub = sp.csr_matrix(via[rows] @ sp.csr_matrix(via[cols]).T)
    else:
        sub = sp.csr_matrix(M[rows][:, cols])
    sub.data[:] = 1
    sub.eliminate_zeros()
    counts = np.diff(sub.indptr).astype(np.int64)
    # a user does not count as its own partner
    own_col = pd.Index(cols).get_indexer(rows)
    for r in np.flatnonzero(own_col >= 0):
        row = sub.indices[sub.indptr[r] : sub.indptr[r + 1]]
        counts[r] -= int((row == own_col[r]).any())
    return counts


def linked_account_reasons(
    projection: Projection, rows: np.ndarray, fraud: np.ndarray, near_fraud: np.ndarray | None = None
) -> list[list[Reason]]:
    """For each user in ``rows``: accounts confirmed as fraud that it shares several
    identifiers with (same-person evidence, first: "shares a phone number and a device with 1
    account confirmed as fraud"), then identifiers shared with such accounts, per kind."""
    out: list[list[Reason]] = same_person_reasons(projection, rows, fraud)
    B = projection.shared
    for kind, idents in _kinds_in_reading_order(projection):
        Bk = sp.csr_matrix(B[:, idents])
        counts = _distinct_partners(Bk, rows, fraud, via=Bk)
        noun = _KIND_NOUN.get(kind, f"a {kind}")
        for i, c in enumerate(counts):
            if c > 0:
                out[i].append(
                    Reason(f"LINKED_FRAUD_{kind.upper()}", f"shares {noun} with {plural(int(c), 'account')} confirmed as fraud")
                )
    for i, reasons in enumerate(out):
        if reasons:
            continue
        if near_fraud is not None and near_fraud[rows[i]] > 0:
            reasons.append(Reason("LINKED_NEAR_FRAUD", "linked through shared devices, phones or cards to accounts close to confirmed fraud"))
        else:
            reasons.append(Reason("LINKED_FEW_TRUSTED", "shares few devices, phones or cards with accounts in good standing"))
    return out


def same_person_reasons(projection: Projection, rows: np.ndarray, fraud: np.ndarray) -> list[list[Reason]]:
    """For each user in ``rows``: the accounts confirmed as fraud it shares at least two
    distinct identifiers with, grouped by the kinds shared ("shares a phone number and a device
    with 2 accounts confirmed as fraud"), most accounts first.

    Only the rows asked for and the fraud columns are multiplied, kind by kind.
    """
    out: list[list[Reason]] = [[] for _ in rows]
    cols = np.flatnonzero(fraud > 0)
    if not len(cols) or not len(rows) or not projection.n_idents:
        return out
    B = projection.shared
    per_kind: list[tuple[str, sp.csr_matrix]] = []
    total = sp.csr_matrix((len(rows), len(cols)))
    for kind, idents in _kinds_in_reading_order(projection):
        Bk = sp.csr_matrix(B[:, idents])
        shared = sp.csr_matrix(Bk[rows] @ sp.csr_matrix(Bk[cols]).T)
        per_kind.append((kind, shared))
        total = total + shared
    total = sp.coo_matrix(total)
    pick = (total.data >= 2) & (rows[total.row] != cols[total.col])
    r, c = total.row[pick], total.col[pick]
    if not len(r):
        return out
    kinds_of = [[] for _ in range(len(r))]
    for kind, shared in per_kind:
        has = np.asarray(shared[r, c]).ravel() > 0
        for p in np.flatnonzero(has):
            kinds_of[p].append(kind)
    groups: dict[tuple[int, tuple[str, ...]], int] = {}
    for p in range(len(r)):
        key = (int(r[p]), tuple(kinds_of[p]))
        groups[key] = groups.get(key, 0) + 1
    for (i, kinds), count in sorted(groups.items(), key=lambda kv: (kv[0][0], -kv[1])):
        nouns = [_KIND_NOUN.get(k, f"a {k}") for k in kinds]
        what = nouns[0] if len(nouns) == 1 else ", ".join(nouns[:-1]) + " and " + nouns[-1]
        if len(kinds) == 1:
            what = f"several {_KIND_PLURAL.get(kinds[0], kinds[0] + ' identifiers')}"
        out[i].append(Reason("LINKED_FRAUD_SAME_PERSON", f"shares {what} with {plural(count, 'account')} confirmed as fraud"))
    return out


#: How a relation kind reads in a reason, received and sent; ``{n}`` is "2 accounts".
_RELATION_WORDS = {
    "transfer": ("received transfers from {n} confirmed as fraud", "sent transfers to {n} confirmed as fraud"),
    "contact": ("is a contact of {n} confirmed as fraud", "has {n} confirmed as fraud among its contacts"),
    "rating": ("was rated by {n} confirmed as fraud", "rated {n} confirmed as fraud"),
    "guarantee": ("is guaranteed by {n} confirmed as fraud", "guarantees {n} confirmed as fraud"),
}


def _relation_text(kind: str, n: int, received: bool) -> str:
    accounts = plural(n, "account")
    if kind in _RELATION_WORDS:
        return _RELATION_WORDS[kind][0 if received else 1].format(n=accounts)
    return f"has {kind} relations with {accounts} confirmed as fraud"


def social_reasons(
    projection: Projection,
    rows: np.ndarray,
    fraud: np.ndarray,
    negative_in: np.ndarray,
    count_in: np.ndarray,
    near_fraud: np.ndarray | None = None,
) -> list[list[Reason]]:
    """For each user in ``rows``: relations with accounts confirmed as fraud, and distrust received."""
    out: list[list[Reason]] = [[] for _ in rows]
    for kind, M in projection.relations_count.items():
        received = _distinct_partners(sp.csr_matrix(M.T), rows, fraud)
        sent = _distinct_partners(M, rows, fraud)
        for i in range(len(rows)):
            if received[i] > 0:
                out[i].append(Reason(f"SOCIAL_FRAUD_{kind.upper()}_IN", _relation_text(kind, int(received[i]), True)))
            if sent[i] > 0:
                out[i].append(Reason(f"SOCIAL_FRAUD_{kind.upper()}_OUT", _relation_text(kind, int(sent[i]), False)))
    for i, r in enumerate(rows):
        neg = int(negative_in[r])
        if neg > 0:
            out[i].append(Reason("SOCIAL_DISTRUST", f"received {plural(neg, 'negative rating')} out of {int(count_in[r])}"))
    for i, reasons in enumerate(out):
        if reasons:
            continue
        if near_fraud is not None and near_fraud[rows[i]] > 0:
            reasons.append(Reason("SOCIAL_NEAR_FRAUD", "close to accounts confirmed as fraud through transfers, contacts or ratings"))
        else:
            reasons.append(Reason("SOCIAL_FEW_TRUSTED", "few transfers, contacts or ratings with accounts in good standing"))
    return out


def column_reason(dimension: str, standings: list[ColumnStanding], row: int) -> Reason:
    """The worst mapped column of a dimension for one user, in words."""
    worst = max(standings, key=lambda s: -1.0 if np.isnan(s.worse[row]) else s.worse[row])
    pct = 100.0 * float(np.nan_to_num(worst.worse[row]))
    value = float(worst.value[row])
    denom = float(worst.denominator[row]) if worst.denominator is not None else float("nan")
    if worst.denominator is not None and not denom > 0:
        # a thin file: nothing to take a share of; say so rather than "0 of 0 repayments late"
        text = worst.spec.no_history or f"no {worst.spec.denominator.replace('_', ' ')} on record"
        return Reason(f"{dimension.upper()}_NO_HISTORY", text)
    if worst.spec.reason:
        try:
            text = worst.spec.reason.format(value=value, denominator=denom, pct=pct)
        except (ValueError, KeyError, IndexError):
            text = f"{worst.spec.column} worse than for {pct:.0f}% of users"
    else:
        text = f"{worst.spec.column} worse than for {pct:.0f}% of users"
    return Reason(f"{dimension.upper()}_{worst.spec.column.upper()}", text)
