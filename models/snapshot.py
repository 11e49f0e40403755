"""Versioned, verifiable model snapshots: bytes in, bytes out (storing them is the caller's job).

Layout, big-endian::

    magic      8 bytes   b"\\x89PRCSNP\\n" (the high byte and newline catch text-mode mangling)
    format     u16       SNAPSHOT_FORMAT
    features   u16       models.features.FEATURES_VERSION the model was trained on
    river      u8 + n    length and ASCII text of the River version that wrote it
    meta       u32 + n   length and JSON of the caller's metadata (readable without unpickling)
    payload    u64       length of the pickle that follows
    sha256     32 bytes  of every other byte (header fields and pickle)
    pickle     n bytes   the model, pickle protocol 5

Snapshots are pickles, and unpickling runs code: only load snapshots from a store that is as
trusted as the code itself (Redis here). The checksum detects corruption, not tampering.

>>> blob = dump_snapshot({"weights": [1.0]}, {"version": "abandonment-v1"})
>>> load_snapshot(blob)
({'weights': [1.0]}, {'version': 'abandonment-v1'})
"""

from __future__ import annotations

import hashlib
import pickle
import struct
from dataclasses import dataclass
from typing import Any, Final, Literal

import orjson
from river.__version__ import __version__ as RIVER_VERSION

from models.errors import ParcoursError
from models.features import FEATURES_VERSION

MAGIC: Final = b"\x89PRCSNP\n"
SNAPSHOT_FORMAT: Final = 1
_FIXED: Final = struct.Struct(">8sHHB")
_META_LEN: Final = struct.Struct(">I")
_PAYLOAD_LEN: Final = struct.Struct(">Q")
_DIGEST_LEN: Final = 32

Reason = Literal[
    "bad_magic",
    "truncated",
    "checksum_mismatch",
    "incompatible_format",
    "incompatible_features",
    "unpicklable",
    "bad_meta",
    "trailing_bytes",
    "invalid",
]


class SnapshotError(ParcoursError):
    """A snapshot that cannot be written or used; `reason` is a stable label for metrics.

    Readers raise it with the default reason `"invalid"` for a snapshot that loads but does
    not hold what they expect.
    """

    def __init__(self, detail: str, *, reason: Reason = "invalid") -> None:
        self.reason = reason
        super().__init__(f"{reason}: {detail}")


@dataclass(frozen=True, slots=True)
class SnapshotHeader:
    """What a snapshot says about itself, read without unpickling anything."""

    format: int
    features_version: int
    river_version: str
    meta: dict[str, Any]
    payload_start: int
    payload_length: int


def dump_snapshot(model: object, meta: dict[str, Any]) -> bytes:
    """The snapshot bytes of `model`; `meta` must be JSON-serialisable (it is stored as JSON)."""
    try:
        meta_json = orjson.dumps(meta, option=orjson.OPT_SORT_KEYS)
    except TypeError as exc:
        raise SnapshotError(f"meta is not JSON-serialisable: {exc}", reason="bad_meta") from None
    try:
        payload = pickle.dumps(model, protocol=5)
    except (pickle.PicklingError, TypeError, AttributeError) as exc:
        raise SnapshotError(
            f"cannot pickle {type(model).__name__}: {exc}", reason="unpicklable"
        ) from exc
    river_version = RIVER_VERSION.encode("ascii")
    head = b"".join(
        (
            _FIXED.pack(MAGIC, SNAPSHOT_FORMAT, FEATURES_VERSION, len(river_version)),
            river_version,
            _META_LEN.pack(len(meta_json)),
            meta_json,
            _PAYLOAD_LEN.pack(len(payload)),
        )
    )
    checksum = hashlib.sha256(head)
    checksum.update(payload)
    return b"".join((head, checksum.digest(), payload))


def read_header(blob: bytes) -> SnapshotHeader:
    """The header of a snapshot, with magic, lengths, format and checksum verified.

    Nothing is unpickled, so this is safe to call to list or compare snapshots.
    """
    view = memoryview(blob)
    if bytes(view[: len(MAGIC)]) != MAGIC:
        raise SnapshotError("not a Parcours model snapshot", reason="bad_magic")
    _, fmt, features_version, river_len = _unpack(_FIXED, view, 0)
    if fmt != SNAPSHOT_FORMAT:
        raise SnapshotError(
            f"snapshot format {fmt}, this build reads {SNAPSHOT_FORMAT}",
            reason="incompatible_format",
        )
    at = _FIXED.size
    river_version = bytes(_take(view, at, river_len)).decode("ascii", "replace")
    at += river_len
    (meta_len,) = _unpack(_META_LEN, view, at)
    meta_json = _take(view, at + _META_LEN.size, meta_len)
    at += _META_LEN.size + meta_len
    (payload_len,) = _unpack(_PAYLOAD_LEN, view, at)
    digest_at = at + _PAYLOAD_LEN.size
    digest = bytes(_take(view, digest_at, _DIGEST_LEN))
    at = digest_at + _DIGEST_LEN
    payload = _take(view, at, payload_len)
    if len(view) > at + payload_len:
        raise SnapshotError(
            f"{len(view) - at - payload_len} bytes past the end", reason="trailing_bytes"
        )
    checksum = hashlib.sha256(view[:digest_at])
    checksum.update(payload)
    if checksum.digest() != digest:
        raise SnapshotError(
            "sha256 of the snapshot does not match its header", reason="checksum_mismatch"
        )
    return SnapshotHeader(
        fmt, features_version, river_version, orjson.loads(meta_json), at, payload_len
    )


def load_snapshot(blob: bytes) -> tuple[Any, dict[str, Any]]:
    """The model and metadata in `blob`, after checking the header, checksum and versions."""
    header = read_header(blob)
    if header.features_version != FEATURES_VERSION:
        raise SnapshotError(
            f"trained on features v{header.features_version}, "
            f"this build computes v{FEATURES_VERSION}",
            reason="incompatible_features",
        )
    payload = memoryview(blob)[header.payload_start :]
    try:
        # Trusted input only: see the module docstring.
        model = pickle.loads(payload)  # noqa: S301
    except Exception as exc:  # unpickling raises whatever the pickled classes raise
        raise SnapshotError(
            f"cannot unpickle (written with river {header.river_version}, "
            f"running {RIVER_VERSION}): {type(exc).__name__}: {exc}",
            reason="unpicklable",
        ) from exc
    return model, header.meta


def _take(view: memoryview, at: int, n: int) -> memoryview:
    if at + n > len(view):
        raise SnapshotError(f"needs {at + n} bytes, has {len(view)}", reason="truncated")
    return view[at : at + n]


def _unpack(layout: struct.Struct, view: memoryview, at: int) -> tuple[Any, ...]:
    return layout.unpack(_take(view, at, layout.size))
