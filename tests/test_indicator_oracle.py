"""Indicators end to end: every stored indicator value equals the same indicator computed by SQL over the raw events.

The oracle (``tests/oracle_indicators.py``) re-derives every counter of ``docs/indicators.md`` from
``ticket_events`` and ``satisfaction_events`` alone. Here it is first checked by hand on crafted tickets (the
lifecycle's edge cases), then against :func:`stream.state.lifecycle.fold` itself on a simulated day, and finally
the stream's ``indicator_values`` / ``indicator_cells`` are compared with it after a simulated day went through
the real broker and ingest agent.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import defaultdict
from datetime import datetime, timedelta, timezone

import pyarrow as pa
import pytest

from stream.contract import SatisfactionEvent, TicketEvent
from stream.indicators.counters import COUNTERS, DIMENSIONS
from stream.ingest.batch import BatchSplitter
from stream.ingest.dedup import SeenIds
from stream.ingest.records import Accepted, RawRecord
from stream.simulate import generate
from stream.sink.clickhouse import Writer, connect, migrate
from stream.sink.columns import satisfaction_table, ticket_table
from stream.state.lifecycle import FollowUp, Step, fold
from stream.topology import WindowSpec

from .conftest import SIM_START, start_agent, stop_agent
from .oracle_indicators import (
    ALL,
    INDICATORS,
    CellKey,
    SubscriberBase,
    beyond_horizon,
    close,
    diff,
    load_subscriber_base,
    oracle_cells,
    oracle_values,
    rollup,
    watermark,
)

DB = "cxstream"
TOPIC = {"ticket_event": "cx.ticket-events.v1", "satisfaction_event": "cx.satisfaction-events.v1"}
CONTRACT_OF = {v: k for k, v in TOPIC.items()}
MODEL = {"ticket_event": TicketEvent, "satisfaction_event": SatisfactionEvent}
WINDOWS = [
    WindowSpec(name="5m", kind="tumbling", size="5m"),
    WindowSpec(name="1h", kind="tumbling", size="1h"),
    WindowSpec(name="1d", kind="tumbling", size="1d"),
    WindowSpec(name="24h", kind="rolling", size="24h", step="1h"),
    WindowSpec(name="7d", kind="rolling", size="7d", step="1d"),
]
D1 = {"province": "P01", "city": "P01-C01", "district": "P01-C01-D01"}
D2 = {"province": "P01", "city": "P01-C02", "district": "P01-C02-D01"}
D3 = {"province": "P02", "city": "P02-C01", "district": "P02-C01-D01"}


def at(hh: int, mm: int = 0, day: int = 20) -> datetime:
    return datetime(2026, 11, day, hh, mm, tzinfo=timezone.utc)


# --------------------------------------------------------------------------- crafted events


def ticket(eid: str, t: datetime, tid: str, step: str, **kw) -> dict:
    doc = {"schema_version": 1, "event_id": eid, "event_time": t.isoformat(), "source_system": "CRM",
           "customer_id": "cu-" + tid, "ticket_id": tid, "step": step, **kw}  # fmt: skip
    for k, v in doc.items():
        if isinstance(v, datetime):
            doc[k] = v.isoformat()
    return doc


def created(eid, t, tid, sla, region=D1, channel="hotline", line="broadband"):
    return ticket(eid, t, tid, "created", region=region, channel=channel, business_line=line,
                  complaint_category="network", complaint_phenomenon="slow_speed", customer_tier="gold",
                  sla_deadline=sla)  # fmt: skip


def sat(eid, t, score, region=D1, channel="app_web", tid=None, **kw) -> dict:
    doc = {"schema_version": 1, "event_id": eid, "event_time": t.isoformat(), "source_system": "SURVEY",
           "customer_id": "cu-x", "contact_id": "K-" + eid, "channel": channel, "region": region,
           "overall_score": score, **kw}  # fmt: skip
    if tid:
        doc["ticket_id"] = tid
    return doc


def accepted(contract: str, docs: list[dict], partition: int = 0) -> list[Accepted]:
    return [
        Accepted(RawRecord(TOPIC[contract], partition, i, 0, b"k", json.dumps(d).encode()), MODEL[contract].model_validate(d))
        for i, d in enumerate(docs)
    ]  # fmt: skip


def crafted() -> tuple[list[dict], list[dict]]:
    """Tickets A..I and satisfaction events covering the lifecycle's edge cases (see the tests below)."""
    tickets = [
        # A: created 10:02, dispatched twice to the same department, closed 13:00 as resolved
        created("a1", at(10, 2), "A", sla=at(18)),
        ticket("a2", at(10, 10), "A", "dispatched", department="NET_OPS"),
        ticket("a3", at(10, 40), "A", "dispatched", department="NET_OPS"),
        ticket("a4", at(13), "A", "closed", closure_type="resolved", problem_location="access_network"),
        # B: closed 10:00 (resolved), reopened 10:30, handed to another department, closed again 12:30, late
        created("b1", at(9), "B", sla=at(12), region=D2, channel="store", line="mobile"),
        ticket("b2", at(9, 5), "B", "dispatched", department="NET_OPS"),
        ticket("b3", at(10), "B", "closed", closure_type="resolved"),
        ticket("b4", at(10, 30), "B", "reopened"),
        ticket("b5", at(10, 40), "B", "worked", department="FIELD_OPS"),
        ticket("b6", at(12, 30), "B", "closed", closure_type="unresolved"),
        # C: closed twice without a reopen: the first close ends it, the second corrects the closure type
        created("c1", at(8), "C", sla=at(20)),
        ticket("c2", at(9), "C", "closed", closure_type="resolved"),
        ticket("c3", at(9, 30), "C", "closed", closure_type="unresolved"),
        # D: steps without a `created` step: contributes nothing
        ticket("d1", at(11), "D", "dispatched", department="NET_OPS"),
        ticket("d2", at(12), "D", "closed", closure_type="resolved"),
        # E: silent and open, deadline 09:00
        created("e1", at(7), "E", sla=at(9), region=D3),
        ticket("e2", at(7, 10), "E", "dispatched", department="NET_OPS"),
        # F: open, deadline 16:00; its follow-up at 16:30 is past the deadline
        created("f1", at(15), "F", sla=at(16), region=D3),
        # G: closed then reopened: open again
        created("g1", at(6), "G", sla=at(23)),
        ticket("g2", at(6, 30), "G", "closed", closure_type="resolved"),
        ticket("g3", at(7), "G", "reopened"),
        # H: created twice: the first `created` (journey order) gives the cell
        created("h1", at(5), "H", sla=at(23), region=D1),
        created("h2", at(5, 10), "H", sla=at(23, 30), region=D2),
        # I: closed and reopened at the same instant: the reopen sorts after the close (open)
        created("i1", at(4), "I", sla=at(5)),
        ticket("i2", at(4, 30), "I", "closed", closure_type="resolved"),
        ticket("i3", at(4, 30), "I", "reopened"),
    ]
    hot = {"overall_service": 5, "reach_speed": 3, "ivr_menu": 4, "agent_attitude": 6}
    sats = [
        sat("s1", at(14), 4, channel="hotline", tid="A", dimensions=hot, nps=3, problem_solved=False,
            business_line="broadband"),
        sat("s2", at(10), 9, tid="C", nps=10, problem_solved=True, business_line="broadband"),
        sat("s3", at(16, 30), 8, region=D3, tid="F", nps=9),
        sat("s4", at(14, 3), 10, nps=6, business_line="broadband"),  # no ticket; same 1h cell as... app_web
        sat("s5", at(14, 7), 7),  # no business line: cell business_line ''
    ]  # fmt: skip
    return tickets, sats


