"""The traffic simulator: determinism, exact counts, contract validity, defects, resends, planted effects."""

from __future__ import annotations

import json
import re
import time
from collections import Counter, defaultdict
from datetime import datetime, timedelta, timezone
from statistics import mean

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from stream.contract import SatisfactionEvent, TicketEvent
from stream.simulate import World, generate
from stream.simulate.defects import DEFECTS
from stream.simulate.publish import publish

START = datetime(2026, 11, 20, tzinfo=timezone(timedelta(hours=8)))
MODELS = {"ticket_events": TicketEvent, "satisfaction_events": SatisfactionEvent}


@pytest.fixture(scope="module")
def big():
    """One large simulation, parsed once: enough volume for the statistical checks."""
    sim = generate(60_000, seed=2024, start=START)
    tickets: dict[str, list[TicketEvent]] = defaultdict(list)
    sats: list[SatisfactionEvent] = []
    for r in sim.records:
        if r.kind != "valid":
            continue
        e = MODELS[r.stream].model_validate_json(r.value)
        if r.stream == "ticket_events":
            tickets[e.ticket_id].append(e)
        else:
            sats.append(e)
    created = {tid: next(e for e in evs if e.step == "created") for tid, evs in tickets.items()
               if any(e.step == "created" for e in evs)}  # fmt: skip
    return sim, tickets, created, sats


# -- world -----------------------------------------------------------------------------
def test_world_is_seeded_hierarchy():
    w = World.build(5)
    assert w == World.build(5) and w != World.build(6)
    assert w.provinces == ("P01", "P02", "P03")
    for p in w.provinces:
        assert 2 <= sum(1 for c in w.cities if c.startswith(p + "-")) <= 4
    assert len(w.districts) == 40
    assert len({d.code for d in w.districts}) == 40
    for d in w.districts:
        assert re.fullmatch(r"P\d\d-C\d\d-D\d\d", d.code) and d.code.startswith(d.city + "-")
        assert 20_000 <= d.subscribers <= 400_000
    assert sum(row["subscribers"] for row in w.subscriber_base()) == sum(d.subscribers for d in w.districts)


# -- determinism and counts ------------------------------------------------------------
def test_same_seed_same_bytes_different_seed_different():
    a = generate(3000, seed=11, start=START)
    b = generate(3000, seed=11, start=START)
    c = generate(3000, seed=12, start=START)
    assert a.records == b.records
    assert a.summary() == b.summary()
    assert [r.value for r in a.records] != [r.value for r in c.records]


@settings(max_examples=25, deadline=None)
@given(
    events=st.integers(0, 1500),
    malformed=st.sampled_from([0.0, 0.02, 0.1, 0.3]),
    resend=st.sampled_from([0.0, 0.01, 0.05, 0.2]),
)
def test_counts_are_exact(events, malformed, resend):
    sim = generate(events, seed=events, start=START, malformed_share=malformed, resend_share=resend)
    s = sim.summary()
    kinds = Counter(r.kind for r in sim.records)
    assert len(sim.records) == events == s["produced"]
    assert kinds["malformed"] == s["malformed"] == round(events * malformed)
    assert kinds["resend"] == s["resent"] == round(events * resend)
    assert kinds["valid"] == s["valid"] == events - s["malformed"] - s["resent"]
    assert sum(s["malformed_by_defect"].values()) == s["malformed"]
    for stream, c in s["per_stream"].items():
        mine = [r for r in sim.records if r.stream == stream]
        assert c["produced"] == len(mine) == c["valid"] + c["malformed"] + c["resent"]
    json.dumps(s)  # the summary is JSON-serialisable


def test_naive_start_is_rejected():
    with pytest.raises(ValueError):
        generate(10, seed=1, start=datetime(2026, 11, 20))


def test_generation_is_fast():
    t = time.perf_counter()
    generate(20_000, seed=3, start=START)
    assert time.perf_counter() - t < 3.0  # ~0.5 s here; 100k takes ~3 s


# -- contract validity -----------------------------------------------------------------
def test_every_valid_record_validates_and_is_keyed_by_customer(big):
    sim, tickets, created, sats = big
    ids = Counter()
    for r in sim.records:
        if r.kind == "valid":
            e = MODELS[r.stream].model_validate_json(r.value)
            assert r.key == e.customer_id.encode()
            ids[e.event_id] += 1
    assert ids and max(ids.values()) == 1  # event ids unique
    contacts = Counter(s.contact_id for s in sats)
    assert max(contacts.values()) == 1
    assert max(Counter(e.ticket_id for e in created.values()).values()) == 1


def test_every_malformed_record_fails_with_a_named_defect(big):
    sim = big[0]
    bad = [r for r in sim.records if r.kind == "malformed"]
    assert len(bad) == round(60_000 * 0.02)
    assert {r.defect for r in bad} == set(DEFECTS)
    for r in bad:
        assert r.key
        with pytest.raises((ValidationError, ValueError)):
            MODELS[r.stream].model_validate_json(r.value)
        if r.defect == "not_json":
            with pytest.raises(json.JSONDecodeError):
                json.loads(r.value)
        else:
            assert json.loads(r.value)["source_system"]  # attributable


