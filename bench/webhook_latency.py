"""Webhook delivery latency: from the event that causes a trigger to the receiver getting it.

Starts the embedded Tansu broker and a redis-server on free ports, a fast loopback receiver
(`bench.webhook_receiver`: answers 204, reports each request's receive time), a subscription
to `journey.stage_changed` in the `SubscriptionStore`, and the real roles as processes:
`parcours consume` (the state consumer, which emits triggers) and `parcours dispatch`. Each
run then paces two phases at `--rate` triggers/s, alternating which goes first:

  - pipeline: per new customer a product view, then `--gap` seconds later an add_to_cart,
    which moves the customer to `decision` and so emits one `journey.stage_changed` (two
    events per trigger). Latency is the receiver's clock minus the add_to_cart's send time
    (the trigger names its causing event's id).
  - direct (reference): the same triggers produced straight to the triggers topic, so only
    the dispatcher works; latency is from that send.

Every run starts its own broker and Redis (`PARCOURS_KAFKA_BOOTSTRAP` / `PARCOURS_REDIS_URL`
when set, with fresh topics), receiver and roles, warms both phases up, then measures them. A
fresh broker per run because the embedded Tansu broker's memory storage costs more CPU per
fetch the more a partition holds (`bench.broker_growth` measures it): on one broker kept for
several runs, later runs measured the broker filling up, not Parcours. The first `--warmup`
seconds of each phase are not measured. A tap on the triggers topic
splits pipeline latency at the trigger record's timestamp (set when the consumer publishes
it): consumer part and dispatcher part. Prints per run and as medians of the runs: offered
and achieved triggers/s, deliveries/s, p50/p95/p99/max latency, triggers not delivered
(counted as infinitely late), and the cores the broker and each role used over the phase.

    python -m bench.webhook_latency --rate 500 --duration 30 --runs 3

PARCOURS_* variables in the environment reach both roles (e.g. PARCOURS_KAFKA_FETCH_MAX_WAIT_MS).
`--profile PREFIX` (needs `pip install py-spy`) then records both roles during one more
pipeline phase, to PREFIX-consume.txt and PREFIX-dispatch.txt.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import shutil
import signal
import statistics
import sys
import time
import urllib.request
import uuid
import zlib
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Final, NamedTuple

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from prometheus_client.parser import text_string_to_metric_families

from bench.environment import cpu_seconds, isolated_env, local_services
from bench.recommend_load import processes, wait_until_serving
from models.triggers import Trigger
from models.webhooks import Subscription
from service.embedded import die_with_parent, free_port
from service.store import connect_redis
from service.subscriptions import SubscriptionStore

STAGE_CHANGED: Final = "journey.stage_changed"
CLI = (sys.executable, "-m", "service.cli")
PHASES = ("pipeline", "direct")


class Result(NamedTuple):
    """One measured phase: rates per second, latencies in ms, triggers never delivered, and
    the cores used by the broker (embedded only) and each role over the whole phase."""

    offered: float
    triggers: float
    deliveries: float
    p50: float
    p95: float
    p99: float
    max: float
    missing: int
    parked: float
    consumer_p50: float = math.nan
    consumer_p99: float = math.nan
    dispatch_p50: float = math.nan
    dispatch_p99: float = math.nan
    broker_cpu: float = math.nan
    consume_cpu: float = math.nan
    dispatch_cpu: float = math.nan


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (no interpolation): a value that was actually observed."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


class Receiver:
    """The receiver process's reports: first receive time per causing event, every request."""

    def __init__(self) -> None:
        self.first: dict[str, float] = {}
        self.times: list[float] = []
        self.duplicates = 0
        self._process: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> str:
        self._process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bench.webhook_receiver", stdout=asyncio.subprocess.PIPE,
            preexec_fn=die_with_parent(signal.SIGKILL),
        )  # fmt: skip
        assert self._process.stdout is not None
        port = (await self._process.stdout.readline()).split()[1].decode()
        self._reader = asyncio.create_task(self._read(self._process.stdout))
        return f"http://127.0.0.1:{port}/hook"

    async def stop(self) -> None:
        if self._process is not None and self._process.returncode is None:
            self._process.terminate()
            try:
                await asyncio.wait_for(self._process.wait(), 5)
            except TimeoutError:
                self._process.kill()
                await self._process.wait()
        if self._reader is not None:
            await self._reader

    async def _read(self, stream: asyncio.StreamReader) -> None:
        while line := await stream.readline():
            at, _trigger, _kind, event_id = line.decode().rstrip("\n").split("\t")
            self.times.append(float(at))
            if event_id in self.first:
                self.duplicates += 1
            else:
                self.first[event_id] = float(at)


