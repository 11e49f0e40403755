"""Running one Redis action from a shell command (`parcours keys`, `parcours experiments`)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import typer

from models.errors import ParcoursError
from service.settings import Settings, get_settings
from service.store import RedisClient, redis_from_settings

T = TypeVar("T")


def with_redis(action: Callable[[RedisClient, Settings], Awaitable[T]]) -> T:
    """Run `action` against `PARCOURS_REDIS_URL`; a failure exits with its message (code 1),
    a missing URL with code 2."""
    settings = get_settings()
    if not settings.redis.url:
        typer.echo("error: PARCOURS_REDIS_URL is not set", err=True)
        raise typer.Exit(2)

    async def run() -> T:
        redis = redis_from_settings(settings.redis)
        try:
            return await action(redis, settings)
        finally:
            await redis.aclose()

    try:
        return asyncio.run(run())
    except ParcoursError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
