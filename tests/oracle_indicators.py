"""The batch oracle for the indicators: every counter of ``docs/indicators.md``, by SQL over the RAW events.

Reads only ``ticket_events`` and ``satisfaction_events`` (with ``FINAL``) and, for the complaint rate,
``subscriber_base``; never ``ticket_state``, ``ticket_steps`` or ``indicator_*``, which are the stream's own
outputs. The per-ticket lifecycle facts are re-derived in SQL from the steps, mirroring the documented rules of
:func:`stream.state.lifecycle.fold`:

* journey order is ``(event_time, STEP_RANK, event_id)``; events are distinct by ``event_id`` (ingest drops
  resends; ``LIMIT 1 BY`` keeps one row per id should a different event arrive under a known id);
* ``created_at`` and the cell ``(province, city, district, channel, business_line)`` come from the FIRST
  ``created`` step; a ticket without a ``created`` step with a district contributes nothing;
* ``closed``: the latest close/reopen in journey order is a close; ``closed_at`` (the final close) is then the
  first close after the last reopen; ``first_closed_at`` the first close ever; ``closure_type`` that of the
  latest close event (a repeated close may correct it); ``reopen_count`` counts every ``reopened`` step
  (even one without a close before it);
* ``handling_s`` = ``closed_at - created_at`` when closed and not negative;
* first-contact resolution: closed, closure ``resolved``, never reopened, at most one distinct (non-empty)
  department over the whole journey;
* ``sla_deadline``: the one given by the latest step (journey order) that gives one; breached if closed after
  it, or open and ``max(now, last event time of the ticket, follow-ups included)`` is past it;
* the follow-up is the latest satisfaction event carrying the ticket id, by ``(event_time, event_id)``; it gives
  ``customer_solved`` (``problem_solved``) and ``reach_speed``; ``perception_gap`` = closed as resolved and the
  customer says not solved.

A fact lands in every window containing its time: window ``w`` with ``size`` and ``hop`` (= size for tumbling,
= step for rolling) holds ``t`` in the ``size / hop`` windows ``[start, start + size)`` with ``start`` a multiple
of ``hop`` and ``start <= t < start + size``.

API
---
* :func:`oracle_cells` -> ``{CellKey: {counter: float}}``, non-empty base cells only;
* :func:`rollup` -> the same shape summed to district totals / city / province / network (``'*'`` = all);
* :func:`load_subscriber_base` and :func:`oracle_values` -> the indicators of ``docs/indicators.md`` (named as in
  the ``indicator_values`` view) for every cell or roll-up.
"""

from __future__ import annotations

import bisect
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from typing import NamedTuple

from stream.indicators.counters import COUNTERS, DIMENSIONS
from stream.topology import WindowSpec

ALL = "*"
LEVELS = ("cell", "district", "city", "province", "network")

#: indicator name (as in the ``indicator_values`` view) -> (numerator, denominator, scale); sat_std, nps and
#: complaint_rate_per_10k have formulas of their own (see :func:`indicator_values`)
RATIOS: dict[str, tuple[str, str]] = {
    "sat_mean": ("sat_sum", "sat_n"),
    "csat": ("satisfied_n", "sat_n"),
    **{f"dim_{d}_mean": (f"dim_{d}_sum", f"dim_{d}_n") for d in DIMENSIONS},
    "avg_handling_s": ("handling_sum", "handling_n"),
    "sla_overdue_rate": ("overdue_n", "due_n"),
    "fcr_rate": ("fcr_n", "closed_n"),
    "reopen_rate": ("reopened_n", "first_closed_n"),
    "perception_gap_rate": ("gap_n", "verdict_n"),
    "perceived_slow_rate": ("perceived_slow_n", "ontime_verdict_n"),
}
INDICATORS: tuple[str, ...] = ("complaint_rate_per_10k", "sat_mean", "sat_std", "csat", "nps", *list(RATIOS)[2:])


class CellKey(NamedTuple):
    """A base cell (or, with ``'*'`` fields, a roll-up) of one window."""

    window: str
    window_start: datetime  # aware, UTC
    district: str
    channel: str
    business_line: str
    province: str
    city: str


Counters = dict[str, float]
Cells = dict[CellKey, Counters]


# --------------------------------------------------------------------------- SQL

