"""Funnel queries over a month of hourly buckets, through the API, against a reference.

Fills the journey analytics with synthetic shoppers (`bench.shoppers`) spread over 30 days of
event time, through one real `parcours consume` (models off: the analytics do not need them),
then starts `parcours api` and asks, one request at a time:

- the funnel for the whole month by hour (`GET /v1/analytics/funnel?bucket=hour`, 720
  buckets),
- the funnel for its last day by hour (24 buckets),
- `GET /healthz`, the reference: what any request costs this client, server and machine;
- and, without the API, the month's read script alone (`AnalyticsStore.read` as the funnel
  route calls it), to tell Redis time from the API's.

Reports p50 and p99 per kind for each run, and the medians over runs.

    python -m bench.analytics_query --customers 30000 --requests 300 --runs 3
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta

import httpx

from bench.consumer_throughput import produce, timed_until_committed
from bench.environment import isolated_env, local_services
from bench.recommend_load import processes, wait_until_serving
from bench.shoppers import events
from models.journeymap import load_journey_map
from service.analytics import AnalyticsStore
from service.embedded import free_port
from service.store import connect_redis

END = datetime(2026, 11, 1, tzinfo=UTC)
MONTH = timedelta(days=30)
PARTITIONS = 12
SCRIPT = "month's read script alone (no API)"


def _iso(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


async def fill(env: dict[str, str], customers: int) -> int:
    """A month of shoppers through `parcours consume`; returns the events applied."""
    messages = events(customers, end=END, span=MONTH)
    bootstrap, topic = env["PARCOURS_KAFKA_BOOTSTRAP"], env["PARCOURS_KAFKA_EVENTS_TOPIC"]
    await produce(bootstrap, topic, PARTITIONS, messages)
    cli = [sys.executable, "-m", "service.cli"]
    started = time.monotonic()
    async with processes([*cli, "consume"], env=env):
        group = env["PARCOURS_KAFKA_CONSUMER_GROUP"]
        await timed_until_committed(bootstrap, group, topic, PARTITIONS, len(messages))
    print(f"{len(messages):,} events for {customers:,} customers over 30 days, "
          f"consumed in {time.monotonic() - started:.0f}s", flush=True)  # fmt: skip
    return len(messages)


async def latencies(
    client: httpx.AsyncClient, path: str, params: dict[str, str], n: int
) -> list[float]:
    """Seconds per request, one at a time, after 20 unmeasured ones."""
    found: list[float] = []
    for i in range(n + 20):
        started = time.perf_counter()
        response = await client.get(path, params=params)
        elapsed = time.perf_counter() - started
        if response.status_code != 200:
            raise RuntimeError(f"{path} {params}: {response.status_code} {response.text[:300]}")
        if i >= 20:
            found.append(elapsed)
    return found


def _p(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1] * 1000


async def script_latencies(redis_url: str, prefix: str, n: int) -> list[float]:
    """Seconds per funnel read of the month straight from Redis, after 20 unmeasured ones."""
    redis = connect_redis(redis_url, socket_timeout_s=10, max_connections=2)
    hour = 3_600_000
    first = int((END - MONTH).timestamp() * 1000)
    starts = list(range(first, int(END.timestamp() * 1000), hour))
    stages = load_journey_map("retail").stages
    store = AnalyticsStore(
        redis, prefix=prefix, hour_retention_ms=90 * 86_400_000,
        day_retention_ms=400 * 86_400_000, lateness_ms=0, abandon_after_ms=hour,
    )  # fmt: skip
    found: list[float] = []
    try:
        for i in range(n + 20):
            started = time.perf_counter()
            await store.read("retail", "hour", "all", starts, stages=stages,
                             fields=[f"e|{s}" for s in stages])  # fmt: skip
            if i >= 20:
                found.append(time.perf_counter() - started)
    finally:
        await redis.aclose()
    return found


async def measure(base: str, requests: int, runs: int, redis_url: str, prefix: str) -> None:
    month = {"bucket": "hour", "from": _iso(END - MONTH), "to": _iso(END)}
    day = {"bucket": "hour", "from": _iso(END - timedelta(days=1)), "to": _iso(END)}
    kinds = {
        "funnel, 30 days by hour": ("/v1/analytics/funnel", month),
        "funnel, 1 day by hour": ("/v1/analytics/funnel", day),
        "healthz (reference)": ("/healthz", {}),
    }
    async with httpx.AsyncClient(base_url=base, timeout=10) as client:
        answer = (await client.get("/v1/analytics/funnel", params=month)).json()
        stages = {s["stage"]: s["entered"] for s in answer.get("stages", [])}
        print(f"month's funnel: window {answer.get('window')}, entered per stage {stages}")
        results: dict[str, list[tuple[float, float]]] = {k: [] for k in kinds}
        for run in range(runs):
            for name, (path, params) in kinds.items():
                found = await latencies(client, path, params, requests)
                results[name].append((_p(found, 50), _p(found, 99)))
                print(f"run {run + 1}: {name}: p50 {results[name][-1][0]:.1f} ms, "
                      f"p99 {results[name][-1][1]:.1f} ms", flush=True)  # fmt: skip
            found = await script_latencies(redis_url, prefix, requests)
            results.setdefault(SCRIPT, []).append((_p(found, 50), _p(found, 99)))
            print(f"run {run + 1}: {SCRIPT}: p50 {results[SCRIPT][-1][0]:.1f} ms, "
                  f"p99 {results[SCRIPT][-1][1]:.1f} ms", flush=True)  # fmt: skip
    reference = statistics.median(p99 for _, p99 in results["healthz (reference)"])
    for name, rows in results.items():
        p50 = statistics.median(r[0] for r in rows)
        p99 = statistics.median(r[1] for r in rows)
        print(f"median: {name}: p50 {p50:.1f} ms, p99 {p99:.1f} ms "
              f"({p99 / reference:.1f}x the reference's p99)")  # fmt: skip


async def main(args: argparse.Namespace) -> None:
    with local_services() as services:
        bootstrap, redis_url = services.bootstrap, services.redis_url
        port = free_port()
        env = isolated_env(bootstrap, redis_url, f"funnel-{uuid.uuid4().hex[:8]}") | {
            "PARCOURS_MODELS_ENABLED": "false",
            "PARCOURS_KAFKA_PARTITIONS": str(PARTITIONS),
            "PARCOURS_KAFKA_SESSION_TIMEOUT_MS": "6000",
            "PARCOURS_KAFKA_HEARTBEAT_INTERVAL_MS": "500",
            "PARCOURS_API_PORT": str(port),
        }
        await fill(env, args.customers)
        cli = [sys.executable, "-m", "service.cli"]
        async with processes([*cli, "api"], env=env):
            base = f"http://127.0.0.1:{port}"
            await wait_until_serving(f"{base}/healthz")
            prefix = env["PARCOURS_REDIS_KEY_PREFIX"]
            await measure(base, args.requests, args.runs, redis_url, prefix)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--customers", type=int, default=30_000)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--runs", type=int, default=3)
    asyncio.run(main(parser.parse_args()))
