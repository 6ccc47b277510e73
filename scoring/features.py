"""Per-user features for the combination: profile columns, graph structure, neighbour
aggregates, and label-based graph features that are cross-fitted for labelled users.

Column prefixes say which dimension a feature belongs to: ``lnk_`` (shared identifiers,
linked-account risk), ``rel_`` (relations, social network) and ``usr_`` (the input columns).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.model_selection import StratifiedKFold

from graph.projection import Projection
from graph.walks import Walks
from loaders.errors import ParameterError
from loaders.schema import Tables
from scoring.config import PROPAGATIONS

__all__ = [
    "FlagVectors",
    "Walks",
    "flag_vectors",
    "crossfit_folds",
    "user_columns",
    "structural_features",
    "overlap_matrix",
    "joined_within",
    "co_user_sharing",
    "SAME_PERSON_MAX_DEGREE",
    "VELOCITY_WINDOWS",
    "neighbour_means",
    "label_features",
    "direct_label_features",
    "crossfit_seeds",
]


@dataclass(frozen=True)
class FlagVectors:
    """Effective flags as dense vectors over users: seed weight (severity), 0 when absent."""

    fraud: np.ndarray
    benign: np.ndarray

    @property
    def labelled(self) -> np.ndarray:
        return (self.fraud > 0) | (self.benign > 0)

    @property
    def y(self) -> np.ndarray:
        """1 for fraud, 0 for benign, -1 for unlabelled."""
        y = np.full(len(self.fraud), -1, dtype=np.int64)
        y[self.benign > 0] = 0
        y[self.fraud > 0] = 1
        return y


def flag_vectors(flags: pd.DataFrame, projection: Projection) -> FlagVectors:
    """Each user's latest flag (by ``ts``, then load order) as seed weights.

    A user flagged ``fraud`` and later cleared as ``benign`` counts as benign, and the reverse.
    """
    n = projection.n_users
    fraud = np.zeros(n)
    benign = np.zeros(n)
    if len(flags):
        ordered = flags.assign(_order=np.arange(len(flags))).sort_values(["ts", "_order"], na_position="first", kind="stable")
        latest = ordered.drop_duplicates("user_id", keep="last")
        idx = projection.index_of(latest["user_id"].to_numpy())
        sev = latest["severity"].fillna(1.0).to_numpy(dtype=np.float64)
        is_fraud = (latest["label"] == "fraud").to_numpy(dtype=bool)
        fraud[idx[is_fraud]] = np.maximum(sev[is_fraud], 1e-6)
        benign[idx[~is_fraud]] = np.maximum(sev[~is_fraud], 1e-6)
    return FlagVectors(fraud=fraud, benign=benign)


def crossfit_folds(flags: FlagVectors, *, n_folds: int, seed: int) -> np.ndarray:
    """Fold id (0..k-1) of each labelled user, -1 for the others; stratified by label."""
    y = flags.y
    labelled = np.flatnonzero(y >= 0)
    folds = np.full(len(y), -1, dtype=np.int64)
    if len(labelled) == 0:
        return folds
    counts = np.bincount(y[labelled], minlength=2)
    k = int(min(n_folds, counts[counts > 0].min())) if (counts > 0).all() else 0
    if k < 2:
        # one class only (or a single member): a plain split still keeps each user out of its own seeds
        rng = np.random.default_rng(seed)
        folds[labelled] = rng.permutation(len(labelled)) % max(2, min(n_folds, len(labelled)))
        return folds
    splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    for fold, (_, test) in enumerate(splitter.split(labelled, y[labelled])):
        folds[labelled[test]] = fold
    return folds


def user_columns(tables: Tables, projection: Projection) -> pd.DataFrame:
    """Numeric input columns of ``users`` aligned to the projection (NaN when missing)."""
    users = tables.users.drop_duplicates("user_id", keep="last").set_index("user_id")
    numeric = [c for c in users.columns if pd.api.types.is_numeric_dtype(users[c]) and not str(c).startswith("_")]
    out = users[numeric].reindex(projection.user_ids).astype("float64")
    out.index = pd.RangeIndex(projection.n_users)
    return out


def structural_features(tables: Tables, projection: Projection) -> pd.DataFrame:
    """Label-free structure: identifier sharing and relation activity of each user."""
    n = projection.n_users
    cols: dict[str, np.ndarray] = {}
    # identifiers
    links = tables.links
    idx = projection.index_of(links["user_id"].to_numpy()) if len(links) else np.zeros(0, dtype=np.int64)
    cols["lnk_n_links"] = np.bincount(idx, minlength=n).astype(np.float64)
    B = projection.shared
    deg = projection.ident_degree.astype(np.float64)
    cols["lnk_n_shared"] = np.asarray(B.sum(axis=1)).ravel()
    cols["lnk_co_users"] = B @ np.maximum(deg - 1, 0)
    cols["lnk_max_ident_degree"] = _row_max(sp.csr_matrix(B @ sp.diags(deg)), n)
    co_users = co_users_per_kind(projection)
    for kind, idents in projection.shared_kinds:
        mask = np.zeros(projection.n_idents)
        mask[idents] = 1.0
        cols[f"lnk_shared_{kind}"] = B @ mask
        cols[f"lnk_co_users_{kind}"] = co_users[f"lnk_co_users_{kind}"]
    cols.update(co_user_sharing(projection, cols))
    if projection.n_idents:
        cols["lnk_same_person"] = _row_max(overlap_matrix(projection), n)
        for name, days in VELOCITY_WINDOWS.items():
            cols[f"lnk_joined_{name}"] = joined_within(tables, projection, days=days)
    # relations (raw weights, all kinds; self-relations included as activity)
    rel = tables.relations
    if len(rel):
        src = projection.index_of(rel["src"].to_numpy())
        dst = projection.index_of(rel["dst"].to_numpy())
        w = rel["weight"].to_numpy(dtype=np.float64)
        negative = (w < 0).astype(np.float64)
        for side, ids in (("out", src), ("in", dst)):
            count = np.bincount(ids, minlength=n).astype(np.float64)
            cols[f"rel_{side}_count"] = count
            cols[f"rel_{side}_weight_sum"] = np.bincount(ids, weights=w, minlength=n)
            cols[f"rel_{side}_weight_mean"] = _safe_div(cols[f"rel_{side}_weight_sum"], count)
            cols[f"rel_{side}_negative"] = np.bincount(ids, weights=negative, minlength=n)
            cols[f"rel_{side}_negative_share"] = _safe_div(cols[f"rel_{side}_negative"], count + 1.0)
            extra = [c for c in rel.columns if c not in ("src", "dst", "kind", "weight", "ts") and not c.startswith("_") and pd.api.types.is_numeric_dtype(rel[c])]
            for c in extra:
                v = rel[c].to_numpy(dtype=np.float64)
                ok = ~np.isnan(v)
                s = np.bincount(ids[ok], weights=v[ok], minlength=n)
                cols[f"rel_{side}_{c}_mean"] = _safe_div(s, np.bincount(ids[ok], minlength=n).astype(np.float64))
        binary = projection.related
        cols["rel_out_partners"] = np.asarray(binary.sum(axis=1)).ravel()
        cols["rel_in_partners"] = np.asarray(binary.sum(axis=0)).ravel()
        cols["rel_reciprocal"] = np.asarray(binary.multiply(binary.T).sum(axis=1)).ravel()
    return pd.DataFrame(cols, index=pd.RangeIndex(n))


#: Identifiers shared by more users than this say nothing about two accounts being one person
#: (a café's IP, a carrier's NAT): same-person evidence counts only the others.
SAME_PERSON_MAX_DEGREE = 50
#: Velocity windows: users joining one identifier within this many days of each other.
VELOCITY_WINDOWS: dict[str, float] = {"1d": 1.0, "7d": 7.0}


def overlap_matrix(projection: Projection, *, max_degree: int = SAME_PERSON_MAX_DEGREE) -> sp.csr_matrix:
    """Users x users: how many distinct shared identifiers (each used by at most ``max_degree``
    users) two users have in common; the diagonal is 0.

    Two accounts behind one phone and one device are more likely one person than two behind one
    IP address: the row maximum is the same-person evidence (``lnk_same_person``).

    Examples
    --------
    >>> import pandas as pd
    >>> from graph.projection import project
    >>> from loaders import read_tables
    >>> links = pd.DataFrame({"user_id": ["a", "b", "a", "b", "c"], "kind": ["device", "device", "email", "email", "email"],
    ...                       "value": ["d1", "d1", "x@y.org", "x@y.org", "x@y.org"]})
    >>> overlap_matrix(project(read_tables({"links": links}, key=b"doctest-key-0123456789"))).toarray().astype(int).tolist()
    [[0, 2, 1], [2, 0, 1], [1, 1, 0]]
    """
    B = projection.shared
    keep = (projection.ident_degree <= max_degree).astype(np.float64)
    Bs = sp.csr_matrix(B @ sp.diags(keep))
    Bs.eliminate_zeros()
    O = sp.csr_matrix(Bs @ Bs.T)
    O.setdiag(0)
    O.eliminate_zeros()
    return O


def co_users_per_kind(projection: Projection) -> dict[str, np.ndarray]:
    """``lnk_co_users_{kind}``: per user, the other users of its shared identifiers of each kind
    (counted once per identifier)."""
    B = projection.shared
    co = np.maximum(projection.ident_degree.astype(np.float64) - 1, 0)
    out = {}
    for kind, idents in projection.shared_kinds:
        mask = np.zeros(projection.n_idents)
        mask[idents] = 1.0
        out[f"lnk_co_users_{kind}"] = B @ (mask * co)
    return out


def co_user_sharing(projection: Projection, co_users: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Per identifier kind the user shares (``via``) and kind: the mean, over the co-users met
    through identifiers of kind ``via``, of their own co-users through identifiers of the kind
    (``lnk_via_{via}_co_users_{kind}``); 0 without such co-users, as for a kind nobody shares
    (a column that a subgraph without the kind does not make is read as 0, :func:`scoring.pipeline.align_features`).

    Label-free evidence about *which* identifier a user joined: the IP address behind one email
    shows little of it, but the other accounts on that email being mostly on IP addresses nobody
    else uses says that the email gathers throw-away accounts, whether or not any of them is
    flagged. A co-user is counted once per identifier of kind ``via`` it shares with the user
    (as ``lnk_co_users_{via}`` counts it), never the user itself.

    Parameters
    ----------
    projection : Projection
    co_users : mapping of str to ndarray
        ``lnk_co_users_{kind}`` of every user for each kind (:func:`structural_features`).

    Examples
    --------
    >>> import pandas as pd
    >>> from graph.projection import project
    >>> from loaders import read_tables
    >>> links = pd.DataFrame({"user_id": ["a", "b", "c", "a", "b", "d"], "kind": ["email"] * 3 + ["ip"] * 3,
    ...                       "value": ["x@y.org"] * 3 + ["203.0.113.7", "203.0.113.9", "203.0.113.9"]})
    >>> p = project(read_tables({"links": links}, key=b"doctest-key-0123456789"))
    >>> f = structural_features(read_tables({"links": links}, key=b"doctest-key-0123456789"), p)
    >>> f["lnk_via_email_co_users_ip"].tolist()  # a: b has one IP co-user, c none; d: no email co-user
    [0.5, 0.0, 0.5, 0.0]
    """
    n = projection.n_users
    out: dict[str, np.ndarray] = {}
    if not projection.n_idents:
        return out
    B = projection.shared
    deg = np.maximum(projection.ident_degree.astype(np.float64) - 1, 0)
    kinds = [k for k, _ in projection.shared_kinds if f"lnk_co_users_{k}" in co_users]
    for via, cols in projection.shared_kinds:
        Bv = sp.csr_matrix(B[:, cols])
        n_via = np.asarray(Bv.sum(axis=1)).ravel()
        met = Bv @ deg[cols]
        for kind in kinds:
            c = np.asarray(co_users[f"lnk_co_users_{kind}"], dtype=np.float64)
            total = Bv @ (Bv.T @ c) - c * n_via
            out[f"lnk_via_{via}_co_users_{kind}"] = np.divide(total, met, out=np.zeros(n), where=met > 0)
    return out


