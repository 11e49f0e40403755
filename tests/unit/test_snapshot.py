"""Snapshots: exact round trips, and every kind of damage named by a SnapshotError."""

from __future__ import annotations

import doctest
import hashlib
import pickle
import struct
from typing import Any

import pytest
import river

import models.snapshot
from models.errors import ParcoursError
from models.features import FEATURES_VERSION
from models.learners import OnlineModel, abandonment_model, next_stage_model
from models.snapshot import MAGIC, SnapshotError, dump_snapshot, load_snapshot, read_header
from tests.unit.test_learners import CANDIDATES, model_for, stream_for

META = {"version": "abandonment-v3", "trained_until_ms": 1_772_355_600_000, "tags": ["a"]}


def trained(task: str, name: str, n: int = 200) -> OnlineModel[Any]:
    model = model_for(task, name, min_samples=50)
    for x, y, stage in stream_for(task, n):
        model.learn_one(x, y, stage=stage)
    model.version = f"{task}-v3"
    return model


@pytest.fixture(scope="module")
def blob() -> bytes:
    return dump_snapshot(trained("abandonment", "logreg"), META)


def test_snapshot_docstring_examples_hold() -> None:
    result = doctest.testmod(models.snapshot)

    assert result.attempted > 0
    assert result.failed == 0


@pytest.mark.parametrize(("task", "name"), CANDIDATES)
def test_snapshot_round_trip_same_predictions_and_metrics(task: str, name: str) -> None:
    model = trained(task, name)

    loaded, meta = load_snapshot(dump_snapshot(model, META))

    assert meta == META
    assert loaded.version == model.version == f"{task}-v3"
    assert loaded.samples_seen == model.samples_seen
    assert loaded.metrics() == model.metrics()
    for x, _, stage in stream_for(task, 20):
        assert loaded.predict_proba_one(x, stage=stage) == model.predict_proba_one(x, stage=stage)


def test_snapshot_round_trip_then_same_stream_learns_identically() -> None:
    model = trained("next_stage", "ovr_logreg")
    loaded, _ = load_snapshot(dump_snapshot(model, {}))

    for m in (model, loaded):
        for x, y, stage in stream_for("next_stage", 100):
            m.learn_one(x, y, stage=stage)

    assert loaded.metrics() == model.metrics()


def test_read_header_valid_snapshot_reports_versions_without_unpickling(blob: bytes) -> None:
    header = read_header(blob)

    assert header.features_version == FEATURES_VERSION
    assert header.river_version == river.__version__
    assert header.meta == META
    assert header.payload_start + header.payload_length == len(blob)
    assert blob.startswith(MAGIC)


def test_load_snapshot_any_flipped_byte_raises_snapshot_error(blob: bytes) -> None:
    for at in range(0, len(blob), max(1, len(blob) // 200)):
        damaged = bytearray(blob)
        damaged[at] ^= 0x01
        with pytest.raises(SnapshotError):
            load_snapshot(bytes(damaged))


def test_load_snapshot_flipped_payload_byte_reports_checksum(blob: bytes) -> None:
    damaged = bytearray(blob)
    damaged[-10] ^= 0xFF

    with pytest.raises(SnapshotError, match="checksum_mismatch") as caught:
        load_snapshot(bytes(damaged))

    assert caught.value.reason == "checksum_mismatch"
    assert isinstance(caught.value, ParcoursError)
    assert not caught.value.retriable


@pytest.mark.parametrize("keep", [0, 3, 8, 20, 60, -1])
def test_load_snapshot_truncated_raises_truncated(blob: bytes, keep: int) -> None:
    cut = blob[:keep]
    reason = "bad_magic" if 0 <= keep < len(MAGIC) else "truncated"

    with pytest.raises(SnapshotError, match=reason):
        load_snapshot(cut)


def test_load_snapshot_wrong_magic_raises_bad_magic(blob: bytes) -> None:
    with pytest.raises(SnapshotError, match="bad_magic"):
        load_snapshot(b"\x80\x05" + blob[2:])
    with pytest.raises(SnapshotError, match="bad_magic"):
        load_snapshot(pickle.dumps(abandonment_model(), protocol=5))


def test_load_snapshot_trailing_bytes_raises_trailing_bytes(blob: bytes) -> None:
    with pytest.raises(SnapshotError, match="trailing_bytes"):
        load_snapshot(blob + b"\x00")


def reheadered(blob: bytes, *, fmt: int | None = None, features: int | None = None) -> bytes:
    """`blob` with its format or features version changed and the checksum made valid again."""
    header = read_header(blob)
    digest_at = header.payload_start - 32
    _, old_fmt, old_features, river_len = struct.unpack_from(">8sHHB", blob)
    fixed = struct.pack(
        ">8sHHB",
        MAGIC,
        old_fmt if fmt is None else fmt,
        old_features if features is None else features,
        river_len,
    )
    head = fixed + blob[len(fixed) : digest_at]
    digest = hashlib.sha256(head + blob[header.payload_start :]).digest()
    return head + digest + blob[header.payload_start :]


def test_load_snapshot_other_features_version_raises_incompatible_features(blob: bytes) -> None:
    with pytest.raises(SnapshotError, match="incompatible_features") as caught:
        load_snapshot(reheadered(blob, features=FEATURES_VERSION + 1))

    assert f"v{FEATURES_VERSION + 1}" in str(caught.value)


def test_load_snapshot_other_format_raises_incompatible_format(blob: bytes) -> None:
    with pytest.raises(SnapshotError, match="incompatible_format"):
        load_snapshot(reheadered(blob, fmt=99))


def test_load_snapshot_valid_checksum_bad_pickle_raises_unpicklable(blob: bytes) -> None:
    header = read_header(blob)
    payload = b"\x80\x05garbage."
    head = bytearray(blob[: header.payload_start - 40])
    head += struct.pack(">Q", len(payload))
    forged = bytes(head) + hashlib.sha256(bytes(head) + payload).digest() + payload

    with pytest.raises(SnapshotError, match="unpicklable") as caught:
        load_snapshot(forged)

    assert river.__version__ in str(caught.value)


def test_dump_snapshot_unpicklable_model_raises_unpicklable() -> None:
    with pytest.raises(SnapshotError, match="unpicklable"):
        dump_snapshot(lambda: None, {})


def test_dump_snapshot_meta_not_json_raises_bad_meta() -> None:
    with pytest.raises(SnapshotError, match="bad_meta"):
        dump_snapshot(next_stage_model(), {"at": object()})
