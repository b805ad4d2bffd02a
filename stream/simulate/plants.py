"""Planted effects: the ground truth later stages (factor model, alerts, data quality) must recover.

The simulator scores every satisfaction event with a known model; :class:`Plants`
holds the parts of it worth finding and, after generation, what was actually
emitted (extra spike tickets, defects per source system).

>>> from datetime import datetime, timezone
>>> from stream.simulate.world import World
>>> p = default_plants(World.build(1), datetime(2026, 11, 20, tzinfo=timezone.utc))
>>> d = p.describe()
>>> d["district_effect"]["extra_effect"], d["incident_spike"]["multiplier"]
(-2.0, 6.0)
>>> d["incident_spike"]["start"]
'2026-11-20T10:00:00+00:00'
>>> "effect_change" in d  # opt-in only
False
>>> from datetime import timedelta
>>> c = default_plants(World.build(1), datetime(2026, 11, 20, tzinfo=timezone.utc),
...                    effect_change=EffectChange("network", timedelta(hours=12), -2.0))
>>> c.describe()["effect_change"]["at"], c.describe()["effect_change"]["previous_effect"]
('2026-11-20T12:00:00+00:00', -1.0)
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from .world import World

#: score model: mean before effects, and the noise around it
BASE_SCORE = 8.3
NOISE_SD = 1.0
#: effects of how the linked ticket was handled (only on satisfaction events that carry a ticket_id)
CLOSURE_EFFECTS: dict[str, float] = {
    "resolved": 0.0,
    "explained": -0.4,
    "partially_resolved": -0.8,
    "unresolved": -1.6,
    "withdrawn": -0.2,
}
SLA_BREACH_EFFECT = -0.8
REOPEN_EFFECT = -1.0
#: base arrival lag (seconds, log-uniform between the bounds) of every record, by source system: CRM, the
#: hotline and the app publish within seconds; network operations and billing batch for up to minutes; field
#: tablets sync when back in coverage; the survey platform batches its answers. All below the lifecycle
#: stage's 10-minute lateness, so lifecycles are still placed in order.
ARRIVAL_LAG_SECONDS: dict[str, tuple[float, float]] = {
    "CRM": (0.2, 3.0),
    "HOTLINE": (0.5, 5.0),
    "APP": (1.0, 10.0),
    "BILLING": (2.0, 30.0),
    "NOC": (5.0, 120.0),
    "FIELD": (30.0, 300.0),
    "SURVEY": (60.0, 480.0),
}
#: on top of the base lag, a few percent of records arrive late by LATE_SECONDS (log-uniform)
LATE_SHARE = 0.03
LATE_SECONDS = (5.0, 900.0)


def _default_category_effects() -> dict[str, float]:
    return {"network": -1.0, "installation": -0.8, "billing": -0.5, "service": -0.6, "product": -0.3}


@dataclass(frozen=True)
class EffectChange:
    """Opt-in plant: from ``at`` on, a recent complaint of ``category`` moves the score by ``effect``.

    ``at`` is a datetime, or a timedelta offset from the simulation start (resolved by
    :func:`default_plants` and by the generator). Applies network-wide, to satisfaction events with
    event time at or after ``at``; earlier events keep ``Plants.category_effects[category]``.
    """

    category: str
    at: datetime | timedelta
    effect: float

    def start_time(self, start: datetime) -> datetime:
        return start + self.at if isinstance(self.at, timedelta) else self.at


@dataclass(frozen=True)
class Plants:
    """What the simulator plants, stated so tests and later stages can check they find it."""

    #: (a) district where a recent installation complaint hurts more than elsewhere
    install_district: str
    #: (b) district and window of the incident spike
    spike_district: str
    spike_start: datetime
    spike_end: datetime
    install_extra_effect: float = -2.0
    #: network-wide effect of a complaint of each category within ``effect_window_days``
    category_effects: dict[str, float] = field(default_factory=_default_category_effects)
    effect_window_days: int = 30
    spike_category: str = "network"
    spike_multiplier: float = 6.0
    #: (d, opt-in) a change of one category's network-wide effect mid-stream
    effect_change: EffectChange | None = None
    # -- filled in by the generator from what it actually emitted -----------------------
    spike_extra_tickets: int | None = None
    #: (c) source system -> defect -> count of malformed records emitted
    defects_by_source: dict[str, dict[str, int]] | None = None
    #: source system -> count of resent records
    resends_by_source: dict[str, int] | None = None

    def describe(self) -> dict[str, Any]:
        """A JSON-serialisable statement of everything planted."""
        out: dict[str, Any] = {
            "district_effect": {
                "district": self.install_district,
                "category": "installation",
                "extra_effect": self.install_extra_effect,
                "window_days": self.effect_window_days,
                "meaning": "a complaint of this category by the customer within window_days before a "
                "satisfaction event lowers its overall score by extra_effect beyond the network-wide effect, "
                "in this district only",
            },
            "category_effects": dict(self.category_effects),
            "score_model": {
                "base": BASE_SCORE,
                "noise_sd": NOISE_SD,
                "closure_effects": dict(CLOSURE_EFFECTS),
                "sla_breach_effect": SLA_BREACH_EFFECT,
                "reopen_effect": REOPEN_EFFECT,
                "clip": [1, 10],
                "meaning": "score = clip(round(base + sum of effects of distinct complaint categories in the "
                "window + district effect + (linked ticket) closure/SLA-breach/reopen effects + noise))",
            },
            "incident_spike": {
                "district": self.spike_district,
                "category": self.spike_category,
                "start": self.spike_start.isoformat(),
                "end": self.spike_end.isoformat(),
                "multiplier": self.spike_multiplier,
                "extra_tickets": self.spike_extra_tickets,
            },
            "arrival_lag": {
                "base_seconds_by_source": {s: list(b) for s, b in ARRIVAL_LAG_SECONDS.items()},
                "late_share": LATE_SHARE,
                "late_seconds": list(LATE_SECONDS),
                "meaning": "Kafka timestamp (arrival) = event time + base lag, log-uniform between the source's "
                "bounds (median sqrt(lo * hi)), + for late_share of records a further log-uniform late_seconds; "
                "a resend arrives after its original",
            },
            "data_quality": {
                "defects_by_source": {s: dict(d) for s, d in (self.defects_by_source or {}).items()},
                "resends_by_source": dict(self.resends_by_source or {}),
                "note": "counts are by the true source system; a not_json record cannot be parsed, so a "
                "consumer can attribute it only by key or by scanning the bytes",
            },
        }
        if (c := self.effect_change) is not None:
            out["effect_change"] = {
                "category": c.category,
                "at": c.at.isoformat() if isinstance(c.at, datetime) else f"start + {c.at.total_seconds():g}s",
                "previous_effect": self.category_effects.get(c.category, 0.0),
                "effect": c.effect,
                "meaning": "satisfaction events at or after `at` with a complaint of this category in the window "
                "are scored with `effect` in place of the category's network-wide effect",
            }
        return out


def default_plants(
    world: World,
    start: datetime,
    period: timedelta = timedelta(days=1),
    *,
    effect_change: EffectChange | None = None,
) -> Plants:
    """Default plants for ``world``: two distinct large districts, spike at ~42 % of the period.

    Districts with the most complaints are chosen so the effects show with modest samples.
    ``effect_change`` (opt-in, default none) is stored with its time resolved against ``start``.
    """
    rng = random.Random(f"cxstream-plants:{world.seed}")
    big = sorted(world.districts, key=lambda d: (-d.subscribers * d.propensity, d.code))[:4]
    install, spike = rng.sample(big, 2)
    length = min(timedelta(hours=2), period / 4)
    offset = period * 0.42
    # align to the hour when the period is long enough, as incidents are reported in clock hours
    if period >= timedelta(hours=8):
        offset = timedelta(hours=int(offset.total_seconds() // 3600))
    return Plants(
        install_district=install.code,
        spike_district=spike.code,
        spike_start=start + offset,
        spike_end=start + offset + length,
        effect_change=None if effect_change is None else replace(effect_change, at=effect_change.start_time(start)),
    )


def effect_on_score(plants: Plants, district: str, categories: set[str], changed: bool = False) -> float:
    """Shift of the mean score from recent complaint categories (network-wide + planted district).

    ``changed``: the event is at or after ``plants.effect_change`` (if any), so its category takes the new effect.
    """
    effects = plants.category_effects
    if changed and plants.effect_change is not None:
        effects = effects | {plants.effect_change.category: plants.effect_change.effect}
    shift = sum(effects.get(c, 0.0) for c in categories)
    if "installation" in categories and district == plants.install_district:
        shift += plants.install_extra_effect
    return shift