# Raw ticket steps, one row per event_id, with their journey rank. Ingest already stores each event_id once;
# should two different events share an id, the canonical one of lifecycle._dedup is kept ('' = None sorts first).
_STEPS = """
steps AS
(
    SELECT ticket_id, event_id, event_time, step, department, closure_type, sla_deadline,
           province, city, district, channel, business_line,
           multiIf(step = 'created', 0, step = 'dispatched', 1, step = 'worked', 2, step = 'closed', 3,
                   step = 'reopened', 4, step = 'callback', 5, 6) AS rank,
           (event_time, rank, event_id) AS ord
    FROM {db}.ticket_events FINAL
    ORDER BY ticket_id, event_id, event_time, step, source_system, customer_id, department, closure_type,
             sla_deadline NULLS FIRST, province, city, district, channel, business_line, complaint_category,
             complaint_phenomenon, customer_tier, problem_location
    LIMIT 1 BY ticket_id, event_id
)"""

# Satisfaction events, one row per event_id.
_SATISFACTION = """
satisfaction AS
(
    SELECT *
    FROM {db}.satisfaction_events FINAL
    ORDER BY event_id, event_time, overall_score, problem_solved NULLS FIRST, nps NULLS FIRST, channel,
             source_system, customer_id
    LIMIT 1 BY event_id
)"""

# Windows as a literal array of (name, size_s, hop_s); each fact is expanded to its size/hop windows.
_PLACE = """
placed AS
(
    SELECT *,
           arrayJoin({windows}) AS w,
           arrayJoin(range(intDiv(w.2, w.3))) AS k,
           w.1 AS window,
           toDateTime(intDiv(toUnixTimestamp64Milli(t), w.3 * 1000) * w.3 - k * w.3, 'UTC') AS window_start
    FROM facts
)"""

_CELL = "window, window_start, district, channel, business_line, province, city"

