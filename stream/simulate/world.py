"""The simulated operator: regions, subscribers and the catalogues events draw from.

A :class:`World` is pure data, rebuilt identically from its seed, so reference
data (districts and their subscriber bases) can be seeded from the same seed the
traffic generator uses.

>>> w = World.build(7)
>>> w == World.build(7), len(w.provinces)
(True, 3)
>>> d = w.districts[0]
>>> d.code.startswith(d.city + "-D"), d.city.startswith(d.province + "-C")
(True, True)
>>> w.worked_source("billing"), w.created_source("hotline")
('BILLING', 'HOTLINE')
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from functools import cached_property

from stream.contract import BusinessLine, Channel, CustomerTier, Region

PROVINCES = 3
CITIES_PER_PROVINCE = (2, 4)
DISTRICTS_TOTAL = 40
SUBSCRIBERS = (20_000, 400_000)

#: complaint category -> phenomena the customer reports
PHENOMENA: dict[str, tuple[str, ...]] = {
    "network": ("no_signal", "slow_speed", "dropped_calls", "intermittent_connection"),
    "billing": ("overcharge", "unknown_fee", "refund_delay"),
    "installation": ("missed_appointment", "slow_installation", "faulty_installation"),
    "service": ("rude_staff", "long_wait", "wrong_information"),
    "product": ("plan_mismatch", "contract_terms", "device_issue"),
}

#: share of complaint tickets per category (network dominates, as in operators' reports)
CATEGORY_SHARE: dict[str, float] = {
    "network": 0.35,
    "billing": 0.22,
    "installation": 0.15,
    "service": 0.16,
    "product": 0.12,
}

#: first responsible department per category; enterprise customers go to ENTERPRISE_SUPPORT first
DEPARTMENT_FOR: dict[str, str] = {
    "network": "NET_OPS",
    "billing": "BILLING",
    "installation": "FIELD_SERVICE",
    "service": "CUSTOMER_CARE",
    "product": "CUSTOMER_CARE",
}
#: where a ticket is handed off to when the first department passes it on
HANDOFF_TO: dict[str, str] = {
    "NET_OPS": "FIELD_SERVICE",
    "BILLING": "CUSTOMER_CARE",
    "FIELD_SERVICE": "NET_OPS",
    "CUSTOMER_CARE": "BILLING",
    "ENTERPRISE_SUPPORT": "NET_OPS",
}
DEPARTMENTS: tuple[str, ...] = ("NET_OPS", "BILLING", "FIELD_SERVICE", "CUSTOMER_CARE", "ENTERPRISE_SUPPORT")

#: root-cause locations found per category (recorded on `closed`)
PROBLEM_LOCATIONS: dict[str, tuple[str, ...]] = {
    "network": ("access_network", "core_network", "transmission", "customer_premises"),
    "billing": ("billing_system", "pricing_config", "customer_misunderstanding"),
    "installation": ("customer_premises", "field_scheduling", "access_network"),
    "service": ("frontline_staff", "contact_center", "process_design"),
    "product": ("product_design", "sales_process", "customer_misunderstanding"),
}

#: SLA (hours from creation to closure) per category
SLA_HOURS: dict[str, float] = {"network": 8, "billing": 12, "installation": 12, "service": 4, "product": 16}

#: business lines a category is usually about (weights)
BUSINESS_LINE_FOR: dict[str, dict[str, float]] = {
    "network": {"mobile": 0.55, "broadband": 0.45},
    "billing": {"mobile": 0.5, "broadband": 0.3, "value_added": 0.2},
    "installation": {"broadband": 0.9, "mobile": 0.1},
    "service": {"mobile": 0.5, "broadband": 0.35, "value_added": 0.15},
    "product": {"mobile": 0.45, "broadband": 0.3, "value_added": 0.25},
}

TIER_SHARE: dict[str, float] = {"platinum": 0.03, "gold": 0.12, "silver": 0.30, "standard": 0.55}

#: plans per business line
PLANS: dict[str, tuple[str, ...]] = {
    "mobile": ("M5G-59", "M5G-129", "M5G-199"),
    "broadband": ("BB-300M", "BB-1000M", "FUSION-169", "FUSION-299"),
    "enterprise": ("ENT-DIA-100M", "ENT-PRO"),
    "value_added": ("VAS-MUSIC", "VAS-CLOUD"),
}

#: channel a complaint comes in on (installation complaints come more often from field visits)
COMPLAINT_CHANNEL_SHARE: dict[str, float] = {
    "hotline": 0.45,
    "app_web": 0.20,
    "social": 0.08,
    "store": 0.17,
    "field_visit": 0.10,
}

#: which system emits the `created` step, by channel
CREATED_SOURCE: dict[str, str] = {
    "hotline": "HOTLINE",
    "app_web": "APP",
    "social": "APP",
    "store": "CRM",
    "field_visit": "CRM",
}
#: which system records `worked`, by department holding the ticket
WORKED_SOURCE: dict[str, str] = {
    "NET_OPS": "NOC",
    "FIELD_SERVICE": "FIELD",
    "BILLING": "BILLING",
    "CUSTOMER_CARE": "CRM",
    "ENTERPRISE_SUPPORT": "CRM",
}
STEP_SOURCE: dict[str, str] = {"dispatched": "CRM", "closed": "CRM", "reopened": "CRM", "callback": "HOTLINE"}
#: which system emits a satisfaction event, by the scored contact's channel
SATISFACTION_SOURCE: dict[str, str] = {
    "hotline": "HOTLINE",
    "app_web": "APP",
    "social": "APP",
    "store": "SURVEY",
    "field_visit": "SURVEY",
}
SOURCE_SYSTEMS: tuple[str, ...] = ("CRM", "HOTLINE", "APP", "NOC", "FIELD", "BILLING", "SURVEY")


@dataclass(frozen=True)
class District:
    """A district: the finest region level indicators are cut by."""

    code: str  # P01-C02-D03
    city: str  # P01-C02
    province: str  # P01
    subscribers: int
    #: relative complaint propensity (1.0 = network average); some districts are simply worse served
    propensity: float

    @cached_property
    def region(self) -> Region:
        """The contract's region path (built once: every event of the district carries it)."""
        return Region(province=self.province, city=self.city, district=self.code)