def joined_within(tables: Tables, projection: Projection, *, days: float) -> np.ndarray:
    """Per user: the other users who joined one of its shared identifiers within ``days`` of it
    (``first_seen`` of the two links), counted once per identifier and other user.

    Accounts opened in a burst on one IP address or email are the velocity signal of
    registration fraud; links without ``first_seen`` count nothing. Sorting the links by
    identifier then time makes it two binary searches per link, not a loop over pairs.

    Examples
    --------
    >>> import pandas as pd
    >>> from graph.projection import project
    >>> from loaders import read_tables
    >>> links = pd.DataFrame({"user_id": ["a", "b", "c"], "kind": "ip", "value": "203.0.113.7",
    ...                       "first_seen": ["2026-01-01T00:00", "2026-01-01T20:00", "2026-01-05"]})
    >>> t = read_tables({"links": links}, key=b"doctest-key-0123456789")
    >>> joined_within(t, project(t), days=1).tolist(), joined_within(t, project(t), days=7).tolist()
    ([1.0, 1.0, 0.0], [2.0, 2.0, 2.0])
    """
    n = projection.n_users
    links = tables.links
    if not len(links) or not projection.n_idents:
        return np.zeros(n)
    seen = pd.to_datetime(links["first_seen"], utc=True)
    present = seen.notna().to_numpy()
    if not present.any():
        return np.zeros(n)
    keys = links["kind"].astype(str).to_numpy(dtype=object)[present] + ":" + links["ident"].astype(str).to_numpy(dtype=object)[present]
    ident = pd.Index(projection.ident_keys).get_indexer(keys)
    user = projection.index_of(links["user_id"].to_numpy()[present])
    shared = ident >= 0
    ident, user = ident[shared], user[shared]
    if not len(ident):
        return np.zeros(n)
    seconds = (seen[present].astype("int64").to_numpy() // 10**9)[shared]
    # one row per (identifier, user): its earliest sighting
    order = np.lexsort((seconds, user, ident))
    ident, user, seconds = ident[order], user[order], seconds[order]
    first = np.ones(len(ident), dtype=bool)
    first[1:] = (ident[1:] != ident[:-1]) | (user[1:] != user[:-1])
    ident, user, seconds = ident[first], user[first], seconds[first]
    window = int(days * 86400)
    seconds = seconds - seconds.min()
    stride = int(seconds.max()) + 2 * window + 1
    key = ident.astype(np.int64) * stride + seconds
    sorted_key = np.sort(key)
    count = np.searchsorted(sorted_key, key + window, side="right") - np.searchsorted(sorted_key, key - window, side="left") - 1
    return np.bincount(user, weights=count.astype(np.float64), minlength=n)


def neighbour_means(features: pd.DataFrame, projection: Projection) -> pd.DataFrame:
    """Means of the input columns over relation neighbours (1 and 2 hops) and co-users."""
    n = projection.n_users
    if features.shape[1] == 0:
        return pd.DataFrame(index=pd.RangeIndex(n))
    X = features.to_numpy(dtype=np.float64)
    present = ~np.isnan(X)
    Xf = np.where(present, X, 0.0)
    P = present.astype(np.float64)
    out: dict[str, np.ndarray] = {}
    A = ((projection.related + projection.related.T) > 0).astype(np.float64)
    if A.nnz:
        m1 = _mean_over(A, Xf, P)
        m1_present = ~np.isnan(m1)
        m2 = _mean_over(A, np.where(m1_present, m1, 0.0), m1_present.astype(np.float64))
        for j, c in enumerate(features.columns):
            out[f"rel_nbr1_{c}"] = m1[:, j]
            out[f"rel_nbr2_{c}"] = m2[:, j]
    if projection.n_idents:
        B = projection.shared
        num = B @ (B.T @ Xf) - Xf * np.asarray(B.sum(axis=1))
        den = B @ (B.T @ P) - P * np.asarray(B.sum(axis=1))
        with np.errstate(invalid="ignore", divide="ignore"):
            m = np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)
        for j, c in enumerate(features.columns):
            out[f"lnk_nbr_{c}"] = m[:, j]
    return pd.DataFrame(out, index=pd.RangeIndex(n))


