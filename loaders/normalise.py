"""Identifier normalisation: one canonical spelling per identifier, before pseudonymisation.

The same phone written ``+86 138-0013-8000``, ``8613800138000`` and ``13800138000``, or the
same mailbox written ``Jane.Doe@Gmail.com`` and ``janedoe@gmail.com``, must hash to one
pseudonym, or the accounts that share it are never linked. Each kind has one rule:

========  ==========================================================================================
kind      rule
========  ==========================================================================================
phone     E.164 (``+8613800138000``) with ``phonenumbers``; numbers without a country code are read
          in :attr:`Normalisation.default_region`; a number that cannot be a phone is an error
email     trimmed and lower-cased; for the providers that ignore them
          (:attr:`Normalisation.email_providers`), dots of the local part and ``+tags`` dropped and
          the domain aliases folded (``googlemail.com`` -> ``gmail.com``); a malformed address is an
          error
ip        canonical text of ``ipaddress`` (``::ffff:1.2.3.4`` -> ``1.2.3.4``, IPv6 compressed,
          lower case); not an address is an error. With :attr:`Normalisation.ip_prefix`, each IP
          also yields an ``ip_prefix`` identifier: its /24 (IPv4) or /64 (IPv6) network
card      digits only (spaces and dashes dropped), 12 to 19 digits passing the Luhn check; anything
          else is an error
device    trimmed and case-folded
others    trimmed (as every value is)
========  ==========================================================================================

Each distinct ``(kind, value)`` is normalised once, so a million rows over a hundred thousand
distinct identifiers cost a hundred thousand calls.

Changing a rule changes stored pseudonyms: :data:`NORMALISATION_VERSION` is recorded in the
store (:meth:`graph.store.base.GraphStore.bind_normalisation`) and a store loaded under another
version refuses new data.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np
import pandas as pd
import phonenumbers

from loaders.errors import ConfigError
from loaders.parallel import map_chunks

__all__ = [
    "NORMALISATION_VERSION",
    "NORMALISED_KINDS",
    "IP_PREFIX_KIND",
    "EmailRule",
    "Normalisation",
    "Normalised",
    "normalise_phone",
    "normalise_email",
    "normalise_ip",
    "ip_prefix",
    "normalise_card",
    "normalise_device",
    "luhn_valid",
    "normalise_identifiers",
]

#: Version of the rules below; recorded in the store with the data it pseudonymised.
NORMALISATION_VERSION = 1
#: The kind of the derived network identifiers of IP addresses.
IP_PREFIX_KIND = "ip_prefix"


@dataclass(frozen=True)
class EmailRule:
    """What one mail provider ignores in the local part of an address.

    Attributes
    ----------
    dots : bool
        ``j.a.n.e`` and ``jane`` reach the same mailbox (Gmail).
    plus : bool
        ``jane+shop`` reaches ``jane`` (sub-addressing).
    canonical_domain : str or None
        The domain the provider's other domains fold into (``googlemail.com`` -> ``gmail.com``).
    """

    dots: bool = False
    plus: bool = True
    canonical_domain: str | None = None


def _default_providers() -> Mapping[str, EmailRule]:
    gmail = EmailRule(dots=True, plus=True, canonical_domain="gmail.com")
    plus_only = EmailRule(dots=False, plus=True)
    providers = {"gmail.com": gmail, "googlemail.com": gmail}
    for domain in (
        "outlook.com", "hotmail.com", "live.com", "msn.com", "icloud.com", "me.com", "mac.com",
        "proton.me", "protonmail.com", "pm.me", "fastmail.com", "yandex.ru", "yandex.com",
    ):
        providers[domain] = plus_only
    return MappingProxyType(providers)


@dataclass(frozen=True)
class Normalisation:
    """How identifier values are normalised before they are pseudonymised.

    Attributes
    ----------
    default_region : str or None
        ISO 3166 region (``"US"``, ``"CN"``, ``"GB"``) in which phone numbers written without a
        country code are read. ``None``: such numbers are errors (only ``+``-prefixed or
        ``00``-prefixed international numbers are accepted).
    email_providers : mapping of str to EmailRule
        Mail domains whose providers ignore dots or ``+tags`` in the local part. Other domains
        keep their local part whole (lower-cased).
    ip_prefix : bool
        Also derive an :data:`IP_PREFIX_KIND` identifier from each IP address: the /24 network
        of an IPv4 address, the /64 of an IPv6 one. Its weight and hub damping are its own
        (``GraphConfig.link_weights["ip_prefix"]``, ``GraphConfig.hub_exponents``).
    """

    default_region: str | None = None
    email_providers: Mapping[str, EmailRule] = field(default_factory=_default_providers)
    ip_prefix: bool = False

    def __post_init__(self) -> None:
        if self.default_region is not None:
            region = str(self.default_region).upper()
            if region not in phonenumbers.SUPPORTED_REGIONS:
                raise ConfigError(
                    f"The 'default_region' of [normalise] must be an ISO 3166 region phonenumbers knows, such as US, GB or CN. "
                    f"Got {self.default_region!r} instead."
                )
            object.__setattr__(self, "default_region", region)
        object.__setattr__(self, "email_providers", MappingProxyType({k.lower(): v for k, v in self.email_providers.items()}))

    def fingerprint(self) -> str:
        """What the store records: the rules' version and every setting that changes a
        canonical value (the region, the provider rules, the derived prefixes).

        Examples
        --------
        >>> Normalisation().fingerprint() == Normalisation().fingerprint() != Normalisation(default_region="US").fingerprint()
        True
        """
        providers = sorted((d, r.dots, r.plus, r.canonical_domain or "") for d, r in self.email_providers.items())
        payload = json.dumps([self.default_region, providers, self.ip_prefix], separators=(",", ":"))
        return f"v{NORMALISATION_VERSION}-{hashlib.sha256(payload.encode()).hexdigest()[:12]}"


# -- one rule per kind ---------------------------------------------------------------------------
# Each returns the canonical text, or raises ValueError saying what was expected.


def normalise_phone(value: str, *, default_region: str | None = None) -> str:
    """E.164 form of a phone number.

    Examples
    --------
    >>> normalise_phone("+86 138-0013-8000")
    '+8613800138000'
    >>> normalise_phone("13800138000", default_region="CN")
    '+8613800138000'
    >>> normalise_phone("0044 20 7946 0018")
    '+442079460018'
    """
    text = value.strip()
    if text.startswith("00"):
        text = "+" + text[2:]
    try:
        number = phonenumbers.parse(text, default_region)
    except phonenumbers.NumberParseException as exc:
        raise ValueError(_phone_expected(default_region)) from exc
    if not phonenumbers.is_possible_number(number):
        raise ValueError(_phone_expected(default_region))
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def _phone_expected(default_region: str | None) -> str:
    where = (
        f"numbers without one are read in region {default_region}"
        if default_region
        else "no default region is set: set default_region under [normalise] to read national numbers"
    )
    return f"a phone number with a country code, such as +44 20 7946 0018 ({where})"


_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s.]+$")
_EMAIL_EXPECTED = "an email address: one '@' between a non-empty local part and a domain with a dot, no spaces"


def normalise_email(value: str, *, providers: Mapping[str, EmailRule] | None = None) -> str:
    """Canonical email address: trimmed, lower-cased, provider rules applied.

    Examples
    --------
    >>> normalise_email(" Jane.Doe+shop@GoogleMail.com ")
    'janedoe@gmail.com'
    >>> normalise_email("Jane.Doe+shop@example.org")
    'jane.doe+shop@example.org'
    """
    text = value.strip().lower()
    if text.startswith("mailto:"):
        text = text[len("mailto:"):]
    if not _EMAIL.match(text) or ".." in text.split("@", 1)[1]:
        raise ValueError(_EMAIL_EXPECTED)
    local, domain = text.rsplit("@", 1)
    rule = (_default_providers() if providers is None else providers).get(domain)
    if rule is not None:
        if rule.plus:
            local = local.split("+", 1)[0]
        if rule.dots:
            local = local.replace(".", "")
        if not local:
            raise ValueError(_EMAIL_EXPECTED)
        domain = rule.canonical_domain or domain
    return f"{local}@{domain}"


_IP_EXPECTED = "an IPv4 or IPv6 address, such as 203.0.113.7 or 2001:db8::1"


def _address(value: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    text = value.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    try:
        address = ipaddress.ip_address(text)
    except ValueError as exc:
        raise ValueError(_IP_EXPECTED) from exc
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def normalise_ip(value: str) -> str:
    """Canonical text of an IP address.

    Examples
    --------
    >>> normalise_ip("::ffff:203.0.113.7")
    '203.0.113.7'
    >>> normalise_ip("2001:0DB8:0000::0001")
    '2001:db8::1'
    """
    return str(_address(value))


def ip_prefix(value: str) -> str:
    """The network an IP address belongs to: its /24 (IPv4) or /64 (IPv6).

    Examples
    --------
    >>> ip_prefix("203.0.113.7")
    '203.0.113.0/24'
    >>> ip_prefix("2001:db8::1")
    '2001:db8::/64'
    """
    address = _address(value)
    bits = 24 if address.version == 4 else 64
    return str(ipaddress.ip_network(f"{address}/{bits}", strict=False))


_CARD_EXPECTED = "a card number of 12 to 19 digits (spaces and dashes allowed) that passes the Luhn check"
_CARD_SEPARATORS = re.compile(r"[\s\-.]")


def luhn_valid(digits: str) -> bool:
    """Whether a string of digits passes the Luhn (mod 10) check.

    Examples
    --------
    >>> luhn_valid("4111111111111111"), luhn_valid("4111111111111112")
    (True, False)
    """
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def normalise_card(value: str) -> str:
    """A card number as digits only, Luhn-checked.

    Examples
    --------
    >>> normalise_card("4111 1111-1111 1111")
    '4111111111111111'
    """
    digits = _CARD_SEPARATORS.sub("", value)
    if not (digits.isascii() and digits.isdigit() and 12 <= len(digits) <= 19):
        raise ValueError(_CARD_EXPECTED)
    if not luhn_valid(digits):
        raise ValueError(f"{_CARD_EXPECTED} (this one fails it: a mistyped or made-up number)")
    return digits


def normalise_device(value: str) -> str:
    """A device id trimmed and case-folded.

    Examples
    --------
    >>> normalise_device(" DEV-1A ")
    'dev-1a'
    """
    return value.strip().casefold()


#: The kinds that have a rule of their own; every other kind is only trimmed.
NORMALISED_KINDS: tuple[str, ...] = ("phone", "email", "ip", "card", "device")


def _rules(config: Normalisation) -> dict[str, Callable[[str], str]]:
    return {
        "phone": lambda v: normalise_phone(v, default_region=config.default_region),
        "email": lambda v: normalise_email(v, providers=config.email_providers),
        "ip": normalise_ip,
        "card": normalise_card,
        "device": normalise_device,
    }


#: A dotted-quad IPv4 address in canonical text (no leading zeros, each part 0-255, nothing
#: around it): its rule returns it unchanged, so it is not parsed.
_IPV4_CANONICAL = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])(?:\.(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])){3}"
_CARD_DIGITS = r"[0-9]{12,19}"


def _luhn_all(digits: np.ndarray) -> np.ndarray:
    """:func:`luhn_valid` of each string of ASCII digits, vectorised (one group per length)."""
    out = np.zeros(len(digits), dtype=bool)
    lengths = np.fromiter((len(d) for d in digits), dtype=np.int64, count=len(digits))
    for n in np.unique(lengths):
        at = np.flatnonzero(lengths == n)
        d = np.frombuffer("".join(digits[at].tolist()).encode("ascii"), dtype=np.uint8).reshape(len(at), n).astype(np.int64) - 48
        d = d[:, ::-1]
        doubled = d[:, 1::2] * 2
        d[:, 1::2] = np.where(doubled > 9, doubled - 9, doubled)
        out[at] = d.sum(axis=1) % 10 == 0
    return out


def _already_canonical(kind: str, uniques: np.ndarray) -> np.ndarray:
    """Which distinct values ``kind``'s rule would return unchanged, found without calling it:
    canonical IPv4 text, and card numbers of digits only that pass the Luhn check. The rest go
    through the rule (which alone says what was wrong with a bad one)."""
    if kind not in ("ip", "card") or not len(uniques):
        return np.zeros(len(uniques), dtype=bool)
    text = pd.Series(uniques, dtype=object)
    ascii_ = text.map(str.isascii, na_action="ignore").fillna(False).to_numpy(dtype=bool)
    shaped = ascii_ & text.str.fullmatch(_IPV4_CANONICAL if kind == "ip" else _CARD_DIGITS).fillna(False).to_numpy(dtype=bool)
    if kind == "card" and shaped.any():
        at = np.flatnonzero(shaped)
        shaped[at] = _luhn_all(uniques[at])
    return shaped


def _apply_rule(values: list[str], kind: str, region: str | None, providers: dict[str, EmailRule]) -> list[tuple[str, str]]:
    """``kind``'s rule (under a default region and email providers) over ``values``: per value,
    its canonical text and why it failed ("" if it did not)."""
    rule = _rules(Normalisation(default_region=region, email_providers=providers))[kind]
    out = []
    for raw in values:
        try:
            out.append((rule(raw), ""))
        except ValueError as exc:
            out.append((raw, str(exc)))
    return out


def _run_rule(kind: str, config: Normalisation, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_apply_rule` over ``values``, on every core when there are many
    (:func:`loaders.parallel.map_chunks`)."""
    done = map_chunks(_apply_rule, values, kind, config.default_region, dict(config.email_providers))
    canon = np.empty(len(done), dtype=object)
    reasons = np.empty(len(done), dtype=object)
    canon[:] = [c for c, _ in done]
    reasons[:] = [r for _, r in done]
    return canon, reasons


