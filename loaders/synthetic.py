"""Synthetic population of a consumer payments app with a credit line.

The generator produces the input tables of the socialrisk contract (``users``,
``links``, ``relations``, ``flags``) plus a ground-truth table (``truth``) for
evaluation. The population contains:

* good users with everyday behaviour: a small circle of friends (users are
  placed in local neighbourhoods by index), payments to popular
  merchant-like receivers, households sharing a device or a home IP;
* public-IP hubs (cafe Wi-Fi, carrier NAT) shared by many unrelated users;
* fraud rings of 3 to 30 accounts sharing a few devices, phones and cards;
* mule chains (ring member -> mule -> ... -> cash-out) moving similar
  amounts close in time;
* good "family" users who share a device with a fraudster: innocent users
  that a naive graph method would wrongly catch;
* thin-file users (few transactions, no repayment history), most of whom
  brought alternative payment data (utility, telecom, rent, transit top-ups):
  for many good ones it is their only evidence of paying on time;
* an age band drawn independently of everything else (no effect on fraud nor
  on behaviour), or, with ``bias_age_band``, one band whose good users carry a
  worse recorded history and some wrong fraud flags, so that a fairness report
  has a known answer;
* with ``emails``, one mailbox per user at the large providers or an
  employer's domain, family mailboxes in households, and fraud rings reusing
  one mailbox or opening theirs at one throwaway domain.

Everything is vectorised with numpy and driven by ``np.random.default_rng(seed)``
(the columns and options added later by side streams of their own, so that
they leave the earlier output as it was), so the output is a pure function of
the arguments.

Examples
--------
>>> from loaders.synthetic import generate, write_tables
>>> tables = generate(n_users=2_000, seed=1)
>>> sorted(tables)
['flags', 'links', 'relations', 'truth', 'users']
>>> paths = write_tables(tables, "/tmp/synthetic-2k", fmt="csv")  # doctest: +SKIP
"""

from __future__ import annotations

import numbers
import re
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from loaders.errors import ParameterError
from loaders.normalise import EmailRule, Normalisation

__all__ = ["AGE_BANDS", "FORMATS", "ROLES", "OUTPUT_TABLES", "generate", "write_tables", "vary_formats"]

#: Names of the tables returned by :func:`generate`.
OUTPUT_TABLES: tuple[str, ...] = ("users", "links", "relations", "flags", "truth")
#: File formats accepted by :func:`write_tables`.
FORMATS: tuple[str, ...] = ("parquet", "csv", "csv.gz")
#: Values of ``truth.role``.
ROLES: tuple[str, ...] = ("good", "family", "ring", "mule", "cashout")
#: Values of ``users.age_band``.
AGE_BANDS: tuple[str, ...] = ("18-24", "25-34", "35-49", "50-64", "65+")

_GOOD, _FAMILY, _RING, _MULE, _CASHOUT = range(5)
_LINK_KINDS = ("device", "phone", "card", "ip", "account", "email")
_DEVICE, _PHONE, _CARD, _IP, _ACCOUNT, _EMAIL = range(6)
_REL_KINDS = ("transfer", "contact")
_TRANSFER, _CONTACT = range(2)
_REGIONS = (
    "new_england",
    "mid_atlantic",
    "south_atlantic",
    "midwest",
    "south_central",
    "mountain",
    "pacific",
    "plains",
)
_FRAUD_SOURCES = ("chargeback_investigation", "manual_review", "external_report")
_BENIGN_SOURCES = ("kyc_verified", "manual_review")

_DAY = 86_400
#: Reference "now" of the synthetic world: 2026-11-01T00:00:00Z (epoch seconds).
_END = int(np.datetime64("2026-11-01T00:00:00", "s").astype(np.int64))
#: All timestamps fall within the two years before ``_END``.
_WINDOW_DAYS = 730
_START = _END - _WINDOW_DAYS * _DAY

# Separation of the latent risk of each role from good users (in standard
# deviations of the latent). Tuned so that gradient boosting on the user
# features alone reaches an AUROC of about 0.8 (heavy overlap).
_LATENT_SHIFT = np.array([0.0, 0.0, 1.85, 1.0, 2.0])
#: How much worse ``bias_age_band`` records the band's good users, by default: their recorded
#: history is drawn from a latent risk this much higher (that of a fraud ring member is 1.85).
BIAS_STRENGTH = 1.5

_ASCII_DIGITS = np.frombuffer(b"0123456789", dtype=np.uint8)
_ASCII_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
#: Mail domains of the generated addresses and the share of mailboxes at each: the large
#: providers (Gmail under both of its domains), then employers' domains.
_MAIL_DOMAINS = (
    "gmail.com", "googlemail.com", "outlook.com", "yahoo.com",
    "northwind.example", "contoso.example", "fabrikam.example",
)  # fmt: skip
_MAIL_SHARES = np.array([0.42, 0.03, 0.22, 0.15, 0.08, 0.06, 0.04])
#: Throwaway-mailbox domains, used by fraud rings, mules and cash-out accounts.
_DISPOSABLE_DOMAINS = ("tempinbox.example", "burnermail.example", "quickdrop.example")
_ASCII_LOWER = np.frombuffer(b"abcdefghijklmnopqrstuvwxyz", dtype=np.uint8)
# Public first octets used for residential and hub IP addresses.
_IP_FIRST_OCTETS = np.array(
    [23, 24, 31, 37, 45, 50, 62, 66, 68, 71, 73, 76, 81, 84, 86, 92, 98, 104,
     107, 108, 109, 151, 173, 174, 176, 178, 185, 188, 193, 195, 203, 212],
    dtype=np.int64,
)  # fmt: skip


# --------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------


