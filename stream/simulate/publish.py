"""Publishing simulated records to Kafka, once or as a continuous feed.

Records are sent with one :class:`aiokafka.AIOKafkaProducer`; delivery is
awaited a batch at a time (the previous batch while the next one is enqueued),
so errors surface and memory stays bounded. Pacing to a rate sleeps between
batches, never per event. A record's simulated arrival (``SimRecord.arrival_ms``)
is its Kafka timestamp, so arrival-lag figures downstream reflect the simulated
sources, not the publishing speed.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Iterable
from datetime import datetime, time, timedelta, timezone

from aiokafka import AIOKafkaProducer

from .traffic import SimRecord, generate
from .world import World

#: below the brokers' default message.max.bytes (~1 MiB), far above aiokafka's 16 KiB default
MAX_BATCH_BYTES = 512 * 1024
UNPACED_BATCH = 5000
BATCHES_PER_SECOND = 20  # pacing granularity when a rate is given


def make_producer(bootstrap_servers: str) -> AIOKafkaProducer:
    """The producer settings the simulator uses: durable acks, short linger, big batches."""
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap_servers,
        acks="all",
        linger_ms=5,
        enable_idempotence=False,  # resends are simulated on purpose; the broker must not dedupe anything
        max_batch_size=MAX_BATCH_BYTES,
        client_id="cxstream-simulator",
    )


async def publish(
    records: Iterable[SimRecord],
    *,
    bootstrap_servers: str,
    topic_names: dict[str, str],
    rate: float | None = None,
    progress: Callable[[int], None] | None = None,
    producer: AIOKafkaProducer | None = None,
) -> int:
    """Send ``records`` in order; return how many the broker acknowledged.

    ``topic_names`` maps a record's stream (``ticket_events``...) to its Kafka topic.
    ``rate`` paces to that many records per second; ``progress(sent_so_far)`` is called
    about once a second and once at the end. A ``producer`` passed in is used as is (already
    started) and left running; otherwise one is started and stopped here.
    """
    if rate is not None and rate <= 0:
        raise ValueError("rate must be positive")
    own = producer is None
    if own:
        producer = make_producer(bootstrap_servers)
        await producer.start()
    loop = asyncio.get_running_loop()
    batch_size = max(1, int(rate / BATCHES_PER_SECOND)) if rate else UNPACED_BATCH
    sent = enqueued = 0
    started = loop.time()
    next_report = started + 1.0
    in_flight: list[asyncio.Future] = []
    try:
        it = iter(records)
        while batch := list(itertools.islice(it, batch_size)):
            if rate:
                delay = started + enqueued / rate - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
            futures = []
            for rec in batch:
                try:
                    topic = topic_names[rec.stream]
                except KeyError:
                    raise KeyError(f"no topic name for stream {rec.stream!r}") from None
                futures.append(await producer.send(topic, rec.value, key=rec.key, timestamp_ms=rec.arrival_ms))
            enqueued += len(batch)
            # wait for the previous batch while this one is on its way
            if in_flight:
                await asyncio.gather(*in_flight)
                sent += len(in_flight)
            in_flight = futures
            if progress and loop.time() >= next_report:
                progress(sent)
                next_report = loop.time() + 1.0
        await producer.flush()
        if in_flight:
            await asyncio.gather(*in_flight)
            sent += len(in_flight)
    finally:
        if own:
            await producer.stop()
    if progress:
        progress(sent)
    return sent


async def publish_forever(
    *,
    bootstrap_servers: str,
    topic_names: dict[str, str],
    rate: float,
    seed: int = 0,
    start: datetime | None = None,
    period: timedelta = timedelta(days=1),
    events_per_period: int | None = None,
    malformed_share: float = 0.02,
    resend_share: float = 0.01,
    progress: Callable[[int], None] | None = None,
    stop: asyncio.Event | None = None,
    max_periods: int | None = None,
) -> int:
    """A continuous feed at ``rate`` records/s: one simulated ``period`` after another.

    Each period is a full :func:`generate` run (``events_per_period`` records, default
    ``rate * 600`` within [2k, 50k]: a simulated day every few minutes, so lifecycles complete) with seed
    ``seed``-derived and start advanced by ``period``; the world stays ``World.build(seed)``
    so customers and districts are the same throughout. Event time therefore runs faster
    than the wall clock. The next period is generated in a thread while the current one is
    sent. Runs until ``stop`` is set, ``max_periods`` is reached or the task is cancelled;
    returns the records sent.
    """
    if start is None:
        today = datetime.now(timezone.utc).date()
        start = datetime.combine(today, time(0), tzinfo=timezone.utc)
    # Ten minutes of records per simulated period, kept between 2k and 50k so a
    # period generates in about a second (generation shares the worker's GIL).
    n = events_per_period or min(50_000, max(2_000, int(rate * 600)))
    world = World.build(seed)

    def chunk(i: int):
        return generate(
            n,
            seed=seed * 1_000_003 + i,
            start=start + i * period,
            period=period,
            malformed_share=malformed_share,
            resend_share=resend_share,
            world=world,
        )

    total = 0
    producer = make_producer(bootstrap_servers)
    await producer.start()
    try:
        next_sim = asyncio.ensure_future(asyncio.to_thread(chunk, 0))
        for i in itertools.count():
            sim = await next_sim
            if max_periods is None or i + 1 < max_periods:
                next_sim = asyncio.ensure_future(asyncio.to_thread(chunk, i + 1))
            base = total
            records = sim.records if stop is None else itertools.takewhile(lambda _: not stop.is_set(), sim.records)
            total += await publish(
                records,
                bootstrap_servers=bootstrap_servers,
                topic_names=topic_names,
                rate=rate,
                progress=(lambda k: progress(base + k)) if progress else None,
                producer=producer,
            )
            if (stop is not None and stop.is_set()) or (max_periods is not None and i + 1 >= max_periods):
                break
    finally:
        await producer.stop()
    return total
