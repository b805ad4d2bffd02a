"""The counters every indicator is a ratio of (see ``docs/indicators.md``).

A cell's counters are a plain list of floats in :data:`COUNTERS` order, so a
batch adds them with one loop and ClickHouse sums them column by column.

>>> COUNTERS[:3]
('complaints', 'sat_n', 'sat_sum')
>>> add([1.0] * len(COUNTERS), [2.0] * len(COUNTERS))[:2]
[3.0, 3.0]
"""

from __future__ import annotations

DIMENSIONS = ("overall_service", "reach_speed", "ivr_menu", "agent_attitude", "agent_ability", "call_outcome")

COUNTERS: tuple[str, ...] = (
    "complaints",
    "sat_n", "sat_sum", "sat_sumsq", "satisfied_n", "nps_n", "promoters_n", "detractors_n",
    *(f"dim_{d}_{x}" for d in DIMENSIONS for x in ("n", "sum")),
    "closed_n", "handling_n", "handling_sum", "fcr_n", "resolved_n",
    "first_closed_n", "reopened_n",
    "due_n", "overdue_n",
    "verdict_n", "gap_n", "ontime_verdict_n", "perceived_slow_n",
)  # fmt: skip

INDEX = {name: i for i, name in enumerate(COUNTERS)}
WIDTH = len(COUNTERS)


def zeros() -> list[float]:
    return [0.0] * WIDTH


def add(into: list[float], other: list[float], sign: float = 1.0) -> list[float]:
    for i, v in enumerate(other):
        if v:
            into[i] += sign * v
    return into


def vector(**values: float) -> list[float]:
    """Counters from keyword values; unnamed counters are 0."""
    out = zeros()
    for name, v in values.items():
        out[INDEX[name]] = float(v)
    return out
