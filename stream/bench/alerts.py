"""``cxstream bench alerts``: latency from an event to its indicator and to the alert it causes, at a fixed rate.

On a freshly started embedded broker and a fresh chDB, the full pipeline (validation, lifecycle,
indicators, factor model, alerts, ClickHouse sink) consumes simulated events published at a fixed
rate with live times (event time and Kafka timestamp = now), for ``duration`` seconds. A benchmark rule,
``bench_first_complaint`` (complaints >= 1 per district x channel x business line in a 5-minute window),
fires on the first complaint of every cell of every window, so there are hundreds of alerts to measure.

- **event -> indicator**: per batch, from the earliest Kafka timestamp in the batch to the batch's commit
  (its indicator cells stored in ClickHouse and published on ``cx.indicator-updates.v1``);
- **event -> alert**: per alert, from the earliest Kafka timestamp of the batch that caused it to the
  alert message's Kafka timestamp on ``cx.alerts.v1`` (an upper bound for the event that crossed).
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from aiokafka import AIOKafkaConsumer

from ..ingest.agent import IngestAgent
from ..runtime.app import open_writer
from ..runtime.broker import EmbeddedBroker, ensure_topics
from ..runtime.worker import tune_gc
from ..settings import Settings
from ..simulate import generate
from ..simulate.publish import make_producer
from ..topology import AlertRule, Topology, load_topology
from . import peak_rss_mb, stage_breakdown, stage_lines, stage_totals

BENCH_RULE = {
    "name": "bench_first_complaint", "indicator": "complaints", "scope": "district", "by": ["channel", "business_line"],
    "window": "5m", "comparator": ">=", "threshold": 1, "severity": "info",
}  # fmt: skip


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _bench_topology(topology: Topology) -> Topology:
    alerts = topology.alerts.model_copy(update={"rules": [*topology.alerts.rules, AlertRule.model_validate(BENCH_RULE)]})
    return topology.model_copy(update={"alerts": alerts})


async def _feed(bootstrap: str, records: list, topic_names: dict[str, str], rate: float, duration: float) -> int:
    """Publish at ``rate`` events/s with live times, for ``duration`` seconds; returns how many were sent."""
    producer = make_producer(bootstrap)
    await producer.start()
    sent = 0
    try:
        start = time.perf_counter()
        tick = 0.01
        i = 0
        while (elapsed := time.perf_counter() - start) < duration and i < len(records):
            due = int(elapsed * rate)
            now = datetime.now(timezone.utc)
            while sent < due and i < len(records):
                rec = records[i]
                i += 1
                if rec.kind != "valid":
                    continue
                doc = orjson.loads(rec.value)
                # live: every event happens now; its SLA deadline keeps its distance
                shift = now - datetime.fromisoformat(doc["event_time"])
                doc["event_time"] = now.isoformat()
                if doc.get("sla_deadline"):
                    doc["sla_deadline"] = (datetime.fromisoformat(doc["sla_deadline"]) + shift).isoformat()
                await producer.send(topic_names[rec.stream], orjson.dumps(doc), key=rec.key)
                sent += 1
            await asyncio.sleep(tick)
        await producer.flush()
    finally:
        await producer.stop()
    return sent


async def _alert_latencies(bootstrap: str, topic: str) -> list[float]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None)
    await consumer.start()
    out = []
    try:
        while True:
            polled = await consumer.getmany(timeout_ms=2000)
            if not polled:
                return out
            for msgs in polled.values():
                for m in msgs:
                    doc = orjson.loads(m.value)
                    if doc["rule"] == BENCH_RULE["name"] and doc["status"] == "firing" and doc.get("trigger_arrival"):
                        trigger = datetime.fromisoformat(doc["trigger_arrival"]).timestamp() * 1000
                        out.append((m.timestamp - trigger) / 1000)
    finally:
        await consumer.stop()


def _pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def _ms(values: list[float], q: float) -> int | None:
    return None if not values else round(_pct(values, q) * 1000)


async def _run(settings: Settings, topology: Topology, bootstrap: str, records: list, rate: float, duration: float):
    topic_names = {k: t.name for k, t in topology.source_topics().items()}
    writer = await asyncio.to_thread(open_writer, settings, topology)
    agent = IngestAgent(bootstrap=bootstrap, topology=topology, writer=writer, progress_interval=3600)
    batch_latencies: list[float] = []
    original = agent._complete  # noqa: SLF001 (a batch's storing, publishing and commit)

    async def timed(work):
        first = work.arrival_ms  # the earliest Kafka timestamp of the batch
        committed = await original(work)
        if committed:
            batch_latencies.append(time.time() - first / 1000)
        return committed

    agent._complete = timed  # noqa: SLF001
    await agent.start()
    try:
        await asyncio.wait_for(agent.ready.wait(), 60)
        _say(f"bench: publishing at {rate:,.0f} events/s for {duration:.0f} s")
        sent = await _feed(bootstrap, records, topic_names, rate, duration)
        deadline = time.monotonic() + 60
        while sum(agent.progress.totals.values()) < sent and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        handled = sum(agent.progress.totals.values())
        _say(f"bench: handled {dict(agent.progress.totals)}; alert transitions {agent.alerts.engine.counts()}")
    finally:
        await agent.stop()
        writer.client.close()
    return sent, handled, batch_latencies


def run_alert_bench(rate: float, duration: float, seed: int, settings: Settings) -> dict[str, Any]:
    topology = _bench_topology(load_topology(settings.topology))
    tune_gc()
    events = int(rate * duration * 1.05) + 1000
    _say(f"bench: generating {events:,} simulated events")
    sim = generate(events, seed, datetime(2026, 11, 1, tzinfo=timezone.utc), malformed_share=0.0, resend_share=0.0)
    with tempfile.TemporaryDirectory(prefix="cxstream-bench-") as tmp, EmbeddedBroker() as broker:
        asyncio.run(ensure_topics(broker.bootstrap, topology))
        bench_settings = Settings(data_dir=Path(tmp), kafka_bootstrap=broker.bootstrap, clickhouse_url=None,
                                  topology=settings.topology)  # fmt: skip
        before = stage_totals()
        sent, handled, batches = asyncio.run(_run(bench_settings, topology, broker.bootstrap, sim.records, rate, duration))
        stages = stage_breakdown(before, stage_totals(), handled)
        alerts = asyncio.run(_alert_latencies(broker.bootstrap, topology.topics["alerts"].name))
    peak_mb = peak_rss_mb()
    steady = batches[2:] or batches  # the first batches carry the group join's backlog
    report = (
        f"events published          {sent:,} at {rate:,.0f}/s for {duration:.0f} s ({handled:,} handled)\n"
        f"batches                   {len(batches):,}\n"
        f"event -> indicator        p50 {_pct(steady, 50) * 1000:,.0f} ms   p99 {_pct(steady, 99) * 1000:,.0f} ms\n"
        f"alerts (bench rule)       {len(alerts):,}\n"
        f"event -> alert on topic   p50 {_pct(alerts, 50) * 1000:,.0f} ms   p99 {_pct(alerts, 99) * 1000:,.0f} ms\n"
        f"stages, mean per batch    {stage_lines(stages, 'batch')}\n"
        f"peak RSS                  {peak_mb:,.0f} MB\n"
        f"machine                   {os.cpu_count()} cores, Python {sys.version.split()[0]}"
    )
    return {
        "rate": rate, "duration_s": duration, "sent": sent, "handled": handled, "batches": len(batches),
        "indicator_latency_ms": {"p50": _ms(steady, 50), "p99": _ms(steady, 99)},
        "alerts": len(alerts),
        "alert_latency_ms": {"p50": _ms(alerts, 50), "p99": _ms(alerts, 99)},
        "stages": stages,
        "peak_rss_mb": round(peak_mb), "report": report,
    }  # fmt: skip