_TICKET_SQL = """
WITH
{steps},
-- Journey order per ticket; for each step, how many reopens follow it (a close followed by none is the final close).
journey AS
(
    SELECT *,
           countIf(step = 'reopened') OVER (PARTITION BY ticket_id ORDER BY event_time, rank, event_id
                                            ROWS BETWEEN CURRENT ROW AND UNBOUNDED FOLLOWING) AS reopens_after
    FROM steps
),
-- Per-ticket lifecycle facts (stream.state.lifecycle.fold).
lifecycle AS
(
    SELECT ticket_id,
           countIf(step = 'created') > 0 AS has_created,
           argMinIf((province, city, district, channel, business_line), ord, step = 'created') AS cell,
           argMinIf(event_time, ord, step = 'created') AS created_at,
           countIf(step = 'closed' AND reopens_after = 0) > 0 AS is_closed,            -- latest turn is a close
           argMinIf(event_time, ord, step = 'closed' AND reopens_after = 0) AS closed_at,  -- the final close
           countIf(step = 'closed') > 0 AS was_closed,
           argMinIf(event_time, ord, step = 'closed') AS first_closed_at,
           argMaxIf(closure_type, ord, step = 'closed') AS last_closure_type,        -- latest close event
           countIf(step = 'reopened') AS reopen_count,
           uniqExactIf(department, department != '') AS departments,
           countIf(sla_deadline IS NOT NULL) > 0 AS has_deadline,
           argMaxIf(assumeNotNull(sla_deadline), ord, sla_deadline IS NOT NULL) AS deadline,
           max(event_time) AS last_step_time
    FROM journey
    GROUP BY ticket_id
),
{satisfaction},
-- The follow-up of a ticket: its latest satisfaction event by (event_time, event_id).
followups AS
(
    SELECT ticket_id,
           argMax((problem_solved, dim_reach_speed), (event_time, event_id)) AS latest,
           latest.1 AS customer_solved,
           latest.2 AS reach_speed,
           max(event_time) AS last_followup_time
    FROM satisfaction
    WHERE ticket_id != ''
    GROUP BY ticket_id
),
-- What the indicators need per ticket (tickets with a `created` step with a district only).
tickets AS
(
    SELECT l.ticket_id AS ticket_id,
           cell.1 AS province, cell.2 AS city, cell.3 AS district, cell.4 AS channel, cell.5 AS business_line,
           created_at, is_closed, closed_at, was_closed, first_closed_at, reopen_count, has_deadline, deadline,
           if(is_closed AND closed_at >= created_at,
              (toUnixTimestamp64Milli(closed_at) - toUnixTimestamp64Milli(created_at)) / 1000, NULL) AS handling_s,
           is_closed AND last_closure_type = 'resolved' AS internally_resolved,
           internally_resolved AND reopen_count = 0 AND departments <= 1 AS fcr,
           is_closed AND has_deadline AND closed_at > deadline AS closed_late,
           has_deadline AND if(is_closed, closed_late,
                               greatest({now}, last_step_time, f.last_followup_time) > deadline) AS sla_breached,
           f.customer_solved AS customer_solved,
           f.reach_speed AS reach_speed,
           internally_resolved AND coalesce(customer_solved = false, false) AS perception_gap
    FROM lifecycle AS l
    LEFT JOIN followups AS f ON f.ticket_id = l.ticket_id
    WHERE has_created AND district != ''
),
-- One row per fact: its time and which family of counters it increments.
facts AS
(
    SELECT 'created' AS fact, created_at AS t, * FROM tickets
    UNION ALL SELECT 'closed' AS fact, closed_at AS t, * FROM tickets WHERE is_closed
    UNION ALL SELECT 'first_closed' AS fact, first_closed_at AS t, * FROM tickets WHERE was_closed
    UNION ALL SELECT 'due' AS fact, deadline AS t, * FROM tickets WHERE has_deadline
),
{place}
SELECT {cell},
       countIf(fact = 'created') AS complaints,
       countIf(fact = 'closed') AS closed_n,
       countIf(fact = 'closed' AND handling_s IS NOT NULL) AS handling_n,
       sumIf(coalesce(handling_s, 0), fact = 'closed') AS handling_sum,
       countIf(fact = 'closed' AND fcr) AS fcr_n,
       countIf(fact = 'closed' AND internally_resolved) AS resolved_n,
       countIf(fact = 'first_closed') AS first_closed_n,
       countIf(fact = 'first_closed' AND reopen_count > 0) AS reopened_n,
       countIf(fact = 'due') AS due_n,
       countIf(fact = 'due' AND sla_breached) AS overdue_n,
       countIf(fact = 'closed' AND customer_solved IS NOT NULL) AS verdict_n,
       countIf(fact = 'closed' AND perception_gap) AS gap_n,
       countIf(fact = 'closed' AND NOT closed_late AND reach_speed IS NOT NULL) AS ontime_verdict_n,
       countIf(fact = 'closed' AND NOT closed_late AND coalesce(reach_speed <= 4, false)) AS perceived_slow_n
FROM placed
GROUP BY {cell}
"""

_SATISFACTION_SQL = """
WITH
{satisfaction},
facts AS (SELECT *, event_time AS t FROM satisfaction),
{place}
SELECT {cell},
       count() AS sat_n,
       sum(overall_score) AS sat_sum,
       sum(toUInt32(overall_score) * overall_score) AS sat_sumsq,
       countIf(overall_score >= {satisfied_min_score}) AS satisfied_n,
       count(nps) AS nps_n,
       countIf(nps >= 9) AS promoters_n,
       countIf(nps <= 6) AS detractors_n,
       {dimensions}
FROM placed
GROUP BY {cell}
"""


def _windows_literal(windows: Iterable[WindowSpec]) -> str:
    parts = []
    for w in windows:
        size, hop = int(w.size.total_seconds()), int(w.hop.total_seconds())
        assert size > 0 and hop > 0 and size % hop == 0, w
        assert w.name.replace("_", "").isalnum(), w.name  # safe to inline
        parts.append(f"('{w.name}', {size}, {hop})")
    return "[" + ", ".join(parts) + "]"


def ticket_sql(database: str, windows: Iterable[WindowSpec], now: datetime) -> str:
    """The ticket counters per window and base cell (for reading, and for debugging by hand)."""
    now_ms = round(now.timestamp() * 1000)
    return _TICKET_SQL.format(
        steps=_STEPS.format(db=database),
        satisfaction=_SATISFACTION.format(db=database),
        place=_PLACE.format(windows=_windows_literal(windows)),
        cell=_CELL,
        now=f"fromUnixTimestamp64Milli(toInt64({now_ms}), 'UTC')",
    )


