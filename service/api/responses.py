"""Responses built by hand are rendered with orjson; model responses use pydantic's serializer."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import JSONResponse


class OrjsonResponse(JSONResponse):
    """UTC datetimes are written as pydantic writes them (`...Z`), so a route answers alike
    whether it builds its body by hand or through a model."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_UTC_Z)


def problem(
    status: int, detail: Any, *, retry_after: int | None = None, **extra: Any
) -> OrjsonResponse:
    """An error body shaped like FastAPI's own: `{"detail": ...}` plus optional fields."""
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    return OrjsonResponse({"detail": detail, **extra}, status_code=status, headers=headers)