def _check_int(name: str, value: object, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ParameterError(
            f"The {name!r} parameter of generate must be an int in the range "
            f"[{low}, inf). Got {value!r} instead."
        )
    return int(value)


def _check_rate(name: str, value: object) -> float:
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if not ok or not 0.0 <= float(value) <= 1.0:  # also rejects NaN
        raise ParameterError(
            f"The {name!r} parameter of generate must be a float in the range "
            f"[0.0, 1.0]. Got {value!r} instead."
        )
    return float(value)


# --------------------------------------------------------------------------
# Vectorised string building (ASCII byte matrices -> Arrow strings)
# --------------------------------------------------------------------------


def _to_str_series(mat: np.ndarray, lengths: np.ndarray | None = None) -> pd.Series:
    """Turn an ``(n, w)`` uint8 ASCII matrix into a pandas string Series.

    Row ``i`` holds the string ``mat[i, :lengths[i]]`` (all ``w`` bytes when
    ``lengths`` is None). The Arrow buffers are built directly, without Python
    string objects.
    """
    n, w = mat.shape
    if lengths is None:
        data = np.ascontiguousarray(mat).reshape(-1)
        offsets = np.arange(0, (n + 1) * w, w, dtype=np.int64)
    else:
        lengths = np.asarray(lengths, dtype=np.int64)
        data = mat[np.arange(w) < lengths[:, None]]
        offsets = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
    arr = pa.Array.from_buffers(
        pa.large_string(), n, [None, pa.py_buffer(offsets), pa.py_buffer(data)]
    )
    return arr.to_pandas()  # zero-copy into the pandas (Arrow-backed) string dtype


def _put_dec(out: np.ndarray, col: int, x: np.ndarray, width: int) -> None:
    """Write ``x`` as zero-padded decimal digits into ``out[:, col:col+width]``."""
    for j in range(width):
        out[:, col + j] = (x // 10 ** (width - 1 - j)) % 10 + 48  # ASCII "0" is 48


def _put_hex(out: np.ndarray, col: int, x: np.ndarray, width: int) -> None:
    """Write the low ``4*width`` bits of uint64 ``x`` as lowercase hex."""
    for j in range(width):
        out[:, col + j] = _ASCII_HEX[(x >> np.uint64(4 * (width - 1 - j))) & np.uint64(15)]


def _put_bytes(out: np.ndarray, col: int, literal: bytes) -> None:
    out[:, col : col + len(literal)] = np.frombuffer(literal, dtype=np.uint8)


def _iso_utc(ts: np.ndarray) -> pd.Series:
    """Format epoch seconds as ISO 8601 UTC strings ``YYYY-MM-DDTHH:MM:SSZ``."""
    ts = np.asarray(ts, dtype=np.int64)
    days, secs = np.divmod(ts, _DAY)
    # Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    z = days + 719_468
    era = z // 146_097
    doe = z - era * 146_097
    yoe = (doe - doe // 1_460 + doe // 36_524 - doe // 146_096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    day = doy - (153 * mp + 2) // 5 + 1
    month = np.where(mp < 10, mp + 3, mp - 9)
    year = yoe + era * 400 + (month <= 2)
    out = np.empty((ts.size, 20), dtype=np.uint8)
    _put_dec(out, 0, year, 4)
    _put_bytes(out, 4, b"-")
    _put_dec(out, 5, month, 2)
    _put_bytes(out, 7, b"-")
    _put_dec(out, 8, day, 2)
    _put_bytes(out, 10, b"T")
    _put_dec(out, 11, secs // 3_600, 2)
    _put_bytes(out, 13, b":")
    _put_dec(out, 14, secs // 60 % 60, 2)
    _put_bytes(out, 16, b":")
    _put_dec(out, 17, secs % 60, 2)
    _put_bytes(out, 19, b"Z")
    return _to_str_series(out)


def _mix_bits(keys: np.ndarray, bits: int, salt: int) -> np.ndarray:
    """A bijection of ``[0, 2**bits)`` that scrambles consecutive keys.

    Distinct keys (below ``2**bits``) give distinct outputs, so identifiers
    derived from distinct keys never collide by accident.
    """
    mask = np.uint64((1 << bits) - 1)
    shift = np.uint64((bits + 1) // 2)
    x = (keys.astype(np.uint64) + np.uint64(salt)) & mask
    x ^= x >> shift
    x = (x * np.uint64(0xBF58476D1CE4E5B9)) & mask
    x ^= x >> shift
    x = (x * np.uint64(0x94D049BB133111EB)) & mask
    x ^= x >> shift
    return x


def _format_identifiers(
    kind: np.ndarray, key: np.ndarray, salts: dict[str, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Raw identifier strings for ``(kind, key)`` pairs as an ASCII matrix.

    The value is a pure function of ``(kind, key, salts)``: equal keys give
    equal values, distinct keys of one kind give distinct values (up to 10
    million phones and 16 million IPs).
    """
    n = kind.size
    out = np.zeros((n, 20), dtype=np.uint8)
    lengths = np.zeros(n, dtype=np.int64)

    sel = np.flatnonzero(kind == _DEVICE)  # dev-<hex16>
    block = np.empty((sel.size, 20), dtype=np.uint8)
    _put_bytes(block, 0, b"dev-")
    _put_hex(block, 4, _mix_bits(key[sel], 64, salts["device"]), 16)
    out[sel] = block
    lengths[sel] = 20

    sel = np.flatnonzero(kind == _PHONE)  # +1-555-<7 digits>
    block = np.empty((sel.size, 14), dtype=np.uint8)
    _put_bytes(block, 0, b"+1-555-")
    mult = salts["phone_mult"]
    _put_dec(block, 7, (key[sel] % 10**7 * mult + salts["phone"]) % 10**7, 7)
    out[sel, :14] = block
    lengths[sel] = 14

    sel = np.flatnonzero(kind == _CARD)  # 16 digits, Luhn-valid
    k = key[sel]
    bins = np.asarray(salts["card_bins"], dtype=np.int64)
    bin6 = bins[_mix_bits(k, 32, salts["card_bin"]).astype(np.int64) % bins.size]
    acct9 = (k % 10**9 * salts["card_mult"] + salts["card"]) % 10**9
    block = np.empty((sel.size, 16), dtype=np.uint8)
    _put_dec(block, 0, bin6, 6)
    _put_dec(block, 6, acct9, 9)
    digits = block[:, :15].astype(np.int64) - 48
    doubled = digits[:, 0::2] * 2
    total = np.where(doubled > 9, doubled - 9, doubled).sum(axis=1) + digits[:, 1::2].sum(axis=1)
    block[:, 15] = _ASCII_DIGITS[(10 - total % 10) % 10]
    out[sel, :16] = block
    lengths[sel] = 16

    sel = np.flatnonzero(kind == _IP)  # dotted quad
    k = key[sel]
    low = _mix_bits(k, 24, salts["ip"]).astype(np.int64)
    first = _IP_FIRST_OCTETS[
        _mix_bits(k, 32, salts["ip_octet"]).astype(np.int64) % _IP_FIRST_OCTETS.size
    ]
    octets = (first, low >> 16, (low >> 8) & 255, np.maximum(low & 255, 1))
    block = np.zeros((sel.size, 15), dtype=np.uint8)
    pos = np.zeros(sel.size, dtype=np.int64)
    rows = np.arange(sel.size)
    for i, octet in enumerate(octets):
        ndig = 1 + (octet >= 10) + (octet >= 100)
        for j in range(3):
            m = j < ndig
            block[rows[m], pos[m] + j] = _ASCII_DIGITS[(octet[m] // 10 ** (ndig[m] - 1 - j)) % 10]
        pos += ndig
        if i < 3:
            block[rows, pos] = ord(".")
            pos += 1
    out[sel, :15] = block
    lengths[sel] = pos

    sel = np.flatnonzero(kind == _ACCOUNT)  # acct-<hex10>
    block = np.empty((sel.size, 15), dtype=np.uint8)
    _put_bytes(block, 0, b"acct-")
    _put_hex(block, 5, _mix_bits(key[sel], 40, salts["account"]), 10)
    out[sel, :15] = block
    lengths[sel] = 15
    return out, lengths


def _format_emails(key: np.ndarray, domain: np.ndarray, salt: int) -> tuple[np.ndarray, np.ndarray]:
    """Email addresses for mailbox keys ``key`` at ``domain`` (indices into the mail domains).

    The local part is eight letters spelling a bijection of the key (so distinct keys never
    share a local part, with or without its dots), a dot after one of the first six letters
    for half of the mailboxes and a two-digit suffix for four in ten: ``kqzr.tmwa17``.
    """
    m = key.size
    code = _mix_bits(key, 36, salt)  # 2**36 < 26**8: eight letters tell every key apart
    letters = np.empty((m, 8), dtype=np.uint8)
    for j in range(8):
        letters[:, j] = _ASCII_LOWER[((code // np.uint64(26**j)) % np.uint64(26)).astype(np.int64)]
    shape = _mix_bits(key, 36, salt + 1).astype(np.int64)
    has_dot = shape % 2 == 0
    dot_at = 1 + (shape // 2) % 6
    has_digits = (shape // 12) % 10 < 4
    domains = [d.encode() for d in _MAIL_DOMAINS + _DISPOSABLE_DOMAINS]
    dom_len = np.array([len(d) for d in domains], dtype=np.int64)
    dom_mat = np.zeros((len(domains), int(dom_len.max())), dtype=np.uint8)
    for i, d in enumerate(domains):
        dom_mat[i, : len(d)] = np.frombuffer(d, dtype=np.uint8)
    out = np.zeros((m, 9 + 2 + 1 + dom_mat.shape[1]), dtype=np.uint8)
    out[:, :8] = letters
    for j in range(1, 9):  # splice the dot in: letters at and after it move one place right
        spliced = np.where(j < dot_at, letters[:, min(j, 7)], np.where(j == dot_at, ord("."), letters[:, j - 1]))
        out[has_dot, j] = spliced[has_dot]
    pos = 8 + has_dot.astype(np.int64)
    rows = np.arange(m)
    digits = (shape // 120) % 100
    out[rows[has_digits], pos[has_digits]] = _ASCII_DIGITS[digits[has_digits] // 10]
    out[rows[has_digits], pos[has_digits] + 1] = _ASCII_DIGITS[digits[has_digits] % 10]
    pos = pos + 2 * has_digits
    out[rows, pos] = ord("@")
    pos = pos + 1
    for j in range(dom_mat.shape[1]):
        m_j = j < dom_len[domain]
        out[rows[m_j], pos[m_j] + j] = dom_mat[domain[m_j], j]
    return out, pos + dom_len[domain]


# --------------------------------------------------------------------------
# Small vectorised helpers
# --------------------------------------------------------------------------


def _ranks_in_groups(counts: np.ndarray) -> np.ndarray:
    """``[0..c0-1, 0..c1-1, ...]`` for group sizes ``counts``."""
    total = int(counts.sum())
    starts = np.cumsum(counts) - counts
    return np.arange(total) - np.repeat(starts, counts)


def _cumsum_in_groups(values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Cumulative sums restarting at each group of consecutive ``counts`` rows."""
    cum = np.cumsum(values)
    starts = np.cumsum(counts) - counts
    return cum - np.repeat(cum[starts] - values[starts], counts)


def _uniform_between(rng: np.random.Generator, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Integer seconds uniformly in ``[low, high]`` (elementwise, ``low <= high``)."""
    span = np.maximum(high - low, 0)
    return low + (rng.random(np.shape(low)) * (span + 1)).astype(np.int64).clip(0, span)


def _other_member(
    rng: np.random.Generator, pos: np.ndarray, start: np.ndarray, size: np.ndarray
) -> np.ndarray:
    """A uniformly random position in the same group, different from ``pos``."""
    step = 1 + (rng.random(pos.size) * (size - 1)).astype(np.int64)
    return start + (pos - start + step) % np.maximum(size, 1)


def _ring_sizes(rng: np.random.Generator, n: int) -> np.ndarray:
    """Split ``n`` ring accounts into rings of 3 to 30 members (mostly small)."""
    if n <= 0:
        return np.zeros(0, dtype=np.int64)
    if n < 6:
        return np.array([n], dtype=np.int64)
    sizes = np.clip(np.rint(3 + rng.exponential(6.0, size=n // 3 + 1)), 3, 30).astype(np.int64)
    cum = np.cumsum(sizes)
    last = int(np.searchsorted(cum, n))
    sizes = sizes[: last + 1].copy()
    sizes[-1] -= cum[last] - n
    if sizes[-1] < 3:
        rest = int(sizes[-1])
        sizes = sizes[:-1]
        room = np.flatnonzero(sizes < 30)[:rest]
        sizes[room] += 1
        sizes[-1] += rest - room.size
    return sizes


def _email_links(
    rng: np.random.Generator,
    *,
    created: np.ndarray,
    role: np.ndarray,
    household_members: np.ndarray,
    household_heads: np.ndarray,
    household_of_member: np.ndarray,
    n_households: int,
    ring_users: np.ndarray,
    ring_of_member: np.ndarray,
    n_rings: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One ``email`` link per user, drawn from ``rng`` alone.

    Every user has a mailbox of their own (key = user index) at a domain drawn from the mail
    domains, except that a third of the households read one family mailbox (the head's), and
    fraud rings either reuse one mailbox per ring (four in ten rings; each member with
    probability 0.7, tiny rings always) or open their own at the ring's throwaway domain (a
    third of the rings); three in ten mules and cash-out accounts use a throwaway domain too.

    Returns
    -------
    tuple of ndarray
        ``user``, ``key`` (mailbox), ``domain`` (index into the mail then throwaway domains),
        ``first_seen`` and ``last_seen`` (epoch seconds), one row per user in user order.
    """
    n = created.size
    n_ordinary = len(_MAIL_DOMAINS)
    key = np.arange(n, dtype=np.int64)
    # Mailbox keys: users 0..n-1, then one shared mailbox per ring.
    domain = rng.choice(n_ordinary, size=n + n_rings, p=_MAIL_SHARES / _MAIL_SHARES.sum())
    family_box = rng.random(n_households) < 1 / 3
    share = family_box[household_of_member]
    key[household_members[share]] = household_heads[share]
    ring_style = rng.random(n_rings)
    ring_domain = n_ordinary + rng.integers(0, len(_DISPOSABLE_DOMAINS), size=n_rings)
    member_ring_size = np.bincount(ring_of_member, minlength=n_rings)[ring_of_member]
    reuse = (ring_style[ring_of_member] < 0.4) & ((rng.random(ring_users.size) < 0.7) | (member_ring_size == 3))
    key[ring_users[reuse]] = n + ring_of_member[reuse]
    throwaway = (ring_style >= 0.4) & (ring_style < 0.4 + 1 / 3)
    at_ring_domain = throwaway[ring_of_member]
    domain[ring_users[at_ring_domain]] = ring_domain[ring_of_member[at_ring_domain]]
    chain = np.flatnonzero(((role == _MULE) | (role == _CASHOUT)) & (rng.random(n) < 0.3))
    domain[chain] = n_ordinary + rng.integers(0, len(_DISPOSABLE_DOMAINS), size=chain.size)
    first_seen = _uniform_between(rng, created, created + ((_END - created) * 0.6).astype(np.int64))
    last_seen = _END - ((_END - first_seen) * rng.random(n) ** 2).astype(np.int64)
    return np.arange(n, dtype=np.int64), key, domain[key], first_seen, last_seen


# --------------------------------------------------------------------------
# Generator
# --------------------------------------------------------------------------


def generate(
    *,
    n_users: int,
    seed: int = 0,
    fraud_rate: float = 0.02,
    flag_rate: float = 0.5,
    benign_flag_rate: float = 0.05,
    bias_age_band: str | None = None,
    bias_strength: float = BIAS_STRENGTH,
    bias_flag_rate: float = 0.1,
    emails: bool = False,
) -> dict[str, pd.DataFrame]:
    """Generate a synthetic payments-app population with fraud structure.

    Parameters
    ----------
    n_users : int
        Number of users, at least 10. About ten rows of ``links`` plus
        ``relations`` are produced per user.
    seed : int, default=0
        Seed of ``np.random.default_rng``; the output is a pure function of
        the arguments.
    fraud_rate : float, default=0.02
        Share of users that are fraudulent (ring members, mules and
        cash-out accounts), in ``[0, 1]``.
    flag_rate : float, default=0.5
        Share of fraudulent users carrying a ``fraud`` flag, in ``[0, 1]``.
    benign_flag_rate : float, default=0.05
        Share of good users carrying a ``benign`` flag, in ``[0, 1]``.
    bias_age_band : str or None, default=None
        One of :data:`AGE_BANDS`: the good users of that band get a worse
        record (tenure, late repayments, identity verification and chargebacks
        drawn as for a latent risk ``bias_strength`` higher), as in historical
        data recorded unfairly; a share ``bias_flag_rate`` of them also stand
        confirmed as fraud in ``flags`` (wrongly: ``truth`` says they are good),
        as when past decisions were themselves unfair. Fraud and every other
        user are unchanged. None: the age band has no effect at all.
    bias_strength : float, default=1.5
        How much higher (a fraud ring member's is 1.85, a good user's 0), >= 0.
    bias_flag_rate : float, default=0.1
        Share of the band's good users wrongly flagged as fraud, in ``[0, 1]``.
    emails : bool, default=False
        Also give every user an ``email`` link: a mailbox at gmail.com (or
        googlemail.com), outlook.com, yahoo.com or an employer's domain; a
        third of the households share a family mailbox, and fraud rings reuse
        one mailbox or open theirs at one throwaway domain. The emails come
        from a random stream of their own: every other row of every table is
        the same as with ``emails=False``.

    Returns
    -------
    dict of str to pandas.DataFrame
        ``users``
            ``user_id``, ``tenure_days``, ``txn_count_90d``,
            ``txn_amount_90d`` (about 3% NaN), ``chargebacks_90d``,
            ``repayments_total``, ``repayments_late``, ``id_verified``,
            ``night_spend_share``, ``spend_volatility``, ``region``,
            ``altpay_on_time_share`` and ``altpay_months`` (alternative
            payments; NaN for users who brought none), ``age_band``.
        ``links``
            ``user_id``, ``kind`` (device, phone, card, ip, account; email
            with ``emails``), ``value`` (raw identifier), ``first_seen``,
            ``last_seen``.
        ``relations``
            ``src``, ``dst``, ``kind`` (transfer, contact), ``weight``
            (amount for transfers, 1.0 for contacts), ``ts``.
        ``flags``
            ``user_id``, ``label`` (fraud, benign), ``severity``,
            ``source``, ``ts``.
        ``truth``
            ``user_id``, ``is_fraud`` (0/1), ``role`` (good, family,
            ring, mule, cashout), ``thin_file`` (0/1).

        Timestamps are ISO 8601 UTC strings within the two years before
        2026-11-01. String columns use the pandas string dtype.

    Raises
    ------
    ValueError
        If ``n_users < 10``, a rate is outside ``[0, 1]``, ``bias_age_band``
        is not an age band or ``emails`` is not a bool.

    Notes
    -----
    ``family`` users are good users who share a device with a fraudster
    (about one per 20 fraudsters); mules and cash-out accounts count as fraud.
    No user carries both a fraud and a benign flag, and there are no
    self-relations.
    """
    n = _check_int("n_users", n_users, 10)
    fraud_rate = _check_rate("fraud_rate", fraud_rate)
    flag_rate = _check_rate("flag_rate", flag_rate)
    benign_flag_rate = _check_rate("benign_flag_rate", benign_flag_rate)
    if bias_age_band is not None and bias_age_band not in AGE_BANDS:
        raise ParameterError(
            f"The 'bias_age_band' parameter of generate must be one of {', '.join(AGE_BANDS)} or None. "
            f"Got {bias_age_band!r} instead."
        )
    bias_flag_rate = _check_rate("bias_flag_rate", bias_flag_rate)
    if not (np.isfinite(bias_strength) and bias_strength >= 0):
        raise ParameterError(f"The 'bias_strength' parameter of generate must be a number >= 0. Got {bias_strength!r} instead.")
    if not isinstance(emails, (bool, np.bool_)):
        raise ParameterError(f"The 'emails' parameter of generate must be a bool. Got {emails!r} instead.")
    rng = np.random.default_rng(seed)
    # The columns added after the first release draw from their own stream, so that every
    # earlier column stays what it was for a given seed.
    side = np.random.default_rng([seed, 20])
    users_idx = np.arange(n)

    # ---------------- roles ----------------
    perm = rng.permutation(n)
    n_fraud = int(round(fraud_rate * n))
    n_cash = int(round(0.08 * n_fraud))
    n_mule = int(round(0.25 * n_fraud)) if n_cash else 0
    n_ring = n_fraud - n_cash - n_mule
    ring_users = perm[:n_ring]
    mule_users = perm[n_ring : n_ring + n_mule]
    cash_users = perm[n_ring + n_mule : n_fraud]
    n_family = min(int(round(n_fraud / 20)), n - n_fraud) if n_ring else 0
    family_users = perm[n_fraud : n_fraud + n_family]
    role = np.zeros(n, dtype=np.int64)
    role[ring_users] = _RING
    role[mule_users] = _MULE
    role[cash_users] = _CASHOUT
    role[family_users] = _FAMILY
    is_fraud = role >= _RING

    # Merchant-like popular receivers (good accounts).
    pool = perm[n_fraud + n_family :]
    if pool.size == 0:
        pool = perm
    n_merch = min(max(3, n // 800), pool.size)
    merchants = pool[:n_merch]
    merch_pop = 1.0 / np.arange(1, n_merch + 1) ** 1.0
    merch_pop /= merch_pop.sum()

    # Fraud rings (positions into ring_users).
    ring_size = _ring_sizes(rng, n_ring)
    n_rings = ring_size.size
    ring_start = np.cumsum(ring_size) - ring_size
    ring_of_member = np.repeat(np.arange(n_rings), ring_size)

    # ---------------- features ----------------
    latent = _LATENT_SHIFT[role] + rng.standard_normal(n)

    def view(alpha: float) -> np.ndarray:
        """One noisy view of the latent risk (``alpha`` = correlation)."""
        return alpha * latent + np.sqrt(1 - alpha**2) * rng.standard_normal(n)

    tenure = np.exp(np.log(650.0) - 0.75 * view(0.75) + 0.25 * rng.standard_normal(n))
    tenure = np.clip(np.rint(tenure), 1, 4_000).astype(np.int64)
    activity = np.exp(np.log(22.0) + 0.15 * view(0.4) + 0.6 * rng.standard_normal(n))
    txn_count = rng.poisson(activity).astype(np.int64)
    ticket = np.exp(np.log(42.0) + 0.2 * view(0.5) + 0.6 * rng.standard_normal(n))
    txn_amount = np.round(txn_count * ticket * rng.uniform(0.8, 1.2, n), 2)
    txn_amount[rng.random(n) < 0.03] = np.nan
    chargebacks = rng.poisson(np.exp(-3.3 + 0.8 * view(0.7))).astype(np.int64)
    thin_file = rng.random(n) < np.where(is_fraud, 0.25, 0.12)
    repay_total = rng.poisson(np.minimum(tenure, 1_500) / 30.0 * rng.uniform(0.2, 0.9, n))
    repay_total = np.where(thin_file, 0, repay_total).astype(np.int64)
    p_late = 1.0 / (1.0 + np.exp(3.0 - 0.8 * view(0.7)))
    repay_late = rng.binomial(repay_total, p_late).astype(np.int64)
    id_verified = (rng.random(n) < 1.0 / (1.0 + np.exp(-(2.0 - 0.7 * view(0.6))))).astype(np.int64)
    night = 1.0 / (1.0 + np.exp(1.7 - 0.45 * view(0.6) - 0.5 * rng.standard_normal(n)))
    night = np.round(night, 4)
    volatility = np.round(np.exp(np.log(0.45) + 0.25 * view(0.5) + 0.45 * rng.standard_normal(n)), 4)
    region_w = np.array([0.06, 0.13, 0.20, 0.21, 0.12, 0.07, 0.16, 0.05])
    region_w_fraud = np.array([0.05, 0.16, 0.22, 0.15, 0.14, 0.06, 0.18, 0.04])
    cum_good, cum_fraud = np.cumsum(region_w), np.cumsum(region_w_fraud)
    u = rng.random(n) * np.where(is_fraud, cum_fraud[-1], cum_good[-1])
    region = np.where(
        is_fraud, np.searchsorted(cum_fraud, u, side="right"), np.searchsorted(cum_good, u, side="right")
    ).clip(0, len(_REGIONS) - 1)

    # Thin files: few transactions besides no repayment history.
    txn_thin = side.poisson(3.0, n)
    txn_amount = np.where(thin_file, np.round(txn_amount * txn_thin / np.maximum(txn_count, 1), 2), txn_amount)
    txn_count = np.where(thin_file, np.minimum(txn_count, txn_thin), txn_count).astype(np.int64)
    # Alternative payments (utility, telecom, rent, transit top-ups), brought by most thin-file
    # users and by half of the others; on-time share and history follow the latent risk.
    side_view = 0.6 * latent + 0.8 * side.standard_normal(n)
    has_alt = side.random(n) < np.where(thin_file, 0.8, 0.5)
    alt_months = np.clip(side.poisson(np.exp(np.log(18.0) - 0.45 * side_view)), 1, 120).astype(np.float64)
    alt_on_time = np.round(1.0 / (1.0 + np.exp(-(3.6 - 1.2 * side_view + 0.3 * side.standard_normal(n)))), 3)
    alt_months[~has_alt] = np.nan
    alt_on_time[~has_alt] = np.nan
    age_band = side.choice(len(AGE_BANDS), size=n, p=[0.14, 0.26, 0.30, 0.20, 0.10])
    if bias_age_band is not None:
        # the band's good users are recorded as if their latent risk were bias_strength higher
        # (a fraudster's is 1-2 higher): tenure, late repayments, verification and chargebacks
        # drawn again from that shifted latent, from their own stream so that every other
        # column, and every other user, is what it is without the bias
        biased = (age_band == AGE_BANDS.index(bias_age_band)) & ~is_fraud
        bias = np.random.default_rng([seed, 30])
        shifted = latent + bias_strength

        def biased_view(alpha: float) -> np.ndarray:
            return alpha * shifted + np.sqrt(1 - alpha**2) * bias.standard_normal(n)

        tenure_b = np.exp(np.log(650.0) - 0.75 * biased_view(0.75) + 0.25 * bias.standard_normal(n))
        tenure = np.where(biased, np.clip(np.rint(tenure_b), 1, 4_000), tenure).astype(np.int64)
        late_b = bias.binomial(repay_total, 1.0 / (1.0 + np.exp(3.0 - 0.8 * biased_view(0.7))))
        repay_late = np.where(biased, late_b, repay_late).astype(np.int64)
        verified_b = bias.random(n) < 1.0 / (1.0 + np.exp(-(2.0 - 0.7 * biased_view(0.6))))
        id_verified = np.where(biased, verified_b, id_verified).astype(np.int64)
        chargebacks_b = bias.poisson(np.exp(-3.3 + 0.8 * biased_view(0.7)))
        chargebacks = np.where(biased, chargebacks_b, chargebacks).astype(np.int64)

    # Account creation time (within the two-year window).
    created = _END - np.minimum(tenure, _WINDOW_DAYS) * _DAY + rng.integers(0, _DAY, n)
    created = np.minimum(created, _END - 3_600)

    # ---------------- links ----------------
    n_dev = 1 + (rng.random(n) < np.where(is_fraud, 0.55, 0.4))
    n_card = 1 + (rng.random(n) < 0.35)
    n_ip = 1 + rng.binomial(2, 0.4, n)
    n_acct = (rng.random(n) < 0.45).astype(np.int64)
    counts = {_DEVICE: n_dev, _PHONE: np.ones(n, dtype=np.int64), _CARD: n_card, _IP: n_ip, _ACCOUNT: n_acct}
    row_user: dict[int, np.ndarray] = {}
    row_key: dict[int, np.ndarray] = {}
    first_row: dict[int, np.ndarray] = {}
    for k, c in counts.items():  # five kinds, vectorised over users
        c = np.asarray(c, dtype=np.int64)
        row_user[k] = np.repeat(users_idx, c)
        row_key[k] = np.arange(row_user[k].size, dtype=np.int64)  # private identifiers
        first_row[k] = np.cumsum(c) - c
    last_ip_row = first_row[_IP] + n_ip - 1

    # Households: ~5% of good users share a device or home IP with 1-3 relatives.
    good_pool = np.flatnonzero(role == _GOOD)
    hh_sizes = rng.integers(2, 5, size=good_pool.size // 2 + 1)
    hh_of = np.searchsorted(np.cumsum(hh_sizes), np.arange(good_pool.size), side="right")
    hh_members = np.bincount(hh_of, minlength=hh_sizes.size)
    hh_keep = (rng.random(hh_sizes.size) < 0.05) & (hh_members >= 2)
    hh_share_device = rng.random(hh_sizes.size) < 0.35
    in_hh = hh_keep[hh_of]
    hh_head_pos = (np.cumsum(hh_members) - hh_members)[hh_of]
    is_member = in_hh & (np.arange(good_pool.size) != hh_head_pos)
    members = good_pool[is_member]
    heads = good_pool[hh_head_pos[is_member]]
    by_device = hh_share_device[hh_of[is_member]]
    row_key[_DEVICE][first_row[_DEVICE][members[by_device]]] = first_row[_DEVICE][heads[by_device]]
    row_key[_IP][first_row[_IP][members[~by_device]]] = first_row[_IP][heads[~by_device]]

    # Public-IP hubs (cafe Wi-Fi, carrier NAT).
    n_hubs = max(2, int(round(15 * (n / 1e6) ** 0.25)))
    hub_pop = 1.0 / np.arange(1, n_hubs + 1) ** 0.7
    hub_users = np.flatnonzero(rng.random(n) < np.where(is_fraud, 0.08, 0.05))
    hub_of = rng.choice(n_hubs, size=hub_users.size, p=hub_pop / hub_pop.sum())
    n_ip_private = row_key[_IP].size
    row_key[_IP][last_ip_row[hub_users]] = n_ip_private + hub_of

    # Fraud rings share a few devices (extra rows), phones and cards.
    ring_k_dev = 1 + ring_size // 8
    ring_k_phone = 1 + ring_size // 10
    ring_k_card = 1 + ring_size // 6
    member_ring_size = ring_size[ring_of_member]

    def shared_key(base: int, per_ring: np.ndarray) -> np.ndarray:
        offset = (np.cumsum(per_ring) - per_ring)[ring_of_member]
        pick = (rng.random(n_ring) * per_ring[ring_of_member]).astype(np.int64)
        return base + offset + pick

    ring_dev_key = shared_key(row_key[_DEVICE].size, ring_k_dev)
    ring_phone_key = shared_key(row_key[_PHONE].size, ring_k_phone)
    ring_card_key = shared_key(row_key[_CARD].size, ring_k_card)
    uses = rng.random((3, n_ring)) < np.array([[0.85], [0.5], [0.6]])
    uses[1] |= member_ring_size == 3  # tiny rings always share their phone
    row_key[_PHONE][first_row[_PHONE][ring_users[uses[1]]]] = ring_phone_key[uses[1]]
    row_key[_CARD][first_row[_CARD][ring_users[uses[2]]]] = ring_card_key[uses[2]]
    extra_dev_user = [ring_users[uses[0]]]
    extra_dev_key = [ring_dev_key[uses[0]]]

    # Mule chains: ring member -> mule -> ... -> cash-out. One chain per
    # cash-out account, tied to one ring.
    chain_ring = rng.integers(0, max(n_rings, 1), size=n_cash)
    chain_of_mule = np.sort(rng.integers(0, max(n_cash, 1), size=n_mule))
    chain_len = np.bincount(chain_of_mule, minlength=n_cash).astype(np.int64)
    chain_mule_start = np.cumsum(chain_len) - chain_len
    # Half of the cash-out accounts run on a device of their ring.
    cash_dev = rng.random(n_cash) < 0.5
    if n_cash and n_ring:
        ring_first_dev = row_key[_DEVICE].size + (np.cumsum(ring_k_dev) - ring_k_dev)
        extra_dev_user.append(cash_users[cash_dev])
        extra_dev_key.append(ring_first_dev[chain_ring[cash_dev]])

    # Family members: good users sharing the personal device of a fraudster.
    fraud_users = np.flatnonzero(is_fraud)
    family_of = fraud_users[rng.integers(0, max(fraud_users.size, 1), size=n_family)]
    extra_dev_user.append(family_users)
    extra_dev_key.append(first_row[_DEVICE][family_of])

    link_kind = np.concatenate(
        [np.full(row_user[k].size, k, dtype=np.int64) for k in counts]
        + [np.full(sum(a.size for a in extra_dev_user), _DEVICE, dtype=np.int64)]
    )
    link_user = np.concatenate([row_user[k] for k in counts] + extra_dev_user)
    link_key = np.concatenate([row_key[k] for k in counts] + extra_dev_key)
    del row_user, row_key
    order = np.argsort(link_user * 8 + link_kind, kind="stable")
    link_user, link_kind, link_key = link_user[order], link_kind[order], link_key[order]
    del order
    n_links = link_user.size
    c_user = created[link_user]
    first_seen = _uniform_between(rng, c_user, c_user + ((_END - c_user) * 0.6).astype(np.int64))
    del c_user
    # Most identifiers are still in use: last_seen is biased towards "now".
    last_seen = _END - ((_END - first_seen) * rng.random(n_links) ** 2).astype(np.int64)

    salts = {
        "device": int(rng.integers(0, 2**63)),
        "phone": int(rng.integers(0, 10**7)),
        "phone_mult": _unit_mod10(int(rng.integers(10**6, 10**7))),
        "card": int(rng.integers(0, 10**9)),
        "card_mult": _unit_mod10(int(rng.integers(10**8, 10**9))),
        "card_bin": int(rng.integers(0, 2**31)),
        "card_bins": np.concatenate(
            [rng.integers(400_000, 500_000, size=8), rng.integers(510_000, 560_000, size=8)]
        ),
        "ip": int(rng.integers(0, 2**24)),
        "ip_octet": int(rng.integers(0, 2**31)),
        "account": int(rng.integers(0, 2**40)),
    }
    if emails:
        # A stream of its own, so that every other row stays what it is without emails.
        mail_rng = np.random.default_rng([seed, 21])
        mail_user, mail_key, mail_domain, mail_first, mail_last = _email_links(
            mail_rng,
            created=created,
            role=role,
            household_members=members,
            household_heads=heads,
            household_of_member=hh_of[is_member],
            n_households=hh_sizes.size,
            ring_users=ring_users,
            ring_of_member=ring_of_member,
            n_rings=n_rings,
        )
        mail_mat, mail_len = _format_emails(mail_key, mail_domain, int(mail_rng.integers(0, 2**36)))

    # ---------------- relations ----------------
    rel_src: list[np.ndarray] = []
    rel_dst: list[np.ndarray] = []
    rel_kind: list[np.ndarray] = []
    rel_w: list[np.ndarray] = []
    rel_ts: list[np.ndarray] = []

    def add(src: np.ndarray, dst: np.ndarray, kind: int, weight: np.ndarray, ts: np.ndarray) -> None:
        rel_src.append(src)
        rel_dst.append(dst)
        rel_kind.append(np.full(src.size, kind, dtype=np.int64))
        rel_w.append(np.asarray(weight, dtype=np.float64))
        rel_ts.append(ts)

    def after_both(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
        """A time after both accounts exist."""
        return _uniform_between(rng, np.maximum(created[src], created[dst]), np.full(src.size, _END))

    def add_transfers(src: np.ndarray, dst: np.ndarray, median: float, sigma: float) -> None:
        """Transfers with log-normal amounts at random times."""
        amount = np.round(np.exp(np.log(median) + sigma * rng.standard_normal(src.size)), 2)
        add(src, dst, _TRANSFER, amount, after_both(src, dst))

    def add_contacts(src: np.ndarray, dst: np.ndarray) -> None:
        add(src, dst, _CONTACT, np.ones(src.size), after_both(src, dst))

    def neighbours(src: np.ndarray) -> np.ndarray:
        """Friends live close by in index space (overlapping local circles)."""
        offset = rng.geometric(0.15, size=src.size) * np.where(rng.random(src.size) < 0.5, -1, 1)
        return (src + offset) % n

    no_friends = (role == _RING) | (role == _CASHOUT)
    # Everyday transfers to friends.
    src = np.repeat(users_idx, rng.poisson(np.where(no_friends, 0.0, 1.6)))
    dst = neighbours(src)
    src, dst = src[~no_friends[dst]], dst[~no_friends[dst]]
    add_transfers(src, dst, 35.0, 0.9)
    # Payments to merchant-like popular receivers (everyone, fraudsters too).
    src = np.repeat(users_idx, rng.poisson(np.where(role == _RING, 1.0, 0.8)))
    dst = merchants[rng.choice(n_merch, size=src.size, p=merch_pop)]
    add_transfers(src, dst, 28.0, 0.8)
    # Contacts with neighbours.
    src = np.repeat(users_idx, rng.poisson(np.where(no_friends, 0.0, 1.35)))
    dst = neighbours(src)
    src, dst = src[~no_friends[dst]], dst[~no_friends[dst]]
    add_contacts(src, dst)

    if n_ring >= 2:
        # Transfers and contacts inside rings.
        pos = np.repeat(np.arange(n_ring), rng.poisson(1.5, size=n_ring))
        mate = _other_member(rng, pos, ring_start[ring_of_member[pos]], member_ring_size[pos])
        src, dst = ring_users[pos], ring_users[mate]
        add_transfers(src, dst, 180.0, 0.9)
        pos = np.flatnonzero(rng.random(n_ring) < 0.7)
        mate = _other_member(rng, pos, ring_start[ring_of_member[pos]], member_ring_size[pos])
        add_contacts(ring_users[pos], ring_users[mate])

    if n_cash and n_ring:
        # Mule-chain waves: similar amounts moving down the chain within hours.
        waves = 1 + rng.poisson(2.0, size=n_cash)
        wave_chain = np.repeat(np.arange(n_cash), waves)
        n_waves = wave_chain.size
        r = chain_ring[wave_chain]
        wave_src = ring_users[ring_start[r] + (rng.random(n_waves) * ring_size[r]).astype(np.int64)]
        hops = chain_len[wave_chain] + 1
        hop_wave = np.repeat(np.arange(n_waves), hops)
        hop_k = _ranks_in_groups(hops)
        c = wave_chain[hop_wave]
        # mule_users is grouped by chain; the -1 pad keeps unused lookups in range.
        padded = np.append(mule_users, -1)
        at = chain_mule_start[c] + hop_k
        src = np.where(hop_k == 0, wave_src[hop_wave], padded[np.clip(at - 1, 0, n_mule)])
        dst = np.where(hop_k == chain_len[c], cash_users[c], padded[np.clip(at, 0, n_mule)])
        hop_start = np.cumsum(hops) - hops
        ready = np.maximum.reduceat(np.maximum(created[src], created[dst]), hop_start)
        t0 = _uniform_between(rng, ready, np.maximum(ready, _END - 3 * _DAY))
        delay = rng.exponential(3 * 3_600.0, size=hop_wave.size).astype(np.int64) + 60
        ts = np.minimum(t0[hop_wave] + _cumsum_in_groups(delay, hops), _END)
        amount = np.exp(np.log(900.0) + 0.6 * rng.standard_normal(n_waves))[hop_wave]
        # Each mule keeps a 1-5% cut: cumulative product of the shares passed on.
        kept = _cumsum_in_groups(np.log1p(-rng.uniform(0.01, 0.05, size=hop_wave.size)), hops)
        amount = amount * np.exp(kept)
        add(src, dst, _TRANSFER, np.round(amount, 2), ts)

    if n_family:
        # Family members know (and sometimes pay) their fraudulent relative.
        add_contacts(family_users, family_of)
        pos = np.repeat(np.arange(n_family), rng.poisson(1.0, size=n_family))
        flip = rng.random(pos.size) < 0.5
        src = np.where(flip, family_of[pos], family_users[pos])
        dst = np.where(flip, family_users[pos], family_of[pos])
        add_transfers(src, dst, 60.0, 0.8)

    src = np.concatenate(rel_src)
    dst = np.concatenate(rel_dst)
    kind = np.concatenate(rel_kind)
    weight = np.concatenate(rel_w)
    ts = np.concatenate(rel_ts)
    del rel_src, rel_dst, rel_kind, rel_w, rel_ts
    keep = src != dst
    # One row per unordered contact pair.
    is_contact = kind == _CONTACT
    pair = np.minimum(src, dst) * n + np.maximum(src, dst)
    contact_rows = np.flatnonzero(is_contact & keep)
    _, first = np.unique(pair[contact_rows], return_index=True)
    keep &= ~is_contact
    keep[contact_rows[first]] = True
    order = np.flatnonzero(keep)
    order = order[np.argsort(ts[order], kind="stable")]
    src, dst, kind, weight, ts = src[order], dst[order], kind[order], weight[order], ts[order]
    del order, keep, pair, is_contact

    # ---------------- flags ----------------
    n_fraud_flags = int(round(flag_rate * fraud_users.size))
    good_users = np.flatnonzero(~is_fraud)
    n_benign_flags = int(round(benign_flag_rate * good_users.size))
    flag_user = np.concatenate(
        [
            np.sort(rng.permutation(fraud_users)[:n_fraud_flags]),
            np.sort(rng.permutation(good_users)[:n_benign_flags]),
        ]
    )
    flag_fraud = np.arange(flag_user.size) < n_fraud_flags
    severity = np.where(flag_fraud, np.round(rng.uniform(0.6, 1.0, flag_user.size), 2), 1.0)
    source_fraud = np.searchsorted([0.5, 0.8], rng.random(flag_user.size), side="right")
    source_benign = (rng.random(flag_user.size) >= 0.6).astype(np.int64)
    source_code = np.where(flag_fraud, source_fraud, len(_FRAUD_SOURCES) + source_benign)
    flag_created = created[flag_user]
    flag_ts = _uniform_between(rng, flag_created + (_END - flag_created) // 2, np.full(flag_user.size, _END))
    id_verified[flag_user[source_code == len(_FRAUD_SOURCES)]] = 1  # kyc_verified
    if bias_age_band is not None and bias_flag_rate > 0:
        # the band's history was also judged unfairly: a share of its good users stand confirmed
        # as fraud (a benign flag they held becomes a fraud flag), from the bias stream
        wrong = np.flatnonzero(biased & (bias.random(n) < bias_flag_rate))
        held = np.isin(flag_user, wrong)
        flag_fraud = flag_fraud | held
        new = np.setdiff1d(wrong, flag_user)
        flag_user = np.concatenate([flag_user, new])
        flag_fraud = np.concatenate([flag_fraud, np.ones(new.size, dtype=bool)])
        severity = np.concatenate([np.where(held, np.round(bias.uniform(0.6, 1.0, held.size), 2), severity), np.round(bias.uniform(0.6, 1.0, new.size), 2)])
        source_code = np.concatenate([np.where(held, 0, source_code), np.zeros(new.size, dtype=source_code.dtype)])
        new_created = created[new]
        flag_ts = np.concatenate([flag_ts, _uniform_between(bias, new_created + (_END - new_created) // 2, np.full(new.size, _END))])
    order = np.argsort(flag_ts, kind="stable")
    flag_user, flag_fraud, severity, source_code, flag_ts = (
        a[order] for a in (flag_user, flag_fraud, severity, source_code, flag_ts)
    )

    # ---------------- frames ----------------
    width = max(7, len(str(n - 1)))
    uid_mat = np.empty((n, width + 1), dtype=np.uint8)
    _put_bytes(uid_mat, 0, b"u")
    _put_dec(uid_mat, 1, users_idx, width)

    def uid(idx: np.ndarray) -> pd.Series:
        return _to_str_series(uid_mat[idx])

    def labels(codes: np.ndarray, names: tuple[str, ...]) -> pd.Series:
        dictionary = pa.array(names, type=pa.large_string())
        arr = pa.DictionaryArray.from_arrays(pa.array(codes.astype(np.int32)), dictionary)
        return arr.cast(pa.large_string()).to_pandas()

    users = pd.DataFrame(
        {
            "user_id": uid(users_idx),
            "tenure_days": tenure,
            "txn_count_90d": txn_count,
            "txn_amount_90d": txn_amount,
            "chargebacks_90d": chargebacks,
            "repayments_total": repay_total,
            "repayments_late": repay_late,
            "id_verified": id_verified,
            "night_spend_share": night,
            "spend_volatility": volatility,
            "region": labels(region, _REGIONS),
            "altpay_on_time_share": alt_on_time,
            "altpay_months": alt_months,
            "age_band": labels(age_band, AGE_BANDS),
        }
    )
    value_mat, value_len = _format_identifiers(link_kind, link_key, salts)
    if emails:
        # Each user's email row goes after their other links (its kind sorts last).
        order = np.argsort(np.concatenate([link_user * 8 + link_kind, mail_user * 8 + _EMAIL]), kind="stable")
        width = max(value_mat.shape[1], mail_mat.shape[1])
        value_mat = np.concatenate(
            [np.pad(value_mat, ((0, 0), (0, width - value_mat.shape[1]))), np.pad(mail_mat, ((0, 0), (0, width - mail_mat.shape[1])))]
        )[order]
        value_len = np.concatenate([value_len, mail_len])[order]
        link_user = np.concatenate([link_user, mail_user])[order]
        link_kind = np.concatenate([link_kind, np.full(mail_user.size, _EMAIL, dtype=np.int64)])[order]
        first_seen = np.concatenate([first_seen, mail_first])[order]
        last_seen = np.concatenate([last_seen, mail_last])[order]
        del order, mail_mat, mail_len
    links = pd.DataFrame(
        {
            "user_id": uid(link_user),
            "kind": labels(link_kind, _LINK_KINDS),
            "value": _to_str_series(value_mat, value_len),
            "first_seen": _iso_utc(first_seen),
            "last_seen": _iso_utc(last_seen),
        }
    )
    del value_mat, value_len, link_user, link_kind, link_key, first_seen, last_seen
    relations = pd.DataFrame(
        {
            "src": uid(src),
            "dst": uid(dst),
            "kind": labels(kind, _REL_KINDS),
            "weight": weight,
            "ts": _iso_utc(ts),
        }
    )
    flags = pd.DataFrame(
        {
            "user_id": uid(flag_user),
            "label": labels(np.where(flag_fraud, 0, 1), ("fraud", "benign")),
            "severity": severity.astype(np.float64),
            "source": labels(source_code, _FRAUD_SOURCES + _BENIGN_SOURCES),
            "ts": _iso_utc(flag_ts),
        }
    )
    truth = pd.DataFrame(
        {
            "user_id": uid(users_idx),
            "is_fraud": is_fraud.astype(np.int64),
            "role": labels(role, ROLES),
            "thin_file": thin_file.astype(np.int64),
        }
    )
    return {"users": users, "links": links, "relations": relations, "flags": flags, "truth": truth}


def _unit_mod10(x: int) -> int:
    """Nearest integer >= ``x`` that is coprime with 10 (a unit modulo 10**k)."""
    while x % 2 == 0 or x % 5 == 0:
        x += 1
    return x


# --------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------

_STEM = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


def write_tables(
    tables: Mapping[str, pd.DataFrame], out_dir: str | Path, *, fmt: str = "parquet"
) -> dict[str, Path]:
    """Write tables as ``<name>.<fmt>`` files in a data directory.

    Parameters
    ----------
    tables : mapping of str to pandas.DataFrame
        Tables keyed by file stem, typically the output of :func:`generate`
        (``users``, ``links``, ``relations``, ``flags`` and ``truth``).
    out_dir : str or pathlib.Path
        Target directory, created (with parents) if missing. Existing files
        of the same name are overwritten.
    fmt : {"parquet", "csv", "csv.gz"}, default="parquet"
        File format. Gzip output is byte-for-byte reproducible (no mtime).

    Returns
    -------
    dict of str to pathlib.Path
        Path of the written file for each table name.

    Raises
    ------
    ValueError
        If ``fmt`` is unknown or a table name is not a plain file stem.
    """
    if fmt not in FORMATS:
        allowed = ", ".join(repr(f) for f in FORMATS)
        raise ParameterError(
            f"The 'fmt' parameter of write_tables must be one of {allowed}. Got {fmt!r} instead."
        )
    for name in tables:
        if not isinstance(name, str) or not _STEM.fullmatch(name):
            raise ParameterError(
                f"Table names passed to write_tables must be plain file stems "
                f"(letters, digits, '_', '-', '.'). Got {name!r} instead."
            )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    for name, frame in tables.items():
        path = out / f"{name}.{fmt}"
        if fmt == "parquet":
            frame.to_parquet(path, index=False)
        elif fmt == "csv":
            frame.to_csv(path, index=False)
        else:
            frame.to_csv(path, index=False, compression={"method": "gzip", "mtime": 0})
        paths[name] = path
    return paths


def vary_formats(
    links: pd.DataFrame, *, share: float, seed: int = 0, email_providers: Mapping[str, EmailRule] | None = None
) -> pd.DataFrame:
    """The links with a ``share`` of the phone numbers, device ids and email addresses written
    another way, as real sources write them: phones ``+1 (555) 012-3456``, ``15550123456``,
    ``555.012.3456`` (national, read in region US) or ``+1 555 012 3456`` instead of
    ``+1-555-0123456``; device ids upper-cased or padded with spaces; emails capitalised
    (``Jane.Doe@Gmail.com``), upper-cased, padded with spaces, and, where the address's
    provider ignores them (``email_providers``), with their dots moved or dropped
    (``janedoe@gmail.com``), a ``+tag`` (``jane.doe+shop@outlook.com``) or the provider's other
    domain (``googlemail.com``). The same identifier then has several spellings, and only
    normalisation (``loaders.normalise``, ``default_region="US"``, the same provider rules)
    links them again: every spelling written here normalises back to the original's.

    Parameters
    ----------
    links : DataFrame
        The ``links`` table of :func:`generate` (``kind``, ``value``).
    share : float
        Share of the phone, device and email rows rewritten, in ``[0, 1]``.
    seed : int
        Seed of ``np.random.default_rng``: which rows, which spelling.
    email_providers : mapping of str to EmailRule, optional
        The provider rules the data will be normalised with
        (:attr:`loaders.normalise.Normalisation.email_providers`; default: its defaults).
        Dots, ``+tags`` and other domains are only written where these rules undo them.

    Returns
    -------
    DataFrame
        A copy of ``links`` with the rewritten values; other columns and rows unchanged.

    Raises
    ------
    ParameterError
        If ``share`` is not a number in ``[0, 1]``.

    Examples
    --------
    >>> links = pd.DataFrame({"user_id": ["a", "b"], "kind": ["phone", "device"], "value": ["+1-555-0123456", "dev-00ab"]})
    >>> vary_formats(links, share=1.0, seed=0)["value"].tolist()
    ['15550123456', 'DEV-00AB']
    >>> mail = pd.DataFrame({"user_id": ["a", "b", "c"], "kind": "email",
    ...                      "value": ["jane.doe@gmail.com", "jane.doe@outlook.com", "jdoe@yahoo.com"]})
    >>> varied = vary_formats(mail, share=1.0, seed=2)["value"]
    >>> varied.tolist()
    ['jane.doe+pay@gmail.com', 'JANE.DOE@OUTLOOK.COM', 'Jdoe@Yahoo.com']
    >>> from loaders.normalise import normalise_email
    >>> [normalise_email(v) for v in varied] == [normalise_email(v) for v in mail["value"]]
    True
    """
    ok = isinstance(share, numbers.Real) and not isinstance(share, bool)
    if not ok or not 0.0 <= float(share) <= 1.0:  # also rejects NaN
        raise ParameterError(f"The 'share' parameter of vary_formats must be a float in the range [0.0, 1.0]. Got {share!r} instead.")
    providers = Normalisation().email_providers if email_providers is None else {d.lower(): r for d, r in email_providers.items()}
    rng = np.random.default_rng(seed)
    out = links.copy()
    values = out["value"].astype(str).to_numpy(dtype=object)
    kinds = out["kind"].astype(str).to_numpy(dtype=object)
    pick = rng.random(len(out)) < share
    style = rng.integers(0, 4, len(out))
    for i in np.flatnonzero(pick & (kinds == "phone")).tolist():
        digits = "".join(ch for ch in values[i] if ch.isdigit())[-10:]  # area code and number
        area, mid, end = digits[:3], digits[3:6], digits[6:]
        values[i] = (f"+1 ({area}) {mid}-{end}", f"1{digits}", f"{area}.{mid}.{end}", f"+1 {area} {mid} {end}")[style[i]]
    for i in np.flatnonzero(pick & (kinds == "device")).tolist():
        values[i] = (values[i].upper(), f" {values[i]} ", values[i].upper() + " ", f" {values[i]} ")[style[i]]
    # Drawn after the phone and device spellings, which stay what they were before emails.
    is_email = np.flatnonzero(pick & (kinds == "email"))
    draws = rng.random((is_email.size, 3))
    for i, (u, v, w) in zip(is_email.tolist(), draws.tolist()):
        values[i] = _email_variant(values[i], providers, u, v, w)
    out["value"] = values
    return out


_TAGS = ("shop", "pay", "news", "bank", "signup", "2026")


def _email_variant(value: str, providers: Mapping[str, EmailRule], u: float, v: float, w: float) -> str:
    """Another spelling of the address ``value`` that ``providers``' rules fold back into it.

    ``u`` chooses the kind of change among those the provider allows, ``v`` and ``w`` its
    details (where a dot goes, which tag, which other domain); all in ``[0, 1)``.
    """
    local, domain = value.rsplit("@", 1)
    rule = providers.get(domain.lower())
    changes = ["capitalised", "upper", "spaces"]
    aliases: list[str] = []
    if rule is not None:
        if rule.dots and len(local.replace(".", "")) >= 2:
            changes.append("dots")
        if rule.plus:
            changes.append("tag")
        folded = rule.canonical_domain or domain
        aliases = sorted(d for d, r in providers.items() if d != domain and r == rule and (r.canonical_domain or d) == folded)
        if aliases:
            changes.append("domain")
    change = changes[int(u * len(changes))]
    if change == "capitalised":
        return ".".join(part[:1].upper() + part[1:] for part in local.split(".")) + "@" + domain[:1].upper() + domain[1:]
    if change == "upper":
        return value.upper()
    if change == "spaces":
        return (f" {value} ", f"{value} ", f"\t{value}")[int(v * 3)]
    if change == "dots":
        bare = local.replace(".", "")
        if "." in local and v < 0.5:
            return f"{bare}@{domain}"  # dots dropped
        at = 1 + int(w * (len(bare) - 1))  # a dot between two letters, never first or last
        moved = f"{bare[:at]}.{bare[at:]}"
        return f"{moved if moved != local else bare}@{domain}"
    if change == "tag":
        return f"{local}+{_TAGS[int(v * len(_TAGS))]}@{domain}"
    return f"{local}@{aliases[int(v * len(aliases))]}"
