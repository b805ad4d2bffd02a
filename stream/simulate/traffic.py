"""Seeded, deterministic upstream traffic: ticket lifecycles and satisfaction events as Kafka records.

:func:`generate` returns exactly ``events`` records in arrival order: valid
events (pydantic-built), malformed ones (each with a named defect) and upstream
resends (byte-identical repeats of an earlier valid record).

>>> from datetime import datetime, timezone
>>> sim = generate(500, seed=3, start=datetime(2026, 11, 20, tzinfo=timezone.utc))
>>> s = sim.summary()
>>> s["produced"], s["valid"] + s["malformed"] + s["resent"]
(500, 500)
>>> sim.records[0].stream in ("ticket_events", "satisfaction_events")
True
>>> generate(500, seed=3, start=datetime(2026, 11, 20, tzinfo=timezone.utc)).records == sim.records
True

How the generator works, in three passes:

1. *plan*: tickets (with their full lifecycle) and satisfaction contacts as
   lightweight tuples, in seconds from ``start``; steps past the period end are
   dropped (those tickets stay open). The ticket volume is calibrated until the
   period holds at least as many events as needed, then the latest are cut.
2. *materialise*: in event-time order, build each pydantic model (which
   validates it) and serialise it; a weighted sample of events is corrupted.
3. *deliver*: every record arrives after a base lag typical of its source system
   (:data:`ARRIVAL_LAG_SECONDS`), a few percent arrive late on top of it (seconds
   to minutes), resends are inserted after their original, and everything is
   sorted by arrival; ``SimRecord.arrival_ms`` is the arrival, published as the
   Kafka record timestamp.
"""

from __future__ import annotations

import bisect
import heapq
import math
import random
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from hashlib import blake2b
from typing import Any

from stream.contract import SatisfactionEvent, TicketEvent

from . import world as W
from .defects import DEFECT_PRONENESS, corrupt, pick_defect
from .plants import (
    ARRIVAL_LAG_SECONDS,
    BASE_SCORE,
    CLOSURE_EFFECTS,
    LATE_SECONDS,
    LATE_SHARE,
    NOISE_SD,
    REOPEN_EFFECT,
    SLA_BREACH_EFFECT,
    Plants,
    default_plants,
    effect_on_score,
)
from .world import World

TICKETS = "ticket_events"
SATISFACTION = "satisfaction_events"
STREAMS = (TICKETS, SATISFACTION)

# -- traffic shape ---------------------------------------------------------------------
#: relative contact volume per clock hour (quiet nights, busy mornings and afternoons)
HOURLY = (0.15, 0.1, 0.08, 0.08, 0.1, 0.2, 0.4, 0.8, 1.3, 1.7, 1.8, 1.7,
          1.4, 1.5, 1.7, 1.7, 1.6, 1.4, 1.2, 1.1, 1.0, 0.8, 0.5, 0.3)  # fmt: skip
STANDALONE_PER_TICKET = 2.0  # satisfaction events not tied to a ticket, per ticket
STANDALONE_CHANNELS = {"hotline": 0.35, "app_web": 0.35, "store": 0.2, "field_visit": 0.1}
STANDALONE_BY_COMPLAINER = 0.2  # share of those contacts made by someone who complained earlier
HANDOFF_SHARE = 0.15
LEFT_OPEN_SHARE = 0.04  # never closed, whatever the period
SLA_BREACH_SHARE = 0.15  # ~10 % of the tickets closed within a one-day period (late closes fall past its end)
REOPEN_SHARE = 0.08  # ~6 % of closed tickets seen reopened within a one-day period
CALLBACK_SHARE = 0.4
FOLLOWUP_RESPONSE = 0.65  # share of closed tickets whose customer answers the follow-up survey
CLOSURE_SHARE = {"resolved": 0.65, "explained": 0.15, "partially_resolved": 0.08, "unresolved": 0.07,
                 "withdrawn": 0.05}  # fmt: skip
