"""Per-kind, same-person and velocity evidence on graphs small enough to check by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from graph.config import GraphConfig
from graph.projection import project
from loaders import read_tables
from scoring.features import co_user_sharing, direct_label_features, joined_within, overlap_matrix, structural_features
from scoring.reasons import linked_account_reasons, same_person_reasons
from tests.conftest import identifier

KEY = b"linking-test-key-0123456789"


def _graph(links: list[tuple[str, str, str, str | None]]):  # type: ignore[no-untyped-def]
    frame = pd.DataFrame(
        {
            "user_id": [u for u, _, _, _ in links],
            "kind": [k for _, k, _, _ in links],
            "value": [identifier(k, t) for _, k, t, _ in links],
            "first_seen": [s for _, _, _, s in links],
        }
    )
    tables = read_tables({"links": frame}, key=KEY)
    return tables, project(tables, GraphConfig())


# f (fraud) and a share a phone and a device: one person, likely; b shares only the café IP with
# f and a; c shares the phone with f and a, joining it the same day as a.
LINKS = [
    ("f", "phone", "P1", "2026-01-01T10:00"), ("f", "device", "D1", "2026-01-01T10:00"), ("f", "ip", "CAFE", "2026-01-01T10:00"),
    ("a", "phone", "P1", "2026-01-03T09:00"), ("a", "device", "D1", "2026-01-03T09:00"), ("a", "ip", "CAFE", "2026-01-20"),
    ("b", "ip", "CAFE", "2026-01-20T12:00"),
    ("c", "phone", "P1", "2026-01-03T20:00"),
]


def _at(p, values: np.ndarray, user: str) -> float:  # type: ignore[no-untyped-def]
    return float(values[int(p.index_of([user])[0])])


def test_same_person_counts_identifiers_shared_with_the_closest_account() -> None:
    _, p = _graph(LINKS)
    O = overlap_matrix(p)
    assert _at(p, O.max(axis=1).toarray().ravel(), "a") == 3  # phone, device, IP with f
    assert _at(p, O.max(axis=1).toarray().ravel(), "b") == 1
    assert _at(p, O.max(axis=1).toarray().ravel(), "c") == 1
    assert O.diagonal().sum() == 0


def test_hub_identifiers_do_not_count_as_same_person() -> None:
    _, p = _graph(LINKS)
    assert overlap_matrix(p, max_degree=2).max(axis=1).toarray().ravel()[p.index_of(["a"])[0]] == 1  # only the device


def test_velocity_counts_other_users_joining_within_the_window() -> None:
    tables, p = _graph(LINKS)
    day = joined_within(tables, p, days=1)
    week = joined_within(tables, p, days=7)
    # a and c joined P1 11 hours apart; a and b joined CAFE the same day; f joined 2+ days earlier
    assert {u: _at(p, day, u) for u in "facb"} == {"f": 0, "a": 2, "c": 1, "b": 1}
    assert {u: _at(p, week, u) for u in "facb"} == {"f": 3, "a": 4, "c": 2, "b": 1}


def test_links_without_first_seen_count_no_velocity() -> None:
    tables, p = _graph([(u, k, t, None) for u, k, t, _ in LINKS])
    assert joined_within(tables, p, days=7).sum() == 0


def test_structural_features_are_per_kind() -> None:
    tables, p = _graph(LINKS)
    X = structural_features(tables, p)
    a = int(p.index_of(["a"])[0])
    assert X.loc[a, "lnk_co_users_phone"] == 2 and X.loc[a, "lnk_co_users_device"] == 1 and X.loc[a, "lnk_co_users_ip"] == 2
    assert X.loc[a, "lnk_same_person"] == 3 and X.loc[a, "lnk_joined_1d"] == 2


def test_co_user_sharing_is_the_mean_over_the_co_users_of_one_kind() -> None:
    tables, p = _graph(LINKS)
    X = structural_features(tables, p)
    a, b = (int(i) for i in p.index_of(["a", "b"]))
    # a meets f and c on the phone (2 and 0 IP co-users), f alone on the device, f and b on the IP
    assert X.loc[a, "lnk_via_phone_co_users_ip"] == 1.0 and X.loc[a, "lnk_via_device_co_users_ip"] == 2.0
    assert X.loc[a, "lnk_via_ip_co_users_phone"] == 1.0 and X.loc[a, "lnk_via_ip_co_users_ip"] == 2.0
    # b has no phone: nobody met through one; f and a each have one device co-user
    assert X.loc[b, "lnk_via_phone_co_users_ip"] == 0.0 and X.loc[b, "lnk_via_ip_co_users_device"] == 1.0
    kinds = [k for k, _ in p.shared_kinds]
    assert sorted(c for c in X.columns if c.startswith("lnk_via_")) == sorted(f"lnk_via_{v}_co_users_{k}" for v in kinds for k in kinds)


def test_co_user_sharing_counts_a_co_user_once_per_identifier_it_shares() -> None:
    # b shares two emails with a; c one: b's single IP co-user counts twice, c's none once
    _, p = _graph([("a", "email", "E1", None), ("a", "email", "E2", None), ("b", "email", "E1", None), ("b", "email", "E2", None),
                   ("c", "email", "E1", None), ("b", "ip", "I1", None), ("d", "ip", "I1", None)])
    out = co_user_sharing(p, {"lnk_co_users_email": np.zeros(p.n_users), "lnk_co_users_ip": (p.user_ids == "b") * 1.0 + (p.user_ids == "d") * 1.0})
    assert _at(p, out["lnk_via_email_co_users_ip"], "a") == pytest.approx(2 / 3)
    assert _at(p, out["lnk_via_email_co_users_ip"], "d") == 0.0  # no email


def test_direct_label_features_per_kind_and_same_person_with_fraud() -> None:
    _, p = _graph(LINKS)
    F = np.zeros((p.n_users, 2))
    F[p.index_of(["f"]), 0] = 1.0  # column 1: a seed set without f (another fold)
    Bn = np.zeros((p.n_users, 2))
    Bn[p.index_of(["b"]), :] = 1.0
    out = direct_label_features(p, F, Bn)
    a, c = (int(i) for i in p.index_of(["a", "c"]))
    assert out["lnk_fraud_co_users_phone"][a].tolist() == [1, 0]
    assert out["lnk_fraud_co_users_ip"][a].tolist() == [1, 0]
    assert out["lnk_benign_co_users_ip"][a].tolist() == [1, 1]
    assert out["lnk_fraud_share_ip"][a].tolist() == [0.5, 0.0]  # f of f and b
    assert out["lnk_fraud_rate_ip"][a].tolist() == pytest.approx([1 / 3, 0.0])  # 1 fraud, 1 benign, 1 pseudo-count
    assert out["lnk_fraud_rate_phone"][a].tolist() == pytest.approx([0.5, 0.0])
    assert out["lnk_same_person_fraud"][a].tolist() == [3, 0] and out["lnk_same_person_fraud"][c].tolist() == [1, 0]


def test_features_of_one_user_are_the_same_on_its_local_subgraph() -> None:
    tables, p = _graph(LINKS)
    local, lp = _graph([row for row in LINKS if row[0] in ("a", "f", "b", "c")])
    assert structural_features(tables, p).loc[int(p.index_of(["a"])[0])].equals(structural_features(local, lp).loc[int(lp.index_of(["a"])[0])])


def test_same_person_reason_names_the_kinds_shared() -> None:
    _, p = _graph(LINKS)
    fraud = np.zeros(p.n_users)
    fraud[p.index_of(["f"])] = 1.0
    rows = p.index_of(["a", "c", "f"])
    reasons = same_person_reasons(p, rows, fraud)
    assert [r.text for r in reasons[0]] == ["shares a phone number, a device and an IP address with 1 account confirmed as fraud"]
    assert reasons[1] == [] and reasons[2] == []  # one identifier is not same-person evidence; f is not its own partner
    texts = [r.text for r in linked_account_reasons(p, rows[:1], fraud)[0]]
    assert texts[0].startswith("shares a phone number, a device") and "shares a device with 1 account confirmed as fraud" in texts


@pytest.mark.parametrize("kinds", [("phone", "device")])
def test_two_kinds_read_with_and(kinds: tuple[str, str]) -> None:
    _, p = _graph([("f", kinds[0], "X", None), ("f", kinds[1], "Y", None), ("a", kinds[0], "X", None), ("a", kinds[1], "Y", None)])
    fraud = (p.user_ids == "f").astype(float)
    assert same_person_reasons(p, p.index_of(["a"]), fraud)[0][0].text == "shares a phone number and a device with 1 account confirmed as fraud"