def test_defects_by_source_match_what_was_emitted(big):
    sim = big[0]
    planted = sim.plants.describe()["data_quality"]["defects_by_source"]
    by_defect = Counter()
    for counts in planted.values():
        by_defect.update(counts)
    assert dict(by_defect) == sim.summary()["malformed_by_defect"]
    parsed = Counter()
    for r in sim.records:
        if r.kind == "malformed" and r.defect != "not_json":
            parsed[(json.loads(r.value)["source_system"], r.defect)] += 1
    assert parsed == Counter({(s, d): n for s, c in planted.items() for d, n in c.items() if d != "not_json"})


def test_resends_repeat_an_earlier_valid_record_byte_for_byte(big):
    sim = big[0]
    seen: set[tuple[str, bytes, bytes]] = set()
    resends = 0
    for r in sim.records:
        if r.kind == "valid":
            seen.add((r.stream, r.key, r.value))
        elif r.kind == "resend":
            resends += 1
            assert (r.stream, r.key, r.value) in seen
    assert resends == round(60_000 * 0.01)


def test_arrival_lag_follows_the_planted_model(big):
    """Records come in arrival order; each source's lag is its planted base lag, plus a few percent late."""
    sim = big[0]
    model = sim.plants.describe()["arrival_lag"]
    bounds = model["base_seconds_by_source"]
    assert bounds["CRM"][1] < bounds["FIELD"][0] and bounds["SURVEY"][1] <= 600  # within the 10 min lateness
    arrivals = [r.arrival_ms for r in sim.records]
    assert all(isinstance(a, int) for a in arrivals) and arrivals == sorted(arrivals)
    lags: dict[str, list[float]] = defaultdict(list)
    first_arrival: dict[bytes, int] = {}
    for r in sim.records:
        if r.kind == "valid":
            doc = json.loads(r.value)
            lag = r.arrival_ms / 1000 - datetime.fromisoformat(doc["event_time"]).timestamp()
            lags[doc["source_system"]].append(lag)
            first_arrival[r.value] = r.arrival_ms
        elif r.kind == "resend":
            assert r.arrival_ms > first_arrival[r.value]
    late = 0
    for source, values in lags.items():
        lo, hi = bounds[source]
        values.sort()
        assert values[0] >= lo - 0.001, source
        median = values[len(values) // 2]
        assert 0.75 < median / (lo * hi) ** 0.5 < 1.33, (source, median)
        late += sum(1 for v in values if v > hi)
    assert 0.5 * model["late_share"] < late / sim.summary()["valid"] < model["late_share"]


# -- lifecycle realism -----------------------------------------------------------------
def test_ticket_lifecycles(big):
    sim, tickets, created, sats = big
    closed = [tid for tid in created if any(e.step == "closed" for e in tickets[tid])]
    reopened = [tid for tid in closed if any(e.step == "reopened" for e in tickets[tid])]
    breached = [tid for tid in closed
                if max(e.event_time for e in tickets[tid] if e.step == "closed") > created[tid].sla_deadline]  # fmt: skip
    handed_off = [tid for tid in created if sum(e.step == "dispatched" for e in tickets[tid]) >= 2]
    assert 0.4 < len(closed) / len(created) < 0.95  # some stay open
    assert 0.04 < len(reopened) / len(closed) < 0.09
    assert 0.06 < len(breached) / len(closed) < 0.15
    assert len(handed_off) > 0.05 * len(created)
    complete = 0
    for tid in closed:
        steps = [e.step for e in sorted(tickets[tid], key=lambda e: e.event_time)]
        assert steps[0] == "created"
        complete += "dispatched" in steps and "worked" in steps
    assert complete > 0.9 * len(closed)  # the rest lost a step to a malformed record
    linked = [s for s in sats if s.ticket_id]
    assert linked and all(s.ticket_id in tickets for s in linked)
    assert all(s.dimensions is not None for s in sats if s.channel == "hotline")
    assert all(s.dimensions is None for s in sats if s.channel != "hotline")
    assert {s.channel for s in sats if not s.ticket_id} >= {"store", "app_web", "hotline"}
    assert {e.source_system for e in created.values()} == {"CRM", "HOTLINE", "APP"}
    nps = [(s.overall_score, s.nps) for s in sats if s.nps is not None]
    assert _corr(nps) > 0.5


def _corr(pairs):
    xs, ys = zip(*pairs)
    mx, my = mean(xs), mean(ys)
    cov = sum((x - mx) * (y - my) for x, y in pairs)
    return cov / (sum((x - mx) ** 2 for x in xs) * sum((y - my) ** 2 for y in ys)) ** 0.5


# -- planted effects -------------------------------------------------------------------
def _install_gap(big, district: str) -> tuple[float, int]:
    """Mean score after a recent installation complaint: elsewhere minus in ``district``."""
    sim, tickets, created, sats = big
    installs = defaultdict(list)
    for c in created.values():
        if c.complaint_category == "installation":
            installs[c.customer_id].append(c.event_time)
    window = timedelta(days=sim.plants.effect_window_days)
    inside, outside = [], []
    for s in sats:
        if any(s.event_time - window <= t <= s.event_time for t in installs.get(s.customer_id, ())):
            (inside if s.region.district == district else outside).append(s.overall_score)
    return mean(outside) - mean(inside), len(inside)


def test_planted_district_effect_is_visible(big):
    sim = big[0]
    planted = sim.plants.describe()["district_effect"]
    gap, n = _install_gap(big, planted["district"])
    assert n >= 30
    # clipping at 10 and 1 shrinks the gap a little; 0.8 is about three standard errors here
    assert abs(gap - -planted["extra_effect"]) < 0.8, gap


def test_other_districts_show_no_installation_effect(big):
    """Control: the same measurement in an unplanted large district finds nothing."""
    sim = big[0]
    others = sorted((d for d in sim.world.districts if d.code != sim.plants.install_district),
                    key=lambda d: -d.subscribers)  # fmt: skip
    gap, n = _install_gap(big, others[0].code)
    assert n >= 20
    assert abs(gap) < 0.8, gap


def test_incident_spike_shows_in_created_counts(big):
    sim, tickets, created, sats = big
    p = sim.plants
    per_window = Counter()
    for c in created.values():
        if c.region.district == p.spike_district and c.complaint_category == p.spike_category:
            per_window[int((c.event_time - START) / timedelta(hours=2))] += 1
    spike = int((p.spike_start - START) / timedelta(hours=2))
    daytime = [per_window[w] for w in range(4, 10) if w != spike]  # 08:00-20:00, busy hours
    assert per_window[spike] > 3 * mean(daytime), (per_window, spike)
    assert p.spike_extra_tickets and per_window[spike] >= p.spike_extra_tickets


def test_effect_change_plant_is_opt_in_and_shows_after_its_time():
    """Default plants passed explicitly give the same bytes; a planted change of the network effect
    (-1.0 -> -3.0 from local noon) lowers the mean score after a recent network complaint by about 2 (measured 2.22, n = 549 before, 2080 after)."""
    from stream.simulate import default_plants
    from stream.simulate.plants import EffectChange

    world = World.build(1)
    plain = generate(2000, seed=1, start=START)
    explicit = generate(2000, seed=1, start=START, world=world, plants=default_plants(world, START))
    assert plain.records == explicit.records and "effect_change" not in plain.plants.describe()

    at = START + timedelta(hours=12)
    world = World.build(2024)
    plants = default_plants(world, START, effect_change=EffectChange("network", at, -3.0))
    sim = generate(60_000, seed=2024, start=START, world=world, plants=plants)
    assert sim.plants.describe()["effect_change"]["effect"] == -3.0
    network: dict[str, list[datetime]] = defaultdict(list)
    sats = []
    for r in sim.records:
        if r.kind != "valid":
            continue
        e = MODELS[r.stream].model_validate_json(r.value)
        if r.stream == "satisfaction_events":
            sats.append(e)
        elif e.step == "created" and e.complaint_category == "network":
            network[e.customer_id].append(e.event_time)
    window = timedelta(days=sim.plants.effect_window_days)
    hit = {False: [], True: []}  # after the change? -> scores with a recent network complaint
    for s in sats:
        if any(s.event_time - window <= t <= s.event_time for t in network.get(s.customer_id, ())):
            hit[s.event_time >= at].append(s.overall_score)
    assert min(len(v) for v in hit.values()) >= 200
    drop = mean(hit[False]) - mean(hit[True])
    assert abs(drop - 2.0) < 0.6, drop  # other factors differ little by time of day; clipping shrinks it a bit


# -- publishing (real embedded broker) --------------------------------------------------
async def test_publish_maps_streams_to_topics_in_order(broker, topics):
    from aiokafka import AIOKafkaConsumer

    sim = generate(400, seed=9, start=START)
    reports: list[int] = []
    n = await publish(sim.records, bootstrap_servers=broker.bootstrap, topic_names=topics, rate=2000,
                      progress=reports.append)  # fmt: skip
    assert n == 400 and reports[-1] == 400

    consumer = AIOKafkaConsumer(*topics.values(), bootstrap_servers=broker.bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    got: dict[bytes, list[tuple[str, bytes, int]]] = defaultdict(list)
    try:
        deadline = time.monotonic() + 20
        while sum(map(len, got.values())) < 400 and time.monotonic() < deadline:
            for msgs in (await consumer.getmany(timeout_ms=300)).values():
                for m in msgs:
                    got[m.key].append((m.topic, m.value, m.timestamp))
    finally:
        await consumer.stop()
    # Per customer (the message key, hence one partition), records arrive in publishing order on their stream's
    # topic, stamped with their simulated arrival.
    want: dict[bytes, list[tuple[str, bytes, int]]] = defaultdict(list)
    for r in sim.records:
        want[r.key].append((topics[r.stream], r.value, r.arrival_ms))
    by_topic = lambda rows: {t: [(v, ts) for tt, v, ts in rows if tt == t] for t in topics.values()}  # noqa: E731
    assert {k: by_topic(v) for k, v in got.items()} == {k: by_topic(v) for k, v in want.items()}
