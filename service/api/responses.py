"""Responses built by hand are rendered with orjson; model responses use pydantic's serializer."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import JSONResponse


class OrjsonResponse(JSONResponse):
    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def problem(
    status: int, detail: Any, *, retry_after: int | None = None, **extra: Any
) -> OrjsonResponse:
    """An error body shaped like FastAPI's own: `{"detail": ...}` plus optional fields."""
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    return OrjsonResponse({"detail": detail, **extra}, status_code=status, headers=headers)
