"""Logging set-up for entry points: readable text in development, JSON lines in production."""

from __future__ import annotations

import logging
from contextvars import ContextVar
from datetime import UTC, datetime

import orjson

request_id: ContextVar[str | None] = ContextVar("request_id", default=None)
"""The id of the HTTP request being served (set by the API middleware), for every log line."""


class RequestIdFilter(logging.Filter):
    """Stamps each record with the current request id ('-' outside a request)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get() or "-"
        return True


CONTEXT_FIELDS = (
    "customer_id", "topic", "partition", "offset", "subscription_id", "delivery_id", "trigger_id",
)  # fmt: skip
"""Structured fields a log call may pass in `extra=`; JSON lines carry them as keys, so a log
search can follow one customer, one record or one delivery across processes."""


def at_record(topic: str, partition: int, offset: int, **more: str) -> dict[str, object]:
    """`extra=` for a log line about one Kafka record."""
    return {"topic": topic, "partition": partition, "offset": offset, **more}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        rid = getattr(record, "request_id", "-")
        if rid != "-":
            entry["request_id"] = rid
        for name in CONTEXT_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                entry[name] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry).decode()


def configure_logging(level: str, fmt: str) -> None:
    """Configure the root logger once; a host that already configured logging keeps its set-up."""
    root = logging.getLogger()
    if root.handlers:
        return
    handler = logging.StreamHandler()
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s")
        )
    handler.addFilter(RequestIdFilter())
    root.addHandler(handler)
    root.setLevel(level)
    logging.getLogger("aiokafka").setLevel(max(logging.WARNING, root.level))
