"""The embedded broker's cost as a topic fills: CPU per round at a steady produce rate.

Starts the embedded Tansu broker (memory storage) with one 12-partition topic and produces
~300-byte records at `--rate` per second for `--rounds` rounds of `--seconds` each. In every
round one group consumer (fetch wait 100 ms, the roles' default) reads everything produced and
commits, as the Parcours roles do, and measures each record's produce-to-consume latency.
Prints per round the broker's cores (CPU seconds over wall seconds, from /proc) and the
latency p50/p99; then the same rounds on a fresh broker with no consumer (the reference:
producing alone).

On a broker whose cost per fetch does not depend on what a partition already holds, every
round costs the same. The webhook latency benchmark starts a fresh broker per run because of
what this one shows.

    python -m bench.broker_growth --rate 500 --seconds 15 --rounds 6
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import NamedTuple

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from bench.environment import cpu_seconds
from bench.webhook_latency import percentile
from service.embedded import EmbeddedKafka

TOPIC = "growth"
PARTITIONS = 12
VALUE = b"x" * 300


class Round(NamedTuple):
    """One round: records stored before it, broker cores, latency percentiles in ms."""

    stored: int
    broker_cores: float
    p50_ms: float
    p99_ms: float


async def read(consumer: AIOKafkaConsumer, until: int, latencies: list[float]) -> None:
    """Consume and commit until `until` records arrived, noting produce-to-consume times."""
    seen = 0
    while seen < until:
        batch = await consumer.getmany(timeout_ms=200)
        now = time.time() * 1000
        for records in batch.values():
            latencies.extend(now - r.timestamp for r in records)
            seen += len(records)
        if batch:
            await consumer.commit()


async def rounds(args: argparse.Namespace, *, consume: bool) -> list[Round]:
    with EmbeddedKafka() as kafka:
        assert kafka.pid is not None
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap)
        await admin.start()
        await admin.create_topics([NewTopic(TOPIC, PARTITIONS, 1)])
        await admin.close()
        producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap, acks="all", linger_ms=5)
        consumer = AIOKafkaConsumer(
            TOPIC, bootstrap_servers=kafka.bootstrap, group_id="growth", enable_auto_commit=False,
            auto_offset_reset="earliest", session_timeout_ms=6000, heartbeat_interval_ms=500,
            fetch_max_wait_ms=100,  # as the Parcours roles (PARCOURS_KAFKA_FETCH_MAX_WAIT_MS)
        )  # fmt: skip
        await producer.start()
        if consume:
            await consumer.start()
        per_round = round(args.rate * args.seconds)
        results = []
        try:
            for n in range(args.rounds):
                latencies: list[float] = []
                reader = None
                if consume:
                    reader = asyncio.create_task(read(consumer, per_round, latencies))
                started, cpu = time.monotonic(), cpu_seconds(kafka.pid)
                for i in range(per_round):
                    await producer.send(TOPIC, VALUE, key=str(i).encode())
                    await asyncio.sleep(max(0.0, started + (i + 1) / args.rate - time.monotonic()))
                await producer.flush()
                if reader is not None:
                    await reader
                cores = (cpu_seconds(kafka.pid) - cpu) / (time.monotonic() - started)
                p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
                results.append(Round(n * per_round, cores, p50, p99))
                print(f"{'consume' if consume else 'produce only'} round {n + 1}: "
                      f"{_cells(results[-1])}", flush=True)  # fmt: skip
        finally:
            await producer.stop()
            if consume:
                await consumer.stop()
        return results


def _cells(r: Round) -> str:
    return f"{r.stored:,} | {r.broker_cores:.2f} | {r.p50_ms:.0f} | {r.p99_ms:.0f}"


async def main(args: argparse.Namespace) -> None:
    consumed = await rounds(args, consume=True)
    alone = await rounds(args, consume=False)
    print(f"\n{args.rate:g} records/s, {args.seconds:g} s per round")
    print("| round | stored before | broker cores, consumed | p50 ms | p99 ms "
          "| broker cores, produce only |")  # fmt: skip
    for n, (c, a) in enumerate(zip(consumed, alone, strict=True), 1):
        print(f"| {n} | {_cells(c)} | {a.broker_cores:.2f} |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rate", type=float, default=500, help="records/s produced")
    parser.add_argument("--seconds", type=float, default=15, help="per round")
    parser.add_argument("--rounds", type=int, default=6)
    asyncio.run(main(parser.parse_args()))
