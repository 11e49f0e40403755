"""JSON log lines carry the structured context a log call passes (record position, customer,
delivery), so one record or customer can be followed across processes."""

from __future__ import annotations

import logging

import orjson

from service.logs import JsonFormatter, at_record


def _line(**extra: object) -> dict[str, object]:
    record = logging.LogRecord(
        "parcours.test", logging.WARNING, __file__, 1, "msg %s", ("x",), None
    )
    record.__dict__.update(extra)
    parsed: dict[str, object] = orjson.loads(JsonFormatter().format(record))
    return parsed


def test_a_record_position_and_customer_become_keys() -> None:
    line = _line(**at_record("parcours.events", 3, 1207, customer_id="c-9"))
    assert line["message"] == "msg x"
    assert (line["topic"], line["partition"], line["offset"], line["customer_id"]) == (
        "parcours.events", 3, 1207, "c-9",
    )  # fmt: skip


def test_a_line_without_context_has_none_of_its_keys() -> None:
    line = _line()
    assert set(line) == {"time", "level", "logger", "message"}


def test_delivery_fields_are_kept() -> None:
    line = _line(delivery_id="d-1", subscription_id="s-1", trigger_id="t-1")
    assert (line["delivery_id"], line["subscription_id"], line["trigger_id"]) == (
        "d-1",
        "s-1",
        "t-1",
    )
