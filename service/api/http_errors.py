"""HTTP-level refusals made precise: a body that is not JSON is a 422 naming the body, like
every other refusal, and a 405 lists in `Allow` every method the path serves (Starlette lists
only those of the first route that matched the path)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.routing import iter_route_contexts
from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.routing import compile_path

from service.api.responses import problem

_UNPARSABLE = "There was an error parsing the body"


@dataclass(frozen=True)
class RouteMethods:
    """Each route path's pattern and the methods it is served with."""

    routes: tuple[tuple[re.Pattern[str], frozenset[str]], ...]

    @classmethod
    def of(cls, app: FastAPI) -> RouteMethods:
        found = []
        for route in iter_route_contexts(app.routes):
            methods = getattr(route, "methods", None)
            if route.path and methods:
                found.append((compile_path(str(route.path))[0], frozenset(methods) - {"HEAD"}))
        return cls(tuple(found))

    def allowed(self, path: str) -> list[str]:
        return sorted(
            {m for pattern, methods in self.routes if pattern.match(path) for m in methods}
        )


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 400 and exc.detail == _UNPARSABLE:
        detail = [{"loc": ["body"], "msg": "the body is not valid JSON", "type": "json_invalid"}]
        return problem(422, detail)
    if exc.status_code == 405:
        methods: RouteMethods = request.app.state.route_methods
        response = problem(405, "Method Not Allowed")
        response.headers["Allow"] = ", ".join(methods.allowed(request.url.path))
        return response
    return await http_exception_handler(request, exc)
