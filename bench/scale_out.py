"""Scale-out: 1, 2 and 4 `parcours consume` processes in one group on an 8-partition topic.

Produces N ~300-byte contract events for C customers (bench.consumer_throughput's stream) to
an 8-partition topic once. Then, in each run, for each process count k: starts k real
`parcours consume` processes in a fresh consumer group writing under a fresh Redis key
prefix, and times them from the first committed offset seen once every process holds its
share of the partitions (so the group join, and the rebalances while the k processes join,
are excluded) to the last offset committed. Per run it prints total and per-process events/s,
the CPU seconds each consumer, the broker and Redis used in that window (from /proc) and how
busy the machine's cores were, which tells whether CPU is what limits the scaling. Then the
medians per k, and Redis memory per customer: the run's `used_memory` growth divided by the
customers, and `MEMORY USAGE` of sampled journey and label-book keys. A last phase does the
same memory measurement, with one process, for fewer customers with many events each.

    python -m bench.scale_out --events 200000 --customers 100000 --runs 3
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from redis.asyncio import Redis

from bench.consumer_throughput import consume_env, events, produce, timed_until_committed
from bench.environment import cpu_seconds, local_services, machine_ticks

PARTITIONS = 8


class Member:
    """One `parcours consume` process, logging to a file that says which partitions it holds."""

    def __init__(self, process: asyncio.subprocess.Process, log: Path, topic: str) -> None:
        self.process = process
        self.log = log
        self._partition = re.compile(re.escape(topic) + r"\[(\d+)\]")

    @classmethod
    async def start(cls, env: dict[str, str], log: Path, topic: str) -> Member:
        with log.open("wb") as out:
            process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "service.cli", "consume", env=env, stdout=out, stderr=out
            )
        return cls(process, log, topic)

    def partitions(self) -> frozenset[int] | None:
        """What the last rebalance gave it; None before that and between revoke and assign."""
        held = None
        for line in self.log.read_text(errors="replace").splitlines():
            if "partitions revoked:" in line:
                held = None
            elif "partitions assigned:" in line:
                held = frozenset(int(p) for p in self._partition.findall(line))
        return held

    async def stop(self) -> None:
        if self.process.returncode is None:
            self.process.terminate()
            try:
                await asyncio.wait_for(self.process.wait(), 30)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()


def settled(members: list[Member]) -> bool:
    """Every member holds partitions, and together they hold each partition once."""
    for member in members:
        if member.process.returncode is not None:
            log = member.log.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"a consumer exited with {member.process.returncode}:\n{log}")
    held = [m.partitions() for m in members]
    if not all(held):
        return False
    together = [p for h in held if h for p in h]
    return sorted(together) == list(range(PARTITIONS))


@dataclass(frozen=True)
class Snapshot:
    at: float
    consumers: list[float]
    servers: float
    machine: tuple[int, int]

    @classmethod
    def take(cls, members: list[Member], servers: list[int]) -> Snapshot:
        return cls(
            time.monotonic(),
            [cpu_seconds(m.process.pid) for m in members],
            sum(cpu_seconds(pid) for pid in servers),
            machine_ticks(),
        )


@dataclass(frozen=True)
class Run:
    processes: int
    rate: float
    start: Snapshot
    end: Snapshot

    @property
    def window_s(self) -> float:
        return self.end.at - self.start.at

    @property
    def consumer_cpu(self) -> list[float]:
        return [b - a for a, b in zip(self.start.consumers, self.end.consumers, strict=True)]

    @property
    def busy(self) -> float:
        (busy_a, all_a), (busy_b, all_b) = self.start.machine, self.end.machine
        return (busy_b - busy_a) / max(all_b - all_a, 1)


@dataclass(frozen=True)
class Memory:
    """Redis memory a run left behind: all of it, the catalog's and the analytics' shares,
    the journey gauges', and per key."""

    customers: int
    used: int
    catalog: int
    analytics: int
    gauges: int
    journey: float
    book: float
    books: int

    @property
    def per_customer(self) -> float:
        """The growth of used_memory less the catalog (sized by products, not customers) and
        the analytics (sized by time buckets and touchpoints)."""
        return (self.used - self.catalog - self.analytics) / self.customers

    def describe(self, events: int) -> str:
        return (
            f"{self.per_customer:,.0f} bytes per customer at {events / self.customers:.1f} "
            f"events each (used_memory +{self.used / 2**20:,.1f} MiB, of which the catalog "
            f"{self.catalog / 2**20:,.1f} MiB and the analytics "
            f"{self.analytics / 2**20:,.1f} MiB, for {self.customers:,} customers); per key: "
            f"journey {self.journey:,.0f} bytes, label book {self.book:,.0f} bytes "
            f"({self.books:,} customers have one); journey gauges "
            f"{self.gauges / self.customers:,.0f} bytes per customer"
        )