SOLVED_PROB = {"resolved": 0.85, "explained": 0.35, "partially_resolved": 0.4, "unresolved": 0.05,
               "withdrawn": 0.6}  # fmt: skip
DIMENSION_OFFSETS = {"overall_service": 0.0, "reach_speed": -0.5, "ivr_menu": -0.9, "agent_attitude": 0.3,
                     "agent_ability": 0.0, "call_outcome": -0.2}  # fmt: skip
RESEND_DELAY_SECONDS = (10.0, 1800.0)
ENTERPRISE_SHARE = 0.04


@dataclass(frozen=True)
class SimRecord:
    """One Kafka record as upstream would publish it."""

    stream: str  # 'ticket_events' | 'satisfaction_events'
    key: bytes  # customer_id, utf-8
    value: bytes  # JSON
    kind: str  # 'valid' | 'malformed' | 'resend'
    defect: str | None = None
    #: simulated arrival, epoch ms: published as the Kafka record timestamp (None: the producer's clock)
    arrival_ms: int | None = None


@dataclass(frozen=True)
class _Customer:
    id: str
    district: W.District
    tier: str
    enterprise: bool
    plan_pick: float  # in [0, 1): which plan of the business line


@dataclass
class _Planned:
    """A planned event: time in seconds from start, the stream, its source and model fields."""

    t: int
    seq: int
    stream: str
    source: str
    customer: _Customer
    fields: dict[str, Any]


@dataclass
class Simulation:
    """The generated traffic and what it contains."""

    seed: int
    start: datetime
    period: timedelta
    world: World
    plants: Plants
    records: list[SimRecord]
    counts: dict[str, Any]

    def summary(self) -> dict[str, Any]:
        """Counts (overall and per stream) plus ``plants.describe()``; JSON-serialisable."""
        return {
            "seed": self.seed,
            "start": self.start.isoformat(),
            "end": (self.start + self.period).isoformat(),
            **self.counts,
            "plants": self.plants.describe(),
        }


# -- helpers ---------------------------------------------------------------------------
def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


class _Shares:
    """A categorical distribution, sampled with one ``random()`` call (hot path: ~10 draws per ticket)."""

    def __init__(self, shares: dict[str, float]) -> None:
        self.keys = list(shares)
        self.cum = _accumulate(list(shares.values()))

    def __call__(self, rng: random.Random) -> str:
        return self.keys[bisect.bisect_right(self.cum, rng.random() * self.cum[-1])]



def _loguniform(rng: random.Random, lo: float, hi: float) -> float:
    return math.exp(rng.uniform(math.log(lo), math.log(hi)))


def _customer(world: World, district: W.District, idx: int) -> _Customer:
    """Customer ``idx`` of ``district``: the same id and attributes in every simulation of the world."""
    h = blake2b(f"{world.seed}:{district.code}:{idx}".encode(), digest_size=16).digest()
    u = int.from_bytes(h[8:12], "big") / 2**32
    acc, tier = 0.0, "standard"
    for name, share in W.TIER_SHARE.items():
        acc += share
        if u < acc:
            tier = name
            break
    enterprise = int.from_bytes(h[12:14], "big") / 2**16 < ENTERPRISE_SHARE
    return _Customer("CU" + h[:8].hex(), district, tier, enterprise, int.from_bytes(h[14:16], "big") / 2**16)


