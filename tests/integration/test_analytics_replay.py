"""Events replayed through the real state consumer: every analytics counter and API answer
against a recomputation from the raw events (exact, or within the documented sketch error)."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from pydantic import BaseModel

from models.analytics import BUCKETS, NEW
from models.journeymap import EXIT
from service.analytics import AnalyticsStore, analytics_store
from service.api.analytics_schemas import (
    ChannelsPublic,
    FrictionPublic,
    FunnelPublic,
    TransitionsPublic,
)
from service.replay import SAMPLE_FILE, read_lines
from service.settings import AnalyticsSettings, Settings
from tests.analytics_oracle import (
    Expected,
    assert_estimate,
    assert_store_matches,
    recompute_as_configured,
)
from tests.conftest import make_settings
from tests.integration.api_fixtures import Api, running_api
from tests.integration.conftest import Worker
from tests.support import Record, expected_states, journey_stream, keyed, produce, read_records

CASES = {"rees46": (60.0, 120.0), "synthetic": (3.0, 5.0)}
"""Each replay's horizon and abandon_after (s), short enough for exits within the slice."""
BIN_FACTOR = 2 ** (1 / 8)


@pytest.fixture(params=sorted(CASES))
def case(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def settings(kafka_bootstrap: str, redis_url: str, case: str) -> Settings:
    horizon_s, abandon_after_s = CASES[case]
    base = make_settings(kafka_bootstrap, redis_url, models={"abandon_after_s": abandon_after_s})
    # every touchpoint kept: pooling past the cap is tested on its own (test_analytics_store)
    analytics = AnalyticsSettings(
        horizon_s=horizon_s, allowed_lateness_s=0, max_touchpoints=100_000
    )
    return base.model_copy(update={"analytics": analytics})


def _messages(case: str) -> list[tuple[bytes | None, bytes | None]]:
    if case == "rees46":  # the bundled ten minutes of a real shop: web only, no checkout
        raws = [line.raw for line in read_lines(SAMPLE_FILE) if line.raw is not None]
        return [(orjson.loads(raw)["customer_id"].encode(), raw) for raw in raws]
    start = datetime(2026, 10, 31, 23, 58, tzinfo=UTC)  # crosses an hour and a day
    return keyed(journey_stream(customers=30, events=1500, seed=11, start=start))


def _batches(records: Sequence[Record], per_partition: int) -> Iterator[list[Record]]:
    """Batches as a consumer polls them: a run of each partition's records, in log order."""
    by_partition: dict[int, list[Record]] = {}
    for record in records:
        by_partition.setdefault(record.partition, []).append(record)
    longest = max(len(rs) for rs in by_partition.values())
    for start in range(0, longest, per_partition):
        yield [r for rs in by_partition.values() for r in rs[start : start + per_partition]]


async def _replayed(worker: Worker, case: str) -> tuple[list[Record], Expected]:
    bootstrap, topic = worker.settings.kafka.bootstrap or "", worker.settings.kafka.events_topic
    records = await read_records(bootstrap, topic, await produce(bootstrap, topic, _messages(case)))
    # chunks smaller than a batch: a customer's facts are recorded over several calls
    updater = worker.updater(analytics=worker.analytics(), chunk_records=41)
    for batch in _batches(records, 97):
        await updater.handle(batch)
    return records, recompute_as_configured(worker.settings, worker.fold, records)


def _store(worker: Worker) -> AnalyticsStore:
    return analytics_store(worker.redis, worker.settings)


async def test_replay_counters_equal_recomputation_in_every_bucket_and_segment(
    worker: Worker, case: str
) -> None:
    records, expected = await _replayed(worker, case)

    store = _store(worker)
    counts = Counter(name[:2] for c in expected.counts.values() for name in c)
    assert counts["m|"], "the replay moves customers"
    assert counts["d|"], "the replay moves customers on"
    assert any(name.endswith(f"|{EXIT}") for c in expected.counts.values() for name in c)
    assert counts["a|"], "some carts are abandoned within the replay"
    assert counts["w|"], "exits are counted with the time spent before them"
    if case == "synthetic":  # the sample's shoppers never move back within ten minutes
        looped = Counter(k[:2] for t in expected.touches.values() for k in t)
        assert looped["k|"], "some customers move back to an earlier stage"
    await assert_store_matches(store, worker.fold.map, expected)
    applied = sum(s.events_applied for s in expected_states(worker.fold, records).values())
    assert worker.sample("parcours_analytics_facts_total") == applied


def _summed(expected: Expected, segment: str, starts: list[int]) -> Counter[str]:
    total: Counter[str] = Counter()
    for start in starts:
        total.update(expected.counts[("hour", start, segment)])
    return total


def _nearest_rank(values: list[int], q: float) -> int:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q * len(ordered))) - 1]