def satisfaction_sql(database: str, windows: Iterable[WindowSpec], satisfied_min_score: int) -> str:
    """The satisfaction counters per window and base cell."""
    dims = ",\n       ".join(
        f"count(dim_{d}) AS dim_{d}_n, coalesce(sum(dim_{d}), 0) AS dim_{d}_sum" for d in DIMENSIONS
    )
    return _SATISFACTION_SQL.format(
        satisfaction=_SATISFACTION.format(db=database),
        place=_PLACE.format(windows=_windows_literal(windows)),
        cell=_CELL,
        satisfied_min_score=int(satisfied_min_score),
        dimensions=dims,
    )


def _utc(value: datetime) -> datetime:
    # clickhouse-connect returns naive datetimes for DateTime('UTC') from chDB
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def _read(client, sql: str, into: Cells) -> None:
    result = client.query(sql)
    names = result.column_names
    n_key = len(CellKey._fields)
    for row in result.result_rows:
        window, start, district, channel, line, province, city = row[:n_key]
        key = CellKey(window, _utc(start), district, channel, line, province, city)
        counters = into.setdefault(key, dict.fromkeys(COUNTERS, 0.0))
        for name, value in zip(names[n_key:], row[n_key:]):
            counters[name] += float(value or 0)


def oracle_cells(
    client, database: str, windows: list[WindowSpec], satisfied_min_score: int, now: datetime
) -> Cells:
    """Every counter of ``docs/indicators.md`` per ``(window, window_start, district, channel, business_line)``
    (the key also carries the cell's province and city), computed from the raw events only.

    ``now`` is the SLA clock an open ticket is judged at (the stream's last SLA check). Only non-empty cells are
    returned (every fact increments at least one counter, so every returned cell is non-empty).
    """
    cells: Cells = {}
    _read(client, ticket_sql(database, windows, now), cells)
    _read(client, satisfaction_sql(database, windows, satisfied_min_score), cells)
    return cells


def watermark(client, database: str) -> datetime | None:
    """The stream's indicator watermark recomputed from the raw events: the OLDEST of the source partitions'
    newest event times (per raw table, i.e. topic, and Kafka partition)."""
    (value,) = client.query(
        f"SELECT min(newest) FROM ("
        f" SELECT max(event_time) AS newest FROM {database}.ticket_events GROUP BY kafka_partition"
        f" UNION ALL SELECT max(event_time) AS newest FROM {database}.satisfaction_events GROUP BY kafka_partition)"
    ).result_rows[0]
    return None if value is None else _utc(value)


def beyond_horizon(key: CellKey, windows: Iterable[WindowSpec], mark: datetime) -> bool:
    """A rolling window the stream does not publish yet: it ends after the step boundary following the
    watermark (``stream/indicators/cube.py``: "windows further ahead are partial and not published until they
    become current"). NOT in docs/indicators.md; see the end-to-end test."""
    spec = next(w for w in windows if w.name == key.window)
    if spec.kind != "rolling":
        return False
    step = int(spec.hop.total_seconds())
    wm = int(mark.timestamp())
    current_end = wm - wm % step + step
    return int(key.window_start.timestamp()) + int(spec.size.total_seconds()) > current_end


# --------------------------------------------------------------------------- roll-ups and values


def rollup_key(key: CellKey, level: str) -> CellKey:
    """The roll-up a base cell belongs to: district totals, city, province or network (``'*'`` = all)."""
    w, s = key.window, key.window_start
    if level == "cell":
        return key
    if level == "district":
        return CellKey(w, s, key.district, ALL, ALL, key.province, key.city)
    if level == "city":
        return CellKey(w, s, ALL, ALL, ALL, key.province, key.city)
    if level == "province":
        return CellKey(w, s, ALL, ALL, ALL, key.province, ALL)
    if level == "network":
        return CellKey(w, s, ALL, ALL, ALL, ALL, ALL)
    raise ValueError(f"unknown level {level!r}: one of {LEVELS}")


