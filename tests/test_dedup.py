"""Idempotency: SeenIds (horizon, memory bound, forget) and BatchSplitter (routing, resends)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream.contract import SatisfactionEvent, TicketEvent
from stream.contract.export import EXAMPLES
from stream.ingest.batch import BatchSplitter
from stream.ingest.dedup import SeenIds
from stream.ingest.records import RawRecord
from stream.simulate import generate

HORIZON = 100.0
START = datetime(2026, 11, 20, tzinfo=timezone(timedelta(hours=8)))


class Clock:
    def __init__(self, t: float = 0.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


# -- SeenIds ------------------------------------------------------------------------------
def test_first_seen_is_new_and_a_resend_is_not():
    seen = SeenIds(HORIZON, 1000, clock=Clock())
    assert seen.add_new(["a", "b"]) == [True, True]
    assert seen.add_new(["a"]) == [False]
    assert seen.add_new(["c", "b", "c", "c", "d"]) == [True, False, False, False, True]
    assert len(seen) == 4
    assert "a" in seen and "d" in seen and "z" not in seen
    assert seen.add_new([]) == []


def test_an_id_is_remembered_across_one_rotation_and_dropped_after_two():
    clock = Clock()
    seen = SeenIds(HORIZON, 1000, clock=clock)
    seen.add_new(["early"])  # just after the generation started
    clock.t = 49.0
    assert seen.add_new(["early", "late"]) == [False, True]  # "late": just before the rotation
    clock.t = 50.0  # half horizon: rotation, both move to the previous generation
    assert seen.add_new(["early", "late", "x50"]) == [False, False, True]
    clock.t = 99.0
    assert seen.add_new(["early", "late"]) == [False, False]
    clock.t = 100.0  # second rotation: the first generation is gone
    assert seen.add_new(["early", "late", "x50"]) == [True, True, False]


@settings(max_examples=60, deadline=None)
@given(
    steps=st.lists(
        st.tuples(st.floats(0.0, 2.0), st.lists(st.integers(0, 30).map(str), max_size=5)), min_size=1, max_size=300
    )
)
def test_remembered_at_least_half_and_at_most_a_full_horizon(steps):
    """With calls at least every 2 s, an id accepted at t is a duplicate until t + 50 and new again after t + 104."""
    clock = Clock()
    seen = SeenIds(HORIZON, 10**6, clock=clock)
    accepted_at: dict[str, float] = {}
    for dt, ids in steps:
        clock.t += dt
        now = clock.t
        verdicts = seen.add_new(ids)
        for event_id, new in zip(ids, verdicts):
            last = accepted_at.get(event_id)
            if last is not None and now - last < HORIZON / 2:
                assert not new, f"{event_id} accepted at {last} forgotten at {now}"
            if last is None or now - last > HORIZON + 2 * 2.0:
                assert new, f"{event_id} accepted at {last} still remembered at {now}"
            if new:
                accepted_at[event_id] = now


def test_forget_undoes_add_new_in_both_generations():
    clock = Clock()
    seen = SeenIds(HORIZON, 1000, clock=clock)
    seen.add_new(["old"])
    clock.t = 60.0
    seen.add_new(["new", "kept"])  # "old" is in the previous generation now
    seen.forget(["old", "new", "never-seen"])
    assert len(seen) == 1 and "kept" in seen
    assert seen.add_new(["old", "new", "kept"]) == [True, True, False]


@settings(max_examples=100, deadline=None)
@given(max_ids=st.integers(1, 30), sizes=st.lists(st.integers(0, 12), min_size=1, max_size=30))
def test_when_full_the_oldest_ids_go_first(max_ids, sizes):
    """Distinct ids, no clock movement: what is remembered is always the newest ones, in a suffix of arrival."""
    seen = SeenIds(HORIZON, max_ids, clock=Clock())
    order: list[str] = []
    for size in sizes:
        batch = [str(len(order) + i) for i in range(size)]
        assert seen.add_new(batch) == [True] * size
        order.extend(batch)
        remembered = [i for i in order if i in seen]
        assert len(remembered) == len(seen) <= max_ids
        assert remembered == order[len(order) - len(remembered) :], "an older id outlived a newer one"
        if order:
            assert order[-1] in seen


@pytest.mark.parametrize("max_ids", [1, 2, 7, 10])
def test_max_ids_bound_holds_for_one_id_at_a_time(max_ids):
    seen = SeenIds(HORIZON, max_ids, clock=Clock())
    for i in range(500):
        assert seen.add_new([str(i)]) == [True]
        assert len(seen) <= max_ids


def test_max_ids_bound_holds_for_batches():
    seen = SeenIds(HORIZON, 10, clock=Clock())
    for i in range(3):
        seen.add_new([f"{i}-{j}" for j in range(4)])
        assert len(seen) <= 10, f"batch {i}: {len(seen)} ids remembered, max_ids=10"


@settings(max_examples=100, deadline=None)
@given(
    max_ids=st.integers(2, 50),
    batches=st.lists(st.lists(st.integers(0, 10_000).map(str), max_size=12), max_size=30),
)
def test_max_ids_bound_holds_over_many_batched_inserts(max_ids, batches):
    seen = SeenIds(HORIZON, max_ids, clock=Clock())
    for batch in batches:
        seen.add_new(batch)
        assert len(seen) <= max_ids, f"{len(seen)} ids remembered, max_ids={max_ids}"


# -- BatchSplitter ------------------------------------------------------------------------
TOPICS = {"cx.ticket-events.v1": "ticket_event", "cx.satisfaction-events.v1": "satisfaction_event"}
TOPIC_OF = {"ticket_events": "cx.ticket-events.v1", "satisfaction_events": "cx.satisfaction-events.v1"}


def _splitter(max_ids: int = 1_000_000) -> BatchSplitter:
    return BatchSplitter(TOPICS, lambda: SeenIds(3600, max_ids, clock=Clock()))


def _rec(topic: str, offset: int, value: bytes | None, partition: int = 0) -> RawRecord:
    return RawRecord(topic, partition, offset, 0, b"k", value)


@pytest.fixture(scope="module")
def sim():
    return generate(3000, seed=5, start=START)


def _sim_records(sim):
    return [_rec(TOPIC_OF[r.stream], i, r.value) for i, r in enumerate(sim.records)]


def test_splitter_routes_by_topic_and_drops_resends(sim):
    records = _sim_records(sim)
    out = _splitter().split(records)
    assert set(out) == {"ticket_event", "satisfaction_event"}
    for contract, model, stream in (
        ("ticket_event", TicketEvent, "ticket_events"),
        ("satisfaction_event", SatisfactionEvent, "satisfaction_events"),
    ):
        batch, topic = out[contract], TOPIC_OF[stream]
        kinds = [r.kind for r in sim.records if r.stream == stream]
        assert len(batch.accepted) == kinds.count("valid")
        assert len(batch.duplicates) == kinds.count("resend") > 0
        assert len(batch.rejected) == kinds.count("malformed") > 0
        assert all(isinstance(a.event, model) and a.record.topic == topic for a in batch.accepted)
        assert all(r.record.topic == topic for r in batch.rejected)
        assert all(d.record.topic == topic for d in batch.duplicates)
        ids = [a.event.event_id for a in batch.accepted]
        assert len(ids) == len(set(ids))
        dup_offsets = {d.record.offset for d in batch.duplicates}
        assert dup_offsets == {i for i, r in enumerate(sim.records) if r.stream == stream and r.kind == "resend"}
        assert not dup_offsets & {a.record.offset for a in batch.accepted}


def test_resend_in_a_later_batch_is_a_duplicate(sim):
    records = _sim_records(sim)
    splitter = _splitter()
    first = splitter.split(records[:1500])
    second = splitter.split(records)  # the whole stream redelivered after a crash
    for contract in TOPICS.values():
        assert second[contract].accepted == [] or all(
            a.record.offset >= 1500 for a in second[contract].accepted
        )
    accepted_once = {a.event.event_id for b in first.values() for a in b.accepted}
    accepted_twice = {a.event.event_id for b in second.values() for a in b.accepted}
    assert not accepted_once & accepted_twice
    total_valid = sum(r.kind == "valid" for r in sim.records)
    assert len(accepted_once) + len(accepted_twice) == total_valid


def test_resend_within_one_batch_keeps_the_first_occurrence():
    value = json.dumps(EXAMPLES["satisfaction_event"][0]).encode()
    topic = "cx.satisfaction-events.v1"
    out = _splitter().split([_rec(topic, 7, value), _rec(topic, 8, value), _rec(topic, 9, b"{oops")])
    assert list(out) == ["satisfaction_event"]  # no empty batch for a contract without records
    batch = out["satisfaction_event"]
    assert [a.record.offset for a in batch.accepted] == [7]
    assert [d.record.offset for d in batch.duplicates] == [8]
    assert [(r.record.offset, r.reason) for r in batch.rejected] == [(9, "not_json")]


def test_same_event_id_on_different_contracts_is_not_a_duplicate():
    sat = dict(EXAMPLES["satisfaction_event"][0], event_id="shared-1")
    tik = dict(EXAMPLES["ticket_event"][0], event_id="shared-1")
    out = _splitter().split(
        [
            _rec("cx.satisfaction-events.v1", 0, json.dumps(sat).encode()),
            _rec("cx.ticket-events.v1", 0, json.dumps(tik).encode()),
        ]
    )
    assert len(out["satisfaction_event"].accepted) == 1 and len(out["ticket_event"].accepted) == 1


def test_forget_lets_a_retried_batch_through_again(sim):
    records = _sim_records(sim)[:800]
    splitter = _splitter()
    first = splitter.split(records)
    splitter.forget(first)  # storage failed
    retry = splitter.split(records)
    for contract in first:
        assert [a.record for a in retry[contract].accepted] == [a.record for a in first[contract].accepted]
        assert retry[contract].duplicates == first[contract].duplicates
    again = splitter.split(records)  # stored this time; a third delivery is all duplicates
    for contract in first:
        assert again[contract].accepted == []
        assert len(again[contract].duplicates) == len(first[contract].accepted) + len(first[contract].duplicates)


def test_warm_marks_stored_ids_as_seen():
    splitter = _splitter()
    splitter.warm("satisfaction_event", [EXAMPLES["satisfaction_event"][0]["event_id"]])
    value = json.dumps(EXAMPLES["satisfaction_event"][0]).encode()
    batch = splitter.split([_rec("cx.satisfaction-events.v1", 0, value)])["satisfaction_event"]
    assert batch.accepted == [] and len(batch.duplicates) == 1


def test_unknown_topic_is_an_error_not_a_silent_drop():
    with pytest.raises(KeyError):
        _splitter().split([_rec("cx.unknown.v1", 0, b"{}")])


def test_frozen_ids_answer_like_a_set_over_many_batches():
    """Ids frozen into sorted arrays (every 1,000 here) are found exactly as a set finds them: resends within
    and across batches, ids that are prefixes of others, ids with a trailing NUL, non-ASCII ids."""
    import random

    rng = random.Random(8)
    seen = SeenIds(horizon_s=10**9, max_ids=10**9, clock=lambda: 0.0, freeze_at=1_000)
    truth: set[str] = set()
    pool = [f"e-{i}" for i in range(6_000)] + ["e-1\x00", "é-1", "e-12345678901234567890"]
    for _ in range(40):
        batch = rng.choices(pool, k=500)
        expected = []
        for e in batch:
            expected.append(e not in truth)
            truth.add(e)
        assert seen.add_new(batch) == expected
    assert len(seen) == len(truth) and all(e in seen for e in truth)
    assert "e-1\x00" not in truth or "e-1" in truth or "e-1" not in seen


def test_one_long_id_does_not_widen_the_arrays_of_short_ones():
    seen = SeenIds(horizon_s=10**9, max_ids=10**9, clock=lambda: 0.0, freeze_at=100)
    seen.add_new([f"e-{i}" for i in range(99)] + ["長" * 128])
    widths = {a.dtype.itemsize for runs in seen._current.runs.values() for a in runs}  # noqa: SLF001
    assert max(w for w in widths if w < 100) <= 6 and 385 in widths  # "e-98" + end byte; 384 bytes + end byte
    assert seen.add_new(["e-5", "長" * 128, "e-100"]) == [False, False, True]


def test_a_taken_back_id_is_forgotten_with_its_generation():
    now = [0.0]
    seen = SeenIds(horizon_s=100, max_ids=10**6, clock=lambda: now[0], freeze_at=1)
    seen.add_new(["a"])
    seen.forget(["a"])  # frozen already: remembered as taken back
    assert seen._unseen == {"a"}  # noqa: SLF001
    now[0] = 60
    seen.add_new(["b"])  # "a"'s generation is now the previous one
    now[0] = 120
    seen.add_new(["c"])  # and now dropped
    assert seen._unseen == set()  # noqa: SLF001
