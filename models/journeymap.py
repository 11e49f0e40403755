"""Journey maps: each business's ordered stages and the rules that move customers between them.

A map is a YAML file. Rules are checked in file order and the first that matches moves the
customer. Without `from`, a rule only moves customers forward (to a later stage); with `from`
it applies exactly in the listed stages, which is how a map expresses loops back.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Annotated, Any, Final, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from models.errors import JourneyMapError
from models.events import CANONICAL_TYPES, TYPE_PATTERN, Channel
from models.triggers import TriggerType

METRICS: Final[dict[str, str]] = {
    "purchases": "orders placed so far (distinct order_id, or one per session without one)",
    "category_views": "product views in the event's category, this one included",
    "product_views": "product views so far",
    "type_count": "events of this event's type so far, this one included",
    "sessions": "sessions so far",
    "session_events": "events in the current session, this one included",
    "cart_items": "units in the cart after this event",
    "cart_value": "value of the cart after this event",
    "total_spend": "total spent on purchases so far",
    "price": "the event's properties.price (0 when absent)",
    "dwell_ms": "the event's properties.dwell_ms (0 when absent)",
}
"""Names a rule's `where` may test, computed from the state after the event is applied."""

_OPERATORS: Final[dict[str, Callable[[float, float], bool]]] = {
    "eq": operator.eq,
    "ne": operator.ne,
    "gt": operator.gt,
    "gte": operator.ge,
    "lt": operator.lt,
    "lte": operator.le,
}
BUILTIN_MAPS: Final = ("retail", "b2b")
EXIT: Final = "exit"
"""The pseudo-stage of a customer predicted to leave (no transition within the horizon)."""

Name = Annotated[str, Field(pattern=TYPE_PATTERN)]
Op = Literal["eq", "ne", "gt", "gte", "lt", "lte"]


class _RuleSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    to: Name
    events: list[Name] = Field(min_length=1)
    channels: list[Channel] | None = Field(default=None, min_length=1)
    from_: list[Name] | None = Field(default=None, alias="from", min_length=1)
    where: dict[str, dict[Op, float]] = Field(default_factory=dict)


class _ActionSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    stage: Name
    next: Name | None = None
    action: Name
    description: str = Field(default="", max_length=500)
    params: dict[str, str | int | float | bool] = Field(default_factory=dict)


class _CapSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    every_hours: float = Field(gt=0, le=24 * 366)