@dataclass(frozen=True)
class Setup:
    bootstrap: str
    redis_url: str
    redis: Redis
    servers: list[int]
    models: bool
    logs: Path


async def measure_memory(redis: Redis, prefix: str, used_before: int, customers: int) -> Memory:
    used = int((await redis.info("memory"))["used_memory"]) - used_before
    journeys = [k async for k in redis.scan_iter(match=f"{prefix}:{{j*}}:journey:*", count=1000)]
    books = [k async for k in redis.scan_iter(match=f"{prefix}:{{j*}}:labels:*", count=1000)]
    catalog = [k async for k in redis.scan_iter(match=f"{prefix}:{{catalog}}:*", count=1000)]
    analytics = [k async for k in redis.scan_iter(match=f"{prefix}:{{analytics}}:*", count=1000)]
    gauges = [k async for k in redis.scan_iter(match=f"{prefix}:{{j*}}:g:*", count=1000)]
    return Memory(
        customers,
        used,
        int(sum(await _usage(redis, catalog))),
        int(sum(await _usage(redis, analytics))),
        int(sum(await _usage(redis, gauges))),
        statistics.mean(await _usage(redis, journeys, sample=1000) or [0]),
        statistics.mean(await _usage(redis, books, sample=1000) or [0]),
        len(books),
    )