def rollup(cells: Mapping[CellKey, Counters], level: str) -> Cells:
    """Counters summed from base cells to ``level`` (sums of counters, never averages of averages)."""
    out: Cells = {}
    for key, counters in cells.items():
        total = out.setdefault(rollup_key(key, level), dict.fromkeys(COUNTERS, 0.0))
        for name in COUNTERS:
            total[name] += counters.get(name, 0.0)
    return out


class SubscriberBase:
    """Subscribers per district over time; ``at(scope, t)`` sums the districts of a scope in force at ``t``."""

    def __init__(self, rows: Iterable[tuple[str, str, str, int, datetime]]):
        self.region: dict[str, tuple[str, str]] = {}
        series: dict[str, list[tuple[datetime, int]]] = defaultdict(list)
        for district, city, province, subscribers, effective_from in rows:
            self.region[district] = (province, city)
            series[district].append((_utc(effective_from), int(subscribers)))
        self.series = {d: sorted(v) for d, v in series.items()}

    def district_at(self, district: str, t: datetime) -> int:
        """ASOF: the base with the latest ``effective_from <= t`` (0 if none)."""
        points = self.series.get(district, [])
        i = bisect.bisect_right([p[0] for p in points], t)
        return points[i - 1][1] if i else 0

    def at(self, key: CellKey, t: datetime) -> int:
        if key.district != ALL:
            return self.district_at(key.district, t)
        return sum(
            self.district_at(d, t)
            for d, (province, city) in self.region.items()
            if key.province in (ALL, province) and key.city in (ALL, city)
        )


def load_subscriber_base(client, database: str) -> SubscriberBase:
    rows = client.query(
        f"SELECT district, city, province, subscribers, effective_from FROM {database}.subscriber_base FINAL"
    ).result_rows
    return SubscriberBase(rows)


def _ratio(num: float, den: float) -> float | None:
    return num / den if den > 0 else None  # a zero denominator is NULL


def indicator_values(key: CellKey, c: Mapping[str, float], base: SubscriberBase | None = None) -> dict:
    """The indicators of ``docs/indicators.md`` for one cell or roll-up (names as in ``indicator_values``)."""
    subscribers = base.at(key, key.window_start) if base is not None else 0
    n = c["sat_n"]
    out: dict[str, float | None] = {
        "subscribers": subscribers,
        "complaint_rate_per_10k": c["complaints"] / subscribers * 10000 if subscribers > 0 else None,
        "sat_std": math.sqrt(max(c["sat_sumsq"] / n - (c["sat_sum"] / n) ** 2, 0.0)) if n > 0 else None,
        "nps": 100 * (c["promoters_n"] - c["detractors_n"]) / c["nps_n"] if c["nps_n"] > 0 else None,
    }
    for name, (num, den) in RATIOS.items():
        out[name] = _ratio(c[num], c[den])
    return out


def oracle_values(cells: Mapping[CellKey, Counters], base: SubscriberBase | None = None) -> dict[CellKey, dict]:
    """Counters and indicators of every cell (or roll-up): ``{key: {counter or indicator: value}}``."""
    return {k: {**c, **indicator_values(k, c, base)} for k, c in cells.items()}


# --------------------------------------------------------------------------- comparison


def close(a: float | None, b: float | None, tol: float = 1e-9) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return math.isclose(a, b, rel_tol=tol, abs_tol=tol)


def diff(expected: Mapping[CellKey, Mapping], got: Mapping[CellKey, Mapping], tol: float = 1e-9) -> list[str]:
    """Human-readable differences: cells only on one side, then per cell the values that differ."""
    out = []
    for key in sorted(set(expected) | set(got)):
        e, g = expected.get(key), got.get(key)
        if e is None or g is None:
            side = "stream only" if e is None else "oracle only"
            values = {n: v for n, v in (e or g).items() if v}
            out.append(f"{_show(key)}: {side} {values}")
            continue
        bad = {n: (e[n], g.get(n)) for n in e if not close(e[n], g.get(n), tol)}
        if bad:
            out.append(f"{_show(key)}: " + ", ".join(f"{n} oracle={a} stream={b}" for n, (a, b) in bad.items()))
    return out


def _show(key: CellKey) -> str:
    return (f"{key.window} {key.window_start:%Y-%m-%d %H:%M} {key.province}/{key.city}/{key.district} "
            f"{key.channel}/{key.business_line}")  # fmt: skip
