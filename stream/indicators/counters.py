"""The counters every indicator is a ratio of (see ``docs/indicators.md``).

A cell's counters are a plain list of floats in :data:`COUNTERS` order, so
ClickHouse sums them column by column. A fact's counters are *sparse* — the
``(index, value)`` pairs that are not zero — because a fact touches a few of
the 33 counters and the cube adds it once per window.

>>> COUNTERS[:3]
('complaints', 'sat_n', 'sat_sum')
>>> sparse(sat_n=1, sat_sum=7, complaints=0)
((1, 1.0), (2, 7.0))
>>> add_sparse(zeros(), sparse(sat_n=1))[:3]
[0.0, 1.0, 0.0]
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


Sparse = tuple[tuple[int, float], ...]


def sparse(**values: float) -> Sparse:
    """A fact's counters from keyword values (zeros left out), in counter order."""
    return tuple(sorted((INDEX[name], float(v)) for name, v in values.items() if v))


def add_sparse(into: list[float], counters: Sparse, sign: float = 1.0) -> list[float]:
    for i, v in counters:
        into[i] += sign * v
    return into
