"""Dead letters: records that cannot be applied, kept byte for byte with the reason why.

The dead-letter record has the original key and value; headers carry the reason, field-level
errors and where the record came from, so it can be inspected, fixed and replayed.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.structs import ConsumerRecord

from service.bus import send_all
from service.logs import at_record

logger = logging.getLogger(__name__)

HEADER_PREFIX = "parcours.dlq."
_MAX_ERRORS = 20


class DeadLetter(NamedTuple):
    record: ConsumerRecord[bytes, bytes]
    reason: str
    errors: list[dict[str, Any]]


def dead_letter_headers(letter: DeadLetter, group: str) -> list[tuple[str, bytes]]:
    """The original headers followed by the reason and provenance."""
    record = letter.record
    ours = {
        "reason": letter.reason,
        "errors": orjson.dumps(letter.errors[:_MAX_ERRORS]).decode(),
        "topic": record.topic,
        "partition": str(record.partition),
        "offset": str(record.offset),
        "timestamp": str(record.timestamp),
        "group": group,
        "failed_at": datetime.now(UTC).isoformat(),
    }
    original = [(k, v) for k, v in (record.headers or ()) if not k.startswith(HEADER_PREFIX)]
    return original + [(HEADER_PREFIX + k, v.encode()) for k, v in ours.items()]


class DeadLetterSink:
    """Produces dead letters and waits until the broker has them all."""

    def __init__(
        self, producer: AIOKafkaProducer, topic: str, *, group: str, timeout_s: float
    ) -> None:
        self._producer = producer
        self._topic = topic
        self._group = group
        self._timeout_s = timeout_s

    async def send(self, letters: Sequence[DeadLetter]) -> None:
        records = [
            (letter.record.key, letter.record.value, dead_letter_headers(letter, self._group))
            for letter in letters
        ]
        await send_all(self._producer, self._topic, records, timeout_s=self._timeout_s)
        for letter in letters:
            record = letter.record
            logger.warning(
                "dead-lettered %s[%d]@%d to %s: %s", record.topic, record.partition,
                record.offset, self._topic, letter.reason,
                extra=at_record(record.topic, record.partition, record.offset),
            )  # fmt: skip
