"""Tests of the synthetic population generator (loaders.synthetic)."""

from __future__ import annotations

import hashlib
import math

import numpy as np
import pandas as pd
import pytest

from loaders.errors import ParameterError
from loaders.normalise import EmailRule, Normalisation, normalise_email, normalise_identifiers
from loaders.pseudonym import pseudonymise
from loaders.synthetic import AGE_BANDS, FORMATS, OUTPUT_TABLES, ROLES, _iso_utc, generate, vary_formats, write_tables

N = 5_000
ISO = r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z"
WINDOW_START = "2024-11-01T00:00:00Z"
WINDOW_END = "2026-11-01T00:00:00Z"

COLUMNS = {
    "users": {
        "user_id": "str",
        "tenure_days": "int64",
        "txn_count_90d": "int64",
        "txn_amount_90d": "float64",
        "chargebacks_90d": "int64",
        "repayments_total": "int64",
        "repayments_late": "int64",
        "id_verified": "int64",
        "night_spend_share": "float64",
        "spend_volatility": "float64",
        "region": "str",
        "altpay_on_time_share": "float64",
        "altpay_months": "float64",
        "age_band": "str",
    },
    "links": {"user_id": "str", "kind": "str", "value": "str", "first_seen": "str", "last_seen": "str"},
    "relations": {"src": "str", "dst": "str", "kind": "str", "weight": "float64", "ts": "str"},
    "flags": {"user_id": "str", "label": "str", "severity": "float64", "source": "str", "ts": "str"},
    "truth": {"user_id": "str", "is_fraud": "int64", "role": "str", "thin_file": "int64"},
}


@pytest.fixture(scope="module")
def tables() -> dict[str, pd.DataFrame]:
    return generate(n_users=N, seed=3)


