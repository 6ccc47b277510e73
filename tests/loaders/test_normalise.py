"""Identifier normalisation: the spellings that must link, the ones that must not, and bad values."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from graph.config import GraphConfig
from graph.projection import project
from graph.store.embedded import EmbeddedStore
from loaders import ConfigError, DataError, load, read_tables
from loaders.normalise import (
    EmailRule,
    Normalisation,
    ip_prefix,
    luhn_valid,
    normalise_card,
    normalise_device,
    normalise_email,
    normalise_identifiers,
    normalise_ip,
    normalise_phone,
)

KEY = b"normalise-test-key-0123456789"


def _same(rule, *spellings) -> None:  # type: ignore[no-untyped-def]
    assert len({rule(s) for s in spellings}) == 1, [rule(s) for s in spellings]


def _different(rule, *spellings) -> None:  # type: ignore[no-untyped-def]
    values = [rule(s) for s in spellings]
    assert len(set(values)) == len(values), values


# -- phones ------------------------------------------------------------------------------------


def test_phone_spellings_of_one_number_link_in_their_region() -> None:
    cn = lambda v: normalise_phone(v, default_region="CN")  # noqa: E731
    _same(cn, "+86 138-0013-8000", "8613800138000", "13800138000", "(+86) 138 0013 8000", "0086 13800138000")
    assert cn("13800138000") == "+8613800138000"


def test_phone_international_numbers_need_no_region() -> None:
    _same(normalise_phone, "+44 20 7946 0018", "+44 (0)20 7946 0018", "0044 20 7946 0018", "+442079460018")


def test_phone_numbers_that_differ_do_not_link() -> None:
    _different(normalise_phone, "+44 20 7946 0018", "+44 20 7946 0019", "+1 202 555 0143")
    # the same national digits in two regions are two phones
    assert normalise_phone("06 12 34 56 78", default_region="FR") != normalise_phone("06 12 34 56 78", default_region="BE")


@pytest.mark.parametrize("value", ["P-A", "12", "not a phone", "+44 12", "+999 123 456 789"])
def test_phone_that_cannot_be_a_number_is_refused(value: str) -> None:
    with pytest.raises(ValueError, match="phone number with a country code"):
        normalise_phone(value, default_region="GB")


def test_national_phone_without_a_region_is_refused_with_the_setting_to_use() -> None:
    with pytest.raises(ValueError, match="default_region"):
        normalise_phone("13800138000")


def test_unknown_region_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="default_region"):
        Normalisation(default_region="XX")


# -- emails ------------------------------------------------------------------------------------


def test_gmail_ignores_case_dots_tags_and_its_other_domain() -> None:
    _same(normalise_email, "Jane.Doe@Gmail.com", "janedoe@gmail.com", " jane.doe+shop@gmail.com ", "JaneDoe@googlemail.com")
    assert normalise_email("Jane.Doe@Gmail.com") == "janedoe@gmail.com"


def test_other_providers_keep_dots_and_only_listed_ones_drop_tags() -> None:
    _same(normalise_email, "Jane.Doe+news@Outlook.com", "jane.doe@outlook.com")
    _different(normalise_email, "jane.doe@outlook.com", "janedoe@outlook.com")
    _different(normalise_email, "jane.doe@example.org", "janedoe@example.org", "jane.doe+x@example.org")
    _same(normalise_email, "Jane.Doe@Example.ORG", "jane.doe@example.org")


def test_provider_rules_are_configurable() -> None:
    rules = {"corp.example": EmailRule(dots=True, plus=True)}
    _same(lambda v: normalise_email(v, providers=rules), "a.b+x@corp.example", "ab@corp.example")
    # without the built-in rules, gmail keeps its dots
    _different(lambda v: normalise_email(v, providers=rules), "a.b@gmail.com", "ab@gmail.com")


@pytest.mark.parametrize("value", ["jane", "jane@", "@gmail.com", "jane@@gmail.com", "jane doe@gmail.com", "jane@localhost", "jane@gmail..com", "+tag@gmail.com"])
def test_malformed_email_is_refused(value: str) -> None:
    with pytest.raises(ValueError, match="email address"):
        normalise_email(value)


# -- IP addresses ------------------------------------------------------------------------------


def test_ip_spellings_link() -> None:
    _same(normalise_ip, "203.0.113.7", " 203.0.113.7", "::ffff:203.0.113.7")
    _same(normalise_ip, "2001:0DB8:0000:0000:0000:0000:0000:0001", "2001:db8::1", "[2001:db8::1]")
    _different(normalise_ip, "203.0.113.7", "203.0.113.8", "2001:db8::1")


def test_ip_prefix_is_the_24_or_64_network() -> None:
    _same(ip_prefix, "203.0.113.7", "203.0.113.250", "::ffff:203.0.113.1")
    _different(ip_prefix, "203.0.113.7", "203.0.114.7")
    assert ip_prefix("2001:db8:0:0:abcd::1") == ip_prefix("2001:db8::ffff") == "2001:db8::/64"


@pytest.mark.parametrize("value", ["10.0.0", "256.1.1.1", "10.0.0.1/24", "host.example", "2001:db8:::1"])
def test_malformed_ip_is_refused(value: str) -> None:
    with pytest.raises(ValueError, match="IPv4 or IPv6"):
        normalise_ip(value)


# -- cards and devices -------------------------------------------------------------------------


def test_card_spellings_link_and_luhn_is_checked() -> None:
    _same(normalise_card, "4111 1111 1111 1111", "4111-1111-1111-1111", "4111111111111111")
    _different(normalise_card, "4111111111111111", "5500005555555559")
    with pytest.raises(ValueError, match="fails it"):
        normalise_card("4111 1111 1111 1112")
    with pytest.raises(ValueError, match="12 to 19 digits"):
        normalise_card("4111-abcd")


@given(st.text(alphabet="0123456789", min_size=12, max_size=18))
@settings(max_examples=200, deadline=None)
def test_exactly_one_check_digit_completes_a_number(body: str) -> None:
    assert sum(luhn_valid(body + d) for d in "0123456789") == 1


def test_device_ids_are_trimmed_and_case_folded() -> None:
    _same(normalise_device, "DEV-1A", " dev-1a ", "Dev-1A")
    _different(normalise_device, "dev-1a", "dev-1b")


# -- the column function -----------------------------------------------------------------------


def test_each_distinct_value_is_normalised_once_and_rows_follow() -> None:
    kinds = pd.Series(["phone"] * 3 + ["email", "email", "ip", "account"])
    values = pd.Series(["+1 202 555 0143", "+12025550143", "+1 202 555 0143", "A@x.org", "a@X.org", "::ffff:1.2.3.4", " Acct-1 "])
    out = normalise_identifiers(kinds, values, config=Normalisation(ip_prefix=True))
    assert out.values.tolist() == ["+12025550143"] * 3 + ["a@x.org", "a@x.org", "1.2.3.4", " Acct-1 "]
    assert out.failed == []
    assert out.prefixes is not None and out.prefixes.iloc[5] == "1.2.3.0/24" and out.prefixes.isna().sum() == 6


def test_failures_are_grouped_by_kind_and_reason() -> None:
    kinds = pd.Series(["card", "card", "card", "phone"])
    values = pd.Series(["4111111111111112", "12ab", "4111111111111112", "nope"])
    failed = {(k, tuple(p.tolist())) for k, p, _ in normalise_identifiers(kinds, values, config=Normalisation()).failed}
    assert failed == {("card", (0, 2)), ("card", (1,)), ("phone", (3,))}


# -- through the loader ------------------------------------------------------------------------


def _links(values: list[str], kind: str) -> pd.DataFrame:
    return pd.DataFrame({"user_id": [f"u{i}" for i in range(len(values))], "kind": kind, "value": values})


def test_two_spellings_become_one_shared_identifier() -> None:
    tables = read_tables(
        {"links": pd.concat([_links(["+86 138-0013-8000", "13800138000"], "phone"), _links(["Jane.Doe@Gmail.com", "janedoe@gmail.com"], "email").assign(user_id=["u2", "u3"])])},
        key=KEY, normalisation=Normalisation(default_region="CN"),
    )
    p = project(tables, GraphConfig())
    assert p.n_idents == 2 and sorted(p.ident_degree.tolist()) == [2, 2]


def test_bad_values_name_file_row_column_and_kind_with_the_value_redacted(tmp_path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "links.csv").write_text("user_id,kind,value\nu1,card,4111111111111111\nu2,card,4111111111111112\n")
    with pytest.raises(DataError) as info:
        read_tables(tmp_path, key=KEY)
    message = str(info.value)
    assert "links.csv" in message and "row 2" in message and "column 'value'" in message and "Luhn" in message
    assert "4111111111111112" not in message and "16 characters" in message


def test_quarantine_sets_bad_identifiers_aside_and_counts_them(tmp_path) -> None:  # type: ignore[no-untyped-def]
    frame = pd.DataFrame(
        {
            "user_id": ["u1", "u2", "u3", "u4", "u5", "u6"],
            "kind": ["phone", "phone", "email", "ip", "card", "device"],
            "value": ["+44 20 7946 0018", "call me", "jane@", "10.0.0.300", "4111111111111112", "DEV-9"],
        }
    )
    store = EmbeddedStore(tmp_path / "ws")
    report = load({"links": frame}, store, key=KEY, on_error="quarantine")
    assert report.read["links"] == 6 and report.rejected["links"] == 4 and report.loaded("links") == 2
    assert sorted(report.rejects["row"].tolist()) == [2, 3, 4, 5]
    assert not report.rejects["value"].str.contains("call me|jane@|10.0.0.300|4111").any()


def test_ip_prefix_links_are_derived_and_counted(tmp_path) -> None:  # type: ignore[no-untyped-def]
    frame = _links(["203.0.113.7", "203.0.113.9", "198.51.100.1"], "ip")
    store = EmbeddedStore(tmp_path / "ws")
    report = load({"links": frame}, store, key=KEY, normalisation=Normalisation(ip_prefix=True))
    assert report.read["links"] == 3 and report.derived["links"] == 3 and report.loaded("links") == 6
    links = store.read_tables().links
    assert (links["kind"] == "ip_prefix").sum() == 3
    p = project(store.read_tables(), GraphConfig())
    # the two addresses of one /24 share the prefix; no address is shared
    assert p.n_idents == 1 and p.ident_kinds[int(p.ident_kind[0])] == "ip_prefix"


def test_store_refuses_data_normalised_otherwise(tmp_path) -> None:  # type: ignore[no-untyped-def]
    store = EmbeddedStore(tmp_path / "ws")
    store.bind_normalisation(Normalisation().fingerprint())
    store.bind_normalisation(Normalisation().fingerprint())
    with pytest.raises(ConfigError, match="Reload the data into a new workspace"):
        store.bind_normalisation(Normalisation(default_region="US").fingerprint())


def test_store_loaded_before_normalisation_is_refused(tmp_path) -> None:  # type: ignore[no-untyped-def]
    store = EmbeddedStore(tmp_path / "ws")
    load({"links": _links(["dev-1", "dev-1"], "device")}, store, key=KEY)
    assert "normalisation" not in store.metadata()
    with pytest.raises(ConfigError, match="loaded before identifier values were normalised"):
        store.bind_normalisation(Normalisation().fingerprint())


def test_each_distinct_value_costs_one_call(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import loaders.normalise as module

    calls: list[str] = []
    real = module.normalise_device
    monkeypatch.setattr(module, "normalise_device", lambda v: calls.append(v) or real(v))
    rng = np.random.default_rng(0)
    devices = np.array([f"DEV-{i}" for i in range(500)], dtype=object)
    values = pd.Series(devices[rng.integers(0, len(devices), 200_000)])
    out = normalise_identifiers(pd.Series(["device"] * len(values)), values)
    assert len(calls) == 500 and out.values.nunique() == 500


def test_the_application_path_normalises_as_the_loader_does() -> None:
    from scoring.application import Application, canonical_frames

    config = Normalisation(default_region="CN")
    spellings = ["+86 138-0013-8000", "13800138000"]
    idents = {
        canonical_frames(Application(user_id=f"a{i}", links=[{"kind": "phone", "value": v}]), key=KEY, normalisation=config)[0]["ident"].iloc[0]
        for i, v in enumerate(spellings)
    }
    loaded = read_tables({"links": _links(spellings[:1], "phone")}, key=KEY, normalisation=config).links["ident"].iloc[0]
    assert idents == {loaded}


def test_values_found_canonical_without_the_rule_are_what_the_rule_returns() -> None:
    """The IPv4 and card values :func:`_already_canonical` passes without calling the rule are
    exactly those the rule returns unchanged (of their shape): leading zeros, parts over 255,
    spaces, IPv6, separators and Luhn failures all go through the rule."""
    import numpy as np

    from loaders.normalise import _already_canonical, normalise_card, normalise_ip

    rng = np.random.default_rng(0)
    ips = [".".join(str(int(p)) for p in rng.integers(0, 256, 4)) for _ in range(300)]
    ips += ["01.2.3.4", "1.2.3.256", " 1.2.3.4", "1.2.3.4 ", "::1", "::ffff:1.2.3.4", "1.2.3", "1.2.3.4.5", "0.0.0.0", "255.255.255.255",
            "١.2.3.4", "1.2.3.04", "300.1.1.1"]
    cards = ["".join(str(int(d)) for d in rng.integers(0, 10, int(rng.integers(10, 22)))) for _ in range(500)]
    cards += ["4111111111111111", "4111111111111112", "4111 1111 1111 1111", "4111-1111-1111-1111", "٤١١١١١١١١١١١١١١١"]
    for kind, rule, values in (("ip", normalise_ip, ips), ("card", normalise_card, cards)):
        fast = _already_canonical(kind, np.asarray(values, dtype=object))
        for value, passed in zip(values, fast):
            try:
                unchanged = rule(value) == value
            except ValueError:
                unchanged = False
            shaped = value.isascii() and (value.replace(".", "").isdigit() if kind == "ip" else value.isdigit())
            assert passed == (unchanged and shaped), (kind, value, passed)
        assert fast.sum() >= 20  # the fast path is taken (a tenth of random card numbers pass the Luhn check)


def test_many_distinct_values_are_normalised_in_worker_processes_alike(monkeypatch: pytest.MonkeyPatch) -> None:
    """Past :data:`loaders.parallel.PARALLEL_FROM` distinct values the rules run in worker
    processes, and so does the hashing: the same canonical values, failures and pseudonyms, row
    for row."""
    import loaders.parallel as parallel
    from loaders.pseudonym import pseudonymise

    values = ["+1 202-555-0143", "+12025550143", "not a phone", "0044 20 7946 0018", "12", "+86 138-0013-8000"] * 5
    values += [f"+1 202 555 {i:04d}" for i in range(40)]
    kinds = pd.Series(["phone"] * len(values))
    serial = normalise_identifiers(kinds, pd.Series(values))
    hashed = pseudonymise(kinds, serial.values, key=b"0123456789abcdef")
    monkeypatch.setattr(parallel, "PARALLEL_FROM", 8)
    spread = normalise_identifiers(kinds, pd.Series(values))
    assert spread.values.tolist() == serial.values.tolist()
    assert [(k, p.tolist(), r) for k, p, r in spread.failed] == [(k, p.tolist(), r) for k, p, r in serial.failed]
    assert serial.failed and serial.values.iloc[1] == "+12025550143"
    assert pseudonymise(kinds, spread.values, key=b"0123456789abcdef").tolist() == hashed.tolist()
