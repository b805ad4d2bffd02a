"""Turning a valid event into a malformed record, one named defect at a time.

Each defect mimics a real upstream fault and is guaranteed to fail the
contract (a JSON parse error or a pydantic validation error). Wherever the JSON
still parses, ``source_system`` is kept so a data-quality report can attribute
the defect.

>>> import random
>>> ev = {"schema_version": 1, "source_system": "CRM", "step": "closed", "ticket_id": "T1",
...       "closure_type": "resolved", "event_time": "2026-11-20T09:00:00+08:00"}
>>> corrupt(ev, b"{}", "wrong_version", "ticket_events", random.Random(0))
b'{"schema_version":2,"source_system":"CRM","step":"closed","ticket_id":"T1","closure_type":"resolved","event_time":"2026-11-20T09:00:00+08:00"}'
>>> corrupt(ev, b'{"a":1}', "not_json", "ticket_events", random.Random(0))[-1:] != b"}"
True
"""

from __future__ import annotations

import json
import random
from typing import Any

from stream.contract.ticket import REQUIRED_BY_STEP

#: defect -> relative frequency
DEFECT_WEIGHTS: dict[str, float] = {
    "not_json": 0.15,
    "missing_field": 0.25,
    "out_of_range": 0.15,
    "unknown_code": 0.15,
    "bad_time": 0.15,
    "wrong_version": 0.15,
}
DEFECTS: tuple[str, ...] = tuple(DEFECT_WEIGHTS)

#: how defect-prone each source system is (relative); field tablets and the app are the sloppiest
DEFECT_PRONENESS: dict[str, float] = {
    "FIELD": 3.0,
    "APP": 2.0,
    "SURVEY": 1.5,
    "HOTLINE": 1.0,
    "NOC": 1.0,
    "CRM": 0.7,
    "BILLING": 0.5,
}


def applicable(stream: str) -> tuple[str, ...]:
    """Defects that can be applied to an event of ``stream`` (tickets have no numeric ranges)."""
    if stream == "ticket_events":
        return tuple(d for d in DEFECTS if d != "out_of_range")
    return DEFECTS


def pick_defect(stream: str, rng: random.Random) -> str:
    names = applicable(stream)
    return rng.choices(names, weights=[DEFECT_WEIGHTS[n] for n in names])[0]


def _dumps(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()


def corrupt(doc: dict[str, Any], valid: bytes, defect: str, stream: str, rng: random.Random) -> bytes:
    """Bytes of ``doc`` (the valid event as JSON-ready dict; ``valid`` its bytes) with ``defect`` applied."""
    if defect == "not_json":
        # any proper prefix of a JSON object is invalid JSON: a connection cut mid-message
        return valid[: rng.randint(len(valid) // 3, len(valid) - 1)]
    doc = dict(doc)
    if defect == "missing_field":
        if stream == "ticket_events":
            candidates = ["ticket_id", *REQUIRED_BY_STEP[doc["step"]]]
        else:
            candidates = ["overall_score", "contact_id", "region", "channel"]
        del doc[rng.choice([c for c in candidates if c in doc])]
    elif defect == "out_of_range":
        if "nps" in doc and rng.random() < 0.4:
            doc["nps"] = 12
        else:
            doc["overall_score"] = 11
    elif defect == "unknown_code":
        # a code outside the closed vocabulary of the field the step carries
        if "channel" in doc:
            doc["channel"] = "fax"
        elif doc.get("step") == "closed":
            doc["closure_type"] = "auto_closed"
        else:
            doc["step"] = "escalated"
    elif defect == "bad_time":
        doc["event_time"] = doc["event_time"][:19]  # local time, offset dropped
    elif defect == "wrong_version":
        doc["schema_version"] = 2
    else:
        raise ValueError(f"unknown defect {defect!r}")
    return _dumps(doc)