@pytest.fixture(scope="module")
def chdb_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("chdb") / "ch"


@pytest.fixture
def client(chdb_dir):
    c = connect(f"chdb:///{chdb_dir}")
    try:
        yield c
    finally:
        c.close()  # chDB: one data directory per process at a time (the end-to-end tests open their own)


_dbs = iter(range(1000))


def store(client, tickets: list[Accepted], sats: list[Accepted]) -> str:
    db = f"oracle{next(_dbs)}"
    migrate(client, db, timedelta(days=3650), timedelta(days=30))
    w = Writer(client, db)
    now = datetime.now(timezone.utc)
    w.insert("ticket_events_inbox", ticket_table(tickets, now))
    w.insert("satisfaction_events_inbox", satisfaction_table(sats, now))
    return db


@pytest.fixture
def crafted_db(client):
    tickets, sats = crafted()
    return store(client, accepted("ticket_event", tickets), accepted("satisfaction_event", sats))


def cell(cells, window, start, district=D1, channel="hotline", line="broadband") -> dict:
    key = CellKey(window, start, district["district"], channel, line, district["province"], district["city"])
    assert key in cells, f"no cell {key}"
    return {k: v for k, v in cells[key].items() if v}


# --------------------------------------------------------------------------- the oracle by hand

LATE_NOW = at(0, day=21)  # every deadline passed


