"""Redis and Kafka clients that time every call and count its errors (`DependencyMetrics`).

Subclasses of the clients every role already uses, so each command, script call, pipeline
and produce request is measured at the one place all of them pass through, whichever store
or sink issued it. Labels stay bounded: the Redis command name, the Kafka topic.
"""

from __future__ import annotations

import asyncio
import time
from functools import partial
from typing import Any

from aiokafka import AIOKafkaProducer
from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.asyncio.cluster import ClusterPipeline, RedisCluster

from service.metrics import DependencyMetrics


def _name(command: object) -> str:
    """`EVALSHA`, `GET`... (the first word; redis-py passes some as "CONFIG GET")."""
    text = command.decode() if isinstance(command, bytes) else str(command)
    return text.split(" ", 1)[0].upper()


async def _timed(metrics: DependencyMetrics, command: str, call: Any) -> Any:
    start = time.perf_counter()
    try:
        return await call
    except Exception as exc:
        metrics.redis_errors.labels(command, type(exc).__name__).inc()
        raise
    finally:
        metrics.redis_call(command).observe(time.perf_counter() - start)


class InstrumentedRedis(Redis):
    """redis-py's asyncio client, measured."""

    def __init__(self, *args: Any, metrics: DependencyMetrics, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.metrics = metrics

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        call = super().execute_command(*args, **options)  # type: ignore[no-untyped-call]
        return await _timed(self.metrics, _name(args[0]), call)

    def pipeline(self, transaction: bool = True, shard_hint: str | None = None) -> Pipeline:
        return _MeasuredPipeline(
            self.connection_pool, self.response_callbacks, transaction, shard_hint,
            metrics=self.metrics,
        )  # fmt: skip


class _MeasuredPipeline(Pipeline):
    def __init__(self, *args: Any, metrics: DependencyMetrics) -> None:
        super().__init__(*args)
        self.metrics = metrics

    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        name = "MULTI" if self.is_transaction else "PIPELINE"
        result: list[Any] = await _timed(self.metrics, name, super().execute(raise_on_error))
        return result


class InstrumentedRedisCluster(RedisCluster):
    """redis-py's asyncio cluster client, measured (a command's redirections included)."""

    def __init__(self, *args: Any, metrics: DependencyMetrics, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.metrics = metrics

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        return await _timed(self.metrics, _name(args[0]), super().execute_command(*args, **kwargs))

    def pipeline(
        self, transaction: Any | None = None, shard_hint: Any | None = None
    ) -> ClusterPipeline:
        if shard_hint:
            return super().pipeline(transaction, shard_hint)  # refused there, as it should be
        return _MeasuredClusterPipeline(self, transaction, metrics=self.metrics)  # type: ignore[abstract]


class _MeasuredClusterPipeline(ClusterPipeline):
    def __init__(self, client: RedisCluster, transaction: Any, *, metrics: DependencyMetrics):
        super().__init__(client, transaction)
        self.metrics = metrics

    async def execute(
        self, raise_on_error: bool = True, allow_redirections: bool = True
    ) -> list[Any]:
        name = "MULTI" if self._transaction else "PIPELINE"
        call = super().execute(raise_on_error, allow_redirections)
        result: list[Any] = await _timed(self.metrics, name, call)
        return result


class InstrumentedProducer(AIOKafkaProducer):  # type: ignore[misc]
    """aiokafka's producer, with each record timed from `send` to the broker's ack."""

    def __init__(self, *args: Any, metrics: DependencyMetrics, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.metrics = metrics

    async def send(self, topic: str, *args: Any, **kwargs: Any) -> asyncio.Future[Any]:
        start = time.perf_counter()
        try:
            future: asyncio.Future[Any] = await super().send(topic, *args, **kwargs)
        except Exception as exc:  # refused before it was queued (buffer full, closed...)
            self.metrics.produce_errors.labels(topic, type(exc).__name__).inc()
            raise
        future.add_done_callback(partial(self._acknowledged, topic, start))
        return future

    def _acknowledged(self, topic: str, start: float, future: asyncio.Future[Any]) -> None:
        if future.cancelled():
            self.metrics.produce_errors.labels(topic, "CancelledError").inc()
        elif (exc := future.exception()) is not None:
            self.metrics.produce_errors.labels(topic, type(exc).__name__).inc()
        else:
            self.metrics.produce_seconds.labels(topic).observe(time.perf_counter() - start)