@pytest.fixture(scope="module")
def truth(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    return tables["truth"].set_index("user_id")


def _assert_tables_equal(a: dict[str, pd.DataFrame], b: dict[str, pd.DataFrame]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        pd.testing.assert_frame_equal(a[name], b[name])


# ---------------------------------------------------------------- determinism


def test_same_seed_gives_identical_frames() -> None:
    _assert_tables_equal(generate(n_users=2_000, seed=1), generate(n_users=2_000, seed=1))


def test_different_seed_gives_different_frames() -> None:
    a, b = generate(n_users=2_000, seed=1), generate(n_users=2_000, seed=2)
    for name in ("users", "links", "relations", "truth"):
        assert not a[name].equals(b[name]), name


def test_global_random_state_is_not_used() -> None:
    np.random.seed(0)
    a = generate(n_users=500, seed=7)
    state = np.random.get_state()[1].copy()
    np.random.seed(123)
    b = generate(n_users=500, seed=7)
    _assert_tables_equal(a, b)
    np.random.seed(0)
    assert np.array_equal(np.random.get_state()[1], state)


# ---------------------------------------------------------------- schema


def test_table_names(tables: dict[str, pd.DataFrame]) -> None:
    assert tuple(tables) == OUTPUT_TABLES


@pytest.mark.parametrize("name", list(COLUMNS))
def test_columns_and_dtypes(tables: dict[str, pd.DataFrame], name: str) -> None:
    frame = tables[name]
    assert list(frame.columns) == list(COLUMNS[name])
    for column, dtype in COLUMNS[name].items():
        if dtype == "str":
            assert pd.api.types.is_string_dtype(frame[column]), column
            assert frame[column].notna().all(), column
        else:
            assert frame[column].dtype == np.dtype(dtype), column
    assert isinstance(frame.index, pd.RangeIndex)


def test_user_ids(tables: dict[str, pd.DataFrame]) -> None:
    users = tables["users"]
    assert len(users) == N
    assert users["user_id"].is_unique
    assert users["user_id"].str.fullmatch(r"u\d{7}").all()
    assert users["user_id"].tolist() == tables["truth"]["user_id"].tolist()
    wide = generate(n_users=12, seed=0)["users"]["user_id"]
    assert wide.iloc[-1] == "u0000011"


def test_user_feature_ranges(tables: dict[str, pd.DataFrame]) -> None:
    users = tables["users"]
    assert (users["tenure_days"] >= 1).all()
    assert (users[["txn_count_90d", "chargebacks_90d", "repayments_total"]] >= 0).all().all()
    assert (users["repayments_late"] <= users["repayments_total"]).all()
    assert (users["repayments_late"] >= 0).all()
    assert set(users["id_verified"].unique()) == {0, 1}
    assert users["night_spend_share"].between(0, 1).all()
    assert (users["spend_volatility"] >= 0).all()
    assert 6 <= users["region"].nunique() <= 10
    nan_share = users["txn_amount_90d"].isna().mean()
    assert 0.015 < nan_share < 0.05
    assert (users["txn_amount_90d"].dropna() >= 0).all()
    assert (users["repayments_total"] == 0).mean() > 0.05  # thin-file users


def test_fraudsters_differ_but_overlap(tables: dict[str, pd.DataFrame]) -> None:
    users = tables["users"].set_index("user_id")
    fraud = tables["truth"].set_index("user_id")["is_fraud"].astype(bool)
    good_tenure, bad_tenure = users.loc[~fraud, "tenure_days"], users.loc[fraud, "tenure_days"]
    assert bad_tenure.median() < good_tenure.median()
    assert bad_tenure.quantile(0.9) > good_tenure.quantile(0.25)  # heavy overlap
    assert users.loc[fraud, "chargebacks_90d"].mean() > users.loc[~fraud, "chargebacks_90d"].mean()
    assert users.loc[fraud, "id_verified"].mean() < users.loc[~fraud, "id_verified"].mean()
    assert users.loc[fraud, "night_spend_share"].mean() > users.loc[~fraud, "night_spend_share"].mean()


# ---------------------------------------------------------------- integrity


def test_referential_integrity(tables: dict[str, pd.DataFrame]) -> None:
    ids = set(tables["users"]["user_id"])
    assert set(tables["links"]["user_id"]) <= ids
    assert set(tables["relations"]["src"]) <= ids
    assert set(tables["relations"]["dst"]) <= ids
    assert set(tables["flags"]["user_id"]) <= ids
    assert set(tables["truth"]["user_id"]) == ids


def test_relations(tables: dict[str, pd.DataFrame]) -> None:
    rel = tables["relations"]
    assert (rel["src"] != rel["dst"]).all()
    assert set(rel["kind"].unique()) == {"transfer", "contact"}
    contact = rel[rel["kind"] == "contact"]
    assert (contact["weight"] == 1.0).all()
    src, dst = contact["src"], contact["dst"]
    pairs = pd.DataFrame({"a": src.where(src < dst, dst), "b": dst.where(src < dst, src)})
    assert not pairs.duplicated().any()  # one row per contact pair
    assert (rel.loc[rel["kind"] == "transfer", "weight"] > 0).all()
    assert rel["ts"].str.fullmatch(ISO).all()
    assert rel["ts"].between(WINDOW_START, WINDOW_END).all()


def test_size_about_ten_rows_per_user(tables: dict[str, pd.DataFrame]) -> None:
    rows = len(tables["links"]) + len(tables["relations"])
    assert 8 * N <= rows <= 12 * N


def test_links(tables: dict[str, pd.DataFrame]) -> None:
    links = tables["links"]
    assert set(links["kind"].unique()) == {"device", "phone", "card", "ip", "account"}
    assert links["first_seen"].str.fullmatch(ISO).all()
    assert links["last_seen"].str.fullmatch(ISO).all()
    assert (links["first_seen"] <= links["last_seen"]).all()
    assert links["first_seen"].between(WINDOW_START, WINDOW_END).all()
    assert links["last_seen"].between(WINDOW_START, WINDOW_END).all()
    assert not links.duplicated(["user_id", "kind", "value"]).any()
    per_user = links.groupby(["user_id", "kind"]).size().unstack(fill_value=0)
    assert (per_user["phone"] == 1).all()
    assert per_user["ip"].between(1, 3).all()
    assert per_user["account"].between(0, 1).all()
    assert per_user["card"].between(1, 2).all()
    assert (per_user["device"] >= 1).all()
    assert 1.2 < per_user["device"].mean() < 1.8


@pytest.mark.parametrize(
    ("kind", "pattern"),
    [
        ("device", r"dev-[0-9a-f]{16}"),
        ("phone", r"\+1-555-\d{7}"),
        ("card", r"\d{16}"),
        ("ip", r"(?:\d{1,3}\.){3}\d{1,3}"),
        ("account", r"acct-[0-9a-f]{10}"),
    ],
)
def test_identifier_formats(tables: dict[str, pd.DataFrame], kind: str, pattern: str) -> None:
    values = tables["links"].loc[lambda d: d["kind"] == kind, "value"]
    assert len(values) > 0
    assert values.str.fullmatch(pattern).all()
    if kind == "ip":
        octets = values.str.split(".", expand=True).astype(int)
        assert ((octets >= 0) & (octets <= 255)).all().all()
        assert not values.str.contains(r"(?:^|\.)0\d").any()  # no zero padding


def test_cards_pass_luhn(tables: dict[str, pd.DataFrame]) -> None:
    cards = tables["links"].loc[lambda d: d["kind"] == "card", "value"].unique()
    digits = np.array([list(map(int, c)) for c in cards])
    doubled = digits[:, -2::-2] * 2
    total = np.where(doubled > 9, doubled - 9, doubled).sum(axis=1) + digits[:, -1::-2].sum(axis=1)
    assert (total % 10 == 0).all()


def test_most_identifiers_are_private(tables: dict[str, pd.DataFrame]) -> None:
    users_per_id = tables["links"].groupby(["kind", "value"])["user_id"].nunique()
    assert (users_per_id == 1).mean() > 0.95


def test_public_ip_hubs(tables: dict[str, pd.DataFrame]) -> None:
    ips = tables["links"].loc[lambda d: d["kind"] == "ip"]
    users_per_ip = ips.groupby("value")["user_id"].nunique().sort_values(ascending=False)
    hubs = users_per_ip[users_per_ip >= 20]
    assert len(hubs) >= 2
    assert users_per_ip.iloc[0] >= 50
    # hubs are shared by unrelated users: mostly good ones
    fraud = tables["truth"].set_index("user_id")["is_fraud"]
    hub_users = ips.loc[ips["value"].isin(hubs.index), "user_id"].unique()
    assert fraud.loc[hub_users].mean() < 0.2


def test_households_share_devices_or_ips(tables: dict[str, pd.DataFrame], truth: pd.DataFrame) -> None:
    links = tables["links"]
    links = links[links["kind"].isin(["device", "ip"])]
    size = links.groupby(["kind", "value"])["user_id"].transform("nunique")
    small_shared = links[(size >= 2) & (size <= 4)]
    good = small_shared[truth.loc[small_shared["user_id"], "role"].to_numpy() == "good"]
    households = good.groupby(["kind", "value"])["user_id"].nunique()
    n_good = (truth["role"] == "good").sum()
    assert 0.02 * n_good < households.sum() < 0.10 * n_good


# ---------------------------------------------------------------- fraud structure


@pytest.mark.parametrize("rate", [0.02, 0.1])
def test_fraud_share_near_rate(rate: float) -> None:
    truth = generate(n_users=N, seed=5, fraud_rate=rate)["truth"]
    assert abs(truth["is_fraud"].mean() - rate) < 0.005
    assert set(truth["role"].unique()) <= set(ROLES)
    assert (truth["is_fraud"] == truth["role"].isin(["ring", "mule", "cashout"])).all()


def test_roles_present(truth: pd.DataFrame) -> None:
    counts = truth["role"].value_counts()
    n_fraud = truth["is_fraud"].sum()
    assert set(counts.index) == set(ROLES)
    assert counts["ring"] > counts["mule"] > counts["cashout"] > 0
    assert abs(counts["family"] - n_fraud / 20) <= 2


def test_family_members_are_good_and_share_a_device_with_a_fraudster(
    tables: dict[str, pd.DataFrame], truth: pd.DataFrame
) -> None:
    family = truth.index[truth["role"] == "family"]
    assert len(family) > 0
    assert (truth.loc[family, "is_fraud"] == 0).all()
    devices = tables["links"].loc[lambda d: d["kind"] == "device"]
    fraud_devices = set(devices.loc[truth.loc[devices["user_id"], "is_fraud"].to_numpy() == 1, "value"])
    family_devices = devices[devices["user_id"].isin(family)]
    shares = family_devices.groupby("user_id")["value"].agg(lambda v: bool(set(v) & fraud_devices))
    assert shares.reindex(family, fill_value=False).all()


def test_rings_share_identifiers(tables: dict[str, pd.DataFrame], truth: pd.DataFrame) -> None:
    links = tables["links"]
    links = links[links["kind"].isin(["device", "phone", "card"])]
    role = truth.loc[links["user_id"], "role"].to_numpy()
    ring_links = links[role == "ring"]
    ring_users_per_id = ring_links.groupby(["kind", "value"])["user_id"].nunique()
    shared = ring_users_per_id[ring_users_per_id >= 2]
    assert len(shared) > 0
    assert shared.max() <= 30
    members = ring_links.set_index(["kind", "value"]).loc[shared.index, "user_id"].unique()
    assert len(members) / (truth["role"] == "ring").sum() > 0.8


def test_mule_chains(tables: dict[str, pd.DataFrame], truth: pd.DataFrame) -> None:
    rel = tables["relations"]
    tr = rel[rel["kind"] == "transfer"]
    src_role = truth.loc[tr["src"], "role"].to_numpy()
    dst_role = truth.loc[tr["dst"], "role"].to_numpy()
    into_mules = tr[(dst_role == "mule") & np.isin(src_role, ["ring", "mule"])]
    into_cashouts = tr[(dst_role == "cashout") & np.isin(src_role, ["ring", "mule"])]
    mules = truth.index[truth["role"] == "mule"]
    cashouts = truth.index[truth["role"] == "cashout"]
    assert set(into_cashouts["dst"]) == set(cashouts)
    assert set(into_mules["dst"]) == set(mules)
    # every mule forwards money to another fraud account
    forwarding = tr[(src_role == "mule") & np.isin(dst_role, ["mule", "cashout"])]
    assert set(forwarding["src"]) == set(mules)
    # each mule passes on a similar amount shortly after receiving it
    ts = pd.to_datetime(tr["ts"], format="%Y-%m-%dT%H:%M:%SZ", utc=True)
    fraud_tr = tr.assign(ts=ts)[np.isin(src_role, ["ring", "mule"]) & np.isin(dst_role, ["mule", "cashout"])]
    incoming = pd.DataFrame({"mule": fraud_tr["dst"], "w_in": fraud_tr["weight"], "t_in": fraud_tr["ts"]})
    outgoing = pd.DataFrame({"mule": fraud_tr["src"], "w_out": fraud_tr["weight"], "t_out": fraud_tr["ts"]})
    pairs = incoming.merge(outgoing, on="mule")
    pairs = pairs[(pairs["t_out"] >= pairs["t_in"]) & (pairs["t_out"] - pairs["t_in"] < pd.Timedelta(days=2))]
    close = pairs[(pairs["w_out"] / pairs["w_in"]).between(0.9, 1.0)]
    assert close["mule"].nunique() >= 0.9 * len(mules)


# ---------------------------------------------------------------- flags


def test_flags_consistent_with_truth(tables: dict[str, pd.DataFrame], truth: pd.DataFrame) -> None:
    flags = tables["flags"]
    assert flags["user_id"].is_unique  # nobody has both labels
    assert set(flags["label"].unique()) == {"fraud", "benign"}
    is_fraud = truth.loc[flags["user_id"], "is_fraud"].to_numpy()
    fraud_flag = (flags["label"] == "fraud").to_numpy()
    assert (is_fraud[fraud_flag] == 1).all()
    assert (is_fraud[~fraud_flag] == 0).all()
    n_fraud, n_good = truth["is_fraud"].sum(), (truth["is_fraud"] == 0).sum()
    assert abs(fraud_flag.sum() - 0.5 * n_fraud) <= 1
    assert abs((~fraud_flag).sum() - 0.05 * n_good) <= 1
    assert flags.loc[fraud_flag, "severity"].between(0.6, 1.0).all()
    assert (flags.loc[~fraud_flag, "severity"] == 1.0).all()
    fraud_sources = {"chargeback_investigation", "manual_review", "external_report"}
    assert set(flags.loc[fraud_flag, "source"]) <= fraud_sources
    assert set(flags.loc[~fraud_flag, "source"]) <= {"kyc_verified", "manual_review"}
    assert flags["ts"].str.fullmatch(ISO).all()
    assert flags["ts"].between(WINDOW_START, WINDOW_END).all()
    kyc = flags.loc[flags["source"] == "kyc_verified", "user_id"]
    users = tables["users"].set_index("user_id")
    assert (users.loc[kyc, "id_verified"] == 1).all()


@pytest.mark.parametrize(("flag_rate", "benign_flag_rate"), [(0.0, 0.0), (1.0, 1.0), (0.3, 0.2)])
def test_flag_rates(flag_rate: float, benign_flag_rate: float) -> None:
    tables = generate(n_users=1_000, seed=4, flag_rate=flag_rate, benign_flag_rate=benign_flag_rate)
    fraud = tables["truth"]["is_fraud"]
    labels = tables["flags"]["label"]
    assert (labels == "fraud").sum() == round(flag_rate * fraud.sum())
    assert (labels == "benign").sum() == round(benign_flag_rate * (fraud == 0).sum())


@pytest.mark.parametrize(
    ("n_users", "fraud_rate"), [(10, 0.02), (10, 1.0), (37, 0.5), (200, 0.0), (200, 1.0)]
)
def test_edge_sizes_and_rates(n_users: int, fraud_rate: float) -> None:
    tables = generate(n_users=n_users, seed=0, fraud_rate=fraud_rate)
    assert len(tables["users"]) == n_users
    assert tables["truth"]["is_fraud"].sum() == round(fraud_rate * n_users)
    ids = set(tables["users"]["user_id"])
    assert set(tables["relations"]["src"]) | set(tables["relations"]["dst"]) <= ids
    assert (tables["relations"]["src"] != tables["relations"]["dst"]).all()


# ---------------------------------------------------------------- helpers


def test_iso_formatter_matches_numpy() -> None:
    ts = np.random.default_rng(0).integers(-(2**31), 2**33, size=20_000)
    ts = np.concatenate([ts, [0, 951_782_400, 4_107_456_000 - 1]])  # epoch, 2000-02-29, end of 2099
    expected = np.datetime_as_string(ts.astype("datetime64[s]"), unit="s", timezone="UTC")
    assert _iso_utc(ts).tolist() == expected.tolist()


# ---------------------------------------------------------------- writing


@pytest.mark.parametrize("fmt", FORMATS)
def test_write_tables_round_trip(tmp_path, fmt: str) -> None:
    tables = generate(n_users=300, seed=2)
    out = tmp_path / "nested" / "data"
    paths = write_tables(tables, out, fmt=fmt)
    assert set(paths) == set(OUTPUT_TABLES)
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{name}.{fmt}" for name in OUTPUT_TABLES)
    for name, path in paths.items():
        assert path == out / f"{name}.{fmt}"
        if fmt == "parquet":
            back = pd.read_parquet(path)
            pd.testing.assert_frame_equal(back, tables[name])
        else:
            back = pd.read_csv(path)
            pd.testing.assert_frame_equal(back, tables[name], check_dtype=False)
            for column in tables[name]:
                assert back[column].dtype.kind == tables[name][column].dtype.kind, (name, column)


def test_write_tables_gzip_is_reproducible(tmp_path) -> None:
    tables = generate(n_users=100, seed=0)
    a = write_tables(tables, tmp_path / "a", fmt="csv.gz")
    b = write_tables(tables, tmp_path / "b", fmt="csv.gz")
    for name in a:
        assert a[name].read_bytes() == b[name].read_bytes()


def test_write_tables_accepts_str_path(tmp_path) -> None:
    paths = write_tables(generate(n_users=50, seed=0), str(tmp_path), fmt="csv")
    assert all(p.exists() for p in paths.values())


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize("n_users", [9, 0, -5, 2.5, True, "100", None])
def test_bad_n_users(n_users: object) -> None:
    with pytest.raises(ValueError, match="'n_users' parameter of generate"):
        generate(n_users=n_users)  # type: ignore[arg-type]


@pytest.mark.parametrize("param", ["fraud_rate", "flag_rate", "benign_flag_rate"])
@pytest.mark.parametrize("value", [-0.01, 1.01, math.nan, math.inf, "0.1", None])
def test_bad_rates(param: str, value: object) -> None:
    with pytest.raises(ValueError, match=f"'{param}' parameter of generate"):
        generate(n_users=100, **{param: value})  # type: ignore[arg-type]


def test_arguments_are_keyword_only() -> None:
    with pytest.raises(TypeError):
        generate(100)  # type: ignore[misc]


def test_unknown_format(tmp_path) -> None:
    tables = generate(n_users=20, seed=0)
    message = r"The 'fmt' parameter of write_tables must be one of .*Got 'xlsx' instead\."
    with pytest.raises(ValueError, match=message):
        write_tables(tables, tmp_path, fmt="xlsx")
    assert not any(tmp_path.iterdir())


def test_bad_table_name(tmp_path) -> None:
    with pytest.raises(ValueError, match="plain file stems"):
        write_tables({"../evil": pd.DataFrame({"a": [1]})}, tmp_path)


def test_thin_files_have_alternative_data_and_few_transactions(tables: dict[str, pd.DataFrame], truth: pd.DataFrame) -> None:
    users = tables["users"].set_index("user_id")
    thin = truth["thin_file"].astype(bool)
    assert (users.loc[thin, "repayments_total"] == 0).all()
    assert users.loc[thin, "txn_count_90d"].median() <= 4 < users.loc[~thin, "txn_count_90d"].median()
    has_alt = users["altpay_months"].notna()
    assert (has_alt == users["altpay_on_time_share"].notna()).all()
    assert 0.7 < has_alt[thin].mean() < 0.9 and 0.4 < has_alt[~thin].mean() < 0.6
    good = truth["is_fraud"] == 0
    share = users["altpay_on_time_share"]
    assert share[good].mean() > share[~good].mean() + 0.03


def test_age_band_has_no_effect_unless_biased() -> None:
    plain = generate(n_users=20_000, seed=3)
    users, truth = plain["users"], plain["truth"]
    rate = truth.groupby(users["age_band"].to_numpy())["is_fraud"].mean()
    assert set(rate.index) == set(AGE_BANDS)
    assert rate.max() - rate.min() < 0.01
    biased = generate(n_users=20_000, seed=3, bias_age_band="18-24")
    # fraud, roles and every other band are unchanged; the band's good users look worse
    assert biased["truth"]["is_fraud"].tolist() == truth["is_fraud"].tolist()
    band = (users["age_band"] == "18-24").to_numpy() & (truth["is_fraud"] == 0).to_numpy()
    late = lambda u: (u["repayments_late"] / u["repayments_total"].where(u["repayments_total"] > 0)).to_numpy()
    assert np.nanmean(late(biased["users"])[band]) > 1.5 * np.nanmean(late(users)[band])
    assert np.array_equal(biased["users"]["repayments_late"].to_numpy()[~band], users["repayments_late"].to_numpy()[~band])
    # about a tenth of the band's good users stand wrongly confirmed as fraud; nobody else changes
    fraud_flagged = lambda t: set(t["flags"].loc[t["flags"]["label"] == "fraud", "user_id"])  # noqa: E731
    wrong = fraud_flagged(biased) - fraud_flagged(plain)
    ids = users["user_id"].to_numpy()
    assert wrong <= set(ids[band]) and 0.07 < len(wrong) / band.sum() < 0.13
    assert fraud_flagged(plain) <= fraud_flagged(biased)


def test_bias_age_band_must_be_a_band() -> None:
    with pytest.raises(ValueError, match="'bias_age_band' parameter of generate must be one of 18-24"):
        generate(n_users=100, bias_age_band="teen")
    with pytest.raises(ValueError, match="'bias_strength' parameter of generate must be a number >= 0"):
        generate(n_users=100, bias_age_band="65+", bias_strength=-1.0)


def test_bias_strength_zero_changes_nobody_and_more_worsens_more() -> None:
    plain = generate(n_users=5_000, seed=2)["users"]
    none = generate(n_users=5_000, seed=2, bias_age_band="25-34", bias_strength=0.0)["users"]
    strong = generate(n_users=5_000, seed=2, bias_age_band="25-34", bias_strength=3.0)["users"]
    band = (plain["age_band"] == "25-34").to_numpy()
    # at strength 0 the band is drawn again from the same latent: the same distribution
    assert abs(none["tenure_days"][band].median() / plain["tenure_days"][band].median() - 1) < 0.15
    assert strong["tenure_days"][band].median() < 0.4 * plain["tenure_days"][band].median()
    assert strong["id_verified"][band].mean() < plain["id_verified"][band].mean() - 0.1


# ---------------------------------------------------------------- emails

#: SHA-256 of the five tables of ``generate(n_users=500, seed=7)`` as CSV, as they were before
#: the ``emails`` option: published figures and many tests depend on this default output.
DEFAULT_500_SEED_7 = "01947df17a0e07cbccdc3dbd1a70043d898903c0e379b7f564a404a3be61cdb0"
EMAIL = r"(?:[a-z]{8}|[a-z]{1,6}\.[a-z]{2,7})(?:\d\d)?@[a-z]+\.(?:com|example)"  # eight letters, maybe a dot


@pytest.fixture(scope="module")
def with_emails() -> dict[str, pd.DataFrame]:
    return generate(n_users=N, seed=3, emails=True)


def test_default_output_is_what_it_was_before_emails() -> None:
    digest = hashlib.sha256()
    for name, frame in generate(n_users=500, seed=7, emails=False).items():
        digest.update(name.encode())
        digest.update(frame.to_csv(index=False).encode())
    assert digest.hexdigest() == DEFAULT_500_SEED_7


def test_emails_only_add_email_rows(tables: dict[str, pd.DataFrame], with_emails: dict[str, pd.DataFrame]) -> None:
    assert "email" not in set(tables["links"]["kind"])
    for name in ("users", "relations", "flags", "truth"):
        pd.testing.assert_frame_equal(with_emails[name], tables[name])
    links = with_emails["links"]
    others = links[links["kind"] != "email"].reset_index(drop=True)
    pd.testing.assert_frame_equal(others, tables["links"])
    mail = links[links["kind"] == "email"]
    assert mail["user_id"].tolist() == tables["users"]["user_id"].tolist()  # one mailbox each, in user order
    assert (mail["first_seen"] <= mail["last_seen"]).all()
    assert mail["first_seen"].between(WINDOW_START, WINDOW_END).all()
    # each user's email row comes after their other links
    assert (links.groupby("user_id", sort=False)["kind"].last() == "email").all()


def test_email_addresses_and_domains(with_emails: dict[str, pd.DataFrame]) -> None:
    mail = with_emails["links"].loc[lambda d: d["kind"] == "email", "value"]
    assert mail.str.fullmatch(EMAIL).all()
    assert (mail.str.split("@").str[0].str.count(r"[a-z]") == 8).all()
    domains = mail.str.split("@").str[1].value_counts(normalize=True)
    assert {"gmail.com", "googlemail.com", "outlook.com", "yahoo.com"} <= set(domains.index)
    assert 0.35 < domains["gmail.com"] < 0.5 and domains["googlemail.com"] < 0.06
    assert mail.str.contains(".", regex=False).mean() > 0.3  # dotted local parts, as people write them
    # distinct mailboxes stay distinct once normalised (no two Gmail addresses differ only by dots)
    distinct = mail.drop_duplicates()
    assert distinct.map(normalise_email).is_unique


def test_households_and_rings_share_mailboxes(with_emails: dict[str, pd.DataFrame], truth: pd.DataFrame) -> None:
    mail = with_emails["links"].loc[lambda d: d["kind"] == "email"]
    role = truth.loc[mail["user_id"], "role"].to_numpy()
    users_per_box = mail.groupby("value")["user_id"].transform("nunique").to_numpy()
    shared = users_per_box >= 2
    good_shared = mail.loc[shared & (role == "good")]
    assert good_shared.groupby("value").size().between(2, 4).all()  # family mailboxes: one household each
    n_good = (truth["role"] == "good").sum()
    assert 0.005 * n_good < len(good_shared) < 0.05 * n_good
    assert (shared & (role == "ring")).sum() >= 3
    # rings never share a mailbox with good users, and some rings open theirs on one throwaway domain
    for box in mail.loc[shared & (role == "ring"), "value"].unique():
        assert set(truth.loc[mail.loc[mail["value"] == box, "user_id"], "role"]) == {"ring"}
    throwaway = mail["value"].str.endswith(("tempinbox.example", "burnermail.example", "quickdrop.example")).to_numpy()
    assert throwaway.sum() > 0
    assert set(role[throwaway]) <= {"ring", "mule", "cashout"}


def test_the_emails_parameter_must_be_a_bool() -> None:
    with pytest.raises(ParameterError, match="'emails' parameter of generate must be a bool. Got 'yes' instead"):
        generate(n_users=100, emails="yes")  # type: ignore[arg-type]


# ---------------------------------------------------------------- vary_formats

KEY = b"synthetic-test-key-0123456789"
MAIL = pd.DataFrame(
    {
        "user_id": list("abcde"),
        "kind": "email",
        "value": ["jane.doe@gmail.com", "jdoe84@googlemail.com", "jane.doe@outlook.com", "jdoe@yahoo.com", "j.doe@northwind.example"],
    }
)


def _pseudonyms(frame: pd.DataFrame, config: Normalisation) -> pd.Series:
    kinds = frame["kind"].astype("string")
    canonical = normalise_identifiers(kinds, frame["value"].astype("string"), config=config)
    assert not canonical.failed
    return pseudonymise(kinds, canonical.values, key=KEY)


@pytest.mark.parametrize("seed", range(8))
def test_email_variants_normalise_back_to_the_original_pseudonym(seed: int) -> None:
    varied = vary_formats(MAIL, share=1.0, seed=seed)
    assert (varied["value"] != MAIL["value"]).all()  # every row written another way
    config = Normalisation()
    assert _pseudonyms(varied, config).tolist() == _pseudonyms(MAIL, config).tolist()


def test_email_variants_by_provider() -> None:
    rows = pd.DataFrame({"user_id": "a", "kind": "email", "value": ["jane.doe@gmail.com"] * 200 + ["jane.doe@outlook.com"] * 200 + ["jdoe@yahoo.com"] * 200})
    varied = vary_formats(rows, share=1.0, seed=0)["value"]
    gmail, outlook, yahoo = varied[:200], varied[200:400], varied[400:]
    # Gmail: dots moved or dropped, +tags, the other domain; Outlook: +tags but its dots kept
    assert gmail.isin(["janedoe@gmail.com"]).any() and gmail.str.contains("+", regex=False).any()
    assert gmail.str.endswith("@googlemail.com").any()
    assert outlook.str.contains("+", regex=False).any()
    assert (outlook.str.lower().str.strip().str.replace(r"\+\w+@", "@", regex=True) == "jane.doe@outlook.com").all()
    # Yahoo is in no provider rule: only case and surrounding spaces change
    assert (yahoo.str.lower().str.strip() == "jdoe@yahoo.com").all()


def test_email_variants_follow_the_configured_provider_rules() -> None:
    # With no provider rules, only case and spaces may change, even at gmail.com
    varied = vary_formats(MAIL, share=1.0, seed=0, email_providers={})["value"]
    assert (varied.str.lower().str.strip() == MAIL["value"]).all()
    # A company domain whose rule drops dots gets dotted variants, which link under that rule
    rules = {"northwind.example": EmailRule(dots=True, plus=True)}
    rows = pd.DataFrame({"user_id": "a", "kind": "email", "value": ["j.doe@northwind.example"] * 50})
    varied = vary_formats(rows, share=1.0, seed=1, email_providers=rules)
    assert varied["value"].eq("jdoe@northwind.example").any()
    config = Normalisation(email_providers=rules)
    assert _pseudonyms(varied, config).nunique() == 1


def test_vary_formats_leaves_other_kinds_and_unpicked_rows_alone(with_emails: dict[str, pd.DataFrame]) -> None:
    links = with_emails["links"]
    assert vary_formats(links, share=0.0, seed=1).equals(links)
    varied = vary_formats(links, share=0.5, seed=1)
    fixed = ~links["kind"].isin(["phone", "device", "email"])
    assert varied.loc[fixed, "value"].equals(links.loc[fixed, "value"])
    mail = (links["kind"] == "email").to_numpy()
    assert 0.45 < (varied["value"] != links["value"]).to_numpy()[mail].mean() < 0.55
    assert (varied.loc[mail, "value"].map(normalise_email) == links.loc[mail, "value"].map(normalise_email)).all()


@pytest.mark.parametrize("share", [-0.1, 1.5, float("nan"), "half", True])
def test_vary_formats_bad_share(share: object) -> None:
    with pytest.raises(ParameterError, match="'share' parameter of vary_formats must be a float in the range"):
        vary_formats(MAIL, share=share)  # type: ignore[arg-type]
