"""Why a district's satisfaction is what it is in a window: its top factors.

A factor's *impact* on a window is its coefficient (score points per unit) times its mean value per
satisfaction event in the window (its *exposure*): how many points of the window's mean score it
accounts for. *Excess* compares with the network: coefficient times (district exposure - network
exposure), the points the district loses (or gains) because it has more (or less) of that factor
than the network as a whole. Explanations rank factors by impact, most negative first.

Estimates of several shards (workers learning from different customer partitions) are combined
per factor by inverse-variance weighting, the standard pooling of independent estimates.

>>> e = explain(
...     "D1",
...     {"complaints_network": (-1.0, 0.05), "tier_gold": (0.3, 0.05), "sla_breach": (-0.6, 0.1)},
...     exposure={"complaints_network": 0.4, "tier_gold": 0.2, "sla_breach": 0.05},
...     network_exposure={"complaints_network": 0.1, "tier_gold": 0.2, "sla_breach": 0.02},
...     top=2,
... )
>>> [(f.factor, round(f.impact, 2), round(f.excess, 2), f.significant) for f in e]
[('complaints_network', -0.4, -0.3, True), ('sla_breach', -0.03, -0.02, True)]
>>> c, se = combine([(-1.0, 0.1), (-2.0, 0.1)])
>>> round(c, 6), round(se, 4)
(-1.5, 0.0707)
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class FactorEffect:
    factor: str
    coefficient: float  # score points per unit of the factor
    stderr: float
    exposure: float  # mean value per satisfaction event in the window, this district
    network_exposure: float  # the same across the network
    impact: float  # coefficient * exposure: points of the window's mean score
    excess: float  # coefficient * (exposure - network_exposure): points vs the network
    significant: bool  # |coefficient| >= 2 standard errors

    def as_dict(self) -> dict:
        return asdict(self)


def combine(estimates: Iterable[tuple[float, float]]) -> tuple[float, float]:
    """Pool ``(coefficient, stderr)`` estimates by inverse-variance weighting; equal weights if any stderr is 0."""
    est = list(estimates)
    if not est:
        return 0.0, 0.0
    if len(est) == 1:
        return est[0]
    if any(se <= 0 for _, se in est):
        return sum(c for c, _ in est) / len(est), max(se for _, se in est)
    w = [1.0 / (se * se) for _, se in est]
    total = sum(w)
    return sum(wi * c for wi, (c, _) in zip(w, est, strict=True)) / total, math.sqrt(1.0 / total)


def explain(
    district: str,
    coefficients: dict[str, tuple[float, float]],
    exposure: dict[str, float],
    network_exposure: dict[str, float] | None = None,
    top: int | None = 5,
) -> list[FactorEffect]:
    """The factors of ``district`` by impact in a window, most negative first (``top`` of them).

    ``coefficients``: factor -> (coefficient, stderr); ``exposure`` / ``network_exposure``: factor ->
    mean value per satisfaction event in the window (missing: 0).
    """
    network_exposure = network_exposure or {}
    effects = []
    for f, (c, se) in coefficients.items():
        x = exposure.get(f, 0.0)
        xn = network_exposure.get(f, 0.0)
        effects.append(FactorEffect(f, c, se, x, xn, c * x, c * (x - xn), se > 0 and abs(c) >= 2 * se))
    effects.sort(key=lambda e: (e.impact, e.factor))
    return effects if top is None else effects[:top]