@dataclass(frozen=True)
class World:
    """A seeded operator: region hierarchy with subscriber bases, plus catalogues."""

    seed: int
    districts: tuple[District, ...]
    phenomena: dict[str, tuple[str, ...]] = field(default_factory=lambda: dict(PHENOMENA))
    departments: tuple[str, ...] = DEPARTMENTS
    problem_locations: dict[str, tuple[str, ...]] = field(default_factory=lambda: dict(PROBLEM_LOCATIONS))
    plans: dict[str, tuple[str, ...]] = field(default_factory=lambda: dict(PLANS))
    source_systems: tuple[str, ...] = SOURCE_SYSTEMS
    channels: tuple[str, ...] = tuple(c.value for c in Channel)
    business_lines: tuple[str, ...] = tuple(b.value for b in BusinessLine)
    customer_tiers: tuple[str, ...] = tuple(t.value for t in CustomerTier)

    @classmethod
    def build(cls, seed: int) -> "World":
        """Build the world for ``seed``: 3 provinces, 2-4 cities each, 40 districts."""
        rng = random.Random(f"cxstream-world:{seed}")
        cities: list[str] = []
        provinces = [f"P{p:02d}" for p in range(1, PROVINCES + 1)]
        for p in provinces:
            for c in range(1, rng.randint(*CITIES_PER_PROVINCE) + 1):
                cities.append(f"{p}-C{c:02d}")
        # every city gets at least two districts, the rest are spread at random
        per_city = {c: 2 for c in cities}
        for _ in range(DISTRICTS_TOTAL - 2 * len(cities)):
            per_city[rng.choice(cities)] += 1
        districts = []
        for city, n in per_city.items():
            for d in range(1, n + 1):
                # log-uniform: many small districts, a few large urban ones
                subs = int(round(SUBSCRIBERS[0] * (SUBSCRIBERS[1] / SUBSCRIBERS[0]) ** rng.random(), -2))
                districts.append(
                    District(
                        code=f"{city}-D{d:02d}",
                        city=city,
                        province=city.split("-")[0],
                        subscribers=subs,
                        propensity=round(rng.uniform(0.7, 1.4), 3),
                    )
                )
        return cls(seed=seed, districts=tuple(districts))

    @property
    def provinces(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(d.province for d in self.districts))

    @property
    def cities(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(d.city for d in self.districts))

    def district(self, code: str) -> District:
        for d in self.districts:
            if d.code == code:
                return d
        raise KeyError(code)

    def subscriber_base(self) -> list[dict[str, object]]:
        """Reference rows for the subscriber base: one per district (for complaint rates per 10k)."""
        return [
            {"province": d.province, "city": d.city, "district": d.code, "subscribers": d.subscribers}
            for d in self.districts
        ]

    # -- which system emits which step -------------------------------------------------
    @staticmethod
    def created_source(channel: str) -> str:
        return CREATED_SOURCE[channel]

    @staticmethod
    def worked_source(category_or_department: str) -> str:
        """Source of a `worked` step, from the department (or the category's first department)."""
        dept = DEPARTMENT_FOR.get(category_or_department, category_or_department)
        return WORKED_SOURCE[dept]

    @staticmethod
    def satisfaction_source(channel: str) -> str:
        return SATISFACTION_SOURCE[channel]
