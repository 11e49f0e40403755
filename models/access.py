"""API keys and what they may do: scopes, the key format, its digest and a per-key rate.

A key reads `prc_<id>_<secret>`: the id (12 hex characters) finds the stored record, the
secret (43 URL-safe characters, 256 random bits) proves the holder. Only the SHA-256 of the
secret is stored: a fast digest is enough because the secret is random, not a password, so
there is nothing to guess from a stolen digest. Digests are compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

import orjson

PREFIX: Final = "prc_"
_KEY: Final = re.compile(r"^prc_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")


class Scope(StrEnum):
    """`ingest` only sends events (safe to embed in a storefront); `read` reads journeys,
    predictions and recommendations; `admin` does everything, including the other two."""

    INGEST = "ingest"
    READ = "read"
    ADMIN = "admin"


def grants(held: frozenset[Scope], needed: Scope) -> bool:
    """Whether a key holding `held` may do what needs `needed` (admin implies every scope)."""
    return needed in held or Scope.ADMIN in held


@dataclass(frozen=True, slots=True)
class ApiKey:
    """One stored key: never the secret itself, only its digest."""

    id: str
    name: str
    scopes: frozenset[Scope]
    digest: str
    created_at: int
    """epoch milliseconds"""
    rate_per_s: float | None = None
    """requests per second per API process; None takes the service's default"""
    revoked_at: int | None = None

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def matches(self, secret: str) -> bool:
        return hmac.compare_digest(self.digest, digest(secret))


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def issue(
    name: str, scopes: frozenset[Scope], *, now_ms: int, rate_per_s: float | None = None
) -> tuple[str, ApiKey]:
    """A new key: the token to hand over once, and the record to store."""
    key_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    record = ApiKey(key_id, name, scopes, digest(secret), now_ms, rate_per_s)
    return f"{PREFIX}{key_id}_{secret}", record


def split(token: str) -> tuple[str, str] | None:
    """(id, secret) of a well-formed token, else None."""
    found = _KEY.match(token)
    return (found[1], found[2]) if found else None


def encode_key(key: ApiKey) -> bytes:
    return orjson.dumps(
        {
            "id": key.id,
            "name": key.name,
            "scopes": sorted(key.scopes),
            "digest": key.digest,
            "created_at": key.created_at,
            "rate_per_s": key.rate_per_s,
            "revoked_at": key.revoked_at,
        }
    )


def decode_key(raw: bytes | str) -> ApiKey:
    data = orjson.loads(raw)
    return ApiKey(
        id=data["id"],
        name=data["name"],
        scopes=frozenset(Scope(s) for s in data["scopes"]),
        digest=data["digest"],
        created_at=data["created_at"],
        rate_per_s=data.get("rate_per_s"),
        revoked_at=data.get("revoked_at"),
    )


@dataclass(slots=True)
class TokenBucket:
    """`rate` requests per second on average, bursts up to `burst`; the clock is the caller's."""

    rate: float
    burst: float
    tokens: float
    updated: float

    @classmethod
    def full(cls, rate: float, burst: float, now: float) -> TokenBucket:
        return cls(rate, burst, burst, now)

    def take(self, now: float) -> float:
        """0 if a request may pass now (and it is counted), else the seconds until one may."""
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate
