"""HTTP load on the recommendations endpoint against a one-GET reference, with wrk on loopback.

Starts the embedded Tansu broker and a redis-server on free ports, feeds synthetic shoppers
(`bench.shoppers`) through the real pipeline (`parcours consume` and `parcours train`) so Redis
holds their journeys, label books, the co-occurrence and trending catalog and a model
snapshot, then serves
  - target: the Parcours API (`service.api.app:create_app`), and
  - reference: `bench.reference_api`, one Redis GET of the journey key, its JSON returned,
with uvicorn, one worker each (`--workers N`: N each), the same options and the same Redis
settings. Each run loads both endpoints in alternation, in two modes: as fast as wrk goes,
and paced at a fixed rate (each wrk thread keeps a schedule; the achieved rate is reported).
Every request asks for a random customer and a page context (`bench/recommend_load.lua`).
Prints requests/s and p50/p99 latency per run, the medians, the target/reference throughput
ratios and the time redis-server spent per command.

    python -m bench.recommend_load --runs 5 --profile profile.txt

Needs wrk (`apt-get install wrk`); `--profile out.txt` (needs `pip install py-spy`) then
samples the API process under maximum load, after the timed runs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import statistics
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import NamedTuple

import orjson

from bench.consumer_throughput import produce, timed_until_committed
from bench.environment import isolated_env
from bench.shoppers import PRODUCTS, customer_id, events
from service.api.exposition import MULTIPROCESS_ENV
from service.embedded import EmbeddedKafka, EmbeddedRedis, free_port
from service.learning import snapshot_store
from service.settings import RedisSettings
from service.store import RedisClient, connect_redis

SCRIPT = Path(__file__).with_suffix(".lua")
TARGET_APP, REFERENCE_APP = "service.api.app:create_app", "bench.reference_api:create_app"
UVICORN_OPTIONS = ("--factory", "--host", "127.0.0.1", "--loop", "uvloop",
                   "--http", "httptools", "--no-access-log", "--log-level", "warning")  # fmt: skip
WRK_MISSING = "wrk is not on PATH: `apt-get install wrk` (Debian, Ubuntu) or `brew install wrk`"


class Load(NamedTuple):
    """One wrk run: achieved requests/s, latency percentiles in ms, failed requests."""

    rate: float
    p50_ms: float
    p99_ms: float
    failed: int


def parse_wrk(stdout: str) -> Load:
    """The summary line `bench/recommend_load.lua` prints from wrk's `done()`."""
    for line in stdout.splitlines():
        if line.startswith("WRK_JSON "):
            s = orjson.loads(line.removeprefix("WRK_JSON "))
            return Load(
                rate=s["requests"] / (s["duration_us"] / 1e6),
                p50_ms=s["p50_us"] / 1000,
                p99_ms=s["p99_us"] / 1000,
                failed=s["errors"] + s["non_2xx"],
            )
    raise ValueError(f"no summary line in wrk's output:\n{stdout}")


def environment(bootstrap: str, redis_url: str, tag: str) -> dict[str, str]:
    """Settings shared by the pipeline and both servers: fresh topics, groups and key prefix."""
    return isolated_env(bootstrap, redis_url, f"load-{tag}") | {
        "PARCOURS_MODELS_TRAINER_GROUP": f"load-trainer-{tag}",
        # A share of next-stage samples is enough for a trained snapshot; one trainer keeps up.
        "PARCOURS_MODELS_NEXT_STAGE_RATE": "0.05",
        "PARCOURS_MODELS_MIN_SAMPLES": "200",
        "PARCOURS_MODELS_TRAINER_METRICS_PORT": "0",
    }


@contextlib.asynccontextmanager
async def processes(*commands: Sequence[str], env: dict[str, str]) -> AsyncIterator[list[int]]:
    started = [await asyncio.create_subprocess_exec(*c, env=env) for c in commands]
    try:
        yield [p.pid for p in started]
    finally:
        for process in started:
            if process.returncode is None:
                process.terminate()
        for process in started:
            await asyncio.wait_for(process.wait(), 30)


