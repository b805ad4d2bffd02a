"""Decode and validate raw records against their contract, in batches.

Validation is pydantic's (``model_validate_json``, one call per record, no
intermediate dict). A failure becomes a :class:`Rejection` with a stable reason
code; nothing raises out of :func:`decode_batch`.

>>> from stream.contract import SatisfactionEvent
>>> bad = RawRecord("t", 0, 7, 0, b"c-1", b'{"schema_version": 1')
>>> ok, rejected = decode_batch([bad], SatisfactionEvent)
>>> ok, rejected[0].reason, rejected[0].record.offset
([], 'not_json', 7)
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from pydantic import ValidationError

from ..contract import Envelope
from .records import Accepted, RawRecord, Rejection

# pydantic error type -> our reason code. Anything unlisted is 'invalid_value'.
_REASONS = {
    "json_invalid": "not_json",
    "json_type": "not_json",
    "model_type": "not_object",
    "model_attributes_type": "not_object",
    "missing": "missing_field",
    "missing_for_step": "missing_field",
    "extra_forbidden": "unknown_field",
    "enum": "unknown_code",
    "literal_error": "unknown_code",
    "timezone_aware": "bad_time",
    "datetime_parsing": "bad_time",
    "datetime_type": "bad_time",
    "datetime_from_date_parsing": "bad_time",
    "greater_than": "out_of_range",
    "greater_than_equal": "out_of_range",
    "less_than": "out_of_range",
    "less_than_equal": "out_of_range",
}


def classify(error: ValidationError) -> tuple[str, str, str]:
    """(reason code, field path, detail) for a pydantic validation error."""
    errors = error.errors(include_url=False, include_input=False)
    first = errors[0]
    field = ".".join(str(part) for part in first["loc"])
    if first["type"] == "missing_for_step":
        field = first.get("ctx", {}).get("fields", field)
    reason = _REASONS.get(first["type"], "invalid_value")
    if field == "schema_version" and reason == "out_of_range":
        reason = "unsupported_version"
    detail = "; ".join(f"{'.'.join(map(str, e['loc'])) or '(event)'}: {e['msg']}" for e in errors)
    return reason, field, detail


def _best_effort_ids(value: bytes) -> tuple[str, str]:
    """source_system and event_id from a rejected payload, if they can be read.

    Only runs on the rejection path, so data-quality reports can attribute a bad
    event to the system that sent it.
    """
    try:
        doc = json.loads(value)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return "", ""
    if not isinstance(doc, dict):
        return "", ""
    source, event_id = doc.get("source_system"), doc.get("event_id")
    return (source if isinstance(source, str) else ""), (event_id if isinstance(event_id, str) else "")


def decode_batch(records: Iterable[RawRecord], model: type[Envelope]) -> tuple[list[Accepted], list[Rejection]]:
    """Validate each record's value against ``model``; never raises for bad data."""
    accepted: list[Accepted] = []
    rejected: list[Rejection] = []
    validate = model.__pydantic_validator__.validate_json  # model_validate_json without its wrapper (per event)
    for record in records:
        if not record.value:
            rejected.append(Rejection(record, "empty_message", "", "message value is empty (tombstone or null)"))
            continue
        try:
            # strict: accept exactly what the published JSON Schema allows (no "7"
            # for 7, no epoch seconds for a time), so upstream checks agree with ours.
            accepted.append(Accepted(record, validate(record.value, strict=True)))
        except ValidationError as exc:
            reason, field, detail = classify(exc)
            source, event_id = _best_effort_ids(record.value)
            rejected.append(Rejection(record, reason, field, detail, source, event_id))
    return accepted, rejected