async def _usage(redis: Redis, keys: list[bytes], sample: int | None = None) -> list[int]:
    """MEMORY USAGE of every key, or of about `sample` of them spread over the list."""
    step = max(len(keys) // sample, 1) if sample else 1
    async with redis.pipeline(transaction=False) as pipe:
        for key in keys[::step]:
            pipe.memory_usage(key, samples=0)
        return [int(size or 0) for size in await pipe.execute()]


async def _delete_prefix(redis: Redis, prefix: str) -> None:
    """DEL (not UNLINK), so the memory is back before the next run measures its growth."""
    keys = [k async for k in redis.scan_iter(match=f"{prefix}:*", count=1000)]
    for start in range(0, len(keys), 1000):
        await redis.delete(*keys[start : start + 1000])


async def run_group(
    setup: Setup, topic: str, processes: int, total: int, customers: int
) -> tuple[Run, Memory]:
    """k consumers in a fresh group, from an empty key space to every offset committed."""
    tag = uuid.uuid4().hex[:8]
    env = consume_env(setup.bootstrap, setup.redis_url, topic, tag, models=setup.models)
    env |= _side_topics(topic) | {"PARCOURS_LOG_LEVEL": "INFO"}
    used_before = int((await setup.redis.info("memory"))["used_memory"])
    members = [
        await Member.start(env, setup.logs / f"{tag}-{i}.log", topic) for i in range(processes)
    ]
    marks: list[Snapshot] = []
    try:
        rate = await timed_until_committed(
            setup.bootstrap, f"bench-{tag}", topic, PARTITIONS, total,
            ready=lambda: settled(members),
            on_start=lambda _done: marks.append(Snapshot.take(members, setup.servers)),
        )  # fmt: skip
        end = Snapshot.take(members, setup.servers)
    finally:
        for member in members:
            await member.stop()
    memory = await measure_memory(setup.redis, f"bench-{tag}", used_before, customers)
    await _delete_prefix(setup.redis, f"bench-{tag}")
    return Run(processes, rate, marks[0], end), memory


def _side_topics(topic: str) -> dict[str, str]:
    """One dead-letter, triggers and samples topic per events topic, made before any consumer
    starts, so k processes starting at once do not race to create them."""
    return {
        "PARCOURS_KAFKA_DEAD_LETTER_TOPIC": f"{topic}.dlq",
        "PARCOURS_TRIGGERS_TOPIC": f"{topic}.triggers",
        "PARCOURS_WEBHOOKS_DEAD_LETTER_TOPIC": f"{topic}.triggers.dlq",
        "PARCOURS_MODELS_SAMPLES_TOPIC": f"{topic}.samples",
    }


async def publish(bootstrap: str, topic: str, messages: list[tuple[bytes, bytes]]) -> None:
    """The events, to an 8-partition topic, and the topics the consumers write to."""
    await produce(bootstrap, topic, PARTITIONS, messages)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        names = _side_topics(topic)
        samples = names.pop("PARCOURS_MODELS_SAMPLES_TOPIC")
        await admin.create_topics(
            [NewTopic(name, PARTITIONS, 1) for name in names.values()]
            + [NewTopic(name, 1, 1) for name in (samples, f"{samples}.dlq")]
        )
    finally:
        await admin.close()


def report(runs: list[Run]) -> None:
    """Every run as a Markdown table row, the medians per process count, and the speed-up."""
    print(
        "| processes | run | total events/s | per process events/s | window (s) "
        "| CPU s per consumer | broker + Redis CPU s | machine busy |"
    )
    print("|---|---|---|---|---|---|---|---|")
    medians: dict[int, float] = {}
    for k in sorted({r.processes for r in runs}):
        group = [r for r in runs if r.processes == k]
        for number, run in enumerate(group, 1):
            consumers = ", ".join(f"{c:.1f}" for c in run.consumer_cpu)
            servers = run.end.servers - run.start.servers
            print(
                f"| {k} | {number} | {run.rate:,.0f} | {run.rate / k:,.0f} | {run.window_s:.1f} "
                f"| {consumers} | {servers:.1f} | {run.busy:.0%} |"
            )
        medians[k] = statistics.median(r.rate for r in group)
        print(f"| {k} | **median** | **{medians[k]:,.0f}** | **{medians[k] / k:,.0f}** |||||")
    if 1 in medians:
        print(
            "speed-up over one process: "
            + ", ".join(f"{k}: {m / medians[1]:.2f}x" for k, m in medians.items())
        )


def describe(number: int, run: Run, memory: Memory) -> str:
    consumers = ", ".join(f"{c:.1f}" for c in run.consumer_cpu)
    return (
        f"run {number}, {run.processes} process{'es' if run.processes > 1 else ''}: "
        f"{run.rate:,.0f} events/s, "
        f"{run.rate / run.processes:,.0f} per process; CPU s in the {run.window_s:.1f}s "
        f"window: consumers {consumers}, broker + Redis "
        f"{run.end.servers - run.start.servers:.1f}; machine {run.busy:.0%} busy; "
        f"Redis {memory.per_customer:,.0f} bytes per customer"
    )


def _stream(count: int, customers: int, seed: int) -> tuple[list[tuple[bytes, bytes]], int]:
    messages = events(count, customers, seed)
    return messages, len({key for key, _ in messages})


async def scaling(setup: Setup, args: argparse.Namespace) -> None:
    topic = f"scale-{uuid.uuid4().hex[:8]}"
    messages, customers = _stream(args.events, args.customers, seed=1)
    size = statistics.mean(len(v) for _, v in messages[:10_000])
    print(
        f"{len(messages):,} events ({size:.0f} bytes mean) for {customers:,} customers, "
        f"{PARTITIONS} partitions, models {'on' if setup.models else 'off'}; "
        f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} before producing"
    )
    await publish(setup.bootstrap, topic, messages)
    runs, memories = [], []
    for number in range(1, args.runs + 1):
        for k in args.processes:
            run, memory = await run_group(setup, topic, k, len(messages), customers)
            runs.append(run)
            memories.append(memory)
            print(describe(number, run, memory), flush=True)
    report(runs)
    memories.sort(key=lambda m: m.per_customer)
    print("Redis, median run: " + memories[len(memories) // 2].describe(len(messages)))


async def heavy(setup: Setup, args: argparse.Namespace) -> None:
    """Memory for customers past the history and dedup limits: one process, one run."""
    topic = f"scale-heavy-{uuid.uuid4().hex[:8]}"
    messages, customers = _stream(args.heavy_events, args.heavy_customers, seed=2)
    await publish(setup.bootstrap, topic, messages)
    _, memory = await run_group(setup, topic, 1, len(messages), customers)
    print("Redis, heavy customers: " + memory.describe(len(messages)))


async def main(args: argparse.Namespace) -> None:
    with local_services() as services:
        setup = Setup(
            bootstrap=services.bootstrap,
            redis_url=services.redis_url,
            redis=Redis.from_url(services.redis_url),
            servers=services.pids,
            models=args.models,
            logs=Path(tempfile.mkdtemp(prefix="parcours-scale-out-")),
        )
        try:
            await scaling(setup, args)
            if args.heavy_events:
                await heavy(setup, args)
        finally:
            await setup.redis.aclose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument(
        "--models",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="labels, scores and samples, as in production (default: on)",
    )
    parser.add_argument(
        "--heavy-events",
        type=int,
        default=60_000,
        help="events of the memory phase for heavy customers (0: skip it)",
    )
    parser.add_argument("--heavy-customers", type=int, default=200)
    asyncio.run(main(parser.parse_args()))