class _Clock:
    """Piecewise-constant contact intensity over the period, by clock hour."""

    def __init__(self, start: datetime, seconds: int) -> None:
        self.seconds = seconds
        self.bins: list[tuple[int, int]] = []
        weights = []
        for lo in range(0, seconds, 3600):
            hi = min(lo + 3600, seconds)
            self.bins.append((lo, hi))
            weights.append(HOURLY[(start + timedelta(seconds=lo)).hour] * (hi - lo) / 3600)
        self.cum = list(_accumulate(weights))

    def sample(self, rng: random.Random, k: int) -> list[int]:
        picks = rng.choices(self.bins, cum_weights=self.cum, k=k) if k else []
        return [rng.randrange(lo, hi) for lo, hi in picks]

    def mass(self, a: int, b: int) -> float:
        """Share of the period's volume falling in [a, b)."""
        total = 0.0
        prev = 0.0
        for (lo, hi), c in zip(self.bins, self.cum):
            w = c - prev
            prev = c
            overlap = max(0, min(b, hi) - max(a, lo))
            total += w * overlap / (hi - lo)
        return total / self.cum[-1]


def _accumulate(xs: list[float]) -> list[float]:
    out, acc = [], 0.0
    for x in xs:
        acc += x
        out.append(acc)
    return out


_CATEGORY = _Shares(W.CATEGORY_SHARE)
_COMPLAINT_CHANNEL = _Shares(W.COMPLAINT_CHANNEL_SHARE)
_LINE_FOR = {cat: _Shares(shares) for cat, shares in W.BUSINESS_LINE_FOR.items()}
_CLOSURE = _Shares(CLOSURE_SHARE)
_RECLOSURE = _Shares({"resolved": 0.6, "partially_resolved": 0.2, "unresolved": 0.2})
_CONTACT_CHANNEL = _Shares(STANDALONE_CHANNELS)
_CONTACT_LINE = _Shares({"mobile": 0.6, "broadband": 0.3, "value_added": 0.1})


