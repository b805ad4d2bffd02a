"""The ingest agent against the real embedded broker and chDB (no mocks)."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from stream.ingest.agent import IngestAgent
from stream.runtime.app import open_writer
from stream.settings import Settings
from stream.simulate import generate
from stream.simulate.publish import publish

from .conftest import SIM_START, run_agent, start_agent, stop_agent, wait_until

pytestmark = pytest.mark.integration


def _query(data_dir, sql: str):
    from stream.sink.clickhouse import connect

    client = connect(f"chdb:///{data_dir}/clickhouse")
    try:
        return client.query(sql).result_rows
    finally:
        client.close()


async def _consume_all(bootstrap: str, topic: str, expected: int):
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None)
    await consumer.start()
    out = []
    try:
        deadline = time.monotonic() + 30
        while len(out) < expected and time.monotonic() < deadline:
            for msgs in (await consumer.getmany(timeout_ms=300)).values():
                out.extend(msgs)
        return out
    finally:
        await consumer.stop()


async def _committed(bootstrap: str, group: str, topics: list[str]) -> int:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        await consumer.topics()
        total = 0
        for t in topics:
            for p in consumer.partitions_for_topic(t):
                total += await consumer.committed(TopicPartition(t, p)) or 0
        return total
    finally:
        await consumer.stop()


async def test_every_record_is_stored_or_dead_lettered_then_committed(broker, topology, topics, tmp_path):
    sim = generate(3000, seed=5, start=SIM_START, malformed_share=0.05, resend_share=0.02)
    await publish(sim.records, bootstrap_servers=broker.bootstrap, topic_names=topics)
    agent = await run_agent(broker, topology, tmp_path, expected=3000)

    counts = sim.summary()
    assert agent.progress.totals == {"ingested": counts["valid"], "rejected": counts["malformed"], "duplicate": counts["resent"]}
    assert await _committed(broker.bootstrap, topology.consumer.group_id, list(topics.values())) == 3000

    tickets = sum(1 for r in sim.records if r.kind == "valid" and r.stream == "ticket_events")
    sats = counts["valid"] - tickets
    assert _query(tmp_path, "SELECT count(), uniqExact(event_id) FROM cxstream.ticket_events FINAL") == [(tickets, tickets)]
    assert _query(tmp_path, "SELECT count(), uniqExact(event_id) FROM cxstream.satisfaction_events FINAL") == [(sats, sats)]

    # Dead letters: the original bytes, with the reason, in ClickHouse and on the dead-letter topic.
    malformed = sorted(r.value for r in sim.records if r.kind == "malformed")
    stored = _query(tmp_path, "SELECT payload, reason, source_topic FROM cxstream.dead_letters FINAL")
    assert sorted(row[0].encode() if isinstance(row[0], str) else row[0] for row in stored) == malformed
    assert all(row[1] for row in stored) and {row[2] for row in stored} <= set(topics.values())
    dlq = await _consume_all(broker.bootstrap, topology.topics["dead_letters"].name, len(malformed))
    assert sorted(m.value for m in dlq) == malformed
    headers = dict(dlq[0].headers)
    assert headers["cx.reason"] and headers["cx.source.topic"].decode() in topics.values()


async def test_redelivery_does_not_duplicate_query_results(broker, topology, topics, tmp_path):
    """A second consumer group re-reads everything (a redelivery of every record)."""
    sim = generate(2000, seed=8, start=SIM_START)
    await publish(sim.records, bootstrap_servers=broker.bootstrap, topic_names=topics)
    await run_agent(broker, topology, tmp_path, expected=2000)
    before = _query(tmp_path, "SELECT count() FROM cxstream.ticket_events")

    replay = topology.model_copy(update={"consumer": topology.consumer.model_copy(update={"group_id": "replay"})})
    again = await run_agent(broker, replay, tmp_path, expected=2000)

    # The restarted agent warmed its seen-set from ClickHouse: every valid record is a known resend.
    assert again.progress.totals["ingested"] == 0
    assert again.progress.totals["duplicate"] == sim.summary()["valid"] + sim.summary()["resent"]
    assert _query(tmp_path, "SELECT count() FROM cxstream.ticket_events") == before
    valid = sim.summary()["valid"]
    rows = _query(
        tmp_path,
        "SELECT (SELECT count() FROM cxstream.ticket_events FINAL) + (SELECT count() FROM cxstream.satisfaction_events FINAL)",
    )
    assert rows == [(valid,)]
    # Dead letters are keyed by Kafka position: the redelivered bad records are stored once.
    assert _query(tmp_path, "SELECT count() FROM cxstream.dead_letters FINAL") == [(sim.summary()["malformed"],)]


async def test_storage_outage_holds_the_batch_until_clickhouse_is_back(broker, topology, topics, tmp_path):
    """ClickHouse refuses inserts (table renamed away): nothing is committed or lost, and it resumes."""
    settings = Settings(data_dir=tmp_path, kafka_bootstrap=broker.bootstrap, clickhouse_url=None)
    writer = await asyncio.to_thread(open_writer, settings, topology)
    writer.retries = 0
    agent = IngestAgent(bootstrap=broker.bootstrap, topology=topology, writer=writer)
    await agent.start()
    writer.client.command("RENAME TABLE cxstream.satisfaction_events TO cxstream.satisfaction_events_away")
    try:
        sim = generate(500, seed=9, start=SIM_START, malformed_share=0, resend_share=0)
        await publish(sim.records, bootstrap_servers=broker.bootstrap, topic_names=topics)
        await asyncio.sleep(3)
        assert sum(agent.progress.totals.values()) == 0  # the failing batch was not counted or committed
        assert await _committed(broker.bootstrap, topology.consumer.group_id, list(topics.values())) == 0
        writer.client.command("RENAME TABLE cxstream.satisfaction_events_away TO cxstream.satisfaction_events")
        deadline = time.monotonic() + 30
        while agent.progress.totals["ingested"] < 500:
            assert time.monotonic() < deadline, dict(agent.progress.totals)
            await asyncio.sleep(0.1)
    finally:
        await agent.stop()
    rows = writer.client.query(
        "SELECT (SELECT count() FROM cxstream.ticket_events FINAL) + (SELECT count() FROM cxstream.satisfaction_events FINAL)"
    ).result_rows
    writer.client.close()
    assert rows == [(500,)]


class _GatedAgent(IngestAgent):
    """Holds each polled batch until ``gate`` is set, and notes how many records each poll brought."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.gate = asyncio.Event()
        self.polled: list[int] = []

    async def _prepare(self, polled):
        self.polled.append(sum(map(len, polled.values())))
        await self.gate.wait()
        return await super()._prepare(polled)