def test_ticket_created_dispatched_twice_closed_resolved_with_an_unhappy_follow_up(client, crafted_db):
    cells = oracle_cells(client, crafted_db, WINDOWS, 8, LATE_NOW)
    assert cell(cells, "1h", at(10)) == {"complaints": 1}  # A; the 10:00 closes are C's and B's, elsewhere
    assert cell(cells, "5m", at(10)) == {"complaints": 1}
    assert cell(cells, "1h", at(13)) == {
        "closed_n": 1, "handling_n": 1, "handling_sum": 10680, "fcr_n": 1, "resolved_n": 1, "first_closed_n": 1,
        "verdict_n": 1, "gap_n": 1, "ontime_verdict_n": 1, "perceived_slow_n": 1,
    }  # fmt: skip
    assert cell(cells, "1h", at(18)) == {"due_n": 1}  # closed in time
    # the follow-up itself is a satisfaction fact in its own cell
    assert cell(cells, "1h", at(14)) == {
        "sat_n": 1, "sat_sum": 4, "sat_sumsq": 16, "nps_n": 1, "detractors_n": 1,
        "dim_overall_service_n": 1, "dim_overall_service_sum": 5, "dim_reach_speed_n": 1, "dim_reach_speed_sum": 3,
        "dim_ivr_menu_n": 1, "dim_ivr_menu_sum": 4, "dim_agent_attitude_n": 1, "dim_agent_attitude_sum": 6,
    }  # fmt: skip


def test_reopened_then_closed_again_late(client, crafted_db):
    cells = oracle_cells(client, crafted_db, WINDOWS, 8, LATE_NOW)
    b = {"district": D2, "channel": "store", "line": "mobile"}
    assert cell(cells, "1h", at(9), **b) == {"complaints": 1}
    assert cell(cells, "1h", at(10), **b) == {"first_closed_n": 1, "reopened_n": 1}  # at the FIRST close
    # the final close: not resolved, two departments, reopened; 3h30 after creation
    assert cell(cells, "1h", at(12, 0), **b) == {"closed_n": 1, "handling_n": 1, "handling_sum": 12600, "due_n": 1,
                                                 "overdue_n": 1}  # fmt: skip
    # H's second `created` (D2) gives nothing: the first one (D1) is the ticket's
    assert CellKey("1h", at(5), D2["district"], "hotline", "broadband", "P01", "P01-C02") not in cells


def test_closed_twice_the_first_close_ends_it_the_latest_gives_the_closure_type(client, crafted_db):
    cells = oracle_cells(client, crafted_db, WINDOWS, 8, LATE_NOW)
    # C at 09:00 (closed, not resolved after the correction; customer solved: verdict but no gap; no reach
    # speed rated: no on-time verdict) beside B's creation in another cell
    assert cell(cells, "1h", at(9)) == {"closed_n": 1, "handling_n": 1, "handling_sum": 3600, "first_closed_n": 1,
                                        "verdict_n": 1}  # fmt: skip
    assert cell(cells, "1h", at(20)) == {"due_n": 1}


def test_open_tickets_are_judged_at_now_or_their_latest_event(client, crafted_db):
    late = oracle_cells(client, crafted_db, WINDOWS, 8, LATE_NOW)
    early = oracle_cells(client, crafted_db, WINDOWS, 8, at(8))
    e = {"district": D3, "channel": "hotline", "line": "broadband"}
    assert cell(late, "1h", at(9), **e) == {"due_n": 1, "overdue_n": 1}
    assert cell(early, "1h", at(9), **e) == {"due_n": 1}  # at 08:00 its 09:00 deadline has not passed
    # F: open, its follow-up (16:30) is past the 16:00 deadline, whatever the clock says
    assert cell(early, "1h", at(16), **e) == {"due_n": 1, "overdue_n": 1}
    # G: reopened, open; I: closed and reopened at the same instant, open
    assert cell(late, "1h", at(6)) == {"complaints": 1, "first_closed_n": 1, "reopened_n": 1}
    assert cell(late, "1h", at(4)) == {"complaints": 1, "first_closed_n": 1, "reopened_n": 1}
    assert cell(late, "1h", at(5)) == {"complaints": 1, "due_n": 1, "overdue_n": 1}  # H created; I due (open)
    assert cell(early, "1h", at(5)) == {"complaints": 1, "due_n": 1, "overdue_n": 1}  # I's 05:00 < 08:00


def test_tickets_without_created_contribute_nothing_and_satisfaction_cells(client, crafted_db):
    cells = oracle_cells(client, crafted_db, WINDOWS, 8, LATE_NOW)
    day = rollup({k: v for k, v in cells.items() if k.window == "1d"}, "network")
    (total,) = day.values()
    assert total["complaints"] == 8  # A B C E F G H I; not D
    assert total["closed_n"] == 3 and total["first_closed_n"] == 5  # A B C closed; G I closed once, reopened
    assert total["due_n"] == 8 and total["overdue_n"] == 6  # B late; E F G H I open past the deadline at LATE_NOW
    # G's deadline 23:00 and H's latest one 23:30 (given by its second `created`), both in H's first cell
    assert cell(cells, "1h", at(23)) == {"due_n": 2, "overdue_n": 2}
    assert cell(cells, "5m", at(23, 30)) == {"due_n": 1, "overdue_n": 1}
    assert total["sat_n"] == 5 and total["satisfied_n"] == 3 and total["promoters_n"] == 2
    assert total["detractors_n"] == 2 and total["nps_n"] == 4
    app = cell(cells, "1h", at(14), channel="app_web", line="broadband")
    assert app == {"sat_n": 1, "sat_sum": 10, "sat_sumsq": 100, "satisfied_n": 1, "nps_n": 1, "detractors_n": 1}
    assert cell(cells, "1h", at(14), channel="app_web", line="") == {"sat_n": 1, "sat_sum": 7, "sat_sumsq": 49}
    assert cell(cells, "5m", at(14, 5), channel="app_web", line="") == {"sat_n": 1, "sat_sum": 7, "sat_sumsq": 49}


