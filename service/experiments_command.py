"""`parcours experiments apply FILE | list`: experiments kept as configuration (a YAML file
under version control) and written to Redis, as `PUT /v1/experiments/{name}` would.

    experiments:
      cart-offer:
        decision: webhook:cart.abandoned
        variants: [{name: none}, {name: free_shipping, params: {offer: free_shipping}}]
        policy: thompson

Every definition is checked before any is written; a bad one names the file, the experiment
and the field. An experiment's variants never change under the same name.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, Final, TypeVar

import typer
import yaml
from pydantic import ValidationError

from models.errors import ExperimentError
from models.experiments import HOLDOUT, NAME_PATTERN, ExperimentSpec
from service.experiments import Defined, ExperimentStore
from service.redis_command import with_redis

T = TypeVar("T")
NAME_RE: Final = re.compile(NAME_PATTERN)

experiments_app = typer.Typer(
    help="Define experiments from a file, or list them.", no_args_is_help=True
)


def parse(path: Path, text: str) -> dict[str, ExperimentSpec]:
    """The file's experiments; ExperimentError naming the file, experiment and field if not."""
    try:
        data: Any = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ExperimentError(f"{path}: not YAML: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("experiments"), dict):
        raise ExperimentError(f"{path}: expected a mapping with an `experiments` mapping")
    found: dict[str, ExperimentSpec] = {}
    for name, body in data["experiments"].items():
        if not isinstance(name, str) or name == HOLDOUT or not NAME_RE.fullmatch(name):
            raise ExperimentError(f"{path}: experiments.{name}: not a usable experiment name")
        try:
            found[name] = ExperimentSpec.model_validate(body)
        except ValidationError as exc:
            problems = "; ".join(
                f"experiments.{name}.{'.'.join(map(str, e['loc']))}: {e['msg']}"
                for e in exc.errors()
            )
            raise ExperimentError(f"{path}: {problems}") from None
    return found


async def apply(store: ExperimentStore, specs: dict[str, ExperimentSpec]) -> list[str]:
    """Write every definition; ExperimentError (nothing written) if one would change variants."""
    old = {d.name: d for d in await store.list()}
    for name, spec in specs.items():
        before = old.get(name)
        if before is not None and before.spec.variant_names != spec.variant_names:
            raise ExperimentError(f"experiment {name!r} exists with other variants; use a new name")
    now_ms = int(time.time() * 1000)
    lines = []
    for name, spec in specs.items():
        verb = "unchanged" if name in old and old[name].spec == spec else "written"
        if verb == "written":
            await store.put(name, spec, now_ms=now_ms)
        lines.append(f"{verb:<9}  {name}  {spec.decision}  {spec.policy}")
    return lines


@experiments_app.command("apply")
def apply_file(
    path: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="a YAML file")],
) -> None:
    """Define (or update) every experiment the file holds."""
    try:
        specs = parse(path, path.read_text())
    except ExperimentError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    for line in _with_store(lambda store: apply(store, specs)):
        typer.echo(line)


@experiments_app.command("list")
def list_experiments() -> None:
    """Every experiment defined in Redis."""
    for d in _with_store(lambda store: store.list()):
        typer.echo(_line(d))


def _line(d: Defined) -> str:
    state = "active" if d.spec.active else "paused"
    variants = ",".join(d.spec.variant_names)
    return f"{d.name}  {state:<6}  {d.spec.decision}  {d.spec.policy}  {variants}"


def _with_store(action: Callable[[ExperimentStore], Awaitable[T]]) -> T:
    return with_redis(
        lambda redis, settings: action(ExperimentStore(redis, prefix=settings.redis.key_prefix))
    )
