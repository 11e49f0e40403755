"""The recommendations endpoint's parameters, checked by hand on the storefront's hot path.

FastAPI's generic parameter solving cost that endpoint about as much CPU as composing the
answer (BENCHMARKS.md, "Recommendations API under HTTP load"). The rules here are the same as
the declared ones they replace, the 422s carry the same `loc`, `msg` and `type` as pydantic's,
and `OPENAPI_PARAMETERS` documents them, so clients see no difference.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final, NamedTuple, cast

from fastapi.exceptions import RequestValidationError

from models.events import ID_PATTERN
from models.recommend import CONTEXTS, Context

_ID: Final = re.compile(ID_PATTERN)
MAX_LIMIT: Final = 100
DEFAULT_CONTEXT: Final[Context] = "home"


class Query(NamedTuple):
    """A parsed request: `limit` is None when the client left it to the settings."""

    customer_id: str
    context: Context
    limit: int | None
    product_id: str | None
    category: str | None


def parse(customer_id: str, query: Mapping[str, str]) -> Query:
    """The request's parameters, or a `RequestValidationError` naming every bad one."""
    errors: list[dict[str, Any]] = []
    customer = _text(customer_id, ("path", "customer_id"), 128, errors, pattern=True)
    context = query.get("context", DEFAULT_CONTEXT)
    if context not in CONTEXTS:
        expected = ", ".join(f"'{c}'" for c in CONTEXTS[:-1]) + f" or '{CONTEXTS[-1]}'"
        errors.append(_error(("query", "context"), f"Input should be {expected}", "literal_error"))
    limit = _limit(query.get("limit"), errors)
    product = query.get("product_id")
    if product is not None:
        product = _text(product, ("query", "product_id"), 128, errors, pattern=True)
    category = query.get("category")
    if category is not None:
        category = _text(category, ("query", "category"), 256, errors, pattern=False)
    if errors:
        raise RequestValidationError(errors)
    return Query(customer, cast(Context, context), limit, product, category)


def _text(
    value: str, loc: tuple[str, str], longest: int, errors: list[dict[str, Any]], *, pattern: bool
) -> str:
    if not value:
        errors.append(_error(loc, "String should have at least 1 character", "string_too_short"))
    elif len(value) > longest:
        msg = f"String should have at most {longest} characters"
        errors.append(_error(loc, msg, "string_too_long"))
    elif pattern and _ID.match(value) is None:
        msg = f"String should match pattern '{ID_PATTERN}'"
        errors.append(_error(loc, msg, "string_pattern_mismatch"))
    return value


def _limit(raw: str | None, errors: list[dict[str, Any]]) -> int | None:
    if raw is None:
        return None
    loc = ("query", "limit")
    try:
        limit = int(raw)
    except ValueError:
        msg = "Input should be a valid integer, unable to parse string as an integer"
        errors.append(_error(loc, msg, "int_parsing"))
        return None
    if limit < 1:
        msg = "Input should be greater than or equal to 1"
        errors.append(_error(loc, msg, "greater_than_equal"))
    elif limit > MAX_LIMIT:
        msg = f"Input should be less than or equal to {MAX_LIMIT}"
        errors.append(_error(loc, msg, "less_than_equal"))
    return limit


def _error(loc: tuple[str, str], msg: str, kind: str) -> dict[str, Any]:
    return {"loc": loc, "msg": msg, "type": kind}


def _string(description: str, longest: int, *, pattern: bool = True) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string", "minLength": 1, "maxLength": longest}
    if pattern:
        schema["pattern"] = ID_PATTERN
    return {"schema": schema, "description": description}


OPENAPI_PARAMETERS: Final[list[dict[str, Any]]] = [
    {"name": "customer_id", "in": "path", "required": True, **_string("the customer", 128)},
    {
        "name": "context",
        "in": "query",
        "required": False,
        "schema": {"type": "string", "enum": list(CONTEXTS), "default": DEFAULT_CONTEXT},
        "description": "where the answer will be shown",
    },
    {
        "name": "limit",
        "in": "query",
        "required": False,
        "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT},
        "description": "actions wanted (default and maximum are settings)",
    },
    {
        "name": "product_id",
        "in": "query",
        "required": False,
        **_string("the product on the page", 128),
    },
    {
        "name": "category",
        "in": "query",
        "required": False,
        **_string(
            "trending in this category (default: the category the customer viewed most)",
            256,
            pattern=False,
        ),
    },
]
"""What FastAPI would have generated for the declared parameters."""
