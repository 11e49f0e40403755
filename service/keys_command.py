"""`parcours keys create|list|revoke`: manage API keys straight in Redis, e.g. the first admin
key, before any key exists to call `POST /v1/keys` with."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Annotated, TypeVar

import typer

from models.access import ApiKey, Scope, issue
from service.access import KeyStore
from service.redis_command import with_redis

keys_app = typer.Typer(help="Create, list and revoke API keys.", no_args_is_help=True)

T = TypeVar("T")


def _with_store(action: Callable[[KeyStore], Awaitable[T]]) -> T:
    return with_redis(
        lambda redis, settings: action(KeyStore(redis, prefix=settings.redis.key_prefix))
    )


def _line(key: ApiKey) -> str:
    created = datetime.fromtimestamp(key.created_at / 1000, UTC).isoformat(timespec="seconds")
    state = "active" if key.active else "revoked"
    rate = f"{key.rate_per_s:g}/s" if key.rate_per_s else "default rate"
    scopes = ",".join(sorted(key.scopes))
    return f"{key.id}  {state:<7}  {scopes:<18}  {rate:<12}  {created}  {key.name}"


@keys_app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="who or what holds the key")],
    scope: Annotated[
        list[Scope], typer.Option("--scope", help="ingest, read or admin; repeat for several")
    ],
    rate: Annotated[
        float | None,
        typer.Option(min=0.001, help="requests/s per API process (default: the setting)"),
    ] = None,
) -> None:
    """Create a key and print it: the only time it is shown (Redis keeps only a digest)."""
    token, key = issue(name, frozenset(scope), now_ms=int(time.time() * 1000), rate_per_s=rate)

    async def add(store: KeyStore) -> None:
        await store.add(key)

    _with_store(add)
    typer.echo(token)
    typer.echo(f"created {_line(key)}", err=True)


@keys_app.command("list")
def list_keys() -> None:
    """Every key, revoked ones included, oldest first (never the keys themselves)."""
    for key in _with_store(lambda store: store.list()):
        typer.echo(_line(key))


@keys_app.command("revoke")
def revoke(key_id: Annotated[str, typer.Argument(help="the id `list` shows")]) -> None:
    """Revoke a key; API processes refuse it within PARCOURS_API_KEY_CACHE_S."""
    key = _with_store(lambda store: store.revoke(key_id, now_ms=int(time.time() * 1000)))
    if key is None:
        typer.echo(f"error: no API key {key_id!r}", err=True)
        raise typer.Exit(2)
    typer.echo(f"revoked {_line(key)}")