async def populate(env: dict[str, str], customers: int, partitions: int) -> None:
    """Shoppers through `parcours consume` and `parcours train` until a snapshot is out."""
    messages = events(customers)
    print(f"{len(messages):,} events for {customers:,} customers")
    bootstrap, topic = env["PARCOURS_KAFKA_BOOTSTRAP"], env["PARCOURS_KAFKA_EVENTS_TOPIC"]
    await produce(bootstrap, topic, partitions, messages)
    started = time.monotonic()
    cli = [sys.executable, "-m", "service.cli"]
    async with processes([*cli, "consume"], [*cli, "train"], env=env):
        group = env["PARCOURS_KAFKA_CONSUMER_GROUP"]
        await timed_until_committed(bootstrap, group, topic, partitions, len(messages))
        redis_settings = RedisSettings(
            url=env["PARCOURS_REDIS_URL"], key_prefix=env["PARCOURS_REDIS_KEY_PREFIX"]
        )
        redis = connect_redis(redis_settings.url, socket_timeout_s=2.0, max_connections=2)
        snapshots = snapshot_store(redis, redis_settings)
        try:
            version = None
            for _ in range(120):
                version = await snapshots.version()
                if version is not None:
                    break
                await asyncio.sleep(1)
        finally:
            await redis.aclose()
    print(f"pipeline done in {time.monotonic() - started:.0f}s, model snapshot {version}")


async def wait_until_serving(url: str, timeout_s: float = 60) -> bytes:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, urllib.error.URLError):
            return await asyncio.to_thread(_fetch, url)
        await asyncio.sleep(0.5)
    raise TimeoutError(f"nothing served {url} in {timeout_s}s")