class TriggerTap:
    """Reads the triggers topic outside any group: when each trigger record was created."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.created: dict[str, float] = {}
        self.by_type: dict[str, int] = {}
        self._consumer = AIOKafkaConsumer(
            topic, bootstrap_servers=bootstrap, enable_auto_commit=False,
            auto_offset_reset="latest",
        )  # fmt: skip
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._consumer.start()
        self._task = asyncio.create_task(self._read())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._consumer.stop()

    async def _read(self) -> None:
        while True:
            batch = await self._consumer.getmany(timeout_ms=500)
            for record in (r for records in batch.values() for r in records):
                trigger = orjson.loads(record.value)
                kind = trigger["type"]
                self.by_type[kind] = self.by_type.get(kind, 0) + 1
                if kind == STAGE_CHANGED:
                    self.created[trigger["payload"]["event"]["event_id"]] = record.timestamp / 1000


class Feed:
    """Paced producers of the two phases; `sent` is each causing event's send time."""

    def __init__(self, producer: AIOKafkaProducer, events_topic: str, triggers_topic: str) -> None:
        self.sent: dict[str, float] = {}
        self._producer = producer
        self._events = events_topic
        self._triggers = triggers_topic

    async def pipeline(self, prefix: str, count: int, rate: float, gap_s: float) -> list[str]:
        """A view per customer, then its add_to_cart `gap_s` later; returns the carts' ids."""
        lag = round(gap_s * rate)
        carts = [f"{prefix}-{n}-cart" for n in range(count)]

        async def slot(i: int) -> None:
            if i < count:
                await self._event(f"{prefix}-{i}", f"{prefix}-{i}-view", "product_view")
            if i >= lag:
                await self._event(f"{prefix}-{i - lag}", carts[i - lag], "add_to_cart")

        await pace(count + lag, rate, slot)
        return carts

    async def direct(self, prefix: str, count: int, rate: float) -> list[str]:
        """Stage-change triggers straight to the triggers topic; returns their causes' ids."""
        causes = [f"{prefix}-{n}-cart" for n in range(count)]

        async def slot(i: int) -> None:
            customer, now = f"{prefix}-{i}", time.time()
            cause = {"event_id": causes[i], "type": "add_to_cart", "channel": "web"}
            payload = {"stage": "decision", "from": "consideration", "to": "decision",
                       "event": cause}  # fmt: skip
            trigger = Trigger(f"{STAGE_CHANGED}:{customer}:{causes[i]}", STAGE_CHANGED,
                              customer, "retail", int(now * 1000), payload)  # fmt: skip
            self.sent[causes[i]] = time.time()
            await self._producer.send(self._triggers, trigger.to_json(), key=customer.encode())

        await pace(count, rate, slot)
        return causes

    async def _event(self, customer: str, event_id: str, kind: str) -> None:
        now = datetime.now(UTC)
        event = {
            "event_id": event_id,
            "customer_id": customer,
            "type": kind,
            "channel": "web",
            "timestamp": now.isoformat(timespec="milliseconds"),
            "session_id": f"s-{customer}",
            "properties": {"product_id": f"sku-{zlib.crc32(customer.encode()) % 5000:04d}",
                           "category": "electronics.audio", "price": 49.9, "quantity": 1},
        }  # fmt: skip
        self.sent[event_id] = time.time()
        await self._producer.send(self._events, orjson.dumps(event), key=customer.encode())


async def pace(slots: int, rate: float, send: Callable[[int], Awaitable[None]]) -> None:
    """Call `send(i)` for i in 0..slots-1 at start + i/rate, catching up if a tick runs late."""
    started, done = time.monotonic(), 0
    while done < slots:
        due = min(slots, int((time.monotonic() - started) * rate) + 1)
        for i in range(done, due):
            await send(i)
        done = due
        await asyncio.sleep(max(0.0, started + done / rate - time.monotonic()))


def environment(bootstrap: str, redis_url: str, tag: str) -> dict[str, str]:
    """Both roles' settings: fresh topics, groups and key prefix, loopback targets allowed."""
    return isolated_env(bootstrap, redis_url, f"wh-{tag}") | {
        "PARCOURS_KAFKA_SESSION_TIMEOUT_MS": "6000",
        "PARCOURS_KAFKA_HEARTBEAT_INTERVAL_MS": "500",
        "PARCOURS_TRIGGERS_TOPIC": f"wh-triggers-{tag}",
        "PARCOURS_WEBHOOKS_DEAD_LETTER_TOPIC": f"wh-triggers-{tag}.dlq",
        "PARCOURS_WEBHOOKS_DISPATCHER_GROUP": f"wh-dispatch-{tag}",
        # The receiver is on loopback over http: development settings, never production.
        "PARCOURS_WEBHOOKS_ALLOW_HTTP": "true",
        "PARCOURS_WEBHOOKS_ALLOW_PRIVATE_TARGETS": "true",
        "PARCOURS_WEBHOOKS_METRICS_PORT": str(free_port()),
    }


