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


_S, _U8 = pa.string(), pa.uint8()
_COMMON_TAIL = {"schema_version": _U8, "kafka_partition": pa.uint16(), "kafka_offset": pa.uint64(), "ingested_at": _TS}

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

#: contract name -> (ClickHouse table, column builder)
TABLES = {
    "ticket_event": ("ticket_events", ticket_table),
    "satisfaction_event": ("satisfaction_events", satisfaction_table),
}


def utcnow() -> datetime:
    return datetime.now(timezone.utc)