class _QuietHoursSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    start: str = Field(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")
    end: str = Field(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")
    timezone: str = "UTC"


class _TriggersSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    caps: dict[TriggerType, _CapSpec] = Field(default_factory=dict)
    quiet_hours: _QuietHoursSpec | None = None


class _MapSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name
    description: str = ""
    stages: list[Name] = Field(min_length=2)
    event_types: list[Name] = Field(default_factory=list)
    session_timeout_minutes: int = Field(default=30, ge=1, le=1440)
    rules: list[_RuleSpec] = Field(min_length=1)
    actions: list[_ActionSpec] = Field(default_factory=list)
    triggers: _TriggersSpec = Field(default_factory=_TriggersSpec)


@dataclass(frozen=True, slots=True)
class QuietHours:
    """Local times (in `timezone`) between which capped webhooks wait; may span midnight."""

    start_minute: int
    end_minute: int
    timezone: str

    def ends_at(self, now_s: float) -> float | None:
        """When the quiet hours `now_s` falls in end (Unix seconds), or None outside them."""
        local = datetime.fromtimestamp(now_s, ZoneInfo(self.timezone))
        minute = local.hour * 60 + local.minute
        start, end = self.start_minute, self.end_minute
        inside = start <= minute < end if start < end else (minute >= start or minute < end)
        if not inside:
            return None
        until = local.replace(hour=end // 60, minute=end % 60, second=0, microsecond=0)
        if until <= local:
            until += timedelta(days=1)
        return until.timestamp()


@dataclass(frozen=True, slots=True)
class Condition:
    """`metric <op> value`, e.g. purchases >= 2."""

    metric: str
    op: str
    value: float

    def holds(self, measure: Callable[[str], float]) -> bool:
        return _OPERATORS[self.op](measure(self.metric), self.value)


@dataclass(frozen=True, slots=True)
class Rule:
    """Move to `to` on one of `events`, from an allowed stage, when every condition holds."""

    to: str
    events: frozenset[str]
    channels: frozenset[str] | None
    from_stages: frozenset[str] | None
    where: tuple[Condition, ...]


@dataclass(frozen=True, slots=True)
class StageAction:
    """The next best action for customers in `stage` (predicted to move to `next`, if set)."""

    stage: str
    next: str | None
    action: str
    description: str = ""
    params: Mapping[str, str | int | float | bool] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class JourneyMap:
    """A validated map; `next_stage` is the only question the fold asks it."""

    name: str
    stages: tuple[str, ...]
    event_types: frozenset[str]
    session_timeout_ms: int
    rules: tuple[Rule, ...]
    description: str = ""
    actions: tuple[StageAction, ...] = ()
    trigger_caps: Mapping[str, int] = field(default_factory=dict)
    """Trigger type -> the least event time (ms) between two of that type for one customer."""
    quiet_hours: QuietHours | None = None
    _positions: dict[str, int] = field(init=False, repr=False, compare=False)
    _by_type: dict[str, tuple[tuple[Rule, int], ...]] = field(init=False, repr=False, compare=False)
    _conditional: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Every event asks the map; index the rules by event type once, in file order, each
        # with its target's position, so a question costs a dict lookup and a short loop.
        positions = {stage: i for i, stage in enumerate(self.stages)}
        by_type: dict[str, list[tuple[Rule, int]]] = {}
        for rule in self.rules:
            for event_type in rule.events:
                by_type.setdefault(event_type, []).append((rule, positions[rule.to]))
        conditional = {t for t, rules in by_type.items() if any(r.where for r, _ in rules)}
        object.__setattr__(self, "_conditional", frozenset(conditional))
        object.__setattr__(self, "_positions", positions)
        object.__setattr__(self, "_by_type", {k: tuple(v) for k, v in by_type.items()})

    @property
    def initial_stage(self) -> str:
        return self.stages[0]

    def action_for(self, stage: str, predicted_next: str | None) -> StageAction | None:
        """The first action declared for `stage` and `predicted_next`, else for `stage` alone."""
        fallback = None
        for action in self.actions:
            if action.stage != stage:
                continue
            if action.next is None:
                fallback = fallback or action
            elif action.next == predicted_next:
                return action
        return fallback

    def has_conditions(self, event_type: str) -> bool:
        """Whether any rule for this event type has `where` conditions (needs measures)."""
        return event_type in self._conditional

    def next_stage(
        self, current: str, event_type: str, channel: str, measure: Callable[[str], float]
    ) -> str | None:
        """The stage this event moves a customer in `current` to, or None to stay.

        A stage from an older version of the map has position -1: any forward rule applies.
        """
        position = self._positions.get(current, -1)
        for rule, target in self._by_type.get(event_type, ()):
            if rule.to == current:
                continue
            if rule.channels is not None and channel not in rule.channels:
                continue
            if rule.from_stages is None:
                if target <= position:
                    continue
            elif current not in rule.from_stages:
                continue
            if _conditions_hold(rule.where, measure):
                return rule.to
        return None


def _conditions_hold(conditions: tuple[Condition, ...], measure: Callable[[str], float]) -> bool:
    # A plain loop, not all(<genexpr>): this runs for every event and most rules have no
    # conditions, where building a generator would be the whole cost.
    for condition in conditions:  # noqa: SIM110
        if not condition.holds(measure):
            return False
    return True


def load_journey_map(name_or_path: str | Path) -> JourneyMap:
    """A built-in map by name (`retail`, `b2b`) or a YAML file by path."""
    if str(name_or_path) in BUILTIN_MAPS:
        name = str(name_or_path)
        text = resources.files("models.maps").joinpath(f"{name}.yaml").read_text("utf-8")
        return parse_journey_map(text, f"{name}.yaml (built-in)")
    path = Path(name_or_path)
    try:
        text = path.read_text("utf-8")
    except OSError as exc:
        raise JourneyMapError(f"{path}: cannot read journey map: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise JourneyMapError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    return parse_journey_map(text, str(path))


def parse_journey_map(text: str, source: str) -> JourneyMap:
    """Parse and validate map text; every problem is reported as `source:line: key: what`."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        if root is None:
            raise JourneyMapError(f"{source}: the journey map is empty")
        _reject_duplicate_keys(root, source)
        data = yaml.safe_load(text)  # constructing can fail where composing did not (tags)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise JourneyMapError(f"{source}{line}: not valid YAML: {problem}") from None
    try:
        spec = _MapSpec.model_validate(data)
    except ValidationError as exc:
        problems = [(list(e["loc"]), e["msg"]) for e in exc.errors(include_url=False)]
        raise JourneyMapError(_report(source, root, problems)) from None
    problems = list(_semantic_problems(spec))
    if problems:
        raise JourneyMapError(_report(source, root, problems))
    return _build(spec)


def _semantic_problems(spec: _MapSpec) -> Iterable[tuple[list[Any], str]]:
    stages = set(spec.stages)
    if len(stages) != len(spec.stages):
        yield ["stages"], "stage names must be unique"
    if EXIT in stages:
        yield ["stages"], f"{EXIT!r} is reserved for customers who leave; rename the stage"
    for i, custom in enumerate(spec.event_types):
        if custom in CANONICAL_TYPES:
            yield ["event_types", i], f"{custom!r} is already a canonical type; remove it"
    known_types = set(CANONICAL_TYPES) | set(spec.event_types)
    for r, rule in enumerate(spec.rules):
        if rule.to not in stages:
            yield ["rules", r, "to"], f"unknown stage {rule.to!r}; stages are {spec.stages}"
        for i, stage in enumerate(rule.from_ or []):
            if stage not in stages:
                yield ["rules", r, "from", i], f"unknown stage {stage!r}; stages are {spec.stages}"
        for i, event_type in enumerate(rule.events):
            if event_type not in known_types:
                msg = f"unknown event type {event_type!r}; declare custom types under event_types"
                yield ["rules", r, "events", i], msg
        for metric, tests in rule.where.items():
            if metric not in METRICS:
                yield ["rules", r, "where", metric], f"unknown metric; known: {sorted(METRICS)}"
            if not tests:
                yield (
                    ["rules", r, "where", metric],
                    "needs at least one of eq, ne, gt, gte, lt, lte",
                )
    seen: set[tuple[str, str | None]] = set()
    for a, action in enumerate(spec.actions):
        if action.stage not in stages:
            msg = f"unknown stage {action.stage!r}; stages are {spec.stages}"
            yield ["actions", a, "stage"], msg
        if action.next is not None and action.next not in stages | {EXIT}:
            msg = f"unknown stage {action.next!r}; stages are {spec.stages} or {EXIT!r}"
            yield ["actions", a, "next"], msg
        if (action.stage, action.next) in seen:
            yield ["actions", a], "another action is declared for this stage and next stage"
        seen.add((action.stage, action.next))
    quiet = spec.triggers.quiet_hours
    if quiet is not None:
        try:
            ZoneInfo(quiet.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            msg = f"unknown time zone {quiet.timezone!r} (an IANA name such as Europe/Paris)"
            yield ["triggers", "quiet_hours", "timezone"], msg
        if quiet.start == quiet.end:
            yield ["triggers", "quiet_hours"], "start and end are equal: quiet hours would be empty"


def _build(spec: _MapSpec) -> JourneyMap:
    rules = tuple(
        Rule(
            to=rule.to,
            events=frozenset(rule.events),
            channels=frozenset(c.value for c in rule.channels) if rule.channels else None,
            from_stages=frozenset(rule.from_) if rule.from_ else None,
            where=tuple(
                Condition(metric, op, value)
                for metric, tests in rule.where.items()
                for op, value in tests.items()
            ),
        )
        for rule in spec.rules
    )
    return JourneyMap(
        name=spec.name,
        description=spec.description,
        stages=tuple(spec.stages),
        event_types=frozenset(CANONICAL_TYPES) | frozenset(spec.event_types),
        session_timeout_ms=spec.session_timeout_minutes * 60_000,
        rules=rules,
        actions=tuple(
            StageAction(a.stage, a.next, a.action, a.description, MappingProxyType(a.params))
            for a in spec.actions
        ),
        trigger_caps=MappingProxyType(
            {kind: round(cap.every_hours * 3_600_000) for kind, cap in spec.triggers.caps.items()}
        ),
        quiet_hours=_quiet_hours(spec.triggers.quiet_hours),
    )


def _quiet_hours(spec: _QuietHoursSpec | None) -> QuietHours | None:
    if spec is None:
        return None
    return QuietHours(_minute(spec.start), _minute(spec.end), spec.timezone)


def _minute(hhmm: str) -> int:
    return int(hhmm[:2]) * 60 + int(hhmm[3:])


def _report(source: str, root: yaml.Node, problems: list[tuple[list[Any], str]]) -> str:
    lines = [f"{source}:{_line_of(root, loc)}: {_dotted(loc)}: {msg}" for loc, msg in problems]
    return "invalid journey map\n  " + "\n  ".join(lines)


def _dotted(loc: list[Any]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


def _line_of(node: yaml.Node, loc: list[Any]) -> int:
    """The line of the deepest YAML node along `loc` (the parent when a key is missing)."""
    for part in loc:
        child = _child(node, part)
        if child is None:
            break
        node = child
    return int(node.start_mark.line) + 1


def _child(node: yaml.Node, part: Any) -> yaml.Node | None:
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if key.value == part:
                return value  # type: ignore[no-any-return]
    if isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
        return node.value[part]  # type: ignore[no-any-return]
    return None


def _reject_duplicate_keys(node: yaml.Node, source: str) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: set[Any] = set()
        for key, value in node.value:
            if key.value in seen:
                line = key.start_mark.line + 1
                raise JourneyMapError(f"{source}:{line}: duplicate key {key.value!r}")
            seen.add(key.value)
            _reject_duplicate_keys(value, source)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            _reject_duplicate_keys(item, source)
