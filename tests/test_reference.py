"""Subscriber base per district: the pure holder, and the service on the real embedded broker and chDB."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta, timezone

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from stream.contract.reference import SubscriberBase
from stream.reference.subscribers import (
    REJECTS,
    SEED_EFFECTIVE_FROM,
    SubscriberBases,
    SubscriberBaseService,
    bases_from_world,
    publish_bases,
    seed_if_empty,
    topic_has_records,
)
from stream.simulate.world import World

UTC = timezone.utc
CHANGE = datetime(2026, 11, 20, 12, tzinfo=UTC)
D1, D2 = "P01-C01-D01", "P01-C01-D02"


def base(district: str, n: int, effective_from: datetime, city: str = "P01-C01") -> SubscriberBase:
    return SubscriberBase(
        schema_version=1, province="P01", city=city, district=district, subscribers=n, effective_from=effective_from
    )


# --------------------------------------------------------------------------- pure


def test_base_in_force_is_the_latest_effective_before_the_moment():
    bases = SubscriberBases([base(D1, 40_000, CHANGE), base(D1, 20_000, SEED_EFFECTIVE_FROM)])  # any order
    assert bases.at(D1, SEED_EFFECTIVE_FROM - timedelta(seconds=1)) is None
    assert bases.at(D1, SEED_EFFECTIVE_FROM) == 20_000
    assert bases.at(D1, CHANGE - timedelta(microseconds=1)) == 20_000
    assert bases.at(D1, CHANGE) == 40_000  # from its date on, inclusive
    assert bases.at(D1, CHANGE + timedelta(days=400)) == 40_000
    assert bases.at(D2, CHANGE) is None


def test_a_later_base_applies_from_its_date_only_and_other_offsets_compare_in_utc():
    bases = SubscriberBases([base(D1, 20_000, SEED_EFFECTIVE_FROM)])
    # 14:00 at +02:00 is the 12:00 UTC change
    assert bases.apply(base(D1, 40_000, datetime(2026, 11, 20, 14, tzinfo=timezone(timedelta(hours=2)))))
    assert bases.at(D1, datetime(2026, 11, 20, 11, 59, tzinfo=UTC)) == 20_000
    assert bases.at(D1, datetime(2026, 11, 20, 12, 30, tzinfo=UTC)) == 40_000
    with pytest.raises(ValueError):
        bases.at(D1, datetime(2026, 11, 20))  # a naive moment is ambiguous


def test_a_newer_record_for_the_same_date_replaces_it():
    bases = SubscriberBases([base(D1, 20_000, SEED_EFFECTIVE_FROM)])
    assert bases.apply(base(D1, 25_000, SEED_EFFECTIVE_FROM, city="P01-C09"))
    assert bases.at(D1, CHANGE) == 25_000
    assert bases.region_of(D1) == ("P01", "P01-C09")
    assert len(bases) == 1


def test_apply_is_idempotent():
    records = [base(D1, 20_000, SEED_EFFECTIVE_FROM), base(D1, 40_000, CHANGE), base(D2, 7, CHANGE)]
    bases = SubscriberBases()
    assert [bases.apply(r) for r in records] == [True, True, True]
    assert [bases.apply(r) for r in records] == [False, False, False]
    # another source system with the same figures is not a change either
    assert not bases.apply(records[0].model_copy(update={"source_system": "CRM"}))
    assert len(bases) == 3 and bases.records() == records


def test_total_sums_bases_in_force_and_refuses_a_partial_sum():
    bases = SubscriberBases([base(D1, 20_000, SEED_EFFECTIVE_FROM), base(D1, 40_000, CHANGE), base(D2, 7, CHANGE)])
    assert bases.total([D1, D2], CHANGE) == 40_007
    assert bases.total([D1, D2], CHANGE - timedelta(hours=1)) is None  # D2 has no base yet
    assert bases.total([D1], CHANGE - timedelta(hours=1)) == 20_000


def test_bases_from_world_match_the_simulator():
    world = World.build(3)
    bases = bases_from_world(world, SEED_EFFECTIVE_FROM)
    assert [(b.district, b.subscribers) for b in bases] == [(d.code, d.subscribers) for d in world.districts]
    held = SubscriberBases(bases)
    d = world.districts[0]
    assert held.region_of(d.code) == (d.province, d.city) and held.at(d.code, CHANGE) == d.subscribers


# --------------------------------------------------------------------------- integration


class _SnapshotEvent(asyncio.Event):
    """``loaded`` that records what the service held at the moment it was set (waiters resume later)."""

    def __init__(self, service):
        super().__init__()
        self.service, self.held_when_set = service, None

    def set(self) -> None:
        self.held_when_set = self.service.bases.records()
        super().set()


def _rejects(reason: str) -> float:
    return REJECTS.labels(reason)._value.get()


async def _wait_for(predicate, timeout_s: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def _open_writer(topology, data_dir):
    from stream.runtime.app import open_writer
    from stream.settings import Settings

    settings = Settings(data_dir=data_dir, kafka_bootstrap="unused:9092", clickhouse_url=None)
    return await asyncio.to_thread(open_writer, settings, topology)


def _stored(writer) -> list[tuple]:
    return writer.client.query(
        f"SELECT district, city, province, subscribers, effective_from FROM {writer.database}.subscriber_base FINAL "
        "ORDER BY district, effective_from"
    ).result_rows


@pytest.mark.integration
async def test_service_reads_the_topic_then_tails_it_and_stores_bases(broker, topology, topics, tmp_path):
    topic = topology.topics["subscriber_base"].name
    # published before the service starts: must apply
    await publish_bases(broker.bootstrap, topic, [base(D1, 20_000, SEED_EFFECTIVE_FROM), base(D1, 40_000, CHANGE)])
    writer = await _open_writer(topology, tmp_path / "data")
    service = SubscriberBaseService(bootstrap=broker.bootstrap, topic=topic, writer=writer, poll_ms=200)
    service.loaded = _SnapshotEvent(service)
    invalid_before = _rejects("invalid")
    await service.start()
    try:
        await asyncio.wait_for(service.loaded.wait(), 10)
        assert [b.subscribers for b in service.loaded.held_when_set] == [20_000, 40_000]
        bases = service.bases
        assert bases.at(D1, CHANGE - timedelta(seconds=1)) == 20_000
        assert bases.at(D1, CHANGE) == 40_000
        assert bases.at(D1, datetime(2019, 12, 31, tzinfo=UTC)) is None
        await _wait_for(lambda: len(_stored(writer)) == 2, what="2 rows in ClickHouse")
        assert _stored(writer) == [  # the driver returns DateTime('UTC') as naive UTC
            (D1, "P01-C01", "P01", 20_000, SEED_EFFECTIVE_FROM.replace(tzinfo=None)),
            (D1, "P01-C01", "P01", 40_000, CHANGE.replace(tzinfo=None)),
        ]

        # a malformed record and a record keyed by something else: counted, not fatal
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
        await producer.start()
        try:
            await producer.send_and_wait(topic, key=D2.encode(), value=b'{"schema_version": 1, "district": "x"')
            await producer.send_and_wait(topic, key=b"other", value=base(D2, 5, CHANGE).model_dump_json().encode())
        finally:
            await producer.stop()
        await _wait_for(lambda: service.rejected == 2, what="2 rejected records")
        assert _rejects("invalid") == invalid_before + 1

        # a later good record still applies, in memory and in ClickHouse (replacing the same date)
        await publish_bases(broker.bootstrap, topic, [base(D2, 9_000, CHANGE), base(D1, 41_000, CHANGE)])
        await _wait_for(lambda: service.bases.at(D1, CHANGE) == 41_000, what="D1 replaced")
        assert service.bases.at(D2, CHANGE) == 9_000 and service.bases.at(D2, CHANGE - timedelta(hours=1)) is None
        await _wait_for(lambda: len(_stored(writer)) == 3, what="3 rows in ClickHouse")
        assert [(r[0], r[3]) for r in _stored(writer)] == [(D1, 20_000), (D1, 41_000), (D2, 9_000)]
        assert service.applied == 4 and not service.crashed
    finally:
        await service.stop()

    # A restart on a topic that lost the older base (as compaction by district does) keeps it from ClickHouse.
    compacted = "cx.subscriber-base-compacted.test"
    admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(compacted, 1, 1)])
    finally:
        await admin.close()
    await publish_bases(broker.bootstrap, compacted, [base(D1, 41_000, CHANGE)])
    again = SubscriberBaseService(bootstrap=broker.bootstrap, topic=compacted, writer=writer, poll_ms=200)
    await again.start()
    try:
        await asyncio.wait_for(again.loaded.wait(), 10)
        assert again.bases.at(D1, CHANGE - timedelta(days=1)) == 20_000
        assert again.bases.at(D1, CHANGE) == 41_000
        assert again.applied == 0  # nothing new: nothing rewritten
    finally:
        await again.stop()
        writer.client.close()


@pytest.mark.integration
async def test_loaded_on_an_empty_topic_and_seed_if_empty_publishes_once(broker, topology, topics):
    topic = topology.topics["subscriber_base"].name
    service = SubscriberBaseService(bootstrap=broker.bootstrap, topic=topic, writer=None, poll_ms=200)
    await service.start()
    try:
        await asyncio.wait_for(service.loaded.wait(), 10)
        assert len(service.bases) == 0
        assert not await topic_has_records(broker.bootstrap, topic, wait_ms=300)

        seeded = bases_from_world(World.build(1), SEED_EFFECTIVE_FROM)
        assert await seed_if_empty(broker.bootstrap, topic, seeded) == len(seeded) > 0
        assert await seed_if_empty(broker.bootstrap, topic, seeded) == 0
        # the running service tails the seed
        await _wait_for(lambda: len(service.bases) == len(seeded), what="seeded bases applied")
        assert service.bases.at(seeded[-1].district, CHANGE) == seeded[-1].subscribers
    finally:
        await service.stop()
