"""The `parcours` command: run a role, the whole stack for development, or a replay."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, NoReturn

import orjson
import typer
import uvicorn

from models.errors import ParcoursError
from models.events import event_json_schema
from models.journeymap import load_journey_map
from service.api.exposition import share_between_workers
from service.bus import ensure_parcours_topics
from service.experiments_command import experiments_app
from service.keys_command import keys_app
from service.logs import configure_logging
from service.replay import Format, replay_file, resolve
from service.settings import Settings, get_settings

app = typer.Typer(
    help="Parcours: real-time customer-journey personalization.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(keys_app, name="keys")
app.add_typer(experiments_app, name="experiments")


def _settings() -> Settings:
    settings = get_settings()
    configure_logging(settings.log.level, settings.log.format)
    return settings


def _fail(exc: Exception) -> NoReturn:
    """Exit with the problem in one line: 1 if retrying may help (a supervisor restarts), else 2."""
    typer.echo(f"error: {exc}", err=True)
    raise typer.Exit(1 if isinstance(exc, ParcoursError) and exc.retriable else 2)


@app.command()
def api(
    host: Annotated[str | None, typer.Option(help="default: PARCOURS_API_HOST")] = None,
    port: Annotated[int | None, typer.Option(help="default: PARCOURS_API_PORT")] = None,
    workers: Annotated[int | None, typer.Option(help="default: PARCOURS_API_WORKERS")] = None,
) -> None:
    """Serve the HTTP API."""
    settings = _settings()
    try:
        load_journey_map(settings.journey.map)
    except ParcoursError as exc:
        _fail(exc)
    processes = workers or settings.api.workers
    if processes > 1:
        share_between_workers(settings.api.metrics_dir)
    uvicorn.run(
        "service.api.app:create_app",
        factory=True,
        host=host or settings.api.host,
        port=port if port is not None else settings.api.port,
        workers=processes,
        log_level=settings.log.level.lower(),
        access_log=False,
    )


@app.command()
def consume() -> None:
    """Fold the events topic into live journey state in Redis."""
    from consumers.state_worker import run_state_consumer

    _run_worker(run_state_consumer)


@app.command()
def train() -> None:
    """Learn the samples topic online and publish model snapshots to Redis."""
    from consumers.trainer_worker import run_trainer

    _run_worker(run_trainer)


@app.command()
def dispatch() -> None:
    """Deliver triggers to subscribed webhooks: signed, retried, dead-lettered."""
    from consumers.dispatcher_worker import run_dispatcher

    _run_worker(run_dispatcher)


def _run_worker(worker: Callable[[Settings, asyncio.Event], Awaitable[None]]) -> None:
    """Run a worker until SIGINT or SIGTERM; a `ParcoursError` becomes the exit code."""
    settings = _settings()

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await worker(settings, stop)

    try:
        asyncio.run(main())
    except ParcoursError as exc:
        _fail(exc)


@app.command()
def dev(
    replay_file: Annotated[
        str | None, typer.Option("--replay", help="`sample` or a recorded event file")
    ] = None,
    speed: Annotated[float, typer.Option(help="replay speed-up over event time; 0 = flat out")] = 0,
    fmt: Annotated[str, typer.Option("--format", help="auto, jsonl, rees46, instacart")] = "auto",
    consumers: Annotated[int, typer.Option(min=1, help="state consumer processes")] = 1,
    port: Annotated[int | None, typer.Option(help="API port (default: 8000 if free)")] = None,
) -> None:
    """Start Kafka, Redis, the consumers and the API together; Ctrl-C stops everything."""
    from service.devserver import DevStack

    stack = DevStack(_settings(), consumers=consumers, port=port)
    signal.signal(signal.SIGTERM, _interrupt)
    code = 0
    try:
        stack.start()
        typer.echo(stack.banner())
        if replay_file:
            typer.echo(stack.replay(resolve(replay_file), _format(fmt), speed))
        code = stack.wait()
    except KeyboardInterrupt:
        typer.echo("stopping")
    except (ParcoursError, RuntimeError) as exc:
        typer.echo(f"error: {exc}", err=True)
        code = 2
    finally:
        stack.stop()
    raise typer.Exit(code)


@app.command("replay")
def replay_command(
    file: Annotated[str, typer.Argument(help="`sample`, or a .jsonl / REES46 / Instacart file")],
    speed: Annotated[float, typer.Option(help="speed-up over event time; 0 = flat out")] = 0,
    fmt: Annotated[str, typer.Option("--format", help="auto, jsonl, rees46, instacart")] = "auto",
    limit: Annotated[int | None, typer.Option(help="stop after this many events")] = None,
) -> None:
    """Send a recorded event file to the events topic."""
    settings = _settings()
    try:
        report = asyncio.run(
            replay_file(settings, resolve(file), _format(fmt), speed=speed, limit=limit)
        )
    except (ParcoursError, OSError, ValueError) as exc:
        _fail(exc)
    typer.echo(
        f"sent {report.sent} events for {len(report.customers)} customers in "
        f"{report.seconds:.1f}s; {report.invalid} invalid lines skipped"
    )
    for error in report.errors:
        typer.echo(f"  {error}", err=True)


@app.command()
def topics() -> None:
    """Create the topics Parcours uses, if missing."""
    settings = _settings()
    try:
        names = asyncio.run(ensure_parcours_topics(settings))
    except ParcoursError as exc:
        _fail(exc)
    typer.echo(f"topics ready: {', '.join(names)}")


@app.command()
def schema(
    journey_map: Annotated[
        str | None, typer.Option("--map", help="include this map's custom event types")
    ] = None,
) -> None:
    """Print the event contract as JSON Schema."""
    try:
        types = load_journey_map(journey_map).event_types if journey_map else None
    except ParcoursError as exc:
        _fail(exc)
    sys.stdout.write(orjson.dumps(event_json_schema(types), option=orjson.OPT_INDENT_2).decode())
    sys.stdout.write("\n")


@app.command("check-map")
def check_map(path: Annotated[Path, typer.Argument(help="journey map YAML file")]) -> None:
    """Validate a journey map file and summarize it."""
    try:
        journey_map = load_journey_map(path)
    except ParcoursError as exc:
        _fail(exc)
    typer.echo(f"{path}: map {journey_map.name!r} is valid")
    typer.echo(f"  stages: {' -> '.join(journey_map.stages)}")
    typer.echo(f"  rules: {len(journey_map.rules)}; event types: {len(journey_map.event_types)}")


@app.command()
def evaluate(
    file: Annotated[str, typer.Argument(help="`sample`, or a .jsonl / REES46 / Instacart file")],
    fmt: Annotated[str, typer.Option("--format", help="auto, jsonl, rees46, instacart")] = "auto",
    horizon: Annotated[str | None, typer.Option(help="next-stage horizon, e.g. 30m")] = None,
    abandon_after: Annotated[str | None, typer.Option(help="cart abandonment, e.g. 1h")] = None,
    min_samples: Annotated[int | None, typer.Option(help="labels before the model serves")] = None,
    seed: Annotated[int, typer.Option(help="seed of the offline LightGBM ceiling")] = 0,
    json_path: Annotated[Path | None, typer.Option("--json", help="write the report here")] = None,
) -> None:
    """Replay a file through the real pipeline and compare the models with baselines."""
    from consumers.state_worker import run_state_consumer
    from consumers.trainer_worker import run_trainer
    from service.evaluate import evaluate_file, infrastructure, isolated, parse_duration, render

    settings = _settings()
    try:
        options = {
            "horizon_s": parse_duration(horizon) if horizon else None,
            "abandon_after_s": parse_duration(abandon_after) if abandon_after else None,
            "min_samples": min_samples,
        }
        embedded = not (settings.kafka.bootstrap and settings.redis.url)
        with infrastructure(isolated(settings, embedded=embedded, **options)) as ready:
            report = evaluate_file(
                ready, resolve(file), _format(fmt), consumer=run_state_consumer,
                trainer=run_trainer, seed=seed,
            )  # fmt: skip
    except (ParcoursError, OSError, ValueError) as exc:
        _fail(exc)
    typer.echo(render(report))
    if json_path is not None:
        json_path.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _format(value: str) -> Format:
    if value not in ("auto", "jsonl", "rees46", "instacart"):
        raise typer.BadParameter(f"unknown format {value!r}", param_hint="--format")
    return value  # type: ignore[return-value]


if __name__ == "__main__":
    app()
