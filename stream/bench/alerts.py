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
- **worker CPU per event**: the benchmark process's CPU (every thread, chDB's included) from the first
  event published to the last handled, over the events handled. The events are published by a process
  of their own (``python -m stream.bench.alerts BOOTSTRAP ...``), as upstream systems would: in this
  process, the publisher held the GIL about a fifth of the time at 5,000 events/s (py-spy ``--gil``).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
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
from . import cpu_seconds, peak_rss_mb, stage_breakdown, stage_lines, stage_totals

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


async def _publisher(bootstrap: str, topic_names: dict[str, str], rate: float, duration: float, events: int,
                     seed: int, started: list) -> asyncio.subprocess.Process:  # fmt: skip
    """The publisher process, once it has generated its events and is ready to go (``started`` gets it at once)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "stream.bench.alerts", bootstrap, json.dumps(topic_names), str(rate), str(duration),
        str(events), str(seed), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
    )  # fmt: skip
    started.append(proc)
    assert proc.stdout is not None
    if (await proc.stdout.readline()).strip() != b"ready":
        raise RuntimeError(f"the benchmark's publisher failed to start (exit code {await proc.wait()})")
    return proc


async def _publish_elsewhere(proc: asyncio.subprocess.Process) -> int:
    """Let the publisher go; how many events it sent."""
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(b"go\n")
    await proc.stdin.drain()
    answer = (await proc.stdout.readline()).strip()
    if await proc.wait() != 0 or not answer.isdigit():
        raise RuntimeError("the benchmark's publisher failed (its error is above)")
    return int(answer)


async def _run(settings: Settings, topology: Topology, bootstrap: str, rate: float, duration: float, events: int,
               seed: int):  # fmt: skip
    topic_names = {k: t.name for k, t in topology.source_topics().items()}
    started: list[asyncio.subprocess.Process] = []
    publisher = asyncio.create_task(_publisher(bootstrap, topic_names, rate, duration, events, seed, started))
    try:
        return await _measure(settings, topology, bootstrap, rate, duration, publisher)
    finally:
        publisher.cancel()  # nothing if it is done
        for proc in started:
            if proc.returncode is None:  # never told to go, or the benchmark failed meanwhile
                proc.kill()
                await proc.wait()


async def _measure(settings: Settings, topology: Topology, bootstrap: str, rate: float, duration: float,
                   publisher: asyncio.Task):  # fmt: skip
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
        proc = await publisher
        _say(f"bench: publishing at {rate:,.0f} events/s for {duration:.0f} s (from a process of its own)")
        # this process only: not the publisher, not the broker
        cpu_before, wall_before = cpu_seconds(), time.perf_counter()
        sent = await _publish_elsewhere(proc)
        deadline = time.monotonic() + 60
        while sum(agent.progress.totals.values()) < sent and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        cpu_s, wall_s = cpu_seconds() - cpu_before, time.perf_counter() - wall_before
        handled = sum(agent.progress.totals.values())
        _say(f"bench: handled {dict(agent.progress.totals)}; alert transitions {agent.alerts.engine.counts()}")
    finally:
        await agent.stop()
        writer.client.close()
    return sent, handled, batch_latencies, cpu_s, wall_s


def run_alert_bench(rate: float, duration: float, seed: int, settings: Settings) -> dict[str, Any]:
    topology = _bench_topology(load_topology(settings.topology))
    tune_gc()
    events = int(rate * duration * 1.05) + 1000
    with tempfile.TemporaryDirectory(prefix="cxstream-bench-") as tmp, EmbeddedBroker() as broker:
        asyncio.run(ensure_topics(broker.bootstrap, topology))
        bench_settings = Settings(data_dir=Path(tmp), kafka_bootstrap=broker.bootstrap, clickhouse_url=None,
                                  topology=settings.topology)  # fmt: skip
        before = stage_totals()
        sent, handled, batches, cpu_s, wall_s = asyncio.run(
            _run(bench_settings, topology, broker.bootstrap, rate, duration, events, seed)
        )
        stages = stage_breakdown(before, stage_totals(), handled)
        alerts = asyncio.run(_alert_latencies(broker.bootstrap, topology.topics["alerts"].name))
    peak_mb = peak_rss_mb()
    cpu_us = cpu_s / max(handled, 1) * 1e6
    steady = batches[2:] or batches  # the first batches carry the group join's backlog
    report = (
        f"events published          {sent:,} at {rate:,.0f}/s for {duration:.0f} s ({handled:,} handled)\n"
        f"batches                   {len(batches):,}\n"
        f"event -> indicator        p50 {_pct(steady, 50) * 1000:,.0f} ms   p99 {_pct(steady, 99) * 1000:,.0f} ms\n"
        f"alerts (bench rule)       {len(alerts):,}\n"
        f"event -> alert on topic   p50 {_pct(alerts, 50) * 1000:,.0f} ms   p99 {_pct(alerts, 99) * 1000:,.0f} ms\n"
        f"stages, mean per batch    {stage_lines(stages, 'batch')}\n"
        f"worker CPU                {cpu_us:,.0f} us per event ({cpu_s / wall_s:.2f} cores; every thread, chDB's too)\n"
        f"peak RSS                  {peak_mb:,.0f} MB\n"
        f"machine                   {os.cpu_count()} cores, Python {sys.version.split()[0]}"
    )
    return {
        "rate": rate, "duration_s": duration, "sent": sent, "handled": handled, "batches": len(batches),
        "indicator_latency_ms": {"p50": _ms(steady, 50), "p99": _ms(steady, 99)},
        "alerts": len(alerts),
        "alert_latency_ms": {"p50": _ms(alerts, 50), "p99": _ms(alerts, 99)},
        "stages": stages, "worker_cpu_us_per_event": round(cpu_us, 1),
        "peak_rss_mb": round(peak_mb), "report": report,
    }  # fmt: skip


def _publish_main(argv: list[str]) -> None:
    """The publisher process: generate the events, say ready, publish on "go", print how many were sent."""
    bootstrap, topic_names, rate, duration, events, seed = argv
    _say(f"bench: generating {int(events):,} simulated events")
    sim = generate(int(events), int(seed), datetime(2026, 11, 1, tzinfo=timezone.utc), malformed_share=0.0,
                   resend_share=0.0)  # fmt: skip
    print("ready", flush=True)
    if not sys.stdin.readline():  # the benchmark ended before it said go
        return
    print(asyncio.run(_feed(bootstrap, sim.records, json.loads(topic_names), float(rate), float(duration))), flush=True)


if __name__ == "__main__":
    _publish_main(sys.argv[1:])
