"""Facts: what one event or one ticket contributes to the indicator counters.

Pure functions of an event or of a ticket's state (docs/indicators.md is the
definition). A fact is ``(time, cell, counters)``; the cube puts it in every
window containing ``time``. A ticket's facts are re-derived whenever its state
changes, and the cube retracts the previous ones, so a late step or a reopen
corrects the windows it touches.

>>> from datetime import datetime, timezone
>>> from stream.contract.export import EXAMPLES
>>> from stream.contract import SatisfactionEvent
>>> e = SatisfactionEvent.model_validate(EXAMPLES["satisfaction_event"][0])
>>> [(t.isoformat(), cell.district, named(c)["sat_sum"]) for t, cell, c in satisfaction_facts(e, 8)]
[('2026-11-20T17:05:00+08:00', 'P01-C02-D03', 7.0)]
"""

from __future__ import annotations

from datetime import datetime
from typing import NamedTuple

from ..contract import SatisfactionEvent
from ..state.lifecycle import TicketState
from .counters import COUNTERS, DIMENSIONS, INDEX, vector, zeros


class Cell(NamedTuple):
    """The base cell every counter is kept for; roll-ups sum cells."""

    province: str
    city: str
    district: str
    channel: str
    business_line: str


Fact = tuple[datetime, Cell, list[float]]

_DIM_N = {d: INDEX[f"dim_{d}_n"] for d in DIMENSIONS}
_DIM_SUM = {d: INDEX[f"dim_{d}_sum"] for d in DIMENSIONS}


def named(counters: list[float]) -> dict[str, float]:
    return dict(zip(COUNTERS, counters))


def satisfaction_facts(e: SatisfactionEvent, satisfied_min_score: int) -> tuple[Fact, ...]:
    r = e.region
    cell = Cell(r.province, r.city, r.district, str(e.channel), str(e.business_line or ""))
    score = e.overall_score
    c = zeros()
    c[INDEX["sat_n"]] = 1.0
    c[INDEX["sat_sum"]] = float(score)
    c[INDEX["sat_sumsq"]] = float(score * score)
    c[INDEX["satisfied_n"]] = 1.0 if score >= satisfied_min_score else 0.0
    if e.nps is not None:
        c[INDEX["nps_n"]] = 1.0
        c[INDEX["promoters_n"]] = 1.0 if e.nps >= 9 else 0.0
        c[INDEX["detractors_n"]] = 1.0 if e.nps <= 6 else 0.0
    dims = e.dimensions
    if dims is not None:
        for d in DIMENSIONS:
            v = getattr(dims, d)
            if v is not None:
                c[_DIM_N[d]] = 1.0
                c[_DIM_SUM[d]] = float(v)
    return ((e.event_time, cell, c),)


def ticket_facts(s: TicketState) -> tuple[Fact, ...]:
    """The ticket's contribution given its current state (empty without a district from its creation)."""
    if not s.district or s.created_at is None:
        return ()
    cell = Cell(s.province, s.city, s.district, s.channel, s.business_line)
    facts: list[Fact] = [(s.created_at, cell, vector(complaints=1))]
    if s.status == "closed" and s.closed_at is not None:
        closed = dict(closed_n=1, fcr_n=1 if s.first_contact_resolution else 0,
                      resolved_n=1 if s.internally_resolved else 0)  # fmt: skip
        if s.handling_s is not None:
            closed.update(handling_n=1, handling_sum=s.handling_s)
        if s.internally_resolved is not None and s.customer_solved is not None:
            closed.update(verdict_n=1, gap_n=1 if s.perception_gap else 0)
        speed = s.followup.reach_speed if s.followup is not None else None
        if s.sla_breach != "closed_late" and speed is not None:
            closed.update(ontime_verdict_n=1, perceived_slow_n=1 if speed <= 4 else 0)
        facts.append((s.closed_at, cell, vector(**closed)))
    if s.first_closed_at is not None:
        facts.append((s.first_closed_at, cell, vector(first_closed_n=1, reopened_n=1 if s.reopen_count > 0 else 0)))
    if s.sla_deadline is not None:
        facts.append((s.sla_deadline, cell, vector(due_n=1, overdue_n=1 if s.sla_breached else 0)))
    return tuple(facts)
