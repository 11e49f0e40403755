"""The journey gauges, kept beside the journeys by the state consumer's atomic write: equal
to a count over the stored journeys after moves, cart changes, redelivery and expiry."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Sequence

from models.gauges import JourneyGauge
from models.state import JourneyState, decode_state
from service.learning import live_scorer
from service.metrics import ModelMetrics
from service.store import JourneyGauges, JourneyStore, Stored, Write
from tests.integration.conftest import Worker
from tests.support import journey_stream, keyed, produce, read_records


def _counted(states: Sequence[JourneyState], stages: Sequence[str]) -> JourneyGauges:
    """The gauges recomputed from journeys as stored."""
    carts = [s for s in states if s.cart.items]

    def at_risk(s: JourneyState) -> int:
        scored = (s.predictions or {}).get("abandonment") or {}
        return round(s.cart.value * float(scored.get("risk") or 0.0) * 100)

    by_stage = Counter(s.stage for s in states)
    return JourneyGauges(
        {stage: by_stage[stage] for stage in stages}, len(carts),
        sum(round(s.cart.value * 100) for s in carts) / 100, sum(map(at_risk, carts)) / 100,
    )  # fmt: skip


async def test_gauges_equal_a_count_over_the_stored_journeys_through_moves_and_redelivery(
    worker: Worker,
) -> None:
    topic, bootstrap = worker.settings.kafka.events_topic, worker.settings.kafka.bootstrap or ""
    ends = await produce(bootstrap, topic, keyed(journey_stream(customers=40, events=600)))
    records = await read_records(bootstrap, topic, ends)
    scorer = live_scorer(
        worker.redis, worker.settings.redis, worker.settings.models, worker.fold.map,
        ModelMetrics(worker.metrics.registry),
    )  # fmt: skip
    updater = worker.labelled_updater(scorer=scorer)
    stages = worker.fold.map.stages

    for part in (records[:250], records[250:450], records[450:]):  # customers move between
        await updater.handle(part)
    customers = sorted({r.key.decode() for r in records})
    loaded = await worker.store.load_many(customers)  # with their scores, as written
    states = [decode_state(s.state) for s in loaded if s.state is not None]
    expected = _counted(states, stages)
    assert sum(1 for n in expected.customers.values() if n) >= 3, "several stages in use"
    assert expected.open_carts >= 5, "open carts"
    assert expected.value_at_risk > 0, "scored by the cold model's base rate"
    assert await worker.store.gauges(stages) == expected

    await updater.handle(records)  # redelivered: nothing applied, nothing counted twice
    assert await worker.store.gauges(stages) == expected


async def test_journeys_leave_the_gauges_when_they_expire(worker: Worker) -> None:
    prefix = worker.settings.redis.key_prefix + "-expiring"
    store = JourneyStore(worker.redis, prefix=prefix, ttl_ms=400, shards=4)
    stages = worker.fold.map.stages
    writes = [
        Write("ann", b"{}", 0, gauge=JourneyGauge(stages[1], None, 12_50, 6_25)),
        Write("bob", b"{}", 0, gauge=JourneyGauge(stages[1], None, 0, 0)),
    ]
    assert await store.save_many(writes) == []
    moved = [Write("bob", b"{}", 1, gauge=JourneyGauge(stages[2], stages[1], 40_00, 10_00))]
    assert await store.save_many(moved) == []

    live = await store.gauges(stages)
    assert (live.customers[stages[1]], live.customers[stages[2]]) == (1, 1)
    assert (live.open_carts, live.cart_value, live.value_at_risk) == (2, 52.5, 16.25)

    emptied = [Write("ann", b"{}", 1, gauge=JourneyGauge(stages[1], None, 0, 0))]
    assert await store.save_many(emptied) == []
    assert (await store.gauges(stages))[1:] == (1, 40.0, 10.0)
    for rev, cents in enumerate((5_00, 7_00)):  # an unscored cart (risk 0) changing
        unscored = [Write("cyd", b"{}", rev, gauge=JourneyGauge(stages[0], None, cents, 0))]
        assert await store.save_many(unscored) == []
    assert (await store.gauges(stages))[1:] == (2, 47.0, 10.0)

    await asyncio.sleep(0.6)
    gone = await store.gauges(stages)
    assert sum(gone.customers.values()) == 0
    assert gone[1:] == (0, 0.0, 0.0)
    assert await store.load_many(["ann", "bob", "cyd"]) == [Stored(None, 0)] * 3