def assert_binned(reported: float | None, durations_ms: list[int], q: float) -> None:
    """A quantile from the histogram is its exact value's bin: within 2^(1/8), 0 below 1 s."""
    if not durations_ms:
        assert reported is None
        return
    exact_s = _nearest_rank(durations_ms, q) / 1000
    assert reported is not None
    if exact_s < 1:
        assert reported == 0
    else:
        assert exact_s / BIN_FACTOR - 1e-9 <= reported <= exact_s * BIN_FACTOR + 1e-9


SCHEMAS: dict[str, type[BaseModel]] = {
    "funnel": FunnelPublic, "transitions": TransitionsPublic, "friction": FrictionPublic,
    "channels": ChannelsPublic,
}  # fmt: skip
"""Each route's documented answer: bodies built by hand must still match it."""


async def _get(api: Api, route: str, **params: str) -> dict[str, Any]:
    response = await api.client.get(f"/v1/analytics/{route}", params=params)
    assert response.status_code == 200, response.text
    body = dict(response.json())
    documented = SCHEMAS[route].model_validate(body)
    assert documented.model_dump(mode="json", by_alias=True) == body
    return body


async def test_replay_api_answers_equal_recomputation(worker: Worker, case: str) -> None:
    _, expected = await _replayed(worker, case)
    starts = expected.starts("hour")
    stages = list(worker.fold.map.stages)
    window = {
        "from": datetime.fromtimestamp(starts[0] / 1000, UTC).isoformat(),
        "to": datetime.fromtimestamp((starts[-1] + BUCKETS["hour"]) / 1000, UTC).isoformat(),
    }
    segments = ["all", "visitor:returning", "first_channel:web"]
    async with running_api(worker.settings) as api:
        for segment in segments:
            total = _summed(expected, segment, starts)
            asked = {**window, "segment": segment, "bucket": "hour"}
            funnel = await _get(api, "funnel", **asked, bucket_customers="true")
            await _check_funnel(funnel, expected, total, segment)
            await _check_transitions(await _get(api, "transitions", **asked), total, stages)
            _check_friction(await _get(api, "friction", **asked, min_count="1"), expected, total)
            _check_channels(await _get(api, "channels", **asked), total, stages)
        await _check_whole_days_read_as_days(api, starts)


async def _check_whole_days_read_as_days(api: Api, starts: list[int]) -> None:
    """The same range widened to whole UTC days: its totals come from the day buckets, and
    must equal the hours' (the added hours are empty), sketches included."""
    day = BUCKETS["day"]
    first, end = starts[0] - starts[0] % day, starts[-1] - starts[-1] % day + day
    widened = {
        "from": datetime.fromtimestamp(first / 1000, UTC).isoformat(),
        "to": datetime.fromtimestamp(end / 1000, UTC).isoformat(),
    }
    tight = {
        "from": datetime.fromtimestamp(starts[0] / 1000, UTC).isoformat(),
        "to": datetime.fromtimestamp((starts[-1] + BUCKETS["hour"]) / 1000, UTC).isoformat(),
    }
    hours = await _get(api, "funnel", **tight, bucket="hour")
    days = await _get(api, "funnel", **widened, bucket="hour")
    assert len(days["buckets"]) == (end - first) // BUCKETS["hour"] > len(hours["buckets"])
    assert days["stages"] == hours["stages"]
    assert all(b["customers"] is None for b in days["buckets"])  # not asked for
    assert any(row["customers"] for row in days["stages"])


