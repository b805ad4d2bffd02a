"""Ticket state stays bounded as tickets accumulate (pure store, no I/O)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from stream.state.lifecycle import FollowUp, Step
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
    assert store.filed_deadlines() <= 2 * len(store.records) + 1024  # the SLA filing is bounded too


def test_max_tickets_drops_the_stalest_first():
    store = TicketStore(settings(max_tickets=100, open_max_age="365d"))
    for i in range(300):
        store.add_step(f"T{i}", step(f"T{i}", "created", T0 + timedelta(seconds=i), sla_deadline=T0 + timedelta(days=1)))
    store.evict(T0 + timedelta(seconds=300))
    assert len(store) == 100
    assert set(store.records) == {f"T{i}" for i in range(200, 300)}


def test_eviction_keeps_the_tickets_whose_rows_are_not_stored_yet():
    """The batch in flight's tickets and queued SLA breaches stay: an evicted ticket is read back from ClickHouse."""
    store = TicketStore(settings(max_tickets=100, open_max_age="365d"))
    for i in range(300):
        store.add_step(f"T{i}", step(f"T{i}", "created", T0 + timedelta(seconds=i), sla_deadline=T0 + timedelta(days=1)))
    store.add_step("T5", step("T5", "closed", T0 + timedelta(seconds=5), closure_type="resolved"))
    kept = {"T0", "T5"}  # the stalest, and one closed past its retention
    store.evict(T0 + timedelta(hours=2), keep=kept)
    assert len(store) == 100  # the cap holds, taken from the others
    assert set(store.records) == kept | {f"T{i}" for i in range(202, 300)}
    assert store.held_back == 1  # T5: the stage checks again at the next SLA check, not an hour later
    store.evict(T0 + timedelta(hours=2))  # at a later check they are judged like any other
    assert "T5" not in store.records  # past its retention
    assert "T0" in store.records and len(store) == 99  # the store is within its cap now


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


def test_a_follow_up_before_its_ticket_is_handed_over_with_its_partition():
    """A follow-up read before any step of its ticket (its topic ran ahead) belongs to the partition its
    satisfaction event came from (co-partitioned): a rebalance releases it with that partition's tickets."""
    store = TicketStore(settings())
    fup = FollowUp(event_id="S1", event_time=T0, overall_score=3, problem_solved=False, nps=None, channel="hotline",
                   source_system="SURVEY", customer_id="c", reach_speed=None)  # fmt: skip
    store.add_followup("T1", fup, partition=2)
    store.add_step("T2", step("T2", "created", T0), partition=1)
    store.add_followup("T2", fup, partition=4)  # the ticket's steps place it, not the follow-up
    assert store.partition_of == {"T1": 2, "T2": 1}
    assert store.drop_partitions([2]) == 1
    assert "T1" not in store and "T2" in store


def test_a_step_without_a_new_deadline_does_not_report_an_overdue_ticket_again():
    store = TicketStore(settings())
    deadline = T0 + timedelta(hours=2)
    store.add_step("T1", step("T1", "created", T0, sla_deadline=deadline))
    assert store.overdue(deadline) == ["T1"]
    store.add_step("T1", step("T1", "worked", deadline + timedelta(minutes=1), department="NET_OPS"))
    assert store.overdue(deadline + timedelta(minutes=2)) == []  # still the same breach: reported once
    later = deadline + timedelta(hours=3)
    store.add_step("T1", step("T1", "dispatched", deadline + timedelta(minutes=3), department="FIELD", sla_deadline=later))
    assert store.overdue(later - timedelta(seconds=1)) == []  # a new deadline arms the check again ...
    assert store.overdue(later) == ["T1"]  # ... and is judged on its own


def test_the_eviction_scan_runs_as_the_clock_moves_not_at_every_sla_check():
    from types import SimpleNamespace

    from stream.state.stage import TicketStage

    stage = TicketStage(settings(closed_retention="72h", open_max_age="30d"), SimpleNamespace(database="cx"))
    scans = []
    evict = stage.store.evict
    stage.store.evict = lambda clock, keep=(): scans.append(clock) or evict(clock, keep)
    for minute in range(0, 181, 5):  # an SLA check every 5 (simulated) minutes for three hours
        stage.evict(T0 + timedelta(minutes=minute))
    # the step is 72 h / 72 = 1 h of clock: the first check, then once an hour
    assert scans == [T0, T0 + timedelta(hours=1), T0 + timedelta(hours=2), T0 + timedelta(hours=3)]
    stage.evict(T0 - timedelta(days=5))  # the clock went back (a backfill after a wall-clock check): due again
    assert scans[-1] == T0 - timedelta(days=5)
    scans.pop()
    stage.evict(T0 + timedelta(hours=3))
    scans.pop()
    for t in ("T1", "T2"):
        stage.store.add_step(t, step(t, "created", T0 + timedelta(hours=3), sla_deadline=T0 + timedelta(days=1)))
    stage.settings = stage.store.settings = settings(closed_retention="72h", open_max_age="30d", max_tickets=1)
    stage.evict(T0 + timedelta(hours=3, minutes=5))  # over max_tickets: due at once
    assert len(scans) == 5 and len(stage.store) == 1