# -- plan ------------------------------------------------------------------------------
class _Planner:
    """Plans tickets and contacts for one period, in seconds from start."""

    def __init__(self, world: World, plants: Plants, start: datetime, seconds: int, rng: random.Random) -> None:
        self.world, self.plants, self.start, self.seconds, self.rng = world, plants, start, seconds, rng
        self.events: list[_Planned] = []
        # customer id -> [(created_t, category)], for the "complaint in the last 30 days" effects
        self.history: dict[str, list[tuple[int, str]]] = defaultdict(list)
        self.created: list[tuple[int, _Customer]] = []  # every ticket creation, for repeat contacts
        self.followups: list[tuple[int, _Customer, str, dict[str, Any]]] = []
        self.spike_extra = 0
        ds = world.districts
        self.complaint_weights = [d.subscribers * d.propensity for d in ds]
        self.contact_weights = [d.subscribers for d in ds]

    def _emit(self, t: int, stream: str, source: str, customer: _Customer, **fields: Any) -> None:
        if t < self.seconds:  # past the period end: not happened yet
            self.events.append(_Planned(t, len(self.events), stream, source, customer, fields))

    def _new_customer(self, district: W.District) -> _Customer:
        return _customer(self.world, district, self.rng.randrange(district.subscribers))

    def tickets(self, n: int, clock: _Clock) -> None:
        rng = self.rng
        times = clock.sample(rng, n)
        districts = rng.choices(self.world.districts, weights=self.complaint_weights, k=n)
        for t0, d in zip(times, districts):
            self.ticket(t0, self._new_customer(d), _CATEGORY(rng))

    def spike(self, n_tickets: int, clock: _Clock) -> None:
        """Extra tickets making the planted district's category rate ``multiplier`` x normal in the window."""
        p = self.plants
        d = self.world.district(p.spike_district)
        a = int((p.spike_start - self.start).total_seconds())
        b = int((p.spike_end - self.start).total_seconds())
        share = self.complaint_weights[self.world.districts.index(d)] / sum(self.complaint_weights)
        normal = n_tickets * share * W.CATEGORY_SHARE[p.spike_category] * clock.mass(a, b)
        self.spike_extra = round((p.spike_multiplier - 1) * normal)
        for _ in range(self.spike_extra):
            t0 = self.rng.randrange(a, max(b, a + 1))
            self.ticket(t0, self._new_customer(d), p.spike_category)

    def ticket(self, t0: int, cust: _Customer, category: str) -> None:
        """Plan one ticket's whole lifecycle; the follow-up survey is scored later."""
        rng = self.rng
        tid = "TK" + rng.getrandbits(64).to_bytes(8, "big").hex().upper()
        channel = "field_visit" if category == "installation" and rng.random() < 0.3 else _COMPLAINT_CHANNEL(rng)
        line = "enterprise" if cust.enterprise else _LINE_FOR[category](rng)
        sla = t0 + int(W.SLA_HOURS[category] * 3600)
        self.history[cust.id].append((t0, category))
        self.created.append((t0, cust))
        self._emit(
            t0, TICKETS, W.CREATED_SOURCE[channel], cust, ticket_id=tid, step="created",
            region=cust.district.region, channel=channel, business_line=line, complaint_category=category,
            complaint_phenomenon=rng.choice(W.PHENOMENA[category]), customer_tier=cust.tier, sla_deadline=sla,
        )  # fmt: skip
        breach = rng.random() < SLA_BREACH_SHARE
        close = sla + int(_loguniform(rng, 900, 6 * 3600)) if breach else t0 + int(rng.uniform(0.15, 0.95) * (sla - t0))
        dispatched = t0 + int(min(rng.uniform(60, 1200), 0.1 * (close - t0)))
        dept = "ENTERPRISE_SUPPORT" if cust.enterprise else W.DEPARTMENT_FOR[category]
        self._emit(dispatched, TICKETS, "CRM", cust, ticket_id=tid, step="dispatched", department=dept)
        span = close - dispatched
        if rng.random() < HANDOFF_SHARE:
            second = W.HANDOFF_TO[dept]
            self._emit(dispatched + int(0.3 * span), TICKETS, W.WORKED_SOURCE[dept], cust,
                       ticket_id=tid, step="worked", department=dept)  # fmt: skip
            self._emit(dispatched + int(0.45 * span), TICKETS, "CRM", cust,
                       ticket_id=tid, step="dispatched", department=second)  # fmt: skip
            dept = second
            worked = dispatched + int(rng.uniform(0.6, 0.95) * span)
        else:
            worked = dispatched + int(rng.uniform(0.3, 0.95) * span)
        self._emit(worked, TICKETS, W.WORKED_SOURCE[dept], cust, ticket_id=tid, step="worked", department=dept)
        if rng.random() < LEFT_OPEN_SHARE:
            return
        closure = _CLOSURE(rng)
        self._close(close, cust, tid, category, closure)
        reopened = closure != "withdrawn" and rng.random() < REOPEN_SHARE
        if reopened:
            t = close + int(_loguniform(rng, 1800, 4 * 3600))
            self._emit(t, TICKETS, "CRM", cust, ticket_id=tid, step="reopened", note="customer reports the problem persists")
            t += int(_loguniform(rng, 1200, 2 * 3600))
            self._emit(t, TICKETS, W.WORKED_SOURCE[dept], cust, ticket_id=tid, step="worked", department=dept)
            close = t + int(_loguniform(rng, 1800, 3 * 3600))
            closure = _RECLOSURE(rng)
            self._close(close, cust, tid, category, closure)
        t = close
        contact_channel = channel
        if rng.random() < CALLBACK_SHARE:
            t = close + int(_loguniform(rng, 600, 3 * 3600))
            self._emit(t, TICKETS, "HOTLINE", cust, ticket_id=tid, step="callback")
            contact_channel = "hotline"
        if rng.random() < FOLLOWUP_RESPONSE:
            t += int(_loguniform(rng, 60, 600)) if contact_channel == "hotline" and t != close else int(
                _loguniform(rng, 300, 6 * 3600)
            )
            outcome = {"ticket_id": tid, "closure": closure, "breach": close > sla, "reopened": reopened,
                       "business_line": line}  # fmt: skip
            self.followups.append((t, cust, contact_channel, outcome))

    def _close(self, t: int, cust: _Customer, tid: str, category: str, closure: str) -> None:
        fields: dict[str, Any] = {"ticket_id": tid, "step": "closed", "closure_type": closure}
        if closure != "withdrawn":
            fields["problem_location"] = self.rng.choice(W.PROBLEM_LOCATIONS[category])
        self._emit(t, TICKETS, "CRM", cust, **fields)

    def standalone(self, n: int, clock: _Clock) -> None:
        """Contacts scored without a ticket: store visits, app sessions, hotline calls, field visits."""
        rng = self.rng
        created = sorted(self.created, key=lambda x: x[0])
        created_t = [c[0] for c in created]
        times = clock.sample(rng, n)
        districts = rng.choices(self.world.districts, weights=self.contact_weights, k=n)
        for t, d in zip(times, districts):
            prior = bisect.bisect_left(created_t, t)
            if prior and rng.random() < STANDALONE_BY_COMPLAINER:
                cust = created[rng.randrange(prior)][1]
            else:
                cust = self._new_customer(d)
            line = "enterprise" if cust.enterprise else _CONTACT_LINE(rng)
            self.followups.append((t, cust, _CONTACT_CHANNEL(rng), {"business_line": line}))

    def score_contacts(self) -> None:
        """Score every contact with the planted model, now that all complaint histories are known."""
        rng, p = self.rng, self.plants
        window = p.effect_window_days * 86400
        # seconds from start at which the opt-in effect change applies (never, without one)
        change_t = math.inf
        if p.effect_change is not None:
            change_t = (p.effect_change.start_time(self.start) - self.start).total_seconds()
        for t, cust, channel, info in self.followups:
            cats = {c for ct, c in self.history.get(cust.id, ()) if t - window <= ct <= t}
            mu = BASE_SCORE + effect_on_score(p, cust.district.code, cats, changed=t >= change_t)
            if "closure" in info:
                mu += CLOSURE_EFFECTS[info["closure"]]
                mu += SLA_BREACH_EFFECT if info["breach"] else 0.0
                mu += REOPEN_EFFECT if info["reopened"] else 0.0
            score = min(10, max(1, round(mu + rng.gauss(0, NOISE_SD))))
            plans = W.PLANS[info["business_line"]]
            fields: dict[str, Any] = {
                "contact_id": "K" + rng.getrandbits(64).to_bytes(8, "big").hex(),
                "channel": channel,
                "region": cust.district.region,
                "overall_score": score,
                "business_line": info["business_line"],
                "customer_tier": cust.tier,
                "plan": plans[int(cust.plan_pick * len(plans))],
            }
            if "ticket_id" in info:
                fields["ticket_id"] = info["ticket_id"]
            if channel == "hotline":
                fields["dimensions"] = {  # validated as HotlineDimensions when the event is built
                    name: min(10, max(1, round(score + off + rng.gauss(0, 1.1))))
                    for name, off in DIMENSION_OFFSETS.items() if rng.random() > 0.05
                }  # fmt: skip
            if rng.random() < 0.7:
                fields["nps"] = min(10, max(0, round(score - 0.3 + rng.gauss(0, 1.2))))
            if "closure" in info and rng.random() < 0.85:
                solved = SOLVED_PROB[info["closure"]] * (0.5 if info["reopened"] else 1.0)
                fields["problem_solved"] = rng.random() < solved
            elif "closure" not in info and rng.random() < 0.4:
                fields["problem_solved"] = rng.random() < 0.8
            self._emit(t, SATISFACTION, W.SATISFACTION_SOURCE[channel], cust, **fields)


