"""Error hierarchy shared by every layer: one root, a `retriable` flag per area."""

from __future__ import annotations

from typing import Any, ClassVar


class ParcoursError(Exception):
    """Root of every error Parcours raises on purpose."""

    retriable: ClassVar[bool] = False


class InvalidEvent(ParcoursError):
    """An event that breaks the contract; `reason` is a stable label, `errors` are field-level."""

    def __init__(self, reason: str, errors: list[dict[str, Any]]) -> None:
        self.reason = reason
        self.errors = errors
        first = errors[0] if errors else {"loc": [], "msg": reason}
        where = ".".join(str(part) for part in first.get("loc", [])) or "event"
        super().__init__(f"{reason}: {where}: {first.get('msg', '')}")


class JourneyMapError(ParcoursError):
    """A journey map file that cannot be used; the message names file, line, key and problem."""


class ExperimentError(ParcoursError):
    """Experiment definitions that cannot be applied; the message names file, experiment and
    field, or the rule they break."""
