"""Consumer throughput: Kafka to committed Redis state, per `parcours consume` process.

Produces N ~300-byte events for C customers once, then alternates runs of
  - raw: an aiokafka group consumer that only reads (the ceiling for this machine),
  - parcours: one `parcours consume` process (fresh group, empty Redis key space), and
  - parcours without models: the same with `PARCOURS_MODELS_ENABLED=false` (no labels,
    scores or samples), to show what learning costs, and with `--unchunked` the same again
    with each batch folded whole before any of it is written (the reference for chunking),
measuring each from its first to its last committed offset, so the group join is excluded.
Prints the per-run rates, the medians and the parcours/raw ratio, and for each parcours run
where the CPU went in that window: microseconds of CPU per event in the consumer, in Redis
(its own INFO figures) and in the embedded broker, and the Redis commands (those the batch
scripts call included) that took the most of Redis's time.

    python -m bench.consumer_throughput --events 200000 --customers 100000 --runs 3 --unchunked
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import random
import signal
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from redis import Redis

from bench.environment import cpu_seconds, isolated_env, local_services

UNCHUNKED = 1_000_000
"""A chunk size no batch reaches: the whole batch is folded before anything is written."""

TYPES = ["product_view"] * 12 + ["page_view"] * 4 + ["add_to_cart"] * 2 + ["search", "purchase"]


def events(count: int, customers: int, seed: int = 1) -> list[tuple[bytes, bytes]]:
    """Contract events of about 300 bytes, keyed by customer."""
    rng = random.Random(seed)
    clock = datetime(2026, 11, 1, tzinfo=UTC)
    out = []
    for i in range(count):
        clock += timedelta(milliseconds=rng.randint(1, 50))
        customer = f"customer-{rng.randint(1, customers):06d}"
        kind = rng.choice(TYPES)
        product = f"sku-{rng.randint(1, 5000):05d}"
        event = {
            "event_id": f"{uuid.UUID(int=rng.getrandbits(128))}",
            "customer_id": customer,
            "type": kind,
            "channel": rng.choice(["web", "app", "email"]),
            "timestamp": clock.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
            "session_id": f"sess-{customer}-{i // 5000}",
            "properties": {
                "product_id": product,
                "category": f"electronics.cat{rng.randint(1, 40)}",
                "price": round(rng.uniform(5, 500), 2),
                "url": f"https://shop.example.com/p/{product}",
            },
        }
        out.append((customer.encode(), orjson.dumps(event)))
    return out


async def produce(
    bootstrap: str, topic: str, partitions: int, messages: list[tuple[bytes, bytes]]
) -> dict[int, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(topic, partitions, 1)])
    await admin.close()
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=20, max_batch_size=256_000
    )
    await producer.start()
    ends: dict[int, int] = {}
    try:
        for start in range(0, len(messages), 20_000):
            futures = [
                await producer.send(topic, value, key=key)
                for key, value in messages[start : start + 20_000]
            ]
            for meta in await asyncio.gather(*futures):
                ends[meta.partition] = max(ends.get(meta.partition, 0), meta.offset + 1)
    finally:
        await producer.stop()
    return ends


async def timed_until_committed(
    bootstrap: str,
    group: str,
    topic: str,
    partitions: int,
    total: int,
    *,
    ready: Callable[[], bool] | None = None,
    on_start: Callable[[int], object] | None = None,
) -> float:
    """Events per second between the first and the last commit the bench observes.

    One watcher client, reused: it reads the group's commits without joining the group and
    polls four times a second, so measuring steals little CPU from the consumer. With `ready`,
    the clock starts at the first poll that sees a commit once `ready()` holds (e.g. once
    every member of a group has its partitions); `on_start` is called when it starts, with the
    number of events committed by then.
    """
    watcher = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group)
    await watcher.start()
    tps = [TopicPartition(topic, p) for p in range(partitions)]
    first_at = first_done = None
    deadline = time.monotonic() + 900
    try:
        while time.monotonic() < deadline:
            done = sum([(await watcher.committed(tp)) or 0 for tp in tps])
            now = time.monotonic()
            if first_at is None and done > 0 and (ready is None or ready()):
                first_at, first_done = now, done
                if on_start is not None:
                    on_start(done)
            if done >= total:
                assert first_at is not None
                assert first_done is not None
                return (total - first_done) / (now - first_at) if now > first_at else float("nan")
            await asyncio.sleep(0.25)
    finally:
        await watcher.stop()
    raise TimeoutError("consumer did not finish")


async def raw_run(bootstrap: str, topic: str, partitions: int, total: int) -> float:
    group = f"raw-{uuid.uuid4().hex[:8]}"
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        session_timeout_ms=6000,
        heartbeat_interval_ms=500,
        max_poll_records=2000,
    )
    await consumer.start()
    try:
        seen = 0
        started = None
        while seen < total:
            batch = await consumer.getmany(timeout_ms=1000, max_records=2000)
            if batch and started is None:
                started = time.monotonic()
            seen += sum(len(records) for records in batch.values())
            if batch:
                await consumer.commit({tp: records[-1].offset + 1 for tp, records in batch.items()})
        assert started is not None
        return total / (time.monotonic() - started)
    finally:
        await consumer.stop()


def consume_env(
    bootstrap: str,
    redis_url: str,
    topic: str,
    tag: str,
    *,
    models: bool,
    chunk_records: int | None = None,
) -> dict[str, str]:
    """The environment of a `parcours consume` process in group `bench-<tag>`, writing under
    the Redis key prefix `bench-<tag>`. The short session timeout and heartbeat matter:
    the embedded broker holds a group join for about half the session timeout."""
    env = isolated_env(bootstrap, redis_url, f"bench-{tag}", events_topic=topic) | {
        "PARCOURS_KAFKA_SESSION_TIMEOUT_MS": "6000",
        "PARCOURS_KAFKA_HEARTBEAT_INTERVAL_MS": "500",
        "PARCOURS_MODELS_ENABLED": "true" if models else "false",
    }
    if chunk_records is not None:
        env["PARCOURS_CONSUMER_CHUNK_RECORDS"] = str(chunk_records)
    return env


@dataclass(frozen=True)
class CpuSnapshot:
    """CPU seconds so far of the consumer, Redis and the broker, and Redis's per-command
    microseconds (commands the scripts call are counted under their own names)."""

    consumer: float
    redis: float
    broker: float
    commands: dict[str, float]

    @classmethod
    def take(cls, consumer_pid: int, client: Redis, broker_pid: int | None) -> CpuSnapshot:
        cpu = client.info("cpu")
        stats = client.info("commandstats")
        return cls(
            cpu_seconds(consumer_pid),
            float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"]),
            cpu_seconds(broker_pid) if broker_pid else math.nan,
            {name.removeprefix("cmdstat_"): float(v["usec"]) for name, v in stats.items()},
        )


@dataclass(frozen=True)
class CpuSplit:
    """Microseconds of CPU per event over a measured window, by process."""

    consumer: float
    redis: float
    broker: float
    top_commands: list[tuple[str, float]]

    @classmethod
    def between(cls, a: CpuSnapshot, b: CpuSnapshot, events: int) -> CpuSplit:
        per = 1e6 / events
        commands = {
            name: (usec - a.commands.get(name, 0.0)) / events for name, usec in b.commands.items()
        }
        top = sorted(commands.items(), key=lambda kv: -kv[1])[:6]
        return cls(
            (b.consumer - a.consumer) * per,
            (b.redis - a.redis) * per,
            (b.broker - a.broker) * per,
            [(name, usec) for name, usec in top if usec > 0],
        )

    def __str__(self) -> str:
        commands = ", ".join(f"{name} {usec:.1f}" for name, usec in self.top_commands)
        return (
            f"CPU µs/event: consumer {self.consumer:.0f}, Redis {self.redis:.0f}, "
            f"broker {self.broker:.0f}; Redis µs/event by command: {commands}"
        )


async def parcours_run(
    bootstrap: str,
    redis_url: str,
    topic: str,
    partitions: int,
    total: int,
    *,
    models: bool,
    chunk_records: int | None = None,
    profile: str | None = None,
    broker_pid: int | None = None,
) -> tuple[float, CpuSplit]:
    tag = uuid.uuid4().hex[:8]
    group = f"bench-{tag}"
    env = consume_env(bootstrap, redis_url, topic, tag, models=models, chunk_records=chunk_records)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "service.cli", "consume", env=env
    )
    spy = None
    if profile:
        os.makedirs(profile, exist_ok=True)
        out = f"{profile}/consume-{'models' if models else 'state'}-{tag}.txt"
        spy = await asyncio.create_subprocess_exec(
            "py-spy",
            "record",
            "--format",
            "raw",
            "--rate",
            "200",
            "-o",
            out,
            "--pid",
            str(process.pid),
        )
    client = Redis.from_url(redis_url)
    starts: list[tuple[int, CpuSnapshot]] = []

    def started(done: int) -> None:
        starts.append((done, CpuSnapshot.take(process.pid, client, broker_pid)))

    try:
        rate = await timed_until_committed(
            bootstrap, group, topic, partitions, total, on_start=started
        )
        end = CpuSnapshot.take(process.pid, client, broker_pid)
        done, start = starts[0]
        return rate, CpuSplit.between(start, end, total - done)
    finally:
        client.close()
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            await asyncio.wait_for(spy.wait(), 60)
        process.terminate()
        await asyncio.wait_for(process.wait(), 30)


async def main(args: argparse.Namespace) -> None:
    with local_services() as services:
        bootstrap, redis_url = services.bootstrap, services.redis_url
        topic = f"bench-events-{uuid.uuid4().hex[:8]}"
        messages = events(args.events, args.customers)
        size = statistics.mean(len(v) for _, v in messages[:10_000])
        print(f"{args.events} events ({size:.0f} bytes mean) for {args.customers} customers")
        started = time.monotonic()
        await produce(bootstrap, topic, args.partitions, messages)
        print(f"produced in {time.monotonic() - started:.1f}s")
        variants: list[tuple[str, bool, int | None]] = [("parcours, models off", False, None)]
        if not args.state_only:
            variants.insert(0, ("parcours consume", True, None))
        if args.unchunked:  # the reference for chunking: each batch folded, then written
            variants.append(("parcours, models off, unchunked", False, UNCHUNKED))
        raw: list[float] = []
        rates: dict[str, list[float]] = {name: [] for name, _, _ in variants}
        for run in range(args.runs):
            raw.append(await raw_run(bootstrap, topic, args.partitions, args.events))
            for name, models, chunk_records in variants:
                rate, split = await parcours_run(
                    bootstrap,
                    redis_url,
                    topic,
                    args.partitions,
                    args.events,
                    models=models,
                    chunk_records=chunk_records,
                    profile=args.profile,
                    broker_pid=services.broker_pid,
                )
                rates[name].append(rate)
                print(f"  {name}: {rate:,.0f}/s; {split}")
            measured = ", ".join(f"{name} {rates[name][-1]:,.0f}/s" for name, _, _ in variants)
            print(f"run {run + 1}: raw aiokafka {raw[-1]:,.0f}/s, {measured}")
        reference = statistics.median(raw)
        for name, _, _ in variants:
            median = statistics.median(rates[name])
            print(
                f"median: {name} {median:,.0f} events/s, "
                f"ratio to raw aiokafka ({reference:,.0f}/s) {median / reference:.3f}"
            )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--partitions", type=int, default=12)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--unchunked",
        action="store_true",
        help="also run models off with each batch folded whole before it is written",
    )
    parser.add_argument(
        "--state-only",
        action="store_true",
        help="run only the variants with models off (journey state, catalog and analytics)",
    )
    parser.add_argument(
        "--profile", metavar="DIR", help="record each consumer with py-spy (raw stacks) into DIR"
    )
    asyncio.run(main(parser.parse_args()))