def _plan(world: World, plants: Plants, start: datetime, seconds: int, n_tickets: int, seed: int) -> _Planner:
    """Plan tickets and contacts; contacts are scored (the costly part) only by :meth:`_Planner.score_contacts`."""
    planner = _Planner(world, plants, start, seconds, random.Random(f"cxstream-plan:{seed}:{n_tickets}"))
    clock = _Clock(start, seconds)
    planner.tickets(n_tickets, clock)
    planner.spike(n_tickets, clock)
    planner.standalone(round(n_tickets * STANDALONE_PER_TICKET), clock)
    return planner


def _planned_count(planner: _Planner) -> int:
    return len(planner.events) + sum(1 for f in planner.followups if f[0] < planner.seconds)


def _calibrated_plan(world: World, plants: Plants, start: datetime, seconds: int, needed: int, seed: int) -> _Planner:
    """Plan enough traffic that the period holds at least ``needed`` events (a few percent more)."""
    n_tickets = max(1, round(needed / 7.0))
    if n_tickets > 2000:
        # a small pilot measures events per ticket for this period, so the full plan is usually right first time
        pilot = _planned_count(_plan(world, plants, start, seconds, 1000, seed))
        n_tickets = max(1, round(1000 * (needed * 1.03 + 2) / max(pilot, 1)))
    for _ in range(12):
        planner = _plan(world, plants, start, seconds, n_tickets, seed)
        got = _planned_count(planner)
        if needed <= got <= needed * 1.06 + 5:
            break
        n_tickets = max(n_tickets + (1 if got < needed else 0), round(n_tickets * (needed * 1.03 + 2) / max(got, 1)))
    while _planned_count(planner) < needed:  # tiny or odd cases: only ever grow from here
        n_tickets = math.ceil(n_tickets * 1.25) + 1
        planner = _plan(world, plants, start, seconds, n_tickets, seed)
    planner.score_contacts()
    return planner