# -- packed records (issue 8: a million open tickets held) ---------------------------------------------------
def test_a_packed_ticket_folds_to_the_same_state_whatever_the_offsets_of_its_times():
    from stream.state import packed
    from stream.state.lifecycle import TicketRecord

    cst = timezone(timedelta(hours=8))
    rec = TicketRecord(partition=5)
    rec.add_step(step("T1", "created", T0.astimezone(cst), sla_deadline=T0 + timedelta(hours=4), district="D1",
                      channel="hotline", complaint_category="network", department="NOC"))  # fmt: skip
    rec.add_step(step("T1", "closed", T0 + timedelta(hours=5), closure_type="resolved", problem_location="net"))
    rec.add_step(step("T1", "reopened", T0 + timedelta(hours=6)))
    rec.add_followup(FollowUp(event_id="S1", event_time=T0 + timedelta(hours=7), overall_score=3,
                              problem_solved=False, nps=0, channel="hotline", source_system="SURVEY", customer_id="c",
                              reach_speed=2))  # fmt: skip
    blob = packed.pack(rec)
    back = packed.unpack(blob)
    assert back.state("T1", T0 + timedelta(days=1)) == rec.state("T1", T0 + timedelta(days=1))
    assert (packed.is_closed(blob), packed.partition(blob)) == (False, 5)  # the reopen opened it again
    assert packed.deadline(blob) == T0 + timedelta(hours=4)
    assert packed.last_event_time(blob) == T0 + timedelta(hours=7)
    assert packed.pack(back) == blob  # stable: packing what was unpacked gives the same bytes


def test_a_restored_row_packed_directly_is_the_record_the_object_path_packs():
    from stream.state import packed
    from stream.state.lifecycle import TicketRecord
    from stream.state.stage import _step_from_row

    naive = T0.replace(tzinfo=None)  # the driver's DateTime64('UTC') values
    row = ("T9", "e-1", naive, "created", "CRM", "c-9", "", "", naive + timedelta(days=2), "P01", "P01-C01",
           "P01-C01-D01", "hotline", "mobile", "network", "no_signal", "gold", "", 4)  # fmt: skip
    ticket_id, blob = packed.pack_step_row(row)
    t, part, s = _step_from_row(row)
    rec = TicketRecord(part)
    rec.add_step(s)
    assert (ticket_id, blob) == (t, packed.pack(rec))
    assert packed.unpack(blob).state("T9") == rec.state("T9")


def test_the_store_packs_at_settle_and_keeps_every_answer():
    store = TicketStore(settings())
    store.add_step("T1", step("T1", "created", T0, sla_deadline=T0 + timedelta(hours=1)), partition=2)
    before = store.state("T1", T0)
    store.settle()
    assert type(store.records["T1"]) is not bytes  # the newest changes stay unpacked
    store.settle(keep=0)
    assert type(store.records["T1"]) is bytes
    assert store.state("T1", T0) == before and store.partition_of["T1"] == 2
    assert store.newest_event_time() == T0
    store.add_step("T1", step("T1", "closed", T0 + timedelta(minutes=30), closure_type="resolved"))
    store.settle(keep=0)
    assert store.state("T1").status == "closed"
    assert store.overdue(T0 + timedelta(hours=2)) == []  # closed in time: its heap entry is stale


def test_deadlines_filed_by_the_minute_come_due_at_their_own_second():
    store = TicketStore(settings())
    store.add_step("A", step("A", "created", T0, sla_deadline=T0 + timedelta(minutes=5, seconds=10)))
    store.add_step("B", step("B", "created", T0, sla_deadline=T0 + timedelta(minutes=5, seconds=50)))
    assert store.overdue(T0 + timedelta(minutes=5, seconds=30)) == ["A"]  # same minute, B still ahead
    assert store.overdue(T0 + timedelta(minutes=5, seconds=50)) == ["B"]
    assert store.overdue(T0 + timedelta(hours=1)) == []


def test_overdue_matches_a_plain_scan_of_open_tickets():
    """Random deadlines, closes, reopens and moved deadlines, checked as the clock moves: each open ticket past its
    current deadline is reported exactly once per arming, as a scan of every ticket would find it."""
    import random

    rng = random.Random(3)
    store = TicketStore(settings(open_max_age="365d", closed_retention="365d"))
    armed: set[str] = set()  # open, with a deadline, not reported since its last arming
    n = 0
    for tick in range(300):
        clock = T0 + timedelta(seconds=20 * tick)
        for _ in range(rng.randrange(4)):
            t = f"T{rng.randrange(60)}"
            at = clock + timedelta(seconds=rng.randrange(-30, 30))
            n += 1
            kind = rng.choice(["created", "closed", "reopened", "worked"]) if t in store else "created"
            extra: dict = {}
            if kind in ("created", "worked"):
                extra["sla_deadline"] = clock + timedelta(seconds=rng.randrange(0, 600))
            elif kind == "closed":
                extra["closure_type"] = "resolved"
            store.add_step(t, Step(event_id=f"e{n}", event_time=at, step=kind, source_system="CRM", customer_id="c",
                                   **extra))  # fmt: skip
            if extra.get("sla_deadline") is not None or kind == "reopened":
                armed.add(t)
        store.settle(keep=tick % 3 * 10)  # some records packed, some held
        due = store.overdue(clock)
        expected = set()
        for t in list(armed):
            rec = store.get(t)
            if rec.is_closed() or rec.sla_deadline() is None:
                continue
            if rec.sla_deadline() <= clock:
                expected.add(t)
                armed.discard(t)
        assert sorted(due) == sorted(expected), tick
