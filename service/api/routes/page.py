"""The live journey map: one HTML page and its script and style, served from the package.

The page draws itself in the browser from the JSON routes (analytics, journeys, models), so
it needs nothing but this API: no build step, nothing fetched from elsewhere.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from fastapi import APIRouter
from fastapi.responses import FileResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

STATIC: Final = Path(__file__).parents[1] / "static"

router = APIRouter(tags=["page"])

static_files = StaticFiles(directory=STATIC)
"""Mounted at `/static` by the app: the page's script and style."""


@router.get("/", include_in_schema=False)
async def get_root() -> RedirectResponse:
    return RedirectResponse("/map", status_code=307)


@router.get("/map", include_in_schema=False)
async def get_map() -> FileResponse:
    """The journey map page; `?customer=<id>` opens that customer's timeline."""
    return FileResponse(STATIC / "map.html", media_type="text/html; charset=utf-8")