async def _check_funnel(
    body: dict[str, Any], expected: Expected, total: Counter[str], segment: str
) -> None:
    starts = expected.starts("hour")
    stages = [s["stage"] for s in body["stages"]]
    assert body["window"]["segment"] == segment
    assert [b["start"] for b in body["buckets"]] == [
        datetime.fromtimestamp(s / 1000, UTC).isoformat().replace("+00:00", "Z") for s in starts
    ]
    for i, row in enumerate(body["stages"]):
        stage = row["stage"]
        out = {k: n for k, n in total.items() if k.startswith(f"m|{stage}|")}
        later = set(stages[i + 1 :])
        moved_on = sum(n for k, n in out.items() if k.split("|")[2] in later)
        exits = total[f"m|{stage}|{EXIT}"]
        assert row["entered"] == total[f"e|{stage}"]
        assert row["first_entries"] == total[f"n|{stage}"]
        assert (row["departures"], row["moved_on"], row["exits"]) == (
            sum(out.values()), moved_on, exits,
        )  # fmt: skip
        assert row["moved_back"] == sum(out.values()) - moved_on - exits
        nxt = stages[i + 1] if i + 1 < len(stages) else None
        assert row["to_next"] == (total[f"m|{stage}|{nxt}"] if nxt else 0)
        assert row["conversion"] == (moved_on / sum(out.values()) if out else None)
        durations = [
            d for s in starts for d in expected.durations[(("hour", s, segment), stage)]
        ]  # fmt: skip
        assert row["time_to_move_on"]["moves"] == len(durations)
        assert_binned(row["time_to_move_on"]["median_s"], durations, 0.5)
        assert_binned(row["time_to_move_on"]["p90_s"], durations, 0.9)
        dwells = [d for s in starts for d in expected.before_exit[(("hour", s, segment), stage)]]
        assert row["time_before_exit"]["moves"] == len(dwells) == exits
        assert_binned(row["time_before_exit"]["median_s"], dwells, 0.5)
        assert_binned(row["time_before_exit"]["p90_s"], dwells, 0.9)
        union = set().union(*(expected.customers[(("hour", s, segment), stage)] for s in starts))
        assert_estimate(row["customers"], len(union))
    for bucket, start in zip(body["buckets"], starts, strict=True):
        counted = expected.counts[("hour", start, segment)]
        assert bucket["entered"] == {s: counted[f"e|{s}"] for s in stages}
        for stage in stages:
            exact = expected.customers[(("hour", start, segment), stage)]
            assert_estimate(bucket["customers"][stage], len(exact))


async def _check_transitions(body: dict[str, Any], total: Counter[str], stages: list[str]) -> None:
    assert body["nodes"] == [NEW, *stages, EXIT]
    want = {
        (k.split("|")[1], k.split("|")[2]): n for k, n in total.items() if k.startswith("m|") and n
    }
    assert {(t["from"], t["to"]): t["count"] for t in body["transitions"]} == want
    counts = [t["count"] for t in body["transitions"]]
    assert counts == sorted(counts, reverse=True)
    per_bucket = Counter[tuple[str, str]]()
    for bucket in body["buckets"]:
        per_bucket.update({(t["from"], t["to"]): t["count"] for t in bucket["transitions"]})
    assert dict(per_bucket) == want


def _check_friction(body: dict[str, Any], expected: Expected, total: Counter[str]) -> None:
    segment = body["window"]["segment"]
    touches: Counter[str] = Counter()
    for start in expected.starts("hour"):
        touches.update(expected.touches[("hour", start, segment)])
    exits = sum(n for k, n in total.items() if k.startswith("m|") and k.endswith(f"|{EXIT}"))
    progress = sum(total[k] for k in total if k.startswith("d|"))
    assert (body["exits"]["total"], body["progress"]) == (exits, progress)
    carts = body["carts"]
    assert (carts["at_checkout"], carts["earlier"]) == (total["a|checkout"], total["a|earlier"])
    assert carts["value_earlier"] == pytest.approx(total["v|earlier"] / 100)
    for outcome, part in (("x", body["exits"]), ("a", body["abandoned_carts"])):
        n = exits if outcome == "x" else total["a|checkout"] + total["a|earlier"]
        want = sorted(
            (
                -(count / n) / ((touches[f"p|{key[2:]}"] + 1) / (progress + 1)),
                -count, *key[2:].split("|", 2),
            )
            for key, count in touches.items()
            if key.startswith(f"{outcome}|")
        )[:20]  # fmt: skip
        got = [
            (-t["lift"], -t["count"], t["type"], t["channel"], t["target"])
            for t in part["touchpoints"]
        ]
        assert [g[1:] for g in got] == [w[1:] for w in want]
        assert [g[0] for g in got] == pytest.approx([w[0] for w in want])
    assert sum(b["exits"] for b in body["buckets"]) == exits


def _check_channels(body: dict[str, Any], total: Counter[str], stages: list[str]) -> None:
    assert [s["stage"] for s in body["stages"]] == stages
    for row in body["stages"]:
        stage = row["stage"]
        assert row["entered"] == total[f"e|{stage}"]
        last = {k.split("|")[2]: n for k, n in total.items() if k.startswith(f"c|{stage}|")}
        first = {k.split("|")[2]: n for k, n in total.items() if k.startswith(f"f|{stage}|")}
        assert (row["last_touch"], row["first_touch"]) == (last, first)
        assert sum(row["last_touch"].values()) == row["entered"]


def test_batches_keep_each_partitions_order() -> None:
    class R:
        def __init__(self, partition: int, offset: int) -> None:
            self.partition, self.offset = partition, offset

    records = [R(p, o) for p in range(3) for o in range(10)]
    batches = list(_batches(records, 4))
    assert len(batches) == 3
    for p in range(3):
        seen = [r.offset for b in batches for r in b if r.partition == p]
        assert seen == list(range(10))