async def answer_mix(base: str, customers: int, asked: int = 300) -> str:
    """How many of a sample of answers hold each action type, to show the data is not trivial.

    Asked for on the cart page, where every type can appear, for customers spread evenly.
    """
    counts: Counter[str] = Counter()
    for n in range(1, customers + 1, max(1, customers // asked)):
        url = f"{base}/v1/customers/{customer_id(n)}/recommendations?context=cart&limit=10"
        body = orjson.loads(await asyncio.to_thread(_fetch, url))
        counts.update({action["type"] for action in body["recommendations"]})
        counts["answers"] += 1
    answers = counts.pop("answers")
    shares = ", ".join(f"{kind} {count / answers:.0%}" for kind, count in counts.most_common())
    return f"of {answers} cart-page answers, share holding each action type: {shares}"


def _fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=5) as response:
        body: bytes = response.read()
        return body


async def wrk(
    base: str, resource: str, args: argparse.Namespace, *, paced: bool, seconds: float
) -> Load:
    connections = args.paced_connections if paced else args.connections
    threads = min(args.threads, connections)
    interval_ms = threads * 1000 / args.rate if paced else 0
    env = {**os.environ, "BENCH_RESOURCE": resource, "BENCH_CUSTOMERS": str(args.customers),
           "BENCH_PRODUCTS": str(PRODUCTS), "BENCH_INTERVAL_MS": str(interval_ms)}  # fmt: skip
    process = await asyncio.create_subprocess_exec(
        "wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds:g}s", "--timeout", "5s",
        "-s", str(SCRIPT), base, env=env, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    stdout, _ = await process.communicate()
    return parse_wrk(stdout.decode())


async def measure(
    endpoints: dict[str, tuple[str, str]], args: argparse.Namespace
) -> dict[tuple[str, bool], list[Load]]:
    """Alternate the endpoints (the first one swaps every run), each warmed up before timing."""
    results: dict[tuple[str, bool], list[Load]] = {}
    for run in range(args.runs):
        order = list(endpoints) if run % 2 == 0 else list(reversed(endpoints))
        for paced in (False, True):
            for name in order:
                base, resource = endpoints[name]
                await wrk(base, resource, args, paced=paced, seconds=args.warmup)
                load = await wrk(base, resource, args, paced=paced, seconds=args.duration)
                results.setdefault((name, paced), []).append(load)
                print(f"run {run + 1} {name:<9} {_mode(paced, args):<14} {_cells(load)}")
    return results


async def profile(pid: int, target: tuple[str, str], args: argparse.Namespace) -> None:
    """py-spy samples of the API process under maximum load, after (not during) the timings."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    seconds = 10
    command = [spy, "record", "--native", "-r", "100", "-d", str(seconds), "-f", "raw",
               "-o", args.profile, "-p", str(pid)]  # fmt: skip
    sampler = await asyncio.create_subprocess_exec(*command)
    await wrk(*target, args, paced=False, seconds=seconds + 2)
    await sampler.wait()
    print(f"profile of the target under load in {args.profile}")


def report(results: dict[tuple[str, bool], list[Load]], args: argparse.Namespace) -> None:
    print(f"\nmedians of {args.runs} runs | endpoint | mode | requests/s | p50 ms | p99 ms")
    medians = {}
    for (name, paced), loads in results.items():
        medians[name, paced] = Load(*(statistics.median(v) for v in zip(*loads, strict=True)))
        print(f"| {name} | {_mode(paced, args)} | {_cells(medians[name, paced])} |")
    target, reference = medians["target", False], medians["reference", False]
    print(f"throughput ratio target/reference of the medians: {target.rate / reference.rate:.2f}")
    # Each run loads both back to back, so its own ratio is the least disturbed by noise.
    pairs = zip(results["target", False], results["reference", False], strict=True)
    ratios = [t.rate / r.rate for t, r in pairs]
    listed = ", ".join(f"{r:.2f}" for r in ratios)
    print(f"per-run ratios: {listed}; median {statistics.median(ratios):.2f}")


async def redis_time(redis: RedisClient) -> str:
    """Time inside redis-server per command during the timed runs, from INFO commandstats."""
    stats = await redis.info("commandstats")
    busiest = sorted(stats.items(), key=lambda kv: -kv[1]["usec"])[:4]
    return "redis-server time per call during the runs: " + ", ".join(
        f"{name.removeprefix('cmdstat_')} {s['usec_per_call']:.1f} us x {s['calls']:,}"
        for name, s in busiest
    )


def _mode(paced: bool, args: argparse.Namespace) -> str:
    return f"paced ~{args.rate:,}/s" if paced else f"max, {args.connections} conns"


def _cells(load: Load) -> str:
    failed = f" ({load.failed} failed)" if load.failed else ""
    return f"{load.rate:,.0f} | {load.p50_ms:.2f} | {load.p99_ms:.2f}{failed}"


async def main(args: argparse.Namespace) -> None:
    if shutil.which("wrk") is None:
        raise SystemExit(WRK_MISSING)
    with EmbeddedKafka() as kafka, EmbeddedRedis() as redis:
        env = environment(kafka.bootstrap, redis.url, uuid.uuid4().hex[:8])
        await populate(env, args.customers, args.partitions)
        ports = {"target": free_port(), "reference": free_port()}
        workers = ("--workers", str(args.workers))
        uvicorn = [sys.executable, "-m", "uvicorn", *UVICORN_OPTIONS, *workers]
        if args.workers > 1:  # as `parcours api --workers N` does: metrics shared by the workers
            env[MULTIPROCESS_ENV] = tempfile.mkdtemp(prefix="bench-metrics-")
        async with processes(
            [*uvicorn, TARGET_APP, "--port", str(ports["target"])],
            [*uvicorn, REFERENCE_APP, "--port", str(ports["reference"])],
            env=env,
        ) as pids:
            endpoints = {
                "reference": (f"http://127.0.0.1:{ports['reference']}", "journey"),
                "target": (f"http://127.0.0.1:{ports['target']}", args.target),
            }
            for name, (base, resource) in endpoints.items():
                body = await wait_until_serving(f"{base}/v1/customers/customer-000001/{resource}")
                print(f"{name} serves /v1/customers/{{id}}/{resource}, e.g. {len(body)} bytes")
            if args.target == "recommendations":
                print(await answer_mix(endpoints["target"][0], args.customers))
            redis_client = connect_redis(redis.url, socket_timeout_s=5.0, max_connections=1)
            await redis_client.config_resetstat()
            report(await measure(endpoints, args), args)
            print(await redis_time(redis_client))
            await redis_client.aclose()
            if args.profile:
                await profile(pids[0], endpoints["target"], args)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--partitions", type=int, default=12)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument(
        "--target",
        choices=["recommendations", "journey"],
        default="recommendations",
        help="the API endpoint under load: /v1/customers/{id}/<target>",
    )
    parser.add_argument("--duration", type=float, default=15, help="seconds per timed load")
    parser.add_argument("--warmup", type=float, default=3, help="seconds of load before each")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--connections", type=int, default=32, help="for maximum throughput")
    parser.add_argument("--rate", type=int, default=1000, help="paced mode: requests/s aimed at")
    parser.add_argument("--paced-connections", type=int, default=10)
    parser.add_argument(
        "--workers", type=int, default=1, help="uvicorn workers of each endpoint (the same)"
    )
    parser.add_argument("--profile", help="then write a py-spy profile (raw) of the API here")
    asyncio.run(main(parser.parse_args()))
