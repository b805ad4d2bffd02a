"""Events -> column-oriented Arrow tables for ClickHouse inserts.

Pure and synchronous: one pass over a batch, one Arrow table per target table.
Optional codes are stored as '' (LowCardinality(String)) so Grafana filters and
GROUP BYs need no NULL handling; optional numbers stay Nullable.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone

import pyarrow as pa

from ..ingest.records import Accepted, Rejection

_TS = pa.timestamp("ms", tz="UTC")

_DIMENSIONS = ("overall_service", "reach_speed", "ivr_menu", "agent_attitude", "agent_ability", "call_outcome")


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def ticket_table(batch: Sequence[Accepted], ingested_at: datetime) -> pa.Table:
    cols: dict[str, list] = {name: [] for name in TICKET_COLUMNS}
    now = _ms(ingested_at)
    for item in batch:
        e, r = item.event, item.record
        region = e.region
        cols["event_id"].append(e.event_id)
        cols["event_time"].append(_ms(e.event_time))
        cols["source_system"].append(e.source_system)
        cols["customer_id"].append(e.customer_id)
        cols["ticket_id"].append(e.ticket_id)
        cols["step"].append(e.step)
        cols["province"].append(region.province if region else "")
        cols["city"].append(region.city if region else "")
        cols["district"].append(region.district if region else "")
        cols["channel"].append(e.channel or "")
        cols["business_line"].append(e.business_line or "")
        cols["complaint_category"].append(e.complaint_category or "")
        cols["complaint_phenomenon"].append(e.complaint_phenomenon or "")
        cols["customer_tier"].append(e.customer_tier or "")
        cols["department"].append(e.department or "")
        cols["problem_location"].append(e.problem_location or "")
        cols["closure_type"].append(e.closure_type or "")
        cols["sla_deadline"].append(_ms(e.sla_deadline) if e.sla_deadline else None)
        cols["note"].append(e.note or "")
        cols["schema_version"].append(e.schema_version)
        cols["kafka_partition"].append(r.partition)
        cols["kafka_offset"].append(r.offset)
        cols["kafka_timestamp"].append(r.timestamp_ms)
        cols["ingested_at"].append(now)
    return pa.table({name: pa.array(values, type=TICKET_COLUMNS[name]) for name, values in cols.items()})


def satisfaction_table(batch: Sequence[Accepted], ingested_at: datetime) -> pa.Table:
    cols: dict[str, list] = {name: [] for name in SATISFACTION_COLUMNS}
    now = _ms(ingested_at)
    for item in batch:
        e, r = item.event, item.record
        dims = e.dimensions
        cols["event_id"].append(e.event_id)
        cols["event_time"].append(_ms(e.event_time))
        cols["source_system"].append(e.source_system)
        cols["customer_id"].append(e.customer_id)
        cols["contact_id"].append(e.contact_id)
        cols["ticket_id"].append(e.ticket_id or "")
        cols["channel"].append(e.channel)
        cols["province"].append(e.region.province)
        cols["city"].append(e.region.city)
        cols["district"].append(e.region.district)
        cols["business_line"].append(e.business_line or "")
        cols["customer_tier"].append(e.customer_tier or "")
        cols["plan"].append(e.plan or "")
        cols["overall_score"].append(e.overall_score)
        for name in _DIMENSIONS:
            cols[f"dim_{name}"].append(getattr(dims, name) if dims else None)
        cols["nps"].append(e.nps)
        cols["problem_solved"].append(e.problem_solved)
        cols["schema_version"].append(e.schema_version)
        cols["kafka_partition"].append(r.partition)
        cols["kafka_offset"].append(r.offset)
        cols["kafka_timestamp"].append(r.timestamp_ms)
        cols["ingested_at"].append(now)
    return pa.table({name: pa.array(values, type=SATISFACTION_COLUMNS[name]) for name, values in cols.items()})


def dead_letter_table(rejections: Sequence[Rejection], received_at: datetime) -> pa.Table:
    now = _ms(received_at)
    return pa.table(
        {
            "source_topic": pa.array([x.record.topic for x in rejections], pa.string()),
            "kafka_partition": pa.array([x.record.partition for x in rejections], pa.uint16()),
            "kafka_offset": pa.array([x.record.offset for x in rejections], pa.uint64()),
            "kafka_timestamp": pa.array([x.record.timestamp_ms for x in rejections], _TS),
            "kafka_key": pa.array([x.record.key or b"" for x in rejections], pa.binary()),
            "payload": pa.array([x.record.value or b"" for x in rejections], pa.binary()),
            "reason": pa.array([x.reason for x in rejections], pa.string()),
            "field": pa.array([x.field for x in rejections], pa.string()),
            "detail": pa.array([x.detail for x in rejections], pa.string()),
            "source_system": pa.array([x.source_system for x in rejections], pa.string()),
            "event_id": pa.array([x.event_id for x in rejections], pa.string()),
            "received_at": pa.array([now] * len(rejections), _TS),
        }
    )


def duplicate_table(duplicates: Sequence[Accepted], received_at: datetime) -> pa.Table:
    """Resends dropped by ingest (kept for the duplicate rate per source system)."""
    now = _ms(received_at)
    return pa.table(
        {
            "source_topic": pa.array([d.record.topic for d in duplicates], pa.string()),
            "kafka_partition": pa.array([d.record.partition for d in duplicates], pa.uint16()),
            "kafka_offset": pa.array([d.record.offset for d in duplicates], pa.uint64()),
            "kafka_timestamp": pa.array([d.record.timestamp_ms for d in duplicates], _TS),
            "event_id": pa.array([d.event.event_id for d in duplicates], pa.string()),
            "event_time": pa.array([_ms(d.event.event_time) for d in duplicates], _TS),
            "source_system": pa.array([d.event.source_system for d in duplicates], pa.string()),
            "received_at": pa.array([now] * len(duplicates), _TS),
        }
    )


def ticket_state_table(states: Sequence, updated_at_ms: int) -> pa.Table:
    """Current ticket states (``stream.state.lifecycle.TicketState``) -> ``ticket_state`` rows."""
    def ms(v):
        return _ms(v) if v is not None else None

    f = [s.followup for s in states]
    cols = {
        "ticket_id": [s.ticket_id for s in states],
        "customer_id": [s.customer_id for s in states],
        **{k: [getattr(s, k) or "" for s in states] for k in _STATE_CODES},
        "created_at": [ms(s.created_at) for s in states],
        "first_closed_at": [ms(s.first_closed_at) for s in states],
        "closed_at": [ms(s.closed_at) for s in states],
        "last_event_time": [_ms(s.last_event_time) for s in states],
        "departments": [list(s.departments) for s in states],
        "handoffs": [s.handoffs for s in states],
        "handling_s": [s.handling_s for s in states],
        "sla_deadline": [ms(s.sla_deadline) for s in states],
        "sla_breached": [s.sla_breached for s in states],
        "reopen_count": [s.reopen_count for s in states],
        "first_contact_resolution": [s.first_contact_resolution for s in states],
        "followup_event_id": [x.event_id if x else "" for x in f],
        "followup_time": [ms(x.event_time) if x else None for x in f],
        "followup_score": [x.overall_score if x else None for x in f],
        "followup_nps": [x.nps if x else None for x in f],
        "followup_reach_speed": [x.reach_speed if x else None for x in f],
        "internally_resolved": [s.internally_resolved for s in states],
        "customer_solved": [s.customer_solved for s in states],
        "perception_gap": [s.perception_gap for s in states],
        "finding_kinds": [[x.kind for x in s.findings] for s in states],
        "finding_event_ids": [[x.event_id for x in s.findings] for s in states],
        "finding_sources": [[x.source_system for x in s.findings] for s in states],
        "finding_details": [[x.detail for x in s.findings] for s in states],
        "steps": [len(s.steps) for s in states],
        "version": [s.version for s in states],
        "updated_at": [updated_at_ms] * len(states),
    }
    return pa.table({name: pa.array(cols[name], type=STATE_COLUMNS[name]) for name in STATE_COLUMNS})


def ticket_steps_table(states: Sequence, updated_at_ms: int) -> pa.Table:
    """Every step of each state, with holder, dwell and SLA marker -> ``ticket_steps`` rows.

    The last step of an open ticket has no dwell yet (it grows until the next
    step); tracing shows it as "open for ..." at query time.
    """
    rows = []
    for s in states:
        last = len(s.steps) - 1
        for v in s.steps:
            st = v.step
            dwell = None if (v.index == last and s.status == "open") else v.dwell_s
            rows.append((s.ticket_id, st.event_id, v.index, _ms(st.event_time), st.step, st.source_system,
                         st.department or "", v.holder, dwell, v.sla_breach, st.closure_type or "", s.district))  # fmt: skip
    names = list(STEP_COLUMNS)[:-1]
    data = {name: pa.array([r[i] for r in rows], type=STEP_COLUMNS[name]) for i, name in enumerate(names)}
    data["updated_at"] = pa.array([updated_at_ms] * len(rows), type=_TS)
    return pa.table(data)


_S, _U8 = pa.string(), pa.uint8()
_COMMON_TAIL = {
    "schema_version": _U8, "kafka_partition": pa.uint16(), "kafka_offset": pa.uint64(), "kafka_timestamp": _TS,
    "ingested_at": _TS,
}  # fmt: skip

TICKET_COLUMNS: dict[str, pa.DataType] = {
    "event_id": _S, "event_time": _TS, "source_system": _S, "customer_id": _S, "ticket_id": _S, "step": _S,
    "province": _S, "city": _S, "district": _S, "channel": _S, "business_line": _S, "complaint_category": _S,
    "complaint_phenomenon": _S, "customer_tier": _S, "department": _S, "problem_location": _S,
    "closure_type": _S, "sla_deadline": _TS, "note": _S, **_COMMON_TAIL,
}  # fmt: skip

SATISFACTION_COLUMNS: dict[str, pa.DataType] = {
    "event_id": _S, "event_time": _TS, "source_system": _S, "customer_id": _S, "contact_id": _S, "ticket_id": _S,
    "channel": _S, "province": _S, "city": _S, "district": _S, "business_line": _S, "customer_tier": _S,
    "plan": _S, "overall_score": _U8, **{f"dim_{d}": _U8 for d in _DIMENSIONS}, "nps": _U8,
    "problem_solved": pa.bool_(), **_COMMON_TAIL,
}  # fmt: skip

_STATE_CODES = (
    "province", "city", "district", "channel", "business_line", "complaint_category", "complaint_phenomenon",
    "customer_tier", "status", "holder_department", "sla_breach", "closure_type", "problem_location",
)  # fmt: skip
_B, _F64, _U16 = pa.bool_(), pa.float64(), pa.uint16()
_LIST_S = pa.list_(pa.string())

STATE_COLUMNS: dict[str, pa.DataType] = {
    "ticket_id": _S, "customer_id": _S, **{k: _S for k in _STATE_CODES},
    "created_at": _TS, "first_closed_at": _TS, "closed_at": _TS, "last_event_time": _TS, "departments": _LIST_S,
    "handoffs": _U16, "handling_s": _F64, "sla_deadline": _TS, "sla_breached": _B, "reopen_count": _U16,
    "first_contact_resolution": _B, "followup_event_id": _S, "followup_time": _TS, "followup_score": _U8,
    "followup_nps": _U8, "followup_reach_speed": _U8, "internally_resolved": _B, "customer_solved": _B, "perception_gap": _B,
    "finding_kinds": _LIST_S, "finding_event_ids": _LIST_S, "finding_sources": _LIST_S, "finding_details": _LIST_S,
    "steps": _U16, "version": pa.uint32(), "updated_at": _TS,
}  # fmt: skip

STEP_COLUMNS: dict[str, pa.DataType] = {
    "ticket_id": _S, "event_id": _S, "step_index": _U16, "event_time": _TS, "step": _S, "source_system": _S,
    "department": _S, "holder": _S, "dwell_s": _F64, "sla_breach": _B, "closure_type": _S, "district": _S,
    "updated_at": _TS,
}  # fmt: skip

#: contract name -> (ClickHouse table, column builder)
TABLES = {
    "ticket_event": ("ticket_events", ticket_table),
    "satisfaction_event": ("satisfaction_events", satisfaction_table),
}


def utcnow() -> datetime:
    return datetime.now(timezone.utc)