@dataclass(frozen=True)
class Normalised:
    """Canonical values of a column of identifiers.

    Attributes
    ----------
    values : Series of str
        The canonical value of each row (the input where the row failed).
    failed : list of (str, ndarray of int, str)
        Per kind and reason its rule refused rows for: the kind, the rows' 0-based positions
        and what was expected.
    prefixes : Series of str or None
        With ``ip_prefix``: the network of each ``ip`` row (missing on other rows).
    """

    values: pd.Series
    failed: list[tuple[str, np.ndarray, str]]
    prefixes: pd.Series | None = None


def normalise_identifiers(kinds: pd.Series, values: pd.Series, *, config: Normalisation | None = None) -> Normalised:
    """Normalise each row's value by its kind's rule, each distinct ``(kind, value)`` once.

    Parameters
    ----------
    kinds, values : Series of str
        Aligned, no missing values; kinds already lower-case words.
    config : Normalisation, optional

    Returns
    -------
    Normalised

    Examples
    --------
    >>> import pandas as pd
    >>> out = normalise_identifiers(pd.Series(["phone", "phone", "device"]),
    ...                             pd.Series(["+1 202-555-0143", "+12025550143", "Dev-9"]))
    >>> out.values.tolist(), out.failed
    (['+12025550143', '+12025550143', 'dev-9'], [])
    """
    config = config or Normalisation()
    index = values.index
    kind_arr = kinds.astype(str).to_numpy(dtype=object)
    value_arr = values.astype(str).to_numpy(dtype=object)
    out = value_arr.copy()
    failed: list[tuple[str, np.ndarray, str]] = []
    prefixes = np.full(len(value_arr), None, dtype=object) if config.ip_prefix else None
    for kind in _rules(config):
        rows = np.flatnonzero(kind_arr == kind)
        if not len(rows):
            continue
        codes, uniques = pd.factorize(value_arr[rows])
        uniques = np.asarray(uniques, dtype=object)
        canon = uniques.copy()
        reasons = np.full(len(uniques), "", dtype=object)
        todo = np.flatnonzero(~_already_canonical(kind, uniques))
        if len(todo):
            canon[todo], reasons[todo] = _run_rule(kind, config, uniques[todo])
        bad = reasons != ""
        out[rows] = canon[codes]
        if bad.any():
            row_reason = reasons[codes]
            for reason in dict.fromkeys(row_reason[bad[codes]].tolist()):
                failed.append((kind, rows[row_reason == reason], reason))
        if kind == "ip" and prefixes is not None:
            net = np.array([None if bad[j] else ip_prefix(canon[j]) for j in range(len(uniques))], dtype=object)
            prefixes[rows] = net[codes]
    return Normalised(
        values=pd.Series(out, index=index, dtype="string"),
        failed=failed,
        prefixes=None if prefixes is None else pd.Series(prefixes, index=index, dtype="string"),
    )
