"""The webhook benchmark's figures: percentiles are observed values, undelivered counts as late,
and the receiver finds the causing event in a real trigger body."""

from __future__ import annotations

import math

from bench.webhook_latency import percentile
from bench.webhook_receiver import causing_event_id
from models.triggers import Trigger


def test_percentile_nearest_rank_returns_an_observed_value() -> None:
    values = [float(v) for v in range(100, 0, -1)]  # 1..100, unsorted
    assert (percentile(values, 50), percentile(values, 99), percentile(values, 100)) == (
        50.0, 99.0, 100.0,
    )  # fmt: skip
    assert percentile([7.0], 99) == 7.0
    assert math.isnan(percentile([], 50))


def test_percentile_undelivered_as_infinite_makes_p99_infinite_past_one_percent() -> None:
    assert percentile([*[10.0] * 99, math.inf], 99) == 10.0  # 1 of 100 missing
    assert percentile([*[10.0] * 98, math.inf, math.inf], 99) == math.inf


def test_causing_event_id_read_from_a_stage_changed_trigger_body() -> None:
    cause = {"event_id": "c1-7-cart", "type": "add_to_cart", "channel": "web"}
    trigger = Trigger("id", "journey.stage_changed", "c1-7", "retail", 0, {"event": cause})
    assert causing_event_id(trigger.to_json()) == "c1-7-cart"
    assert causing_event_id(b'{"payload": {}}') == "-"
    assert causing_event_id(b"not json") == "-"
