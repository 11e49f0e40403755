"""Runtime errors of the shared service pieces; `retriable` tells workers to back off and retry."""

from __future__ import annotations

from models.errors import ParcoursError


class StoreUnavailable(ParcoursError):
    """Redis could not be reached or timed out."""

    retriable = True


class BusUnavailable(ParcoursError):
    """Kafka could not be reached, or did not acknowledge in time."""

    retriable = True


class WriteConflict(ParcoursError):
    """Other writers kept changing the same journeys; the batch is retried from Kafka."""

    retriable = True


class ConfigurationError(ParcoursError):
    """Settings that cannot work together; raised at start-up."""
