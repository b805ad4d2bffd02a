"""Indicator values from counters: the formulas of docs/indicators.md, for alert rules.

Each indicator is ``(numerator, denominator)`` over the counters in :data:`~.counters.COUNTERS` order; the
denominator is also the indicator's *volume* (how much evidence a value rests on: responses, due tickets,
...). Counts (``complaints``) have no denominator: their volume is the count itself. ``complaint_rate_per_10k``
needs the scope's subscribers, passed in.

>>> from .counters import INDEX, WIDTH
>>> row = [0.0] * WIDTH
>>> row[INDEX["sat_n"]], row[INDEX["sat_sum"]], row[INDEX["complaints"]] = 4, 26, 3
>>> value("sat_mean", row), volume("sat_mean", row)
(6.5, 4.0)
>>> value("complaints", row), value("complaint_rate_per_10k", row, subscribers=30000)
(3.0, 1.0)
>>> value("csat", row) is None or value("csat", row)
0.0
>>> value("nps", row) is None  # no NPS answers: undefined, not 0
True
"""

from __future__ import annotations

from collections.abc import Sequence

from .counters import DIMENSIONS, INDEX

#: indicator -> (numerator counter, denominator counter or None, scale); see docs/indicators.md
_RATIOS: dict[str, tuple[str, str | None, float]] = {
    "complaints": ("complaints", None, 1.0),
    "sat_mean": ("sat_sum", "sat_n", 1.0),
    "csat": ("satisfied_n", "sat_n", 1.0),
    "avg_handling_s": ("handling_sum", "handling_n", 1.0),
    "sla_overdue_rate": ("overdue_n", "due_n", 1.0),
    "fcr_rate": ("fcr_n", "closed_n", 1.0),
    "reopen_rate": ("reopened_n", "first_closed_n", 1.0),
    "perception_gap_rate": ("gap_n", "verdict_n", 1.0),
    "perceived_slow_rate": ("perceived_slow_n", "ontime_verdict_n", 1.0),
    **{f"dim_{d}_mean": (f"dim_{d}_sum", f"dim_{d}_n", 1.0) for d in DIMENSIONS},
}
#: every indicator this module computes
INDICATORS: tuple[str, ...] = (*_RATIOS, "nps", "complaint_rate_per_10k")


def volume(indicator: str, row: Sequence[float]) -> float:
    """How much evidence the value rests on: its denominator (a count indicator: the count)."""
    if indicator == "nps":
        return float(row[INDEX["nps_n"]])
    if indicator == "complaint_rate_per_10k":
        return float(row[INDEX["complaints"]])
    num, den, _ = _RATIOS[indicator]
    return float(row[INDEX[den or num]])


def value(indicator: str, row: Sequence[float], subscribers: float | None = None) -> float | None:
    """The indicator's value, or None when undefined (zero denominator, unknown subscribers)."""
    if indicator == "nps":
        n = row[INDEX["nps_n"]]
        return float(100.0 * (row[INDEX["promoters_n"]] - row[INDEX["detractors_n"]]) / n) if n else None
    if indicator == "complaint_rate_per_10k":
        return float(row[INDEX["complaints"]] / subscribers * 10_000) if subscribers else None
    num, den, scale = _RATIOS[indicator]
    if den is None:
        return float(row[INDEX[num]]) * scale
    d = row[INDEX[den]]
    return float(row[INDEX[num]] / d * scale) if d else None