# -- materialise and deliver -----------------------------------------------------------
def generate(
    events: int,
    seed: int,
    start: datetime,
    *,
    period: timedelta = timedelta(days=1),
    malformed_share: float = 0.02,
    resend_share: float = 0.01,
    world: World | None = None,
    plants: Plants | None = None,
) -> Simulation:
    """Generate exactly ``events`` records in arrival order over ``[start, start + period)``.

    ``world`` defaults to ``World.build(seed)``; ``plants`` to ``default_plants(world, start, period)``.
    ``start`` must be timezone-aware (the contract requires offsets on event times).
    """
    if start.tzinfo is None or start.utcoffset() is None:
        raise ValueError("start must be timezone-aware")
    if events < 0 or not (0 <= malformed_share < 1 and 0 <= resend_share < 1):
        raise ValueError("events must be >= 0 and shares in [0, 1)")
    world = world or World.build(seed)
    plants = plants or default_plants(world, start, period)
    seconds = max(1, int(period.total_seconds()))
    n_malformed = round(events * malformed_share)
    n_resend = round(events * resend_share)
    n_valid = events - n_malformed - n_resend
    if n_valid < 0 or (n_resend and not n_valid):
        raise ValueError("shares leave no valid events to resend")
    needed = n_valid + n_malformed

    planner = _calibrated_plan(world, plants, start, seconds, needed, seed) if needed else None
    planned = sorted(planner.events, key=lambda e: (e.t, e.seq))[:needed] if planner else []

    rng = random.Random(f"cxstream-deliver:{seed}")
    # weighted sample without replacement (Efraimidis-Spirakis): sloppier systems break more often
    bad = set(
        heapq.nlargest(
            n_malformed, range(needed), key=lambda i: rng.random() ** (1.0 / DEFECT_PRONENESS[planned[i].source])
        )
    )
    ids = random.Random(f"cxstream-ids:{seed}")
    lags = random.Random(f"cxstream-lag:{seed}")  # its own stream: the other draws stay as they were
    start_ms = round(start.timestamp() * 1000)
    staged: list[tuple[float, int, SimRecord, int]] = []  # (arrival, order, record, event time)
    defects_by_source: dict[str, Counter[str]] = defaultdict(Counter)
    for i, ev in enumerate(planned):
        record, model = _materialise(ev, start, ids)
        value, kind, defect = record.value, "valid", None
        if i in bad:
            defect = pick_defect(ev.stream, rng)
            doc = model.model_dump(mode="json", exclude_none=True)
            value, kind = corrupt(doc, value, defect, ev.stream, rng), "malformed"
            defects_by_source[ev.source][defect] += 1
        late = _loguniform(rng, *LATE_SECONDS) if rng.random() < LATE_SHARE else 0.0
        arrival = ev.t + _loguniform(lags, *ARRIVAL_LAG_SECONDS[ev.source]) + late
        record = SimRecord(ev.stream, record.key, value, kind, defect, start_ms + round(arrival * 1000))
        staged.append((arrival, i, record, ev.t))

    resends_by_source: Counter[str] = Counter()
    valid_idx = [k for k, s in enumerate(staged) if s[2].kind == "valid"]
    for j, k in enumerate(sorted(rng.sample(valid_idx, n_resend))):
        arrival, _, rec, t = staged[k]
        resends_by_source[planned[k].source] += 1
        arrival += _loguniform(rng, *RESEND_DELAY_SECONDS)
        resend = replace(rec, kind="resend", arrival_ms=start_ms + round(arrival * 1000))
        staged.append((arrival, needed + j, resend, t))
    staged.sort(key=lambda s: (s[0], s[1]))
    records = [s[2] for s in staged]

    plants = replace(
        plants,
        spike_extra_tickets=planner.spike_extra if planner else 0,
        defects_by_source={s: dict(sorted(c.items())) for s, c in sorted(defects_by_source.items())},
        resends_by_source=dict(sorted(resends_by_source.items())),
    )
    return Simulation(seed, start, period, world, plants, records, _counts(staged))


