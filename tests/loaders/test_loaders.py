from __future__ import annotations

import gzip
import hashlib
import hmac
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loaders import DataError, read_tables
from loaders.pseudonym import pseudonymise
from tests.conftest import KEY, tiny_frames, write_dir


@pytest.mark.parametrize("fmt", ["csv", "csv.gz", "parquet"])
def test_every_format_gives_the_same_tables(tmp_path: Path, fmt: str) -> None:
    from_files = read_tables(write_dir(tiny_frames(), tmp_path / fmt, fmt), key=KEY)
    from_frames = read_tables(tiny_frames(), key=KEY)
    for (name, a), (_, b) in zip(from_files, from_frames):
        pd.testing.assert_frame_equal(a.reset_index(drop=True), b.reset_index(drop=True), check_dtype=False, obj=name)


def test_canonical_types_and_defaults(tiny: dict[str, pd.DataFrame]) -> None:
    t = read_tables(tiny, key=KEY)
    assert t.counts() == {"users": 6, "links": 7, "relations": 3, "flags": 2}
    assert str(t.links["first_seen"].dtype) == "datetime64[ns, UTC]"
    assert t.relations["weight"].tolist() == [120.0, -5.0, 1.0]
    assert t.flags["severity"].tolist() == [1.0, 1.0]
    assert t.users["repayments_late"].dtype == np.float64
    assert list(t.all_user_ids()) == ["f1", "a", "b", "c", "g", "z"]


def test_raw_identifier_values_are_never_kept(tiny: dict[str, pd.DataFrame]) -> None:
    t = read_tables(tiny, key=KEY)
    assert "value" not in t.links.columns
    text = t.links.to_csv()
    for raw in ("DEV-1", "P-A", "10.0.0.1"):
        assert raw not in text
    # the same value of the same kind maps to the same pseudonym, so the link survives
    dev = t.links.loc[t.links["kind"] == "device", "ident"]
    assert dev.nunique() == 1


def test_pseudonyms_depend_on_key_and_kind() -> None:
    kinds, values = pd.Series(["phone", "phone", "device"]), pd.Series(["123", "123", "123"])
    a = pseudonymise(kinds, values, key=KEY)
    b = pseudonymise(kinds, values, key=b"another-key-0123456789")
    assert a[0] == a[1] and a[0] != a[2]
    assert a[0] != b[0]


@pytest.mark.parametrize("key", [b"0123456789abcdef", b"k" * 64, b"a-key-longer-than-one-sha256-block-" * 3])
def test_pseudonyms_are_standard_hmac_sha256(key: bytes) -> None:
    # pseudonyms must stay reproducible by any HMAC implementation (a partner re-deriving them)
    kinds, values = pd.Series(["phone", "device"]), pd.Series(["+1-555-0100", "é-unicode"])
    expected = [hmac.new(key, f"{k}\x1f{v}".encode(), hashlib.sha256).hexdigest()[:32] for k, v in zip(kinds, values)]
    assert pseudonymise(kinds, values, key=key).tolist() == expected


def test_leading_zeros_in_ids_survive(tmp_path: Path) -> None:
    (tmp_path / "users.csv").write_text("user_id,score\n007,1.5\n7,2\n")
    t = read_tables(tmp_path, key=KEY)
    assert t.users["user_id"].tolist() == ["007", "7"]


def _error(source: object) -> DataError:
    with pytest.raises(DataError) as info:
        read_tables(source, key=KEY)  # type: ignore[arg-type]
    return info.value


def test_missing_required_column_is_named(tmp_path: Path) -> None:
    (tmp_path / "links.csv").write_text("user_id,kind\nu1,device\n")
    err = _error(tmp_path)
    assert "links.csv" in str(err) and "value" in str(err) and err.column == "value"


@pytest.mark.parametrize(
    ("table", "column", "bad", "expected"),
    [
        ("relations", "weight", "heavy", "finite number"),
        ("relations", "weight", "inf", "finite number"),
        ("relations", "ts", "yesterday", "ISO 8601"),
        ("relations", "kind", "Trans fer!", "lowercase word"),
        ("links", "first_seen", "2026-13-45", "ISO 8601"),
        ("flags", "label", "suspicious", "one of"),
        ("flags", "severity", "1.5", "from 0 to 1"),
        ("users", "user_id", "", "non-empty id"),
    ],
)
def test_bad_values_name_file_row_column_value(tmp_path: Path, table: str, column: str, bad: str, expected: str) -> None:
    frames = tiny_frames()
    frame = frames[table].astype(object)
    frame.loc[1, column] = bad
    frames[table] = frame
    write_dir(frames, tmp_path)
    err = _error(tmp_path)
    message = str(err)
    assert f"{table}.csv" in message
    assert "row 2" in message and f"'{column}'" in message
    assert expected in message
    assert err.row == 2 and err.column == column


