"""API keys managed over HTTP (admin scope); `parcours keys` does the same from a shell."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Response
from pydantic import BaseModel, ConfigDict, Field

from models.access import ApiKey, Scope, issue
from service.api.auth import GUARDED, requires
from service.api.deps import Context
from service.api.schemas import Problem

logger = logging.getLogger(__name__)

router = APIRouter(
    prefix="/v1", tags=["keys"], dependencies=[requires(Scope.ADMIN)], responses=GUARDED
)

KeyId = Annotated[str, Path(min_length=12, max_length=12, pattern=r"^[0-9a-f]{12}$")]
_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": Problem, "description": "No key with this id"}
}


class KeyCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100, description="who or what holds the key")
    scopes: list[Scope] = Field(min_length=1, max_length=3)
    rate_per_s: float | None = Field(
        default=None, strict=True, gt=0, le=1e6, description="requests per second per API process"
    )


class KeyPublic(BaseModel):
    """A key as listed: never its secret or digest."""

    id: str
    name: str
    scopes: list[Scope]
    created_at: datetime
    rate_per_s: float | None
    revoked_at: datetime | None

    @classmethod
    def of(cls, key: ApiKey) -> KeyPublic:
        revoked = key.revoked_at
        return cls(
            id=key.id,
            name=key.name,
            scopes=sorted(key.scopes),
            created_at=datetime.fromtimestamp(key.created_at / 1000, UTC),
            rate_per_s=key.rate_per_s,
            revoked_at=datetime.fromtimestamp(revoked / 1000, UTC) if revoked else None,
        )


class KeyIssued(KeyPublic):
    key: str = Field(description="the key itself: shown this once, stored only as a digest")


class KeysPublic(BaseModel):
    keys: list[KeyPublic]


@router.post("/keys", status_code=201, summary="Create an API key; the answer is the only copy")
async def create_key(body: KeyCreate, response: Response, ctx: Context) -> KeyIssued:
    now_ms = int(time.time() * 1000)
    token, key = issue(body.name, frozenset(body.scopes), now_ms=now_ms, rate_per_s=body.rate_per_s)
    await ctx.keys.add(key)
    logger.info("API key %s created with scopes %s", key.id, ",".join(sorted(key.scopes)))
    response.headers["Location"] = f"/v1/keys/{key.id}"
    return KeyIssued(**KeyPublic.of(key).model_dump(), key=token)


@router.get("/keys", summary="Every key, revoked ones included, oldest first")
async def list_keys(ctx: Context) -> KeysPublic:
    return KeysPublic(keys=[KeyPublic.of(k) for k in await ctx.keys.list()])


@router.delete(
    "/keys/{key_id}",
    summary="Revoke a key: refused everywhere within `PARCOURS_API_KEY_CACHE_S`",
    responses=_NOT_FOUND,
)
async def revoke_key(key_id: KeyId, ctx: Context) -> KeyPublic:
    key = await ctx.keys.revoke(key_id, now_ms=int(time.time() * 1000))
    if key is None:
        raise HTTPException(404, f"no API key {key_id!r}")
    logger.info("API key %s revoked", key_id)
    return KeyPublic.of(key)
