"""The single-thread floor of the consumer path: what one event costs before any I/O.

Builds the consumer's decoder and fold from the default settings, folds the first half of a
`bench.consumer_throughput` stream into stored (encoded) journeys, then times the second half
event by event as `parcours consume` handles it: validate the record's bytes, decode the
customer's stored journey, fold the event, encode the journey. No Kafka, Redis, asyncio,
analytics, catalog, triggers or metrics, and the cycle collector is off while timing: the
figure is a lower bound on the consumer's CPU per event, to set against the budget a target
rate leaves one Python thread (50 us per event for 20,000 events/s).

    python -m bench.fold_floor --events 100000 --customers 50000 --runs 5
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time

from bench.consumer_throughput import events
from models.events import EventDecoder
from models.fold import Fold, Position
from models.journeymap import load_journey_map
from models.state import decode_state, encode_state
from service.journey import build_decoder, build_fold
from service.settings import JourneySettings

PHASES = ("validate", "decode", "fold", "encode")
TARGET_RATE = 20_000


def stored_journeys(
    decoder: EventDecoder, fold: Fold, records: list[bytes], now_ms: int
) -> dict[str, bytes]:
    """Each customer's journey, encoded as Redis holds it, after the given records."""
    stored: dict[str, bytes] = {}
    for offset, raw in enumerate(records):
        event = decoder.decode(raw, now_ms)
        before = stored.get(event.customer_id)
        state, _ = fold.step_owned(
            decode_state(before) if before else None, event, Position(0, offset)
        )
        stored[event.customer_id] = encode_state(state)
    return stored


def timed_run(
    decoder: EventDecoder,
    fold: Fold,
    records: list[bytes],
    first: int,
    stored: dict[str, bytes],
    now_ms: int,
) -> dict[str, float]:
    """Microseconds per event in each phase, over `records` (log offsets from `first`) each
    folded onto its customer's journey in `stored`, which stays as it is."""
    spent = dict.fromkeys(PHASES, 0.0)
    clock = time.perf_counter
    for i, raw in enumerate(records):
        started = clock()
        event = decoder.decode(raw, now_ms)
        validated = clock()
        before = stored.get(event.customer_id)
        state = decode_state(before) if before else None
        decoded = clock()
        state, _ = fold.step_owned(state, event, Position(0, first + i))
        folded = clock()
        encode_state(state)
        encoded = clock()
        spent["validate"] += validated - started
        spent["decode"] += decoded - validated
        spent["fold"] += folded - decoded
        spent["encode"] += encoded - folded
    return {phase: seconds / len(records) * 1e6 for phase, seconds in spent.items()}


def main(args: argparse.Namespace) -> None:
    settings = JourneySettings()
    journey_map = load_journey_map(settings.map)
    decoder, fold = build_decoder(settings, journey_map), build_fold(settings, journey_map)
    records = [value for _, value in events(args.events, args.customers)]
    half = len(records) // 2
    now_ms = int(time.time() * 1000)
    stored = stored_journeys(decoder, fold, records[:half], now_ms)
    tail = records[half:]
    gc.collect()
    gc.freeze()  # the consumer runs the collector on a clock, not inside a batch
    gc.disable()
    try:
        runs = [timed_run(decoder, fold, tail, half, stored, now_ms) for _ in range(args.runs)]
    finally:
        gc.enable()
        gc.unfreeze()
    totals = [sum(run.values()) for run in runs]
    print(f"{len(tail)} events timed, {len(stored)} journeys stored before them")
    for phase in PHASES:
        print(f"  {phase}: {statistics.median(run[phase] for run in runs):.1f} us/event (median)")
    floor = statistics.median(totals)
    budget = 1e6 / TARGET_RATE
    print(
        f"floor: {floor:.1f} us/event (runs: {', '.join(f'{t:.1f}' for t in totals)}); "
        f"at most {1e6 / floor:,.0f} events/s on one thread before any I/O; "
        f"{floor / budget:.2f} of the {budget:.0f} us a {TARGET_RATE:,} events/s target allows"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--customers", type=int, default=50_000)
    parser.add_argument("--runs", type=int, default=5)
    main(parser.parse_args())
