"""Experiments end to end on the real broker and Redis: defined over HTTP, decided in the API
(custom decisions, recommendation actions) and in the consumer (webhook triggers), exposures
folded into journeys, outcomes resolved on event time, learned by the trainer's ledger and
read back from `GET /v1/experiments/{name}`, compared with a recomputation from the events."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import jsonschema
import orjson
import pytest

from models.events import EXPOSURE_TYPE
from models.experiments import HOLDOUT, ExperimentSpec, in_holdout, split
from models.labels import Sample
from models.snapshot import dump_snapshot
from service.embedded import free_port
from service.experiments import ExperimentStore
from service.learning import snapshot_store
from service.settings import Settings
from tests.integration.api_fixtures import Api, running_api, topic_records
from tests.integration.conftest import Worker
from tests.integration.test_labelling import T0, Feed, _event, _samples
from tests.integration.test_trainer import _fresh
from tests.integration.test_triggers import _scorer, _triggers

OFFER: dict[str, Any] = {
    "decision": "custom:checkout_offer",
    "variants": [
        {"name": "none"},
        {"name": "free_shipping", "params": {"offer": "free_shipping"}},
    ],
    "success": ["purchase"],
    "window_s": 3600,
}


@pytest.fixture
async def api(settings: Settings) -> AsyncIterator[Api]:
    async with running_api(settings) as running:
        yield running


async def _learn_and_publish(worker: Worker, samples: list[Sample]) -> None:
    """What the trainer does with the samples topic: learn it, publish a snapshot."""
    state = _fresh(worker.settings)
    for sample in samples:
        state.learn(sample)
    state.tag(1)
    meta = {"models": state.summary(), "offsets": {}}
    store = snapshot_store(worker.redis, worker.settings.redis)
    await store.publish(dump_snapshot(state, meta), meta, replaces=await _version(worker))
    await asyncio.sleep(worker.settings.models.reload_interval_s)


async def _version(worker: Worker) -> int:
    current = await snapshot_store(worker.redis, worker.settings.redis).fetch()
    return current.version if current is not None else 0


def _exposure(
    customer: str, name: str, variant: str, spec: dict[str, Any], at: str
) -> dict[str, Any]:
    exposure = {"experiment": name, "variant": variant, "success": spec["success"]}
    return {
        "event_id": f"exposure-{name}-{customer}",
        "customer_id": customer,
        "type": EXPOSURE_TYPE,
        "channel": "web",
        "timestamp": at,
        "properties": {"exposure": exposure | {"window_s": spec["window_s"]}},
    }


def _triggering_updater(
    worker: Worker, *, holdout: float = 0.0, at_risk_threshold: float = 0.7
) -> Any:
    """An updater with models, triggers and experiments, as `parcours consume` wires them."""
    scorer = _scorer(worker)
    experimenting = worker.experimenting(scorer, holdout=holdout)  # type: ignore[arg-type]
    return worker.labelled_updater(
        scorer=scorer,  # type: ignore[arg-type]
        triggering=worker.triggering(
            at_risk_threshold=at_risk_threshold, experimenting=experimenting
        ),
        experimenting=experimenting,
    )


def _at(minutes: float) -> str:
    return (T0 + timedelta(minutes=minutes)).isoformat()


async def test_experiment_definitions_are_validated_versioned_and_deleted(api: Api) -> None:
    client = api.client
    created = await client.put("/v1/experiments/offer", json=OFFER)
    replaced = await client.put("/v1/experiments/offer", json=OFFER | {"window_s": 7200})
    other_arms = await client.put(
        "/v1/experiments/offer", json=OFFER | {"variants": [{"name": "x"}, {"name": "y"}]}
    )
    bad_window = await client.put("/v1/experiments/two", json=OFFER | {"window_s": 5})
    one_arm = await client.put("/v1/experiments/two", json=OFFER | {"variants": [{"name": "a"}]})
    reserved = await client.put(f"/v1/experiments/{HOLDOUT}", json=OFFER)
    nowhere = await client.put(
        "/v1/experiments/two", json=OFFER | {"decision": "webhook:cart.lost"}
    )
    listed = await client.get("/v1/experiments")
    deleted = await client.delete("/v1/experiments/offer")
    again = await client.delete("/v1/experiments/offer")

    assert created.status_code == 201
    assert replaced.status_code == 200
    assert replaced.json()["window_s"] == 7200
    assert replaced.json()["created_at"] == created.json()["created_at"]
    assert other_arms.status_code == 409
    assert bad_window.status_code == 422
    assert bad_window.json()["detail"][0]["loc"] == ["body", "window_s"]
    assert one_arm.status_code == 422
    assert one_arm.json()["detail"][0]["loc"] == ["body", "variants"]
    assert reserved.status_code == 422
    assert reserved.json()["detail"][0]["loc"] == ["path", "name"]
    assert nowhere.status_code == 422
    assert nowhere.json()["detail"][0]["loc"] == ["body", "decision"]
    assert "cart.abandoned" in nowhere.json()["detail"][0]["msg"]
    assert [e["name"] for e in listed.json()["experiments"]] == ["offer"]
    assert deleted.status_code == 204
    assert again.status_code == 404


async def test_custom_decisions_are_sticky_recorded_once_and_their_outcomes_counted(
    api: Api, worker: Worker
) -> None:
    """40 customers asked for a decision; the even ones buy within the window, the odd ones
    after it. Every figure the API reports is recomputed here from the hash split."""
    assert (await api.client.put("/v1/experiments/offer", json=OFFER)).status_code == 201
    spec = ExperimentSpec.model_validate(OFFER)
    customers = [f"cust-{i}" for i in range(40)]
    first, second = [], []
    for c in customers:
        body = {"customer_id": c, "at": _at(0)}
        first.append(await api.client.post("/v1/experiments/offer/decisions", json=body))
        second.append(await api.client.post("/v1/experiments/offer/decisions", json=body))
    exposures = [r for r in await topic_records(api.settings) if EXPOSURE_TYPE.encode() in r.value]

    feed = Feed(worker)
    scorer = _scorer(worker)
    updater = worker.labelled_updater(experimenting=worker.experimenting(scorer))  # type: ignore[arg-type]
    events = [orjson.loads(r.value) for r in exposures]
    buys = [
        _event(1, c, "purchase", 30 if i % 2 == 0 else 90, order_id=f"o-{c}")
        for i, c in enumerate(customers)
    ]
    await feed.send(updater, *events, *buys)
    await feed.send(updater, _event(9, "zed", "page_view", 200))  # every window has ended
    samples = [s for s in await _samples(worker) if s.experiment == "offer"]
    await _learn_and_publish(worker, samples)
    results = (await api.client.get("/v1/experiments/offer")).json()
    journey = await worker.store.get("cust-0")
    assert (await api.client.delete("/v1/experiments/offer")).status_code == 204
    reused = await api.client.put(
        "/v1/experiments/offer", json=OFFER | {"variants": [{"name": "x"}, {"name": "y"}]}
    )
    kept = (await api.client.get("/v1/experiments/offer")).json()

    expected = {c: split(spec, "offer", c) for c in customers}
    assert [r.status_code for r in first + second] == [200] * 80
    assert [r.json()["variant"] for r in first] == [expected[c] for c in customers]
    assert [r.json()["variant"] for r in second] == [expected[c] for c in customers]
    assert all(r.json()["new"] for r in first)
    assert {r.json()["params"].get("offer") for r in first} <= {None, "free_shipping"}
    assert len(exposures) == 80  # both asks were published (the journey was not folded yet)
    assert journey is not None
    assert journey.experiments["offer"].variant == expected["cust-0"]
    assert journey.experiments["offer"].status == "converted"
    assert journey.touchpoints[-1].type == "purchase"  # the exposure is not a touchpoint
    assert Counter(s.kind for s in samples) == {"exposure": 40, "outcome": 40}
    by_variant = {row["variant"]: row for row in results["variants"]}
    for variant in spec.variant_names:
        mine = [c for c in customers if expected[c] == variant]
        converted = [c for c in mine if customers.index(c) % 2 == 0]
        row = by_variant[variant]
        assert (row["exposures"], row["resolved"], row["conversions"]) == (
            len(mine), len(mine), len(converted)
        )  # fmt: skip
        assert row["conversion_rate"] == pytest.approx(len(converted) / len(mine), abs=1e-6)
        counted = {
            outcome: worker.sample(
                "parcours_experiment_outcomes_total",
                experiment="offer", variant=variant, outcome=outcome,
            )
            for outcome in ("exposed", "converted", "missed")
        }  # fmt: skip
        assert counted == {
            "exposed": len(mine), "converted": len(converted), "missed": len(mine) - len(converted)
        }  # fmt: skip
        low, high = row["anytime_ci95"]
        assert low <= row["conversion_rate"] <= high
    assert results["exposures"] == 40
    assert reused.status_code == 409  # its customers keep their variants: never reuse a name
    assert kept["definition"] is None
    # the results outlive the definition; without it no variant is known as the control
    assert {r["variant"]: r["conversions"] for r in kept["variants"]} == {
        r["variant"]: r["conversions"] for r in results["variants"]
    }
    assert all(r["lift_vs_control"] is None for r in kept["variants"])
    assert [r["lift_vs_control"] is None for r in results["variants"]] == [True, False]
    assert results["winner"] is None  # 40 customers can show nothing safely
    assert "anytime" in results["warning"]


async def test_recommendation_actions_carry_the_customers_variant(api: Api, worker: Worker) -> None:
    trending = OFFER | {"decision": "recommendation:next_best_action"}
    assert (await api.client.put("/v1/experiments/shelf", json=trending)).status_code == 201
    spec = ExperimentSpec.model_validate(trending)
    answers = [
        (await api.client.get(f"/v1/customers/{c}/recommendations?context=home")).json()
        for c in ("new-1", "new-2", "new-1")
    ]
    exposures = [
        orjson.loads(r.value)
        for r in await topic_records(api.settings)
        if EXPOSURE_TYPE.encode() in r.value
    ]

    for answer in answers:
        actions = [a for a in answer["recommendations"] if a["type"] == "next_best_action"]
        others = [a for a in answer["recommendations"] if a["type"] != "next_best_action"]
        assert actions
        expected = split(spec, "shelf", answer["customer_id"])
        assert all(
            a["experiments"]
            == [{"name": "shelf", "variant": expected, "params": spec.params_of(expected)}]
            for a in actions
        )
        assert all("experiments" not in a or a["experiments"] is None for a in others)
    assert {e["customer_id"] for e in exposures} == {"new-1", "new-2"}
    assert {e["properties"]["exposure"]["experiment"] for e in exposures} == {"shelf"}


async def test_webhook_triggers_carry_the_variant_and_open_its_window(worker: Worker) -> None:
    store_spec = OFFER | {"decision": "webhook:journey.stage_changed"}
    await ExperimentStore(worker.redis, prefix=worker.settings.redis.key_prefix).put(
        "nudge", ExperimentSpec.model_validate(store_spec), now_ms=0
    )
    updater = _triggering_updater(worker)
    feed = Feed(worker)
    await feed.send(
        updater,
        _event(1, "ann", "product_view", 0, product_id="p1"),
        _event(2, "ann", "add_to_cart", 1, product_id="p1", price=20.0),
    )
    triggers = [t for t in await _triggers(worker) if t.customer_id == "ann"]
    ann = await worker.store.get("ann")
    samples = [s for s in await _samples(worker) if s.experiment == "nudge"]

    expected = split(ExperimentSpec.model_validate(store_spec), "nudge", "ann")
    staged = [t for t in triggers if t.type == "journey.stage_changed"]
    assert staged
    assert all(
        t.payload["experiments"][0]["name"] == "nudge"
        and t.payload["experiments"][0]["variant"] == expected
        for t in staged
    )
    assert ann is not None
    assert ann.experiments["nudge"].variant == expected
    assert ann.experiments["nudge"].at == staged[0].at
    assert [s.kind for s in samples] == ["exposure"]


async def test_holdout_customers_get_no_triggers_and_are_compared_with_the_rest(
    worker: Worker, settings: Settings
) -> None:
    share = 0.5
    updater = _triggering_updater(worker, holdout=share)
    customers = [f"h-{i}" for i in range(12)]
    held = {c for c in customers if in_holdout(c, share)}
    feed = Feed(worker)
    await feed.send(
        updater,
        *[_event(1, c, "product_view", 0, product_id="p1") for c in customers],
        *[_event(2, c, "add_to_cart", 1, product_id="p1", price=5.0) for c in customers],
        *[_event(3, c, "purchase", 2) for c in customers[:6]],
    )
    await feed.send(updater, _event(9, "zed", "page_view", 60 * 24 * 8))  # past the window
    triggers = {t.customer_id for t in await _triggers(worker)}
    samples = [s for s in await _samples(worker) if s.experiment == HOLDOUT]
    settings_holdout = settings.experiments.holdout_window_s

    assert 0 < len(held) < len(customers)
    assert not triggers & held
    assert triggers >= set(customers) - held
    outcomes = {s.customer_id: (s.variant, s.label) for s in samples if s.kind == "outcome"}
    for i, c in enumerate(customers):
        assert outcomes[c] == ("holdout" if c in held else "personalized", i < 6)
    assert settings_holdout == 7 * 86_400


ROUNDS = 6


async def test_a_thompson_bandit_moves_traffic_to_the_better_variant_through_the_pipeline(
    api: Api, worker: Worker
) -> None:
    """Rounds of 40 new customers: the API decides, the consumer resolves what they did
    (variant `strong` converts 50%, `weak` 5%), the trainer's ledger learns the samples and is
    published, and the next round is decided with it."""
    bandit = OFFER | {
        "decision": "custom:banner",
        "variants": [{"name": "weak"}, {"name": "strong"}],
        "window_s": 60,
        "policy": "thompson",
    }
    assert (await api.client.put("/v1/experiments/banner", json=bandit)).status_code == 201
    rates = {"weak": 0.05, "strong": 0.5}
    rng = random.Random(11)
    feed, scorer = Feed(worker), _scorer(worker)
    updater = worker.labelled_updater(experimenting=worker.experimenting(scorer))  # type: ignore[arg-type]
    ledger_state = _fresh(worker.settings)
    shares: list[float] = []
    for round_ in range(ROUNDS):
        start = round_ * 10
        chosen: dict[str, str] = {}
        for i in range(40):
            customer = f"r{round_}-{i}"
            answer = await api.client.post(
                "/v1/experiments/banner/decisions", json={"customer_id": customer, "at": _at(start)}
            )
            chosen[customer] = answer.json()["variant"]
        exposures = [  # as the API published them (read back in the first test)
            _exposure(c, "banner", variant, bandit, _at(start)) for c, variant in chosen.items()
        ]
        buys = [
            _event(1, c, "purchase", start + 0.5, order_id=f"o-{c}")
            for c, variant in chosen.items()
            if rng.random() < rates[variant]
        ]
        await feed.send(updater, *exposures, *buys)
        await feed.send(updater, _event(100 + round_, "clock", "page_view", start + 5))
        for sample in await _samples(worker):
            ledger_state.learn(sample)  # ids seen before are dropped
        ledger_state.tag(round_ + 1)
        meta = {"models": ledger_state.summary(), "offsets": {}}
        store = snapshot_store(worker.redis, worker.settings.redis)
        await store.publish(dump_snapshot(ledger_state, meta), meta, replaces=round_)
        await asyncio.sleep(worker.settings.models.reload_interval_s)
        shares.append(sum(v == "strong" for v in chosen.values()) / len(chosen))
    results = (await api.client.get("/v1/experiments/banner")).json()

    tally = ledger_state.experiments.tally("banner")
    assert sum(a.exposures for a in tally.values()) == ROUNDS * 40
    assert sum(a.resolved for a in tally.values()) == ROUNDS * 40
    assert shares[0] < 0.8  # nothing learned yet: both arms drawn
    assert sum(shares[-3:]) / 3 >= 0.8, shares
    by_variant = {row["variant"]: row for row in results["variants"]}
    assert by_variant["strong"]["exposures"] == tally["strong"].exposures
    assert by_variant["strong"]["probability_best"] > 0.95
    assert results["bandit"] is True
    assert results["traffic_share"]["strong"] > 0.6


async def test_a_decision_whose_exposure_cannot_be_recorded_is_not_shown(
    settings: Settings, worker: Worker
) -> None:
    """With the broker unreachable the recommendation is still served, without the variant,
    and a custom decision answers 503: no customer sees a variant that was not recorded."""
    gone = settings.kafka.model_copy(update={"bootstrap": f"127.0.0.1:{free_port()}"})
    spec = ExperimentSpec.model_validate(OFFER | {"decision": "recommendation:next_best_action"})
    await ExperimentStore(worker.redis, prefix=settings.redis.key_prefix).put(
        "shelf", spec, now_ms=0
    )
    async with running_api(settings.model_copy(update={"kafka": gone})) as api:
        shown = await api.client.get("/v1/customers/nobody/recommendations?context=home")
        asked = await api.client.post(
            "/v1/experiments/shelf/decisions", json={"customer_id": "nobody"}
        )
        failed = api.app.state.context.metrics.registry.get_sample_value(
            "parcours_api_experiment_exposures_total", {"experiment": "shelf", "outcome": "failed"}
        )

    assert shown.status_code == 200
    actions = [a for a in shown.json()["recommendations"] if a["type"] == "next_best_action"]
    assert actions
    assert all(a.get("experiments") is None for a in actions)
    assert asked.status_code == 503
    assert asked.headers["Retry-After"] == "1"
    assert failed == 2


async def test_a_journey_opened_by_an_exposure_begins_with_the_first_behaviour(
    worker: Worker,
) -> None:
    """A visitor shown a variant before any of their events arrived: the journey keeps the
    variant at once, but is counted (live gauges, stage arrivals, analytics facts) only from
    their first own event, as every journey is."""
    updater = worker.labelled_updater(
        experimenting=worker.experimenting(_scorer(worker)),  # type: ignore[arg-type]
        analytics=worker.analytics(),
    )
    feed, stages = Feed(worker), worker.fold.map.stages
    arrivals = {"from_stage": "new", "to_stage": worker.fold.map.initial_stage}
    await feed.send(updater, _exposure("early", "offer", "none", OFFER, _at(0)))
    opened = await worker.store.get("early")
    live_before = (await worker.store.gauges(stages)).customers
    arrived_before = worker.sample("parcours_journey_stage_transitions_total", **arrivals)
    facts_before = worker.sample("parcours_analytics_facts_total")
    await feed.send(updater, _event(1, "early", "page_view", 1))
    begun = await worker.store.get("early")
    live_after = (await worker.store.gauges(stages)).customers

    assert opened is not None
    assert opened.experiments["offer"].variant == "none"
    assert opened.events_applied == 0
    assert sum(live_before.values()) == 0
    assert (arrived_before, facts_before) == (0, 0)
    assert begun is not None
    assert begun.events_applied == 1
    assert begun.experiments["offer"].variant == "none"
    assert sum(live_after.values()) == 1
    assert worker.sample("parcours_journey_stage_transitions_total", **arrivals) == 1
    assert worker.sample("parcours_analytics_facts_total") == 1


async def test_every_trigger_type_matches_the_served_delivery_schema(
    api: Api, worker: Worker
) -> None:
    """The four trigger types, one with an experiment's variant in it, validated against
    `GET /v1/schema/triggers`; a payload missing a field or with an extra one is refused."""
    spec = OFFER | {"decision": "webhook:cart.abandoned"}
    assert (await api.client.put("/v1/experiments/remind", json=spec)).status_code == 201
    updater = _triggering_updater(worker, at_risk_threshold=0.0)
    feed = Feed(worker)
    await feed.send(
        updater,
        _event(1, "ann", "product_view", 0, product_id="p1"),
        _event(2, "ann", "add_to_cart", 1, product_id="p1", price=20.0),
        _event(3, "ann", "purchase", 5, order_id="o-1"),
        _event(1, "bea", "add_to_cart", 0, product_id="p2", price=9.5),
    )
    await feed.send(updater, _event(1, "cy", "page_view", 70))  # bea's cart is abandoned
    schema = (await api.client.get("/v1/schema/triggers")).json()
    triggers = [orjson.loads(t.to_json()) for t in await _triggers(worker)]

    validator = jsonschema.Draft202012Validator(schema)
    assert {t["type"] for t in triggers} == {
        "journey.stage_changed", "customer.converted", "cart.abandoned", "cart.at_risk"
    }  # fmt: skip
    for trigger in triggers:
        assert not list(validator.iter_errors(trigger)), trigger
    [abandoned] = [t for t in triggers if t["type"] == "cart.abandoned"]
    assert abandoned["payload"]["experiments"][0]["name"] == "remind"
    broken = abandoned | {"payload": abandoned["payload"] | {"surprise": 1}}
    missing = abandoned | {
        "payload": {k: v for k, v in abandoned["payload"].items() if k != "cart"}
    }
    assert list(validator.iter_errors(broken))
    assert list(validator.iter_errors(missing))
