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
>>> [(datetime.fromtimestamp(t, timezone.utc).isoformat(), cell.district, named(c)["sat_sum"])
...  for t, cell, c in satisfaction_facts(e, 8)]
[('2026-11-20T09:05:00+00:00', 'P01-C02-D03', 7.0)]
"""

from __future__ import annotations

from datetime import datetime
from typing import NamedTuple

import numpy as np

from ..contract import SatisfactionEvent
from ..state.lifecycle import TicketState
from .counters import COUNTERS, DIMENSIONS, INDEX, Sparse


class Cell(NamedTuple):
    """The base cell every counter is kept for; roll-ups sum cells."""

    province: str
    city: str
    district: str
    channel: str
    business_line: str


_CELLS: dict[tuple, Cell] = {}


def _cell(fields: tuple) -> Cell:
    # One object per distinct cell: a ticket's applied facts hold it for as long as the ticket is in state.
    cell = _CELLS.get(fields)
    if cell is None:
        cell = tuple.__new__(Cell, fields)  # NamedTuple's own constructor is a Python call; this is per event
        if len(_CELLS) < 100_000:  # bounded: cells are districts x channels x business lines
            _CELLS[fields] = cell
    return cell


Fact = tuple[int, Cell, Sparse]
"""(epoch seconds, cell, counters): an int time keeps the cube's per-fact work and the
comparison of a ticket's old and new facts free of timezone arithmetic."""


def _at(t: datetime) -> int:
    return int(t.timestamp() // 1)  # contract times carry an offset

_SAT_N, _SAT_SUM, _SAT_SUMSQ, _SATISFIED = (INDEX[n] for n in ("sat_n", "sat_sum", "sat_sumsq", "satisfied_n"))
_NPS_N, _PROMOTERS, _DETRACTORS = (INDEX[n] for n in ("nps_n", "promoters_n", "detractors_n"))
_DIM_N = {d: INDEX[f"dim_{d}_n"] for d in DIMENSIONS}
_DIM_SUM = {d: INDEX[f"dim_{d}_sum"] for d in DIMENSIONS}


def named(counters: Sparse) -> dict[str, float]:
    return {COUNTERS[i]: v for i, v in counters}


def satisfaction_facts(e: SatisfactionEvent, satisfied_min_score: int) -> tuple[Fact, ...]:
    r = e.region
    cell = _cell((r.province, r.city, r.district, e.channel, e.business_line or ""))
    score = e.overall_score
    c: list[tuple[int, float]] = [(_SAT_N, 1.0), (_SAT_SUM, float(score)), (_SAT_SUMSQ, float(score * score))]
    if score >= satisfied_min_score:
        c.append((_SATISFIED, 1.0))
    if e.nps is not None:
        c.append((_NPS_N, 1.0))
        if e.nps >= 9:
            c.append((_PROMOTERS, 1.0))
        elif e.nps <= 6:
            c.append((_DETRACTORS, 1.0))
    dims = e.dimensions
    if dims is not None:
        for d in DIMENSIONS:
            v = getattr(dims, d)
            if v is not None:
                c.append((_DIM_N[d], 1.0))
                c.append((_DIM_SUM[d], float(v)))
    return ((_at(e.event_time), cell, tuple(c)),)


_I = INDEX  # counter positions, looked up once: this runs for every ticket a batch touches
_COMPLAINT = ((_I["complaints"], 1.0),)
_DUE = {False: ((_I["due_n"], 1.0),), True: ((_I["due_n"], 1.0), (_I["overdue_n"], 1.0))}
_FIRST_CLOSE = {False: ((_I["first_closed_n"], 1.0),), True: ((_I["first_closed_n"], 1.0), (_I["reopened_n"], 1.0))}


def satisfaction_columns(events: list[SatisfactionEvent], satisfied_min_score: int):
    """:func:`satisfaction_facts` for a whole batch, as columns: (epoch times, cells, counters n×W, event ids).

    The per-event work is reading the fields; the counters are filled column by
    column with numpy.
    """
    n = len(events)
    times = np.fromiter((_at(e.event_time) for e in events), np.int64, n)
    cells = [_cell((e.region.province, e.region.city, e.region.district, e.channel, e.business_line or ""))
             for e in events]  # fmt: skip
    score = np.fromiter((e.overall_score for e in events), np.float64, n)
    nps = np.fromiter((-1 if e.nps is None else e.nps for e in events), np.float64, n)
    c = np.zeros((n, len(COUNTERS)))
    c[:, _SAT_N] = 1.0
    c[:, _SAT_SUM] = score
    c[:, _SAT_SUMSQ] = score * score
    c[:, _SATISFIED] = score >= satisfied_min_score
    c[:, _NPS_N] = nps >= 0
    c[:, _PROMOTERS] = nps >= 9
    c[:, _DETRACTORS] = (nps >= 0) & (nps <= 6)
    for i, e in enumerate(events):
        dims = e.dimensions
        if dims is not None:
            for d in DIMENSIONS:
                v = getattr(dims, d)
                if v is not None:
                    c[i, _DIM_N[d]] = 1.0
                    c[i, _DIM_SUM[d]] = v
    return times, cells, c, [e.event_id for e in events]


def ticket_facts(s: TicketState) -> tuple[Fact, ...]:
    """The ticket's contribution given its current state (empty without a district from its creation)."""
    if not s.district or s.created_at is None:
        return ()
    cell = _cell((s.province, s.city, s.district, s.channel, s.business_line))
    facts: list[Fact] = [(_at(s.created_at), cell, _COMPLAINT)]
    if s.status == "closed" and s.closed_at is not None:
        closed = [(_I["closed_n"], 1.0)]  # built in counter order, as sparse() would
        if s.handling_s is not None:
            closed += [(_I["handling_n"], 1.0), (_I["handling_sum"], float(s.handling_s))]
        if s.first_contact_resolution:
            closed.append((_I["fcr_n"], 1.0))
        if s.internally_resolved:
            closed.append((_I["resolved_n"], 1.0))
        if s.internally_resolved is not None and s.customer_solved is not None:
            closed.append((_I["verdict_n"], 1.0))
            if s.perception_gap:
                closed.append((_I["gap_n"], 1.0))
        speed = s.followup.reach_speed if s.followup is not None else None
        if s.sla_breach != "closed_late" and speed is not None:
            closed.append((_I["ontime_verdict_n"], 1.0))
            if speed <= 4:
                closed.append((_I["perceived_slow_n"], 1.0))
        facts.append((_at(s.closed_at), cell, tuple(closed)))
    if s.first_closed_at is not None:
        facts.append((_at(s.first_closed_at), cell, _FIRST_CLOSE[s.reopen_count > 0]))
    if s.sla_deadline is not None:
        facts.append((_at(s.sla_deadline), cell, _DUE[bool(s.sla_breached)]))
    return tuple(facts)