def _materialise(ev: _Planned, start: datetime, ids: random.Random) -> tuple[SimRecord, TicketEvent | SatisfactionEvent]:
    """Build and serialise the pydantic model for one planned event (construction validates it)."""
    f = dict(ev.fields)
    if "sla_deadline" in f:
        f["sla_deadline"] = start + timedelta(seconds=f["sla_deadline"])
    model_cls = TicketEvent if ev.stream == TICKETS else SatisfactionEvent
    model = model_cls(
        schema_version=1,
        event_id=_uuid(ids),
        event_time=start + timedelta(seconds=ev.t),
        source_system=ev.source,
        customer_id=ev.customer.id,
        **f,
    )
    value = model.model_dump_json(exclude_none=True).encode()
    return SimRecord(ev.stream, ev.customer.id.encode(), value, "valid"), model


def _counts(staged: list[tuple[float, int, SimRecord, int]]) -> dict[str, Any]:
    per: dict[str, dict[str, Any]] = {
        s: {"produced": 0, "valid": 0, "malformed": 0, "resent": 0, "malformed_by_defect": Counter()} for s in STREAMS
    }
    out_of_order = 0
    latest = -1
    for _, _, rec, t in staged:
        c = per[rec.stream]
        c["produced"] += 1
        if rec.kind == "valid":
            c["valid"] += 1
        elif rec.kind == "malformed":
            c["malformed"] += 1
            c["malformed_by_defect"][rec.defect] += 1
        else:
            c["resent"] += 1
        if rec.kind != "resend":
            out_of_order += t < latest
            latest = max(latest, t)
    by_defect: Counter[str] = Counter()
    for c in per.values():
        by_defect.update(c["malformed_by_defect"])
        c["malformed_by_defect"] = dict(sorted(c["malformed_by_defect"].items()))
    return {
        "produced": sum(c["produced"] for c in per.values()),
        "valid": sum(c["valid"] for c in per.values()),
        "malformed": sum(c["malformed"] for c in per.values()),
        "malformed_by_defect": dict(sorted(by_defect.items())),
        "resent": sum(c["resent"] for c in per.values()),
        "out_of_order": out_of_order,
        "per_stream": per,
    }