async def parked_total(metrics_url: str) -> float:
    """Deliveries the dispatcher has parked in Redis so far (any reason), from its metrics."""
    text = (await asyncio.to_thread(_fetch, metrics_url)).decode()
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "parcours_webhook_parked"
        for sample in family.samples
        if sample.name == "parcours_webhook_parked_total"
    )


def _fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=5) as response:
        body: bytes = response.read()
        return body


async def subscribe(redis_url: str, prefix: str, url: str) -> None:
    redis = connect_redis(redis_url, socket_timeout_s=2.0, max_connections=1)
    try:
        sub = Subscription("wh-bench", url, frozenset({STAGE_CHANGED}), "bench-secret-0123456789",
                           created_at=int(time.time() * 1000))  # fmt: skip
        await SubscriptionStore(redis, prefix=prefix).create(sub)
    finally:
        await redis.aclose()


class Bench:
    """The running system and the measurements taken from it."""

    def __init__(
        self,
        args: argparse.Namespace,
        feed: Feed,
        receiver: Receiver,
        tap: TriggerTap,
        metrics: str,
    ) -> None:
        self.cpu_of: dict[str, int] = {}  # broker and roles, by name, once they run
        self.args = args
        self.metrics = metrics
        self.feed = feed
        self.receiver = receiver
        self.tap = tap
        self._phases = 0

    async def phase(self, name: str, seconds: float) -> Result:
        """Feed one phase, wait for its deliveries, measure all but the warm-up."""
        args = self.args
        self._phases += 1
        prefix, count = f"c{self._phases}", round((args.warmup + seconds) * args.rate)
        parked = await parked_total(self.metrics)
        started, cpu = time.monotonic(), self._cpu()
        if name == "pipeline":
            causes = await self.feed.pipeline(prefix, count, args.rate, args.gap)
        else:
            causes = await self.feed.direct(prefix, count, args.rate)
        await self._drain(causes)
        cores = {n: (s - cpu[n]) / (time.monotonic() - started) for n, s in self._cpu().items()}
        measured = causes[round(args.warmup * args.rate) :]
        result = self.measure(measured, pipeline=name == "pipeline")
        return result._replace(
            parked=await parked_total(self.metrics) - parked,
            broker_cpu=cores.get("broker", math.nan),
            consume_cpu=cores.get("consume", math.nan),
            dispatch_cpu=cores.get("dispatch", math.nan),
        )

    def _cpu(self) -> dict[str, float]:
        return {name: cpu_seconds(pid) for name, pid in self.cpu_of.items()}

    async def _drain(self, causes: list[str], quiet_s: float = 10.0) -> None:
        """Until every cause was delivered, or nothing more arrived for `quiet_s`."""
        seen, since = -1, time.monotonic()
        while time.monotonic() - since < quiet_s:
            arrived = sum(1 for c in causes if c in self.receiver.first)
            if arrived == len(causes):
                return
            if arrived != seen:
                seen, since = arrived, time.monotonic()
            await asyncio.sleep(0.2)

    def measure(self, causes: list[str], *, pipeline: bool) -> Result:
        sent, first, created = self.feed.sent, self.receiver.first, self.tap.created
        start, end = sent[causes[0]], sent[causes[-1]]
        window = end - start
        latencies = [(first[c] - sent[c]) * 1000 if c in first else math.inf for c in causes]
        made = sum(1 for at in created.values() if start <= at <= end)
        delivered = sum(1 for at in self.receiver.times if start <= at <= end)
        consumer, dispatch = [], []
        if pipeline:
            timed = [c for c in causes if c in created and c in first]
            consumer = [(created[c] - sent[c]) * 1000 for c in timed]
            dispatch = [(first[c] - created[c]) * 1000 for c in timed]
        return Result(
            len(causes) / window, made / window, delivered / window,
            percentile(latencies, 50), percentile(latencies, 95), percentile(latencies, 99),
            max(latencies), sum(1 for c in causes if c not in first), 0,
            percentile(consumer, 50), percentile(consumer, 99),
            percentile(dispatch, 50), percentile(dispatch, 99),
        )  # fmt: skip


async def measure(bench: Bench, run: int, results: dict[str, list[Result]]) -> None:
    """One run's two phases, in alternating order from run to run."""
    for name in PHASES if run % 2 == 0 else tuple(reversed(PHASES)):
        result = await bench.phase(name, bench.args.duration)
        results[name].append(result)
        print(f"run {run + 1} | {name:<8} | {_cells(result)}", flush=True)
        await asyncio.sleep(bench.args.pause)