def crossfit_seeds(flags: FlagVectors, folds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The fraud and benign seed matrices of the cross-fitted propagations: column 0 holds every
    flag, column ``k + 1`` every flag outside fold ``k`` (a user's own fold never seeds it)."""
    k = int(folds.max()) + 1 if (folds >= 0).any() else 0
    F = np.repeat(flags.fraud[:, None], k + 1, axis=1)
    Bn = np.repeat(flags.benign[:, None], k + 1, axis=1)
    for fold in range(k):
        F[folds == fold, fold + 1] = 0.0
        Bn[folds == fold, fold + 1] = 0.0
    return F, Bn


def label_features(
    walks: Walks, flags: FlagVectors, folds: np.ndarray, *, propagation: tuple[str, ...] = ()
) -> pd.DataFrame:
    """Graph features that depend on the flags, cross-fitted for labelled users.

    A user in fold ``k`` gets features computed from the flags outside fold ``k``, so its own
    label never seeds its own score; every other user gets features from all flags.

    Parameters
    ----------
    walks : Walks
    flags : FlagVectors
    folds : ndarray of int
        Fold of each labelled user (:func:`crossfit_folds`), -1 for the others.
    propagation : tuple of str
        Optional propagations (:data:`PROPAGATIONS`) to add, per graph layer, besides the
        personalized PageRank lifts that are always there:

        - ``belief_propagation``: ``{layer}_bp_fraud``, the fraud probability from fraud and
          benign seeds (on the signed relations, where some are negative);
        - ``label_spreading``: ``{layer}_ls_fraud``, the fraud share of the spread class mass;
        - ``trustrank``: ``{layer}_trust``, trust from the benign seeds times the number of
          users (1 = the trust of a user under uniform trust).

        A seed set that is empty (no flag at all) gives the neutral value: 0.5, 0.5 and 0.
        Whether each one converged is in the frame's ``attrs["converged"]``.
    """
    unknown = [p for p in propagation if p not in PROPAGATIONS]
    if unknown:
        raise ParameterError(f"Unknown propagation {unknown[0]!r} in 'propagation'; expected any of {', '.join(PROPAGATIONS)}.")
    projection = walks.projection
    n = projection.n_users
    F, Bn = crossfit_seeds(flags, folds)
    column = np.where(folds >= 0, folds + 1, 0)
    rows = np.arange(n)

    def pick(M: np.ndarray) -> np.ndarray:
        return M[rows, column]

    out: dict[str, np.ndarray] = {}
    for layer in ("lnk", "rel"):
        if layer not in walks.layers:
            continue
        lf = pick(walks.lifts(layer, F, kind="fraud"))
        lb = pick(walks.lifts(layer, Bn, kind="benign"))
        out[f"{layer}_lift_fraud"] = lf
        out[f"{layer}_lift_benign"] = lb
        out[f"{layer}_fraud_share"] = lf / (lf + lb + 1.0)
    out.update({name: pick(M) for name, M in direct_label_features(projection, F, Bn).items()})
    converged: dict[str, bool] = {}
    for method in dict.fromkeys(propagation):
        for layer, values, ok in walks.propagation_features(method, F, Bn):
            out[layer] = pick(values)
            converged[layer] = ok
    frame = pd.DataFrame(out, index=pd.RangeIndex(n))
    frame.attrs["converged"] = converged
    return frame


def direct_label_features(projection: Projection, F: np.ndarray, Bn: np.ndarray) -> dict[str, np.ndarray]:
    """Label features that count flagged users one step away, per seed column.

    Parameters
    ----------
    projection : Projection
    F, Bn : ndarray, shape (n_users, k)
        Fraud and benign seed weights, one column per seed set (:func:`crossfit_seeds`).

    Returns
    -------
    dict of str to ndarray of shape (n_users, k)
        ``lnk_{fraud,benign}_co_users`` (flagged users sharing an identifier, counted once per
        identifier), the same per identifier kind (``lnk_fraud_co_users_phone``...) and as a
        share of the kind's co-users (``lnk_fraud_share_phone``...) and of its labelled co-users
        (``lnk_fraud_rate_phone``: fraud / (fraud + benign + 1)), ``lnk_same_person_{fraud,
        benign}`` (the most distinct identifiers shared with one flagged user, see
        :func:`overlap_matrix`), and for relations ``rel_{fraud,benign}_{in,out}`` (flagged partners),
        ``rel_{pos,neg}_from_{fraud,benign}`` (weight of positive and negative relations
        received from flagged users) and ``rel_neg_share_from_benign``.

    Pure in the projection: evaluated on the small subgraph around one applicant it gives the
    applicant's row exactly (:mod:`scoring.application`).
    """
    out: dict[str, np.ndarray] = {}
    if projection.n_idents:
        B = projection.shared
        for name, M in (("fraud", F), ("benign", Bn)):
            direct = B @ (B.T @ (M > 0).astype(np.float64)) - (M > 0) * np.asarray(B.sum(axis=1))
            out[f"lnk_{name}_co_users"] = np.asarray(direct)
        deg = np.maximum(projection.ident_degree.astype(np.float64) - 1, 0)
        for kind, cols in projection.shared_kinds:
            Bk = sp.csr_matrix(B[:, cols])
            co_users = (Bk @ deg[cols])[:, None]
            for name, M in (("fraud", F), ("benign", Bn)):
                ind = (M > 0).astype(np.float64)
                direct = np.asarray(Bk @ (Bk.T @ ind)) - ind * np.asarray(Bk.sum(axis=1))
                out[f"lnk_{name}_co_users_{kind}"] = direct
                out[f"lnk_{name}_share_{kind}"] = np.divide(direct, co_users, out=np.zeros_like(direct), where=co_users > 0)
            f, b = out[f"lnk_fraud_co_users_{kind}"], out[f"lnk_benign_co_users_{kind}"]
            # the fraud rate among the labelled co-users, shrunk towards 0 by one pseudo-count
            # so that one flagged co-user is weaker evidence than ten
            out[f"lnk_fraud_rate_{kind}"] = f / (f + b + 1.0)
        O = overlap_matrix(projection)
        for name, M in (("fraud", F), ("benign", Bn)):
            out[f"lnk_same_person_{name}"] = np.column_stack(
                [_row_max(sp.csr_matrix(O @ sp.diags((M[:, c] > 0).astype(np.float64))), projection.n_users) for c in range(M.shape[1])]
            ) if M.shape[1] else np.zeros((projection.n_users, 0))
    if projection.relations_count:
        binary = projection.related
        pos, neg = projection.relations_pos, projection.relations_neg
        for name, M in (("fraud", F), ("benign", Bn)):
            ind = (M > 0).astype(np.float64)
            out[f"rel_{name}_in"] = np.asarray(binary.T @ ind)
            out[f"rel_{name}_out"] = np.asarray(binary @ ind)
            out[f"rel_pos_from_{name}"] = np.asarray(pos.T @ ind)
            out[f"rel_neg_from_{name}"] = np.asarray(neg.T @ ind)
        out["rel_neg_share_from_benign"] = out["rel_neg_from_benign"] / (out["rel_neg_from_benign"] + out["rel_pos_from_benign"] + 1.0)
    return out


def _mean_over(A: sp.csr_matrix, X: np.ndarray, P: np.ndarray) -> np.ndarray:
    num = A @ X
    den = A @ P
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def _safe_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(b > 0, a / np.where(b > 0, b, 1.0), 0.0)


def _row_max(M: sp.csr_matrix, n: int) -> np.ndarray:
    if M.nnz == 0:
        return np.zeros(n)
    return M.max(axis=1).toarray().ravel().astype(np.float64)
