"""API keys: the token format, the stored digest, scopes and the per-key token bucket."""

from __future__ import annotations

import pytest

from models.access import (
    PREFIX,
    Scope,
    TokenBucket,
    decode_key,
    digest,
    encode_key,
    grants,
    issue,
    split,
)


def test_issued_token_splits_into_the_stored_id_and_a_secret_only_its_digest_matches() -> None:
    token, key = issue("storefront", frozenset({Scope.INGEST}), now_ms=1_000, rate_per_s=50)

    parts = split(token)

    assert token.startswith(PREFIX)
    assert parts is not None
    key_id, secret = parts
    assert key_id == key.id
    assert key.digest == digest(secret) != secret
    assert secret not in encode_key(key).decode()
    assert key.matches(secret)
    assert not key.matches(secret[:-1] + ("A" if secret[-1] != "A" else "B"))


def test_two_issued_keys_share_neither_id_nor_secret() -> None:
    first, _ = issue("a", frozenset({Scope.READ}), now_ms=0)
    second, _ = issue("a", frozenset({Scope.READ}), now_ms=0)

    assert split(first) is not None
    assert split(second) is not None
    assert {*split(first)} & {*split(second)} == set()  # type: ignore[misc]


@pytest.mark.parametrize(
    "token",
    [
        "",
        "prc_",
        "Bearer prc_0123456789ab_" + "a" * 43,
        "prc_0123456789AB_" + "a" * 43,  # ids are lower-case hex
        "prc_0123456789ab_" + "a" * 42,
        "prc_0123456789ab_" + "a" * 42 + "!",
        "xyz_0123456789ab_" + "a" * 43,
    ],
)
def test_malformed_tokens_do_not_split(token: str) -> None:
    assert split(token) is None


def test_record_round_trips_through_its_stored_form() -> None:
    _, key = issue("crm", frozenset({Scope.READ, Scope.INGEST}), now_ms=123, rate_per_s=7.5)

    assert decode_key(encode_key(key)) == key


@pytest.mark.parametrize(
    ("held", "needed", "allowed"),
    [
        ({Scope.INGEST}, Scope.INGEST, True),
        ({Scope.INGEST}, Scope.READ, False),
        ({Scope.INGEST}, Scope.ADMIN, False),
        ({Scope.READ}, Scope.INGEST, False),
        ({Scope.READ}, Scope.READ, True),
        ({Scope.READ, Scope.INGEST}, Scope.ADMIN, False),
        ({Scope.ADMIN}, Scope.INGEST, True),
        ({Scope.ADMIN}, Scope.READ, True),
        ({Scope.ADMIN}, Scope.ADMIN, True),
    ],
)
def test_admin_implies_every_scope_and_no_other_scope_implies_another(
    held: set[Scope], needed: Scope, allowed: bool
) -> None:
    assert grants(frozenset(held), needed) is allowed


def test_bucket_passes_a_burst_then_refuses_with_the_wait_until_the_next_token() -> None:
    bucket = TokenBucket.full(rate=2.0, burst=3.0, now=100.0)

    passed = [bucket.take(100.0) for _ in range(3)]
    wait = bucket.take(100.0)

    assert passed == [0.0, 0.0, 0.0]
    assert wait == pytest.approx(0.5)
    assert bucket.take(100.25) == pytest.approx(0.25)  # half a token back, still short
    assert bucket.take(100.5) == 0.0


def test_bucket_holds_its_average_rate_over_time_and_never_banks_past_its_burst() -> None:
    bucket = TokenBucket.full(rate=10.0, burst=5.0, now=0.0)
    passed = 0
    for tick in range(1000):  # ten seconds, one attempt per 10 ms
        passed += bucket.take(tick / 100) == 0.0

    assert passed == 5 + 100 - 1 or passed == 5 + 100  # the burst, then 10/s
    bucket.take(1_000.0)  # a long pause refills only up to the burst
    assert [bucket.take(1_000.0) for _ in range(5)].count(0.0) == 4