def test_rolling_windows_hold_a_fact_size_over_step_times(client, crafted_db):
    cells = oracle_cells(client, crafted_db, WINDOWS, 8, LATE_NOW)
    def starts(window):  # the windows holding s5 (14:07, D1, app_web, no business line)
        return {k.window_start for k in cells if k.window == window and k.business_line == "" and k.district == D1["district"]}

    assert starts("24h") == {at(14) - timedelta(hours=h) for h in range(24)}  # start <= 14:07 < start + 24h
    assert starts("7d") == {at(0) - timedelta(days=d) for d in range(7)}
    assert starts("1d") == {at(0)} and starts("1h") == {at(14)} and starts("5m") == {at(14, 5)}
    for start in starts("24h"):
        assert cell(cells, "24h", start, channel="app_web", line="") == {"sat_n": 1, "sat_sum": 7, "sat_sumsq": 49}


def test_values_and_rollups(client, crafted_db):
    cells = oracle_cells(client, crafted_db, WINDOWS, 8, LATE_NOW)
    base = SubscriberBase([
        (D1["district"], D1["city"], D1["province"], 10000, at(0, day=1)),
        (D1["district"], D1["city"], D1["province"], 20000, at(12)),  # from noon on
        (D2["district"], D2["city"], D2["province"], 5000, at(0, day=1)),
        (D3["district"], D3["city"], D3["province"], 40000, at(0, day=1)),
    ])  # fmt: skip
    values = oracle_values(cells, base)
    a = values[CellKey("1h", at(13), D1["district"], "hotline", "broadband", "P01", "P01-C01")]
    assert a["fcr_rate"] == 1 and a["perception_gap_rate"] == 1 and a["perceived_slow_rate"] == 1
    assert a["avg_handling_s"] == 10680 and a["sat_mean"] is None and a["complaint_rate_per_10k"] == 0
    assert a["subscribers"] == 20000
    h10 = values[CellKey("1h", at(10), D1["district"], "hotline", "broadband", "P01", "P01-C01")]
    assert h10["subscribers"] == 10000 and h10["complaint_rate_per_10k"] == 1.0
    s = values[CellKey("1h", at(14), D1["district"], "hotline", "broadband", "P01", "P01-C01")]
    assert s["sat_mean"] == 4 and s["sat_std"] == 0 and s["nps"] == -100 and s["csat"] == 0
    assert s["dim_reach_speed_mean"] == 3 and s["dim_call_outcome_mean"] is None

    network = oracle_values(rollup(cells, "network"), base)
    day = network[CellKey("1d", at(0), ALL, ALL, ALL, ALL, ALL)]
    assert day["subscribers"] == 55000 and close(day["complaint_rate_per_10k"], 8 / 55000 * 10000)
    assert day["reopen_rate"] == 3 / 5 and day["sla_overdue_rate"] == 6 / 8
    province = oracle_values(rollup(cells, "province"), base)
    assert province[CellKey("1d", at(0), ALL, ALL, ALL, "P01", ALL)]["subscribers"] == 15000
    city = rollup(cells, "city")
    district = rollup(cells, "district")
    for level in (city, district, province):
        assert sum(v["complaints"] for k, v in level.items() if k.window == "1d") == 8
    assert set(INDICATORS) <= set(day)


def test_diff_names_what_differs():
    key = CellKey("1h", at(10), "P01-C01-D01", "hotline", "broadband", "P01", "P01-C01")
    other = key._replace(channel="store")
    a = {key: {"complaints": 1.0, "csat": 0.5}}
    assert diff(a, {key: {"complaints": 1.0, "csat": 0.5 + 1e-12}}) == []
    assert diff(a, {key: {"complaints": 2.0, "csat": 0.5}}) == [
        "1h 2026-11-20 10:00 P01/P01-C01/P01-C01-D01 hotline/broadband: complaints oracle=1.0 stream=2.0"
    ]
    assert diff(a, {key: {"complaints": 1.0, "csat": None}})[0].endswith("csat oracle=0.5 stream=None")
    assert diff(a, {**a, other: {"complaints": 1.0}})[0].endswith("store/broadband: stream only {'complaints': 1.0}")