def test_link_seen_backwards_is_rejected(tmp_path: Path) -> None:
    frames = tiny_frames()
    frames["links"].loc[0, "last_seen"] = "2025-01-01"
    err = _error(write_dir(frames, tmp_path))
    assert err.row == 1 and err.column == "last_seen"


def test_flag_for_unknown_user(tmp_path: Path) -> None:
    frames = tiny_frames()
    frames["flags"].loc[1, "user_id"] = "ghost"
    err = _error(write_dir(frames, tmp_path))
    assert "ghost" in str(err) and "flags.csv" in str(err) and err.row == 2


def test_empty_and_header_only_files(tmp_path: Path) -> None:
    (tmp_path / "users.csv").write_text("")
    assert "empty" in str(_error(tmp_path))
    (tmp_path / "users.csv").write_text("user_id,x\n")
    assert read_tables(tmp_path, key=KEY).counts()["users"] == 0


def test_duplicate_header_and_two_formats(tmp_path: Path) -> None:
    (tmp_path / "users.csv").write_text("user_id,user_id\nu1,u2\n")
    assert "more than once" in str(_error(tmp_path))
    (tmp_path / "users.csv").write_text("user_id\nu1\n")
    pd.DataFrame({"user_id": ["u1"]}).to_parquet(tmp_path / "users.parquet")
    assert "more than one format" in str(_error(tmp_path))


def test_not_a_directory_and_no_tables(tmp_path: Path) -> None:
    assert "not a directory" in str(_error(tmp_path / "nope"))
    assert "no input table" in str(_error(tmp_path))


def test_truncated_gzip_is_a_clear_error(tmp_path: Path) -> None:
    blob = gzip.compress(("user_id,x\n" + "".join(f"u{i},{i}\n" for i in range(5000))).encode())
    (tmp_path / "users.csv.gz").write_bytes(blob[: len(blob) // 2])
    err = _error(tmp_path)
    assert "users.csv.gz" in str(err)


def test_unknown_labels_can_be_mapped(tiny: dict[str, pd.DataFrame]) -> None:
    tiny["flags"].loc[0, "label"] = "chargeback_fraud"
    t = read_tables(tiny, key=KEY, label_map={"chargeback_fraud": "fraud", "benign": "benign"})
    assert t.flags["label"].tolist() == ["fraud", "benign"]


def test_extra_columns_are_kept(tiny: dict[str, pd.DataFrame]) -> None:
    tiny["relations"]["amount_eur"] = [1.0, 2.0, 3.0]
    tiny["relations"]["channel"] = ["app", "web", "app"]
    t = read_tables(tiny, key=KEY)
    assert t.relations["amount_eur"].tolist() == [1.0, 2.0, 3.0]
    assert t.relations["channel"].tolist() == ["app", "web", "app"]


ids = st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=0x2FFF, exclude_characters=',"\\'), min_size=1, max_size=12).filter(
    lambda s: s.strip() == s
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    rows=st.lists(st.tuples(ids, ids, st.sampled_from(["transfer", "contact"]), st.floats(-1e6, 1e6, allow_nan=False)), min_size=1, max_size=30)
)
def test_valid_relations_round_trip_through_csv(tmp_path: Path, rows: list[tuple[str, str, str, float]]) -> None:
    frame = pd.DataFrame(rows, columns=["src", "dst", "kind", "weight"])
    path = tmp_path / "prop"
    path.mkdir(exist_ok=True)
    frame.to_csv(path / "relations.csv", index=False)
    t = read_tables(path, key=KEY)
    assert len(t.relations) == len(frame)  # nothing silently dropped
    assert t.relations["src"].tolist() == frame["src"].tolist()
    np.testing.assert_allclose(t.relations["weight"].to_numpy(), frame["weight"].to_numpy(), rtol=1e-12)


@settings(max_examples=40, deadline=None)
@given(bad=st.sampled_from(["abc", "1e999", "nan?", "--1", "1,5"]), at=st.integers(0, 9))
def test_any_bad_weight_is_reported_at_its_row(bad: str, at: int) -> None:
    weights: list[object] = [1.0] * 10
    weights[at] = bad
    frame = pd.DataFrame({"src": [f"u{i}" for i in range(10)], "dst": ["x"] * 10, "kind": ["transfer"] * 10, "weight": weights})
    with pytest.raises(DataError) as info:
        read_tables({"relations": frame}, key=KEY)
    assert info.value.row == at + 1 and info.value.column == "weight"
