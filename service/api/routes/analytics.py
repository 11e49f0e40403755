"""The live journey map's numbers: funnel, flows, friction and channels over a time range."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from models import analytics_report as report
from models.access import Scope
from models.analytics import BUCKETS, NEW, split_touch
from models.analytics_changes import Kind, Rule, changes
from models.analytics_report import TouchLift
from models.journeymap import EXIT
from service.analytics import Reading
from service.api.analytics_query import ChangeWindow, Window, change_window, window
from service.api.analytics_schemas import (
    ChangesPublic,
    ChannelsPublic,
    FrictionPublic,
    FunnelPublic,
    LivePublic,
    TransitionsPublic,
    WindowPublic,
)
from service.api.auth import GUARDED, requires
from service.api.deps import Context
from service.api.responses import OrjsonResponse

router = APIRouter(
    prefix="/v1/analytics",
    tags=["analytics"],
    dependencies=[requires(Scope.ADMIN)],
    responses=GUARDED,
)

Asked = Annotated[Window, Depends(window)]


@router.get(
    "/funnel",
    summary="Entries, conversion and time to move on, per stage",
    response_model=FunnelPublic,
)
async def get_funnel(
    asked: Asked,
    ctx: Context,
    bucket_customers: Annotated[
        bool,
        Query(
            description="also estimate each bucket's distinct customers per stage (a sketch "
            "read per bucket and stage: costly over long ranges)"
        ),
    ] = False,
) -> Any:
    stages = asked.journey_map.stages
    reading = await ctx.analytics.read(
        asked.journey_map.name,
        asked.bucket,
        asked.segment,
        asked.starts,
        stages=stages,
        bucket_customers=bucket_customers,
        fields=[f"e|{s}" for s in stages],
    )
    funnel = report.funnel(asked.journey_map, reading.totals, reading.customers_over_range)
    return OrjsonResponse(
        {
            "window": _window(ctx, asked, reading).model_dump(by_alias=True),
            "stages": [
                {
                    "stage": s.stage, "entered": s.entered, "first_entries": s.first_entries,
                    "customers": s.customers, "departures": s.departures,
                    "moved_on": s.moved_on, "to_next": s.to_next, "moved_back": s.moved_back,
                    "exits": s.exits, "conversion": s.conversion, "to_next_rate": s.to_next_rate,
                    "time_to_move_on": _durations(s.durations),
                    "time_before_exit": _durations(s.before_exit),
                }
                for s in funnel
            ],
            "buckets": [
                {
                    "start": _time(start),
                    "entered": {s: fields.get(f"e|{s}", 0) for s in stages},
                    "customers": customers,
                }
                for start, fields, customers in zip(
                    asked.starts, reading.series,
                    reading.customers if bucket_customers else [None] * len(asked.starts),
                    strict=True,
                )
            ],
        }
    )  # fmt: skip


@router.get(
    "/transitions",
    summary="Stage to stage moves, exits included, for a flow diagram",
    response_model=TransitionsPublic,
)
async def get_transitions(asked: Asked, ctx: Context) -> Any:
    reading = await _read(ctx, asked, series=("m|",))
    return OrjsonResponse(
        {
            "window": _window(ctx, asked, reading).model_dump(by_alias=True),
            "nodes": [NEW, *asked.journey_map.stages, EXIT],
            "transitions": _moves(reading.totals),
            "buckets": [
                {"start": _time(start), "transitions": _moves(fields)}
                for start, fields in zip(asked.starts, reading.series, strict=True)
            ],
        }
    )


@router.get(
    "/friction",
    summary="Where customers leave, and the touchpoints before it",
    response_model=FrictionPublic,
)
async def get_friction(
    asked: Asked,
    ctx: Context,
    limit: Annotated[int, Query(ge=1, le=200, description="touchpoints per outcome")] = 20,
    min_count: Annotated[
        int, Query(ge=1, description="least outcomes a touchpoint must precede to rank")
    ] = 3,
) -> Any:
    reading = await _read(ctx, asked, touches=True, series=("m|", "a|"))
    found = report.friction(reading.totals, reading.touches, limit=limit, min_count=min_count)
    abandoned, value = found.abandoned, found.abandoned_value_cents
    return OrjsonResponse(
        {
            "window": _window(ctx, asked, reading).model_dump(by_alias=True),
            "progress": found.progress,
            "exits": {"total": found.exits, "touchpoints": _touches(found.exit_touches)},
            "abandoned_carts": {
                "total": sum(abandoned.values()),
                "touchpoints": _touches(found.cart_touches),
            },
            "carts": {
                "at_checkout": abandoned["checkout"],
                "earlier": abandoned["earlier"],
                "value_at_checkout": value["checkout"] / 100,
                "value_earlier": value["earlier"] / 100,
            },
            "buckets": [
                {
                    "start": _time(start),
                    "exits": sum(n for (_, to), n in report.moves(fields).items() if to == EXIT),
                    "abandoned_at_checkout": fields.get("a|checkout", 0),
                    "abandoned_earlier": fields.get("a|earlier", 0),
                }
                for start, fields in zip(asked.starts, reading.series, strict=True)
            ],
        }
    )


@router.get("/channels", summary="Which channels bring customers into each stage")
async def get_channels(asked: Asked, ctx: Context) -> ChannelsPublic:
    reading = await _read(ctx, asked)
    stages = report.channels(asked.journey_map.stages, reading.totals)
    return ChannelsPublic.model_validate(
        {
            "window": _window(ctx, asked, reading),
            "stages": [
                {"stage": s.stage, "entered": s.entered, "last_touch": s.last_touch,
                 "first_touch": s.first_touch}
                for s in stages
            ],
        }
    )  # fmt: skip


@router.get("/changes", summary="Touchpoints whose exit or loop rate jumped, and since when")
async def get_changes(
    asked: Annotated[ChangeWindow, Depends(change_window)],
    ctx: Context,
    min_count: Annotated[
        int, Query(ge=1, description="least outcomes after a touchpoint, baseline and recent")
    ] = 20,
    min_increase: Annotated[
        float, Query(gt=0, le=1, description="least rise of the rate over its baseline")
    ] = 0.1,
    z: Annotated[float, Query(gt=0, description="least rise in standard errors")] = 4.0,
) -> ChangesPublic:
    rule = Rule(min_count=min_count, min_increase=min_increase, z_min=z)
    hour = BUCKETS["hour"]
    spans: dict[Kind, int] = {"exit": asked.decided, "loop": asked.end}
    ends = sorted(set(spans.values()))  # one read of the hours when both kinds end together
    read = dict(
        zip(ends, await asyncio.gather(*(_hours(ctx, asked, e) for e in ends)), strict=True)
    )
    found = [changes(kind, *read[end], rule) for kind, end in spans.items()]
    return ChangesPublic.model_validate(
        {
            "journey_map": asked.journey_map.name,
            "segment": asked.segment,
            **{
                f"{kind}s": {
                    "baseline_from": _time(end - (asked.recent + asked.baseline) * hour),
                    "recent_from": _time(end - asked.recent * hour),
                    "to": _time(end),
                }
                for kind, end in spans.items()
            },
            "rule": {"min_count": min_count, "min_increase": min_increase, "z": z},
            "changes": [
                {
                    "kind": c.kind, **_target(c.touch), "started": _time(c.started),
                    "baseline_rate": c.baseline_rate, "rate": c.rate, "customers": c.customers,
                    "seen": c.seen, "z": c.z,
                }
                for c in sorted([*found[0], *found[1]], key=lambda c: (-c.z, c.kind, c.touch))
            ],
        }
    )  # fmt: skip


async def _hours(
    ctx: Context, asked: ChangeWindow, end: int
) -> tuple[dict[str, int], list[tuple[int, dict[str, int]]]]:
    """The touchpoint counts of the baseline hours before `end` summed, and of the recent
    hours one by one, as `models.analytics_changes.changes` takes them."""
    hour = BUCKETS["hour"]
    recent = list(range(end - asked.recent * hour, end, hour))
    baseline = list(range(recent[0] - asked.baseline * hour, recent[0], hour))
    name = asked.journey_map.name
    before, now = await asyncio.gather(
        ctx.analytics.read(name, "hour", asked.segment, baseline, touches=True),
        ctx.analytics.read(name, "hour", asked.segment, recent, touch_series=True),
    )
    return before.touches, list(zip(recent, now.touch_series, strict=True))


def _target(touch: str) -> dict[str, str]:
    kind, channel, target = split_touch(touch)
    return {"type": kind, "channel": channel, "target": target}


@router.get("/live", summary="Customers in each stage now, open carts and cart value at risk")
async def get_live(ctx: Context) -> LivePublic:
    """Read from the journey gauges as they stand, not from a time range: the active map only."""
    stages = ctx.journey_map.stages
    found = await ctx.store.gauges(stages)
    return LivePublic.model_validate(
        {
            "journey_map": ctx.journey_map.name,
            "stages": [{"stage": s, "customers": found.customers[s]} for s in stages],
            "open_carts": found.open_carts,
            "cart_value": found.cart_value,
            "value_at_risk": found.value_at_risk,
        }
    )


async def _read(
    ctx: Context,
    asked: Window,
    *,
    touches: bool = False,
    series: tuple[str, ...] = (),
) -> Reading:
    return await ctx.analytics.read(
        asked.journey_map.name, asked.bucket, asked.segment, asked.starts,
        touches=touches, series=series,
    )  # fmt: skip


def _window(ctx: Context, asked: Window, reading: Reading) -> WindowPublic:
    """The range read, with the newest event time counted and the time before which every
    partition's watermark has decided the exits and abandoned carts."""
    clocks = reading.clocks.values()
    decided = None
    if clocks:
        analytics = ctx.settings.analytics
        wait_s = analytics.allowed_lateness_s + max(
            analytics.horizon_s, ctx.settings.models.abandon_after_s
        )
        decided = _time(min(clocks) - int(wait_s * 1000))
    return WindowPublic(
        journey_map=asked.journey_map.name,
        segment=asked.segment,
        bucket=asked.bucket,
        from_=_time(asked.starts[0]),
        to=_time(asked.starts[-1] + asked.size_ms),
        as_of=_time(max(clocks)) if clocks else None,
        complete_until=decided,
    )


def _durations(found: report.Durations) -> dict[str, Any]:
    return {"moves": found.moves, "median_s": found.median_s, "p90_s": found.p90_s}


def _moves(fields: report.Counters) -> list[dict[str, Any]]:
    flows = sorted(report.moves(fields).items(), key=lambda kv: (-kv[1], kv[0]))
    return [{"from": left, "to": to, "count": n} for (left, to), n in flows]


def _touches(found: list[TouchLift]) -> list[dict[str, Any]]:
    return [
        {"type": t.type, "channel": t.channel, "target": t.target, "count": t.count,
         "progress": t.progress, "lift": t.lift}
        for t in found
    ]  # fmt: skip


def _time(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)
