"""Ticket state stays bounded as tickets accumulate (pure store, no I/O)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from stream.state.lifecycle import Step
from stream.state.store import TicketStore
from stream.topology import TicketStateSettings

T0 = datetime(2026, 11, 20, tzinfo=timezone.utc)


def settings(**kw) -> TicketStateSettings:
    base = dict(lateness="10m", closed_retention="1h", open_max_age="1d", max_tickets=1_000_000, sla_check_interval="5s")
    return TicketStateSettings(**(base | kw))


def step(ticket: str, kind: str, at: datetime, **kw) -> Step:
    return Step(event_id=f"{ticket}-{kind}-{at.timestamp()}", event_time=at, step=kind, source_system="CRM",
                customer_id="c", **kw)  # fmt: skip


def test_state_stays_bounded_over_many_open_and_close_cycles():
    """50,000 tickets, each open for 10 minutes, one created every 2 s: only ~1h10m of them are ever held."""
    store = TicketStore(settings())
    peak = 0
    for i in range(50_000):
        at = T0 + timedelta(seconds=2 * i)
        t = f"T{i}"
        store.add_step(t, step(t, "created", at, sla_deadline=at + timedelta(hours=4)), partition=i % 6)
        store.add_step(t, step(t, "closed", at + timedelta(minutes=10), closure_type="resolved"), partition=i % 6)
        peak = max(peak, len(store))
        if i % 500 == 0:  # the worker evicts at each SLA check
            store.evict(at)
    # 1 h closed retention + 10 min open, one ticket per 2 s: ~2,100 held, plus up to 500 between evictions.
    assert 2_000 <= peak <= 2_700
    store.evict(at)
    assert len(store.records) == len(store.partition_of) <= 2_200
    assert len(store._deadlines) <= 2 * len(store.records) + 1024  # the SLA heap is bounded too


def test_max_tickets_drops_the_stalest_first():
    store = TicketStore(settings(max_tickets=100, open_max_age="365d"))
    for i in range(300):
        store.add_step(f"T{i}", step(f"T{i}", "created", T0 + timedelta(seconds=i), sla_deadline=T0 + timedelta(days=1)))
    store.evict(T0 + timedelta(seconds=300))
    assert len(store) == 100
    assert set(store.records) == {f"T{i}" for i in range(200, 300)}


def test_silent_open_ticket_is_reported_once_when_its_deadline_passes():
    store = TicketStore(settings())
    deadline = T0 + timedelta(hours=2)
    store.add_step("T1", step("T1", "created", T0, sla_deadline=deadline))
    store.add_step("T2", step("T2", "created", T0, sla_deadline=deadline))
    store.add_step("T2", step("T2", "closed", T0 + timedelta(hours=1), closure_type="resolved"))
    assert store.overdue(deadline - timedelta(seconds=1)) == []
    assert store.overdue(deadline) == ["T1"]  # T2 closed in time
    assert store.overdue(deadline + timedelta(hours=1)) == []  # reported once
    # A reopen arms the check again (the deadline has passed: reported at the next check).
    store.add_step("T2", step("T2", "reopened", deadline + timedelta(minutes=5)))
    assert store.overdue(deadline + timedelta(minutes=6)) == ["T2"]


def test_a_lost_partition_releases_exactly_its_tickets():
    store = TicketStore(settings())
    for i in range(12):
        store.add_step(f"T{i}", step(f"T{i}", "created", T0, sla_deadline=T0 + timedelta(hours=1)), partition=i % 3)
    assert store.drop_partitions([1]) == 4
    assert sorted(store.partition_of.values()) == [0, 0, 0, 0, 2, 2, 2, 2]