# --------------------------------------------------------------------------- the oracle against the fold


def fold_cells(tickets: list[Accepted], sats: list[Accepted], windows, satisfied_min_score: int, now) -> dict:
    """docs/indicators.md computed in Python from :func:`fold` states: an independent check of the SQL."""
    steps, fups, reach = defaultdict(list), defaultdict(list), {}
    for a in tickets:
        steps[a.event.ticket_id].append(Step.from_event(a.event))
    cells: dict = defaultdict(lambda: dict.fromkeys(COUNTERS, 0.0))

    def land(t: datetime, region, channel, line, **inc):
        ms = round(t.timestamp() * 1000)
        for w in windows:
            size, hop = int(w.size.total_seconds()), int(w.hop.total_seconds())
            last = ms // (hop * 1000) * hop
            for k in range(size // hop):
                start = datetime.fromtimestamp(last - k * hop, timezone.utc)
                key = CellKey(w.name, start, region.district, channel, line, region.province, region.city)
                for n, v in inc.items():
                    cells[key][n] += v

    for a in sats:
        e = a.event
        if e.ticket_id:
            fups[e.ticket_id].append(FollowUp.from_event(e))
            reach[e.event_id] = e.dimensions.reach_speed if e.dimensions else None
        inc = {"sat_n": 1, "sat_sum": e.overall_score, "sat_sumsq": e.overall_score**2,
               "satisfied_n": e.overall_score >= satisfied_min_score}  # fmt: skip
        if e.nps is not None:
            inc |= {"nps_n": 1, "promoters_n": e.nps >= 9, "detractors_n": e.nps <= 6}
        for d in DIMENSIONS:
            v = getattr(e.dimensions, d) if e.dimensions else None
            if v is not None:
                inc |= {f"dim_{d}_n": 1, f"dim_{d}_sum": v}
        land(e.event_time, e.region, str(e.channel), str(e.business_line or ""), **inc)

    for tid, ss in steps.items():
        s = fold(tid, ss, fups.get(tid, ()), clock=now)
        first_created = next((x for x in sorted(ss, key=lambda x: x.order) if x.step == "created"), None)
        if first_created is None or not first_created.district:
            continue
        c = next(a.event for a in tickets if a.event.event_id == first_created.event_id)
        where = (c.region, str(c.channel), str(c.business_line))
        land(s.created_at, *where, complaints=1)
        if s.status == "closed":
            speed = reach.get(s.followup.event_id) if s.followup else None
            ontime = s.sla_breach != "closed_late" and speed is not None
            land(s.closed_at, *where, closed_n=1, handling_n=s.handling_s is not None, handling_sum=s.handling_s or 0,
                 fcr_n=bool(s.first_contact_resolution), resolved_n=s.closure_type == "resolved",
                 verdict_n=s.customer_solved is not None, gap_n=s.perception_gap is True,
                 ontime_verdict_n=ontime, perceived_slow_n=ontime and speed <= 4)  # fmt: skip
        if s.first_closed_at is not None:
            land(s.first_closed_at, *where, first_closed_n=1, reopened_n=s.reopen_count > 0)
        if s.sla_deadline is not None:
            land(s.sla_deadline, *where, due_n=1, overdue_n=s.sla_breached)
    return {k: {n: float(v) for n, v in c.items()} for k, c in cells.items()}


def test_oracle_agrees_with_the_fold_on_crafted_tickets(client, crafted_db):
    tickets, sats = crafted()
    t, s = accepted("ticket_event", tickets), accepted("satisfaction_event", sats)
    for now in (LATE_NOW, at(8), at(16, 10)):
        expected = fold_cells(t, s, WINDOWS, 8, now)
        got = oracle_cells(client, crafted_db, WINDOWS, 8, now)
        assert diff(expected, got) == []


def test_oracle_agrees_with_the_fold_on_a_simulated_day(client):
    sim = generate(6000, seed=23, start=SIM_START, malformed_share=0.05)
    records = [RawRecord(TOPIC[{"ticket_events": "ticket_event", "satisfaction_events": "satisfaction_event"}[r.stream]],
                         i % 6, i, r.arrival_ms, r.key, r.value) for i, r in enumerate(sim.records)]  # fmt: skip
    batches = BatchSplitter(CONTRACT_OF, lambda: SeenIds(7 * 86400, 10**6)).split(records)
    t, s = batches["ticket_event"].accepted, batches["satisfaction_event"].accepted
    db = store(client, t, s)
    steps_by_ticket = defaultdict(set)
    for a in t:
        steps_by_ticket[a.event.ticket_id].add(str(a.event.step))
    # the simulated day holds the edge cases the oracle must mirror
    assert any("created" not in v for v in steps_by_ticket.values())
    assert any("reopened" in v for v in steps_by_ticket.values())
    for now in (SIM_START + timedelta(hours=14), datetime.now(timezone.utc)):
        expected = fold_cells(t, s, WINDOWS, 8, now)
        got = oracle_cells(client, db, WINDOWS, 8, now)
        assert diff(expected, got)[:10] == []
        assert len(got) > 1000


# --------------------------------------------------------------------------- end to end

TOL = 1e-9
E2E_EVENTS = 8000


def _topology(topology):
    ind = topology.indicators.model_copy(update={"lateness": timedelta(days=3)})
    # open tickets of the simulated day stay restorable whatever today's date (restores go back open_max_age)
    tickets = topology.state.tickets.model_copy(
        update={"sla_check_interval": timedelta(milliseconds=500), "open_max_age": timedelta(days=3650)}
    )
    state = topology.state.model_copy(update={"tickets": tickets})
    return topology.model_copy(update={"indicators": ind, "state": state})


def _stream_values(client) -> dict:
    result = client.query(f"SELECT * FROM {DB}.indicator_values")
    names = result.column_names
    out = {}
    for row in result.result_rows:
        r = dict(zip(names, row))
        start = r["window_start"].replace(tzinfo=timezone.utc)
        key = CellKey(r["window"], start, r["district"], r["channel"], r["business_line"], r["province"], r["city"])
        out[key] = {n: (None if r[n] is None else float(r[n])) for n in (*COUNTERS, *INDICATORS, "subscribers")}
    return out


def _stream_rollup(client, level: str) -> dict:
    fields = {
        "district": ("district", "'*'", "'*'", "province", "city"),
        "city": ("'*'", "'*'", "'*'", "province", "city"),
        "province": ("'*'", "'*'", "'*'", "province", "'*'"),
        "network": ("'*'", "'*'", "'*'", "'*'", "'*'"),
    }[level]
    names = ("district", "channel", "business_line", "province", "city")
    select = ", ".join(f"{f} AS {n}" for f, n in zip(fields, names))
    sums = ", ".join(f"sum({c}) AS {c}" for c in COUNTERS)
    result = client.query(
        f"SELECT window, window_start, {select}, {sums} FROM {DB}.indicator_cells FINAL "
        f"GROUP BY window, window_start, district, channel, business_line, province, city"
    )
    out = {}
    for row in result.result_rows:
        key = CellKey(row[0], row[1].replace(tzinfo=timezone.utc), *row[2:7])
        out[key] = dict(zip(COUNTERS, map(float, row[7:])))
    return out


def _view_rollup(client, level: str) -> dict:
    """``indicator_rollups`` rows of one level, keyed like the oracle's roll-ups."""
    result = client.query(f"SELECT * FROM {DB}.indicator_rollups WHERE level = %(l)s", parameters={"l": level})
    out = {}
    for row in result.result_rows:
        r = dict(zip(result.column_names, row))
        key = CellKey(r["window"], r["window_start"].replace(tzinfo=timezone.utc), r["district"], "*", "*",
                      r["province"], r["city"])  # fmt: skip
        out[key] = {n: (None if r[n] is None else float(r[n])) for n in (*COUNTERS, *INDICATORS, "subscribers")}
    return out


def _nonempty(cells: dict) -> dict:
    return {k: v for k, v in cells.items() if any(v.get(n) for n in COUNTERS)}


def _report(what: str, problems: list[str], total: int) -> str:
    kinds: dict[tuple[str, str], int] = defaultdict(int)
    for p in problems:
        kind = "oracle only" if "oracle only" in p else "stream only" if "stream only" in p else "values differ"
        kinds[(p.split(" ", 1)[0], kind)] += 1
    summary = ", ".join(f"{w} {k}: {n}" for (w, k), n in sorted(kinds.items()))
    return f"{what}: {len(problems)} of {total} cells differ ({summary}); first 10:\n  " + "\n  ".join(problems[:10])


async def _handled(agent, n: int, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while sum(agent.progress.totals.values()) < n:
        assert time.monotonic() < deadline, f"agent handled {dict(agent.progress.totals)} of {n}"
        await asyncio.sleep(0.05)
    await _sla_stored([agent], deadline + 30)


async def _sla_stored(agents, deadline: float) -> None:
    """Idle: in each agent, an SLA check (every 0.5 s) that started after now has derived its breaches (a second
    check has started since: the loop runs them one at a time) and stored them (the queue is empty). A fixed sleep
    was too short on a loaded machine: the breaches of the day's open tickets were not stored before the stop."""
    since = time.monotonic()
    first: dict[int, float] = {}
    while True:
        done = 0
        for i, agent in enumerate(agents):
            checked = agent._sla_checked_at  # noqa: SLF001
            if i not in first:
                if checked > since:
                    first[i] = checked
            elif checked > first[i] and not agent._sla_backlog:  # noqa: SLF001
                done += 1
        if done == len(agents):
            return
        assert time.monotonic() < deadline, "no SLA check after the last batch stored its breaches"
        await asyncio.sleep(0.05)


async def _all_handled(agents, n: int, timeout_s: float = 90) -> None:
    """Wait until the agents together handled ``n`` records (or more: redeliveries), each is caught up (its
    positions known and at the end) and has nothing in flight, and the group committed every record."""
    from aiokafka import TopicPartition

    deadline = time.monotonic() + timeout_s
    while True:
        handled = sum(sum(a.progress.totals.values()) for a in agents)
        if handled >= n and all(a._caught_up() and a._all_finished.is_set() and a._taking.is_set() for a in agents):  # noqa: SLF001
            consumer = agents[0].consumer
            tps = [TopicPartition(t, p) for t in consumer.subscription() for p in consumer.partitions_for_topic(t)]
            positions = {tp: pos for a in agents for tp, (pos, _) in a._positions().items()}  # noqa: SLF001
            committed = {tp: await consumer.committed(tp) for tp in tps}
            if all(committed[tp] is not None and committed[tp] == positions.get(tp) for tp in tps):
                break
        assert time.monotonic() < deadline, f"agents handled {handled} of {n}"
        await asyncio.sleep(0.05)
    await _sla_stored(agents, deadline + 30)


async def _run_in_halves(broker, topo, topics, tmp_path, records, halves: bool) -> None:
    from stream.simulate.publish import publish

    cut = len(records) // 2 if halves else len(records)
    await publish(records[:cut], bootstrap_servers=broker.bootstrap, topic_names=topics)
    agent, writer = await start_agent(broker, topo, tmp_path)
    try:
        await _handled(agent, cut)
        if cut < len(records):
            first = {json.loads(r.value)["ticket_id"] for r in records[:cut] if r.stream == "ticket_events" and r.kind == "valid"}
            later = {json.loads(r.value).get("ticket_id") for r in records[cut:] if r.kind == "valid"}
            evicted = first - set(agent.tickets.store.records)
            assert len(evicted & later) > 20, "no evicted ticket is touched again"  # the second half reloads them
            await publish(records[cut:], bootstrap_servers=broker.bootstrap, topic_names=topics)
            await _handled(agent, len(records))
    finally:
        await stop_agent(agent, writer)


async def _run_with_a_second_worker_joining(broker, topo, topics, tmp_path, records) -> None:
    from stream.ingest.agent import IngestAgent
    from stream.simulate.publish import publish

    # small batches, and the first worker's storage and derivation slowed down: it has batches in flight when the
    # second joins (a revocation finds one being stored, or the next one being derived)
    topo = topo.model_copy(update={"consumer": topo.consumer.model_copy(update={"batch_max_events": 300})})
    await publish(records, bootstrap_servers=broker.bootstrap, topic_names=topics)
    agent, writer = await start_agent(broker, topo, tmp_path)
    store, derive = agent._store_checked, agent._derive  # noqa: SLF001

    def slow_store(derived) -> None:
        time.sleep(0.05)
        store(derived)

    def slow_derive(*args, **kw):
        time.sleep(0.03)
        return derive(*args, **kw)

    agent._store_checked = slow_store  # noqa: SLF001
    agent._derive = slow_derive  # noqa: SLF001
    second = None
    try:
        deadline = time.monotonic() + 60
        while sum(agent.progress.totals.values()) < len(records) // 5:
            assert time.monotonic() < deadline, f"the first worker handled {dict(agent.progress.totals)}"
            await asyncio.sleep(0.01)
        second = IngestAgent(bootstrap=broker.bootstrap, topology=topo, writer=(second_writer := writer.sibling()))
        await second.start()
        await _all_handled([agent, second], len(records))
        assert second.batches_done > 0, "the second worker took no partition"
        assert sum(agent.progress.totals.values()) < len(records), "the first worker handled everything"
        # Tansu sometimes has a member join twice, so the first worker may also drain with nothing in flight,
        # before or after the revocation that matters. One drain had work in flight: batches, or SLA breaches
        # derived and not yet stored (the revocation can come during an SLA check, when no batch is in flight);
        # every drain stored and committed it in time.
        drains = list(agent.drains)
        assert any(batches or sla for batches, _, _, sla in drains), f"no revocation had work in flight: {drains}"
        assert all(in_time for _, _, in_time, _ in drains), f"the revocations drained {drains}"
        # Nothing lost: every valid event published is stored once (the oracle reads the stored events).
        for table, stream_ in (("ticket_events", "ticket_events"), ("satisfaction_events", "satisfaction_events")):
            published = {json.loads(r.value)["event_id"] for r in records if r.stream == stream_ and r.kind == "valid"}
            (stored,) = writer.client.query(f"SELECT uniqExact(event_id) FROM {DB}.{table}").result_rows[0]
            assert stored == len(published), f"{table}: {stored} stored of {len(published)} published"
    finally:
        if second is not None:
            await second.stop()
            second_writer.client.close()
        await stop_agent(agent, writer)


@pytest.mark.integration
@pytest.mark.parametrize("midway", ["one_go", "evicted_midway", "rebalanced_midway"])
async def test_stored_indicators_equal_the_oracle_over_a_simulated_day(broker, topology, topics, tmp_path, midway):
    """``evicted_midway``: the day arrives in two halves; in between the agent goes idle, and its SLA check (at
    the wall clock, days after the simulated day) evicts the closed tickets, so the second half's reopens,
    late steps and follow-ups find their tickets only in ClickHouse: reload, retract, re-derive.

    ``rebalanced_midway``: a second worker joins the group while the first is mid-stream, with batches in
    flight; the first hands over half the partitions (committing what it derived before releasing them), the
    second restores their state and cells from ClickHouse. Nothing may be counted twice or lost."""
    topo = _topology(topology)
    sim = generate(E2E_EVENTS, seed=31, start=SIM_START)
    if midway == "rebalanced_midway":
        await _run_with_a_second_worker_joining(broker, topo, topics, tmp_path, sim.records)
    else:
        await _run_in_halves(broker, topo, topics, tmp_path, sim.records, halves=midway == "evicted_midway")
    now = datetime.now(timezone.utc)

    client = connect(f"chdb:///{tmp_path}/clickhouse")
    try:
        # All deadlines of the simulated day have passed by now: the stream's last SLA clock and `now` agree.
        (latest_deadline,) = client.query(f"SELECT max(sla_deadline) FROM {DB}.ticket_events").result_rows[0]
        assert latest_deadline.replace(tzinfo=timezone.utc) < now - timedelta(minutes=1)
        # A subscriber base (one district changes at noon) so the view's ASOF complaint rate is compared too.
        districts = sim.world.districts
        base_rows = [(d.code, d.city, d.province, d.subscribers, SIM_START - timedelta(days=30)) for d in districts]
        base_rows.append((districts[0].code, districts[0].city, districts[0].province, 12345, SIM_START + timedelta(hours=12)))
        client.insert_arrow(f"{DB}.subscriber_base", pa.table({
            "district": [r[0] for r in base_rows], "city": [r[1] for r in base_rows],
            "province": [r[2] for r in base_rows], "subscribers": pa.array([r[3] for r in base_rows], pa.uint64()),
            "effective_from": pa.array([r[4] for r in base_rows], pa.timestamp("s", tz="UTC")),
            "updated_at": pa.array([now] * len(base_rows), pa.timestamp("ms", tz="UTC")),
        }))  # fmt: skip

        windows = topo.indicators.windows
        every = oracle_cells(client, DB, windows, topo.indicators.satisfied_min_score, now)
        # The stream holds back rolling windows ending past the step boundary after its watermark (cube.py); they
        # are left out of the comparison, and must really be absent (any other missing cell is a failure).
        mark = watermark(client, DB)
        cells = {k: v for k, v in every.items() if not beyond_horizon(k, windows, mark)}
        held_back = set(every) - set(cells)
        base = load_subscriber_base(client, DB)
        expected = oracle_values(cells, base)
        got = _nonempty(_stream_values(client))
        assert len(expected) > 1000
        assert not held_back & set(got), f"{len(held_back & set(got))} rolling cells ahead of the watermark are stored"
        problems = diff(expected, got, TOL)
        assert not problems, _report("indicator_values vs oracle", problems, len(expected))
        print(f"indicator_values: {len(got)} non-empty cells equal the oracle's {len(expected)} "
              f"({len(held_back)} rolling cells ahead of the watermark {mark:%Y-%m-%d %H:%M:%S} held back)")
        for w in topo.indicators.windows:
            assert any(k.window == w.name for k in got), f"no stored cell for window {w.name}"

        for level in ("district", "city", "province", "network"):
            want = rollup(cells, level)
            have = {k: v for k, v in _nonempty(_stream_rollup(client, level)).items() if not beyond_horizon(k, windows, mark)}
            problems = diff(want, have, TOL)
            assert not problems, _report(f"{level} roll-up of indicator_cells vs oracle", problems, len(want))
            # The view Grafana and the alert stage read: counters and every indicator, complaint rate included.
            view = {k: v for k, v in _nonempty(_view_rollup(client, level)).items() if not beyond_horizon(k, windows, mark)}
            problems = diff(oracle_values(want, base), view, TOL)
            assert not problems, _report(f"indicator_rollups ({level}) vs oracle", problems, len(want))
    finally:
        client.close()