async def test_caught_up_a_poll_takes_everything_that_arrived_while_the_batch_before_was_handled(
    broker, topology, topics, tmp_path
):
    """Latency at a steady rate: the events that arrive while a batch is handled all come in the next batch.

    aiokafka fetches a partition again as soon as a poll has taken what it held: the events arriving after
    that fetch would wait at the broker for the batch after next. Caught up, the agent fetches at the poll.
    """
    from aiokafka import AIOKafkaProducer

    async def send(n: int) -> None:
        # one key: one partition, where a fetched and unpolled burst would keep the next one at the broker
        for i in range(n):
            await producer.send(topics["ticket_events"], value=b"{not json " + str(i).encode(), key=b"c1")
        await producer.flush()

    def until(condition, what: str):
        return wait_until(condition, lambda: f"{what}: polls {agent.polled}, handled {dict(agent.progress.totals)}")

    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap)
    await producer.start()
    agent, writer = await start_agent(broker, topology, tmp_path, _GatedAgent)
    try:
        # the group settled first (Tansu may have a member join twice): a rebalance while the batch is held at
        # the gate would redeliver it
        await until(lambda: agent.ready.is_set() and agent.consumer.assignment(), "the partitions assigned")
        await asyncio.sleep(1)
        await send(10)
        await until(lambda: agent.polled, "the first batch polled")
        await send(10)
        await asyncio.sleep(1.5)  # beyond the broker's fetch wait (500 ms): an early fetch would have these
        await send(10)
        await asyncio.sleep(0.5)
        agent.gate.set()
        await until(lambda: agent.progress.totals["rejected"] == 30, "all 30 dead-lettered")
        assert agent.polled == [10, 20]
    finally:
        await producer.stop()
        await stop_agent(agent, writer)


async def test_a_worker_joins_one_caught_up_with_a_live_feed_and_both_take_their_share(broker, topology, topics, tmp_path):
    """A worker caught up with a live feed pauses its partitions between polls; a second worker joining then
    (a rebalance: hold, restore, resume) leaves none paused, and nothing is lost."""
    sim = generate(2400, seed=11, start=SIM_START, malformed_share=0, resend_share=0)
    handled = lambda agent: sum(agent.progress.totals.values())  # noqa: E731

    def until(condition, what: str):
        return wait_until(condition, lambda: f"{what}: handled {handled(first)} and {handled(second)}", 60)

    first, writer = await start_agent(broker, topology, tmp_path)
    second = IngestAgent(bootstrap=broker.bootstrap, topology=topology, writer=(second_writer := writer.sibling()))
    try:
        await until(lambda: first.ready.is_set() and first.consumer.assignment(), "the first worker's partitions")
        # ~8 s of live feed: the first worker is caught up, polling and pausing, when the second joins
        feed = asyncio.ensure_future(publish(sim.records, bootstrap_servers=broker.bootstrap, topic_names=topics,
                                             rate=300))  # fmt: skip
        await until(lambda: handled(first) >= 300, "the first worker took the feed")
        await until(lambda: first._fetch_at_poll, "the first worker paused between polls")  # noqa: SLF001
        await second.start()
        await feed
        # a batch whose commit a rebalance refused is redelivered and counted again: at least every event
        await until(lambda: handled(first) + handled(second) >= 2400, "all 2,400 handled")
        assert handled(second) > 0, "the second worker took no partition"
        valid = {json.loads(r.value)["event_id"] for r in sim.records}
        (stored,) = writer.client.query(
            "SELECT (SELECT uniqExact(event_id) FROM cxstream.ticket_events)"
            " + (SELECT uniqExact(event_id) FROM cxstream.satisfaction_events)"
        ).result_rows[0]
        assert stored == len(valid)
    finally:
        await second.stop()
        second_writer.client.close()
        await stop_agent(first, writer)