def report(results: dict[str, list[Result]], args: argparse.Namespace) -> None:
    print(f"\nmedians of {args.runs} runs at {args.rate}/s offered, {args.duration:g}s each")
    print("| phase | offered/s | triggers/s | deliveries/s | p50 ms | p95 ms | p99 ms | max ms "
          "| not delivered | parked | consumer p50/p99 ms | dispatcher p50/p99 ms "
          "| cores: broker / consume / dispatch |")  # fmt: skip
    for name, runs in results.items():
        median = Result(*(statistics.median(v) for v in zip(*runs, strict=True)))
        print(f"| {name} | {_cells(median)} |")


def _cells(r: Result) -> str:
    split = " | |"
    if not math.isnan(r.consumer_p50):
        split = (f" | {r.consumer_p50:.0f} / {r.consumer_p99:.0f}"
                 f" | {r.dispatch_p50:.0f} / {r.dispatch_p99:.0f}")  # fmt: skip
    split += f" | {r.broker_cpu:.2f} / {r.consume_cpu:.2f} / {r.dispatch_cpu:.2f}"
    return (f"{r.offered:.0f} | {r.triggers:.0f} | {r.deliveries:.0f} | {r.p50:.1f} | "
            f"{r.p95:.1f} | {r.p99:.1f} | {r.max:.0f} | {r.missing} | {r.parked:.0f}"
            f"{split}")  # fmt: skip


async def profile(bench: Bench, pids: list[int], prefix: str) -> None:
    """py-spy samples of both roles during one more pipeline phase, after the timed runs."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    seconds = str(round(bench.args.duration))
    samplers = []
    for role, pid in zip(("consume", "dispatch"), pids, strict=True):
        command = [spy, "record", "--native", "-r", "100", "-d", seconds, "-f", "raw",
                   "-o", f"{prefix}-{role}.txt", "-p", str(pid)]  # fmt: skip
        samplers.append(await asyncio.create_subprocess_exec(*command))
    print(f"profiling: {_cells(await bench.phase('pipeline', bench.args.duration))}")
    for sampler in samplers:
        await sampler.wait()


async def main(args: argparse.Namespace) -> None:
    """Every run on its own broker and Redis (see the module docstring), then the medians."""
    results: dict[str, list[Result]] = {name: [] for name in PHASES}
    for run in range(args.runs):
        last = run == args.runs - 1
        await one_run(args, run, results, profile_prefix=args.profile if last else None)
    report(results, args)


async def one_run(
    args: argparse.Namespace,
    run: int,
    results: dict[str, list[Result]],
    *,
    profile_prefix: str | None,
) -> None:
    with local_services() as services:
        env = environment(services.bootstrap, services.redis_url, uuid.uuid4().hex[:8])
        created = await asyncio.create_subprocess_exec(*CLI, "topics", env=env)
        await created.wait()
        triggers_topic = env["PARCOURS_TRIGGERS_TOPIC"]
        receiver, tap = Receiver(), TriggerTap(services.bootstrap, triggers_topic)
        producer = AIOKafkaProducer(bootstrap_servers=services.bootstrap, acks="all", linger_ms=5)
        try:
            await subscribe(services.redis_url, env["PARCOURS_REDIS_KEY_PREFIX"],
                            await receiver.start())  # fmt: skip
            await tap.start()
            await producer.start()
            feed = Feed(producer, env["PARCOURS_KAFKA_EVENTS_TOPIC"], triggers_topic)
            metrics = f"http://127.0.0.1:{env['PARCOURS_WEBHOOKS_METRICS_PORT']}/metrics"
            bench = Bench(args, feed, receiver, tap, metrics)
            async with processes([*CLI, "consume"], [*CLI, "dispatch"], env=env) as pids:
                bench.cpu_of = dict(zip(("consume", "dispatch"), pids, strict=True))
                if services.broker_pid:
                    bench.cpu_of["broker"] = services.broker_pid
                await wait_until_serving(bench.metrics)
                for name in PHASES:  # both groups join and every path is warm before timing
                    warm = await bench.phase(name, args.warmup)
                    print(f"run {run + 1} warm-up {name}: {_cells(warm)}", flush=True)
                await measure(bench, run, results)
                print(f"run {run + 1}: trigger records by type {tap.by_type}; "
                      f"duplicate deliveries: {receiver.duplicates}", flush=True)  # fmt: skip
                if profile_prefix:
                    await profile(bench, pids, profile_prefix)
        finally:
            await producer.stop()
            await tap.stop()
            await receiver.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rate", type=float, default=500, help="triggers/s offered")
    parser.add_argument("--duration", type=float, default=30, help="measured seconds per phase")
    parser.add_argument("--warmup", type=float, default=5, help="unmeasured seconds before")
    parser.add_argument("--gap", type=float, default=0.5, help="s from a view to its cart")
    parser.add_argument("--pause", type=float, default=2, help="s of quiet between phases")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--profile", help="then write py-spy profiles (raw) to PREFIX-<role>.txt")
    asyncio.run(main(parser.parse_args()))
