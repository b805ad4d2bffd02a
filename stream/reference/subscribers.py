"""Subscriber base per district: reference data from the compacted topic ``cx.subscriber-base.v1``.

A base says how many subscribers a district has *from* ``effective_from`` on,
until a later base of the same district takes over. Complaint rates per 10k
subscribers divide by the base in force at the window start, so a change of
base applies from its date on and never rewrites earlier windows.

- :class:`SubscriberBases` holds the bases (pure, synchronous, no I/O).
- :class:`SubscriberBaseService` reads the whole topic at start (no consumer
  group: every worker needs every district), then tails it; each record is
  validated, applied, and stored in ClickHouse ``subscriber_base`` (which the
  ``indicator_values`` view ASOF-joins by window start).
- :func:`publish_bases`, :func:`bases_from_world` and :func:`seed_if_empty`
  publish bases; embedded mode seeds the simulator's bases with
  :func:`seed_embedded` so a laptop run has complaint rates out of the box.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import time
from collections.abc import Iterable
from datetime import datetime, timezone

import pyarrow as pa
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from mode import Service
from prometheus_client import Counter
from pydantic import ValidationError

from ..contract.reference import SubscriberBase
from ..sink.clickhouse import Writer

log = logging.getLogger("cxstream.reference")

__all__ = [
    "REJECTS",
    "SEED_EFFECTIVE_FROM",
    "SubscriberBaseService",
    "SubscriberBases",
    "base_table",
    "bases_from_world",
    "publish_bases",
    "seed_embedded",
    "seed_if_empty",
]

REJECTS = Counter(
    "cxstream_reference_rejects_total",
    "Subscriber-base records not applied (invalid, key not the district, tombstone), by reason.",
    ["reason"],
)

#: effective date of the bases seeded in embedded mode: far enough back to cover any simulated window
SEED_EFFECTIVE_FROM = datetime(2020, 1, 1, tzinfo=timezone.utc)

TABLE = "subscriber_base"


def _utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ValueError(f"naive datetime {moment!r}: give a timezone (UTC)")
    return moment.astimezone(timezone.utc)


class SubscriberBases:
    """The subscriber bases of every district, each in force from its ``effective_from``.

    >>> from datetime import datetime, timezone
    >>> def base(n, day):
    ...     return SubscriberBase(schema_version=1, province="P01", city="P01-C01", district="P01-C01-D01",
    ...                           subscribers=n, effective_from=datetime(2026, 11, day, tzinfo=timezone.utc))
    >>> bases = SubscriberBases()
    >>> bases.apply(base(20_000, 1)), bases.apply(base(40_000, 20))
    (True, True)
    >>> bases.apply(base(40_000, 20))  # the same record again: nothing changes
    False
    >>> at = lambda day: bases.at("P01-C01-D01", datetime(2026, 11, day, tzinfo=timezone.utc))
    >>> at(19), at(20), at(25)
    (20000, 40000, 40000)
    >>> bases.at("P01-C01-D01", datetime(2026, 10, 31, tzinfo=timezone.utc)) is None  # before the first base
    True
    >>> bases.apply(base(45_000, 20)), at(20)  # a newer record for the same date replaces it
    (True, 45000)
    >>> bases.region_of("P01-C01-D01"), bases.region_of("nowhere")
    (('P01', 'P01-C01'), None)
    >>> bases.total(["P01-C01-D01"], datetime(2026, 11, 21, tzinfo=timezone.utc))
    45000
    """

    def __init__(self, bases: Iterable[SubscriberBase] = ()) -> None:
        # district -> effective_from (UTC, ascending) and the records at the same index
        self._dates: dict[str, list[datetime]] = {}
        self._records: dict[str, list[SubscriberBase]] = {}
        for b in bases:
            self.apply(b)

    def apply(self, base: SubscriberBase) -> bool:
        """Add ``base``, or replace the one of the same (district, effective_from); True if anything changed.

        Applying a record twice changes nothing (upstream resends, and every
        start replays the topic). Only ``province``, ``city`` and
        ``subscribers`` count as a change; ``source_system`` is not stored.
        """
        when = _utc(base.effective_from)
        dates = self._dates.setdefault(base.district, [])
        records = self._records.setdefault(base.district, [])
        i = bisect.bisect_left(dates, when)
        if i < len(dates) and dates[i] == when:
            old = records[i]
            if (old.province, old.city, old.subscribers) == (base.province, base.city, base.subscribers):
                return False
            records[i] = base
            return True
        dates.insert(i, when)
        records.insert(i, base)
        return True

    def _in_force(self, district: str, moment: datetime) -> SubscriberBase | None:
        dates = self._dates.get(district)
        if not dates:
            return None
        i = bisect.bisect_right(dates, _utc(moment))
        return self._records[district][i - 1] if i else None

    def at(self, district: str, moment: datetime) -> int | None:
        """Subscribers of ``district`` in force at ``moment`` (the latest base with effective_from <= moment)."""
        base = self._in_force(district, moment)
        return base.subscribers if base else None

    def region_of(self, district: str) -> tuple[str, str] | None:
        """(province, city) of ``district``, from its latest base; None for an unknown district."""
        records = self._records.get(district)
        return (records[-1].province, records[-1].city) if records else None

    def total(self, districts: Iterable[str], moment: datetime) -> int | None:
        """Sum of the bases in force at ``moment``; None if any district has none then.

        A roll-up with a district missing its base would overstate the rate,
        so there is no rate rather than a wrong one (as the ASOF join in
        ``indicator_values`` gives NULL for such a district).

        >>> SubscriberBases().total([], datetime(2026, 1, 1, tzinfo=timezone.utc))
        0
        """
        total = 0
        for d in districts:
            n = self.at(d, moment)
            if n is None:
                return None
            total += n
        return total

    def districts(self) -> list[str]:
        """Districts with at least one base, sorted."""
        return sorted(d for d, r in self._records.items() if r)

    def records(self) -> list[SubscriberBase]:
        """Every base held, by district then effective_from."""
        return [b for d in self.districts() for b in self._records[d]]

    def __len__(self) -> int:
        return sum(len(r) for r in self._records.values())


def base_table(bases: Iterable[SubscriberBase], updated_at: datetime) -> pa.Table:
    """Rows for ClickHouse ``subscriber_base`` (see ``ddl/0004_indicators.sql``).

    ``effective_from`` is stored to the second (``DateTime('UTC')``); ``updated_at``
    is the ReplacingMergeTree version, so the row written last wins.

    >>> b = SubscriberBase(schema_version=1, province="P01", city="P01-C01", district="P01-C01-D01",
    ...                    subscribers=7, effective_from="2026-11-20T14:00:00+02:00")
    >>> t = base_table([b], datetime(2026, 11, 21, tzinfo=timezone.utc))
    >>> t.column_names
    ['district', 'city', 'province', 'subscribers', 'effective_from', 'updated_at']
    >>> t.column("effective_from")[0].as_py().isoformat()
    '2026-11-20T12:00:00+00:00'
    """
    rows = list(bases)
    return pa.table(
        {
            "district": pa.array([b.district for b in rows], pa.string()),
            "city": pa.array([b.city for b in rows], pa.string()),
            "province": pa.array([b.province for b in rows], pa.string()),
            "subscribers": pa.array([b.subscribers for b in rows], pa.uint64()),
            "effective_from": pa.array(
                [_utc(b.effective_from).replace(microsecond=0) for b in rows], pa.timestamp("s", tz="UTC")
            ),
            "updated_at": pa.array([_utc(updated_at)] * len(rows), pa.timestamp("ms", tz="UTC")),
        }
    )


def parse_record(key: bytes | None, value: bytes | None) -> tuple[SubscriberBase | None, str]:
    """(base, '') for a valid record, else (None, reason): ``tombstone``, ``invalid`` or ``key_mismatch``.

    >>> parse_record(b"D1", b'{"schema_version": 1}')
    (None, 'invalid')
    >>> parse_record(b"D1", None)
    (None, 'tombstone')
    >>> v = b'{"schema_version":1,"province":"P","city":"C","district":"D1","subscribers":5,"effective_from":"2026-01-01T00:00:00Z"}'
    >>> parse_record(b"D1", v)[0].subscribers, parse_record(b"D2", v)
    (5, (None, 'key_mismatch'))
    """
    if value is None:
        return None, "tombstone"
    try:
        base = SubscriberBase.model_validate_json(value)
    except ValidationError:
        return None, "invalid"
    if key is None or key.decode("utf-8", "replace") != base.district:
        return None, "key_mismatch"  # compaction keeps the latest record per key: it must be the district
    return base, ""


class SubscriberBaseService(Service):
    """Read the whole subscriber-base topic, then tail it; keep :attr:`bases` and the ClickHouse table current.

    No consumer group and no committed offsets: every start reads the topic
    from the beginning (it is compacted, so small), which is how a base
    published before the worker started applies. :attr:`loaded` is set once
    that first read is done: the first empty poll after the positions reached
    the end offsets seen at start (on the embedded broker those can lag the
    log, so the empty poll is what decides). A bad record is logged and
    counted (``cxstream_reference_rejects_total``), never fatal. A ClickHouse
    write that fails (after the writer's own retries) is kept and retried on
    the next poll; :attr:`bases` does not wait for it.

    With a writer, the bases already in ClickHouse are applied first: Kafka
    compacts the topic by district, keeping only each district's latest base,
    while the earlier ones are still needed for earlier windows.
    """

    def __init__(
        self,
        *,
        bootstrap: str,
        topic: str,
        writer: Writer | None,
        poll_ms: int = 500,
        bases: SubscriberBases | None = None,
        **kw,
    ):
        super().__init__(**kw)
        self.bootstrap = bootstrap
        self.topic = topic
        self.writer = writer
        self.poll_ms = poll_ms
        self.bases = bases if bases is not None else SubscriberBases()
        self.loaded = asyncio.Event()
        self.applied = 0  # records that changed :attr:`bases`
        self.rejected = 0
        self.consumer: AIOKafkaConsumer | None = None
        self._pending: dict[tuple[str, datetime], SubscriberBase] = {}
        self._end: dict[TopicPartition, int] = {}

    async def on_start(self) -> None:
        if self.writer is not None:
            try:
                n = await asyncio.to_thread(self._warm)
                if n:
                    log.info("subscriber base: %d base(s) from ClickHouse before reading the topic", n)
            except Exception as exc:  # the topic alone is still a complete start on a fresh topic
                log.warning("subscriber base: could not read %s from ClickHouse (%s)", TABLE, exc)
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            client_id="cxstream-reference",
        )
        await self.consumer.start()
        try:
            partitions = await self._partitions()
            tps = [TopicPartition(self.topic, p) for p in sorted(partitions)]
            self.consumer.assign(tps)
            await self.consumer.seek_to_beginning(*tps)
            try:
                self._end = await self.consumer.end_offsets(tps)  # a lower bound of the log's end
            except Exception as exc:  # not needed for correctness: the empty poll decides
                log.warning("subscriber base: end offsets unavailable (%s)", exc)
        except BaseException:
            await self.consumer.stop()
            self.consumer = None
            raise
        log.info("subscriber base: reading %s (%d partition(s)) from the beginning", self.topic, len(tps))

    def _warm(self) -> int:
        """Apply the bases stored in ClickHouse (not written back).

        The topic is compacted by district, so Kafka keeps only a district's
        latest base; the earlier ones, still in force for earlier windows,
        survive in ClickHouse (ordered by district and effective_from).
        """
        result = self.writer.client.query(
            f"SELECT district, city, province, subscribers, effective_from FROM {self.writer.database}.{TABLE} FINAL"
        )
        n = 0
        for district, city, province, subscribers, effective_from in result.result_rows:
            if effective_from.tzinfo is None:
                effective_from = effective_from.replace(tzinfo=timezone.utc)
            n += self.bases.apply(
                SubscriberBase(
                    schema_version=1,
                    province=province,
                    city=city,
                    district=district,
                    subscribers=int(subscribers),
                    effective_from=effective_from,
                )
            )
        return n

    async def _partitions(self, timeout_s: float = 30.0) -> set[int]:
        deadline = time.monotonic() + timeout_s
        while True:
            await self.consumer.topics()  # refreshes metadata
            partitions = self.consumer.partitions_for_topic(self.topic)
            if partitions:
                return partitions
            if time.monotonic() > deadline:
                raise RuntimeError(f"topic {self.topic} not found on {self.bootstrap}")
            await asyncio.sleep(0.2)

    async def on_stop(self) -> None:
        if self.consumer:
            await self.consumer.stop()
            self.consumer = None

    @Service.task
    async def _consume(self) -> None:
        assert self.consumer is not None
        while not self.should_stop:
            polled = await self.consumer.getmany(timeout_ms=self.poll_ms)
            messages = [m for msgs in polled.values() for m in msgs]
            if messages:
                self.handle(messages)
            if self._pending:
                await self._flush()
            if not messages and not self.loaded.is_set() and await self._reached_end():
                self.loaded.set()
                log.info(
                    "subscriber base loaded: %d base(s) for %d district(s)", len(self.bases), len(self.bases.districts())
                )

    async def _reached_end(self) -> bool:
        for tp, end in self._end.items():
            if await self.consumer.position(tp) < end:
                return False
        return True

    def handle(self, messages: Iterable) -> int:
        """Validate and apply polled records; queue the changed ones for ClickHouse. Returns how many changed."""
        changed = 0
        for m in messages:
            base, reason = parse_record(m.key, m.value)
            if base is None:
                self.rejected += 1
                REJECTS.labels(reason).inc()
                log.warning(
                    "subscriber base: %s record at %s[%d]@%d (key %r) ignored", reason, m.topic, m.partition, m.offset, m.key
                )
                continue
            if self.bases.apply(base):
                changed += 1
                self._pending[(base.district, _utc(base.effective_from))] = base  # the latest per key wins
        self.applied += changed
        return changed

    async def _flush(self) -> None:
        if self.writer is None:
            self._pending.clear()
            return
        rows = list(self._pending.values())
        self._pending.clear()
        try:
            await asyncio.to_thread(self.writer.insert, TABLE, base_table(rows, datetime.now(timezone.utc)))
        except Exception as exc:
            log.error("subscriber base: storing %d row(s) failed (%s); retrying on the next poll", len(rows), exc)
            for b in rows:  # a newer record that arrived meanwhile stays in front
                self._pending.setdefault((b.district, _utc(b.effective_from)), b)


# --------------------------------------------------------------------------- publishing


def bases_from_world(world, effective_from: datetime) -> list[SubscriberBase]:
    """The simulator's bases (``World.subscriber_base()``), all in force from ``effective_from``.

    >>> from stream.simulate.world import World
    >>> bases = bases_from_world(World.build(1), SEED_EFFECTIVE_FROM)
    >>> len(bases) == len(World.build(1).districts), bases[0].effective_from.isoformat()
    (True, '2020-01-01T00:00:00+00:00')
    """
    return [
        SubscriberBase(
            schema_version=1,
            province=row["province"],
            city=row["city"],
            district=row["district"],
            subscribers=row["subscribers"],
            effective_from=effective_from,
            source_system="BSS",
        )
        for row in world.subscriber_base()
    ]


async def publish_bases(bootstrap: str, topic: str, bases: Iterable[SubscriberBase]) -> int:
    """Publish ``bases`` keyed by district (the compaction key); returns how many the broker acknowledged."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5, client_id="cxstream-reference")
    await producer.start()
    try:
        futures = [
            await producer.send(topic, key=b.district.encode(), value=b.model_dump_json().encode()) for b in bases
        ]
        await asyncio.gather(*futures)
        return len(futures)
    finally:
        await producer.stop()


async def topic_has_records(bootstrap: str, topic: str, wait_ms: int = 1000) -> bool:
    """True if ``topic`` holds any record: its offsets say so, or a short read from the beginning finds one."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    await consumer.start()
    try:
        await consumer.topics()
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            return False
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        begin, end = await consumer.beginning_offsets(tps), await consumer.end_offsets(tps)
        if any(end[tp] > begin[tp] for tp in tps):
            return True
        # The embedded broker's end offsets can lag its log: look for a record as well.
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        polled = await consumer.getmany(timeout_ms=wait_ms, max_records=1)
        return any(polled.values())
    finally:
        await consumer.stop()


async def seed_if_empty(bootstrap: str, topic: str, bases: Iterable[SubscriberBase]) -> int:
    """Publish ``bases`` only if ``topic`` has no record yet; returns how many were published (0 if not empty)."""
    if await topic_has_records(bootstrap, topic):
        return 0
    return await publish_bases(bootstrap, topic, bases)


def seed_embedded(bootstrap: str, topic: str, seed: int) -> int:
    """Embedded mode: seed the simulator's bases (``World.build(seed)``) from 2020-01-01, if the topic is empty."""
    from ..simulate.world import World

    n = asyncio.run(seed_if_empty(bootstrap, topic, bases_from_world(World.build(seed), SEED_EFFECTIVE_FROM)))
    if n:
        log.info("seeded %d subscriber base(s) (simulation seed %d) on %s", n, seed, topic)
    return n
