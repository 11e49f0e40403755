"""The recommendations endpoint's hand-checked parameters: same rules and 422 shapes as the
declared FastAPI parameters they replace, and documented the same way."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.exceptions import RequestValidationError
from pydantic import TypeAdapter, ValidationError

from models.recommend import Context
from service.api import recommendation_query as query


def _errors(customer: str, params: dict[str, str]) -> list[tuple[tuple[str, str], str]]:
    with pytest.raises(RequestValidationError) as raised:
        query.parse(customer, params)
    return [(e["loc"], e["type"]) for e in raised.value.errors()]


def test_defaults_leave_limit_to_the_settings() -> None:
    assert query.parse("c-1", {}) == query.Query("c-1", "home", None, None, None)


def test_every_parameter_is_taken() -> None:
    params = {"context": "cart", "limit": "7", "product_id": "p 1", "category": "shoes.men"}
    assert query.parse("c/1", params) == query.Query("c/1", "cart", 7, "p 1", "shoes.men")


@pytest.mark.parametrize(
    ("customer", "params", "expected"),
    [
        ("c", {"context": "sms"}, (("query", "context"), "literal_error")),
        ("c", {"limit": "0"}, (("query", "limit"), "greater_than_equal")),
        ("c", {"limit": "101"}, (("query", "limit"), "less_than_equal")),
        ("c", {"limit": "ten"}, (("query", "limit"), "int_parsing")),
        ("c", {"product_id": ""}, (("query", "product_id"), "string_too_short")),
        ("c", {"product_id": "p" * 129}, (("query", "product_id"), "string_too_long")),
        ("c", {"product_id": "p\x01"}, (("query", "product_id"), "string_pattern_mismatch")),
        ("c", {"category": "x" * 257}, (("query", "category"), "string_too_long")),
        ("x" * 129, {}, (("path", "customer_id"), "string_too_long")),
        ("c\x7f", {}, (("path", "customer_id"), "string_pattern_mismatch")),
    ],
)
def test_a_bad_parameter_is_named_with_pydantics_error_type(
    customer: str, params: dict[str, str], expected: tuple[tuple[str, str], str]
) -> None:
    assert _errors(customer, params) == [expected]


def test_every_bad_parameter_is_reported_at_once() -> None:
    found = _errors("c", {"context": "sms", "limit": "0", "product_id": ""})
    assert [loc for loc, _ in found] == [
        ("query", "context"),
        ("query", "limit"),
        ("query", "product_id"),
    ]


def test_the_context_message_is_pydantics() -> None:
    with pytest.raises(ValidationError) as expected:
        TypeAdapter(Context).validate_python("sms")
    with pytest.raises(RequestValidationError) as ours:
        query.parse("c", {"context": "sms"})
    assert ours.value.errors()[0]["msg"] == expected.value.errors()[0]["msg"]


def test_the_documented_parameters_are_the_parsed_ones() -> None:
    documented: list[dict[str, Any]] = query.OPENAPI_PARAMETERS
    assert [p["name"] for p in documented] == list(query.Query._fields)
    assert documented[1]["schema"]["enum"] == ["product_page", "cart", "home", "email"]
