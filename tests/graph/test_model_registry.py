"""The model registry in the embedded store: versions written once, read back checked."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path

import pytest

from graph.store import EmbeddedStore
from graph.store.models import check_model_version, model_meta, new_model_version
from loaders.errors import NotFoundError, ParameterError, StoreError

PAYLOAD = b"fitted combination"
META = {"created_at": "2026-11-27T01:22:33Z", "config_hash": "c0ffee", "snapshot": 3, "labels": 40, "combination": "gbm", "metrics": {"auroc": 0.91}}


def test_version_ids() -> None:
    at = dt.datetime(2026, 11, 27, 1, 22, 33, tzinfo=dt.timezone.utc)
    assert new_model_version(PAYLOAD, at=at) == "m-20261127T012233Z-" + hashlib.sha256(PAYLOAD).hexdigest()[:8]
    # an aware time elsewhere is turned to UTC
    assert new_model_version(PAYLOAD, at=at.astimezone(dt.timezone(dt.timedelta(hours=2)))) == new_model_version(PAYLOAD, at=at)
    check_model_version("m-20261127T012233Z-1a2b3c4d")
    for bad in ("", "../escape", "a/b", ".hidden", "x" * 129):
        with pytest.raises(ParameterError, match="A model version must be"):
            check_model_version(bad)


def test_meta_records_the_payload_digest() -> None:
    meta = model_meta("m1", PAYLOAD, META)
    assert meta["payload_sha256"] == hashlib.sha256(PAYLOAD).hexdigest() and meta["payload_bytes"] == len(PAYLOAD)
    assert meta["version"] == "m1" and meta["created_at"] == META["created_at"] and meta["metrics"] == {"auroc": 0.91}
    assert "created_at" in model_meta("m1", PAYLOAD, {})
    with pytest.raises(ParameterError, match="'payload_sha256' in the meta of model m1"):
        model_meta("m1", PAYLOAD, {"payload_sha256": "0" * 64})
    with pytest.raises(ParameterError, match="must be bytes"):
        model_meta("m1", "text", {})  # type: ignore[arg-type]
    with pytest.raises(ParameterError, match="'meta' of model m1 must hold only JSON values"):
        model_meta("m1", PAYLOAD, {"model": object()})


def test_write_read_list_and_current(tmp_path: Path) -> None:
    store = EmbeddedStore(tmp_path / "ws")
    assert store.list_models() == [] and store.current_model() is None
    store.write_model("m2", b"second", {**META, "created_at": "2026-11-28T00:00:00Z"})
    store.write_model("m1", PAYLOAD, META)
    payload, meta = store.read_model("m1")
    assert payload == PAYLOAD and meta["config_hash"] == "c0ffee" and meta["payload_sha256"] == hashlib.sha256(PAYLOAD).hexdigest()
    assert [(m["version"], m["current"]) for m in store.list_models()] == [("m1", False), ("m2", False)]  # oldest first
    store.set_current_model("m2")
    assert store.current_model() == "m2"
    assert [(m["version"], m["current"]) for m in store.list_models()] == [("m1", False), ("m2", True)]
    reopened = EmbeddedStore(tmp_path / "ws")
    assert reopened.current_model() == "m2" and reopened.read_model("m2")[0] == b"second"
    with pytest.raises(NotFoundError, match="no model version 'm3'"):
        store.read_model("m3")
    with pytest.raises(NotFoundError):
        store.set_current_model("m3")
    assert store.current_model() == "m2"


def test_a_version_is_never_overwritten(tmp_path: Path) -> None:
    store = EmbeddedStore(tmp_path / "ws")
    store.write_model("m1", PAYLOAD, META)
    with pytest.raises(StoreError, match="m1 is already registered, and versions are never overwritten"):
        store.write_model("m1", b"another", META)
    assert store.read_model("m1")[0] == PAYLOAD


def test_a_changed_payload_is_detected(tmp_path: Path) -> None:
    store = EmbeddedStore(tmp_path / "ws")
    store.write_model("m1", PAYLOAD, META)
    store.set_current_model("m1")
    path = tmp_path / "ws" / "models" / "m1.bin"
    path.write_bytes(PAYLOAD[:-1] + b"X")
    with pytest.raises(StoreError, match="m1.bin: the payload of model m1 does not match its recorded SHA-256"):
        store.read_model("m1")
    store.write_model("m2", PAYLOAD, META)
    (tmp_path / "ws" / "models" / "m2.bin").write_bytes(b"")
    with pytest.raises(StoreError, match="does not match"):
        store.set_current_model("m2")  # a damaged version is not made current
    assert store.current_model() == "m1"


def test_damaged_metadata_is_named(tmp_path: Path) -> None:
    store = EmbeddedStore(tmp_path / "ws")
    store.write_model("m1", PAYLOAD, META)
    meta_path = tmp_path / "ws" / "models" / "m1.json"
    meta_path.write_text("{not json")
    with pytest.raises(StoreError, match="m1.json: unreadable model metadata"):
        store.read_model("m1")
    with pytest.raises(StoreError, match="m1.json: unreadable model metadata"):
        store.list_models()
    meta_path.write_text(json.dumps({k: v for k, v in META.items()}))  # the digest removed
    with pytest.raises(StoreError, match="has no payload_sha256"):
        store.read_model("m1")
