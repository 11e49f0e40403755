"""The analytics routes' shared parameters: a time range of buckets, a segment and a map.

Bad combinations are `422`s naming the parameter to change: `to` not after `from`
(`range_reversed`), a range of more buckets than the retention keeps (`range_too_long`, on
`from`), buckets outside the years 1 to 9999 that answers can name (`out_of_range`, on
`from`, `to` or `at`), an unknown `segment` or `journey_map`. Without `to`, the range ends
with the bucket holding the newest event time counted (event time: a replay of last year
reads as it was).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Final

from fastapi import Query
from fastapi.exceptions import RequestValidationError

from models.analytics import BUCKETS, Bucket, bucket_start, segment_names
from models.events import epoch_ms
from models.journeymap import JourneyMap
from service.api.deps import Context
from service.api.schemas import Rfc3339Time

DEFAULT_SPAN: Final[dict[str, int]] = {"hour": 24, "day": 30}
"""Buckets a range covers when `from` is left out."""
SEGMENTS: Final = segment_names()


SegmentQuery = Annotated[
    str,
    Query(
        max_length=64,
        description="all, first_channel:<channel|unknown>, visitor:new|returning, "
        "risk:none|low|medium|high",
    ),
]
JourneyMapQuery = Annotated[
    str | None, Query(max_length=64, description="default: the active journey map")
]


@dataclass(frozen=True, slots=True)
class Window:
    """The buckets a request reads: starts in epoch ms, oldest first."""

    journey_map: JourneyMap
    bucket: Bucket
    segment: str
    starts: list[int]

    @property
    def size_ms(self) -> int:
        return BUCKETS[self.bucket]


@dataclass(frozen=True, slots=True)
class ChangeWindow:
    """What a change query judges: `recent` hours before `end` against `baseline` before them,
    with exits only on the hours before `decided` (the newest hour whose exits are known)."""

    journey_map: JourneyMap
    segment: str
    end: int
    decided: int
    recent: int
    baseline: int


async def change_window(
    ctx: Context,
    at: Annotated[
        Rfc3339Time | None,
        Query(description="the recent hours end with the hour holding it (default: newest)"),
    ] = None,
    recent_hours: Annotated[int, Query(ge=1, le=48, description="hours judged")] = 6,
    baseline_hours: Annotated[
        int, Query(ge=1, description="hours before them the rates are compared with")
    ] = 72,
    segment: SegmentQuery = "all",
    journey_map: JourneyMapQuery = None,
) -> ChangeWindow:
    """The request's hours, or a `RequestValidationError` naming every bad parameter."""
    errors: list[dict[str, Any]] = []
    found = _journey_map(ctx, journey_map, segment, errors)
    clocks = await ctx.analytics.clocks()
    size = BUCKETS["hour"]
    end = bucket_start(epoch_ms(at), size) + size if at is not None else _after_newest(clocks, size)
    span = (recent_hours + baseline_hours) * size
    if at is not None and not (_nameable(end - span) and _nameable(end)):
        errors.append(_out_of_range("at"))
    analytics = ctx.settings.analytics
    wait_ms = int((analytics.allowed_lateness_s + analytics.horizon_s) * 1000)
    newest_decided = min(clocks.values()) - wait_ms if clocks else end
    decided = min(end, bucket_start(newest_decided, size))
    kept = int(analytics.hour_retention_days * 86_400_000) // size
    if recent_hours + baseline_hours > kept:
        msg = f"recent_hours + baseline_hours must be at most {kept}, the hours kept"
        errors.append(_error("baseline_hours", msg, "range_too_long"))
    if errors:
        raise RequestValidationError(errors)
    assert found is not None
    return ChangeWindow(found, segment, end, decided, recent_hours, baseline_hours)


def _journey_map(
    ctx: Context, name: str | None, segment: str, errors: list[dict[str, Any]]
) -> JourneyMap | None:
    """The map asked for, and errors for an unknown map or segment."""
    found = ctx.journey_maps.get(name or ctx.journey_map.name)
    if found is None:
        known = ", ".join(sorted(ctx.journey_maps))
        msg = f"unknown journey map; known: {known}"
        errors.append(_error("journey_map", msg, "unknown_journey_map"))
    if segment not in SEGMENTS:
        msg = "unknown segment; use all, first_channel:<channel>, visitor:..., risk:..."
        errors.append(_error("segment", msg, "unknown_segment"))
    return found


async def window(
    ctx: Context,
    from_: Annotated[
        Rfc3339Time | None,
        Query(alias="from", description="start (the bucket holding it is the first)"),
    ] = None,
    to: Annotated[
        Rfc3339Time | None,
        Query(description="end, exclusive (default: after the newest event counted)"),
    ] = None,
    bucket: Annotated[Bucket, Query(description="bucket size")] = "hour",
    segment: SegmentQuery = "all",
    journey_map: JourneyMapQuery = None,
) -> Window:
    """The request's window, or a `RequestValidationError` naming every bad parameter."""
    errors: list[dict[str, Any]] = []
    found = _journey_map(ctx, journey_map, segment, errors)
    size = BUCKETS[bucket]
    end = epoch_ms(to) if to is not None else _after_newest(await ctx.analytics.clocks(), size)
    start = epoch_ms(from_) if from_ is not None else end - DEFAULT_SPAN[bucket] * size
    starts = _starts(ctx, bucket, start, end, errors)
    if not _nameable(bucket_start(start, size)):
        errors.append(_out_of_range("from"))
    if not _nameable(end):
        errors.append(_out_of_range("to"))
    if errors:
        raise RequestValidationError(errors)
    assert found is not None
    return Window(found, bucket, segment, starts)


def _starts(
    ctx: Context, bucket: Bucket, start: int, end: int, errors: list[dict[str, Any]]
) -> list[int]:
    """The starts of the buckets from the one holding `start` to `end`, if they are kept."""
    size = BUCKETS[bucket]
    first = bucket_start(start, size)
    if end <= first:
        msg = "must be after `from` (and the start of its bucket)"
        errors.append(_error("to", msg, "range_reversed"))
    analytics = ctx.settings.analytics
    days = analytics.hour_retention_days if bucket == "hour" else analytics.day_retention_days
    longest = int(days * 86_400_000) // size
    if (end - first + size - 1) // size > longest:
        msg = f"the range spans more than {longest} {bucket} buckets, all that are kept"
        errors.append(_error("from", msg, "range_too_long"))
    return list(range(first, end, size))


def _after_newest(clocks: dict[int, int], size: int) -> int:
    newest = max(clocks.values()) if clocks else int(time.time() * 1000)
    return bucket_start(newest, size) + size


_FIRST_MS: Final = epoch_ms(datetime.min.replace(tzinfo=UTC))
_LAST_MS: Final = epoch_ms(datetime.max.replace(tzinfo=UTC)) - 86_400_000
"""Bucket bounds an answer can still write as RFC 3339 times (a day's margin at the end)."""


def _nameable(ms: int) -> bool:
    """Whether a bucket bound lies within the years 1 to 9999."""
    return _FIRST_MS <= ms <= _LAST_MS


def _out_of_range(name: str) -> dict[str, Any]:
    return _error(name, "the buckets asked for reach outside the years 1 to 9999", "out_of_range")


def _error(name: str, msg: str, kind: str) -> dict[str, Any]:
    return {"loc": ("query", name), "msg": msg, "type": kind}
