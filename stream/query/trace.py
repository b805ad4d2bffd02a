"""End-to-end tracing of one complaint ticket, from ClickHouse.

One call answers the operators' questions about a ticket: its whole journey
across systems in time order, who held it how long, where it breached its SLA,
and whether the customer was satisfied afterwards (perceived versus internal
resolution). It reads ClickHouse, so it works for tickets long gone from stream
state; the same function serves ``cxstream trace`` and
``GET /tickets/{id}/trace``.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from clickhouse_connect.driver.client import Client


class TicketNotFound(LookupError):
    def __init__(self, ticket_id: str):
        super().__init__(f"ticket {ticket_id!r} not found: no lifecycle event or follow-up carries this ticket id")
        self.ticket_id = ticket_id


def _rows(client: Client, sql: str, ticket_id: str) -> list[dict[str, Any]]:
    result = client.query(sql, parameters={"t": ticket_id})
    return [dict(zip(result.column_names, row)) for row in result.result_rows]


def _utc(value):
    if isinstance(value, datetime) and value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value


def trace(client: Client, database: str, ticket_id: str, now: datetime | None = None) -> dict[str, Any]:
    """The journey of ``ticket_id``; raises :class:`TicketNotFound`."""
    db = database
    state = _rows(client, f"SELECT * EXCEPT (updated_at) FROM {db}.ticket_state FINAL WHERE ticket_id = %(t)s", ticket_id)
    steps = _rows(
        client,
        f"SELECT step_index, event_time, step, source_system, department, holder, dwell_s, sla_breach, closure_type, "
        f"event_id FROM {db}.ticket_steps FINAL WHERE ticket_id = %(t)s ORDER BY step_index",
        ticket_id,
    )
    if not steps:  # no derived steps (yet): show the raw lifecycle events
        steps = _rows(
            client,
            f"SELECT row_number() OVER (ORDER BY event_time, event_id) - 1 AS step_index, event_time, step, "
            f"source_system, department, department AS holder, NULL AS dwell_s, false AS sla_breach, closure_type, "
            f"event_id FROM {db}.ticket_events FINAL WHERE ticket_id = %(t)s ORDER BY event_time, event_id",
            ticket_id,
        )
    followups = _rows(
        client,
        f"SELECT event_time, source_system, channel, overall_score, nps, problem_solved, event_id, "
        f"dim_overall_service, dim_reach_speed, dim_ivr_menu, dim_agent_attitude, dim_agent_ability, dim_call_outcome "
        f"FROM {db}.satisfaction_events FINAL WHERE ticket_id = %(t)s ORDER BY event_time, event_id",
        ticket_id,
    )
    if not (state or steps or followups):
        raise TicketNotFound(ticket_id)
    now = now or datetime.now(timezone.utc)
    for row in steps + followups:
        row["event_time"] = _utc(row["event_time"])
    summary = {k: _utc(v) for k, v in state[0].items()} if state else {"ticket_id": ticket_id}
    if steps and summary.get("status") == "open":
        last = steps[-1]
        last["open_for_s"] = max(0.0, (now - last["event_time"]).total_seconds())
    return {"ticket": summary, "journey": steps, "followups": followups, "traced_at": now}


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    s = int(seconds)
    d, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    if d:
        return f"{d}d{h:02d}h"
    if h:
        return f"{h}h{m:02d}m"
    return f"{m}m{s:02d}s" if m else f"{s}s"


def _yes_no(value) -> str:
    return {True: "yes", False: "no", None: "unknown"}[value]


def format_trace(t: dict[str, Any]) -> str:
    """A readable journey for a terminal."""
    s = t["ticket"]
    out = [f"Ticket {s['ticket_id']}"]
    if "status" in s:
        where = " / ".join(x for x in (s["province"], s["city"], s["district"]) if x)
        what = "/".join(x for x in (s["complaint_category"], s["complaint_phenomenon"]) if x)
        out.append(
            f"  customer {s['customer_id']} · {where} · {s['channel']} · {s['business_line']} · {what} · tier {s['customer_tier']}"
        )
        sla = "not breached"
        if s["sla_breached"]:
            sla = "BREACHED (" + ("closed after the deadline" if s["sla_breach"] == "closed_late" else "open past the deadline") + ")"
        deadline = s["sla_deadline"].strftime("%Y-%m-%d %H:%M UTC") if s["sla_deadline"] else "none"
        handling = _duration(s["handling_s"]) or "-"
        out.append(
            f"  status {s['status']} · handling time {handling} · SLA deadline {deadline}: {sla} · "
            f"reopened {s['reopen_count']}x · first-contact resolution {_yes_no(s['first_contact_resolution'])}"
        )
        holders = " -> ".join(s["departments"]) or "never dispatched"
        out.append(f"  held by: {holders} ({s['handoffs']} hand-off{'s' if s['handoffs'] != 1 else ''})")
    out.append("")
    out.append(f"  {'#':>2}  {'time (UTC)':<19}  {'step':<19}  {'source':<8}  {'holder':<18}  {'held for':>9}  SLA")
    for r in t["journey"]:
        held = _duration(r.get("dwell_s"))
        if "open_for_s" in r:
            held = f"{_duration(r['open_for_s'])}+"
        mark = "BREACH" if r["sla_breach"] else ""
        step = r["step"] + (f" ({r['closure_type']})" if r["step"] == "closed" and r["closure_type"] else "")
        out.append(
            f"  {r['step_index'] + 1:>2}  {r['event_time']:%Y-%m-%d %H:%M:%S}  {step:<19}  {r['source_system']:<8}  "
            f"{r['holder'] or '-':<18}  {held:>9}  {mark}"
        )
    if not t["journey"]:
        out.append("  (no lifecycle events: only follow-ups carry this ticket id)")
    out.append("")
    for f in t["followups"]:
        nps = f" · NPS {f['nps']}" if f["nps"] is not None else ""
        out.append(
            f"  follow-up {f['event_time']:%Y-%m-%d %H:%M} via {f['channel']} ({f['source_system']}): "
            f"score {f['overall_score']}/10{nps} · problem solved: {_yes_no(f['problem_solved'])}"
        )
    if not t["followups"]:
        out.append("  no follow-up satisfaction yet")
    if "status" in s:
        internal = "resolved" if s["internally_resolved"] else (s["closure_type"] or "open")
        customer = {True: "solved", False: "NOT solved", None: "not asked yet"}[s["customer_solved"]]
        gap = "  <- PERCEPTION GAP" if s["perception_gap"] else ""
        out.append(f"  resolution: operator says {internal}; customer says {customer}{gap}")
        kinds = s.get("finding_kinds") or []
        if kinds:
            details = s.get("finding_details") or kinds
            out.append("  data-quality findings: " + "; ".join(details))
    return "\n".join(out)
