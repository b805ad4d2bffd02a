"""The shapes that flow through ingest, independent of the Kafka client.

Immutable by convention, not ``frozen``: several are built per event, and a frozen
dataclass's ``__init__`` costs about three times as much (issue 8).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..contract import Envelope


@dataclass(slots=True, unsafe_hash=True)
class RawRecord:
    """One Kafka message exactly as it arrived."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None


@dataclass(slots=True, unsafe_hash=True)
class Rejection:
    """Why a record could not be accepted; stored with the original bytes.

    ``reason`` is a stable code for dashboards and data-quality reports
    (``not_json``, ``missing_field``, ``unknown_field``, ``unknown_code``,
    ``out_of_range``, ``bad_time``, ``unsupported_version``, ``invalid_value``,
    ``empty_message``); ``field`` is the dotted path of the first offending
    field and ``detail`` the full human-readable message.
    """

    record: RawRecord
    reason: str
    field: str
    detail: str
    source_system: str = ""
    event_id: str = ""


@dataclass(slots=True, unsafe_hash=True)
class Accepted:
    record: RawRecord
    event: Envelope


@dataclass(slots=True)
class IngestBatch:
    """The outcome of one polled batch for one contract."""

    accepted: list[Accepted]
    rejected: list[Rejection]
    duplicates: list[Accepted]  # valid events whose event_id was already seen (resends)

    def tally(self) -> "Tally":
        return Tally(len(self.accepted), self.rejected, len(self.duplicates))


@dataclass(slots=True)
class Tally:
    """What a batch keeps once its state is derived: counts and the rejections (for the dead letters).

    The validated events (about 2 KB each) are not kept while the batch waits for its commit: about 100 MB
    less per 50,000 events in flight.
    """

    accepted: int
    rejected: list[Rejection]
    duplicates: int
