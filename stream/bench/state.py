"""``cxstream bench state``: RSS and restart-to-ready time with many active customers (issue 8).

Publishes one open complaint ticket (a ``created`` event, SLA deadline a week ahead) and one satisfaction event
for each of N customers, live times, runs the pipeline over them until every event is committed, and then, in
a fresh process, restarts the worker on that state: it restores N open tickets (and their contributions), the
customer histories of the factor model and the alert windows. It prints the first run's ingest rate and peak
RSS, and the restart's time to ready and peak RSS.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson

from ..runtime.broker import EmbeddedBroker, ensure_topics
from ..settings import Settings
from ..simulate.publish import make_producer
from ..topology import load_topology
from . import peak_rss_mb


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


async def _publish(bootstrap: str, topics: dict[str, str], customers: int) -> int:
    producer = make_producer(bootstrap)
    await producer.start()
    now = datetime.now(timezone.utc) - timedelta(hours=1)
    deadline = (now + timedelta(days=7)).isoformat()
    sent = 0
    try:
        futures = []
        for i in range(customers):
            t = (now + timedelta(milliseconds=i * 3)).isoformat()
            cust = f"C{i:08d}"
            region = {"province": "P01", "city": "P01-C01", "district": f"P01-C01-D{i % 40:02d}"}
            ticket = {
                "schema_version": 1, "event_id": f"T{i:08d}-c", "event_time": t, "source_system": "CRM",
                "customer_id": cust, "ticket_id": f"T{i:08d}", "step": "created", "region": region,
                "channel": "hotline", "business_line": "mobile", "complaint_category": "network",
                "complaint_phenomenon": "no_signal", "customer_tier": "standard", "sla_deadline": deadline,
            }  # fmt: skip
            sat = {
                "schema_version": 1, "event_id": f"S{i:08d}", "event_time": t, "source_system": "SURVEY",
                "customer_id": cust, "contact_id": f"K{i:08d}", "channel": "hotline", "region": region,
                "overall_score": 1 + i % 10,
            }  # fmt: skip
            key = cust.encode()
            futures.append(await producer.send(topics["ticket_events"], orjson.dumps(ticket), key=key))
            futures.append(await producer.send(topics["satisfaction_events"], orjson.dumps(sat), key=key))
            sent += 2
            if len(futures) >= 20_000:
                await asyncio.gather(*futures)
                futures = []
                if sent % 200_000 == 0:
                    _say(f"  published {sent:,}")
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return sent


async def _ingest(settings: Settings, topology, bootstrap: str, expected: int) -> tuple[float, float]:
    from ..ingest.agent import IngestAgent
    from ..runtime.app import open_writer

    writer = await asyncio.to_thread(open_writer, settings, topology)
    agent = IngestAgent(bootstrap=bootstrap, topology=topology, writer=writer, progress_interval=15)
    await agent.start()
    try:
        while sum(agent.progress.totals.values()) < expected:
            await asyncio.sleep(0.1)
        return expected / (agent.last_commit_at - agent.first_polled_at), len(agent.tickets.store)
    finally:
        await agent.stop()
        writer.client.close()


def ingest(data_dir: str, bootstrap: str, expected: int) -> None:
    """In a fresh process (a worker's own memory, not the publisher's): ingest; print events/s, tickets, peak RSS."""
    from ..runtime.worker import tune_gc

    tune_gc()
    topology = load_topology(os.environ.get("CXSTREAM_TOPOLOGY"))
    settings = Settings(data_dir=Path(data_dir), kafka_bootstrap=bootstrap, clickhouse_url=None)
    rate, tickets = asyncio.run(_ingest(settings, topology, bootstrap, expected))
    print(json.dumps({"events_per_s": rate, "tickets": tickets, "peak_rss_mb": peak_rss_mb()}))


def _child(call: str, env: dict) -> dict:
    out = subprocess.run([sys.executable, "-c", f"from stream.bench.state import *; {call}"], capture_output=True, check=False,
                         text=True, env=env, timeout=1200)  # fmt: skip
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def restart(data_dir: str, bootstrap: str) -> None:
    """In a fresh process: start the agent on the stored state; print seconds to ready, tickets, peak RSS."""
    from ..runtime.worker import tune_gc
    from .ingest import start_to_ready

    tune_gc()
    topology = load_topology(os.environ.get("CXSTREAM_TOPOLOGY"))
    settings = Settings(data_dir=Path(data_dir), kafka_bootstrap=bootstrap, clickhouse_url=None)

    ready, tickets, customers = asyncio.run(start_to_ready(bootstrap, topology, settings, 600))
    print(json.dumps({"ready_s": ready, "tickets": tickets, "customers": customers, "peak_rss_mb": peak_rss_mb()}))


def run_state_bench(customers: int, settings: Settings) -> dict[str, Any]:
    topology = load_topology(settings.topology)
    with tempfile.TemporaryDirectory(prefix="cxstream-bench-") as tmp, EmbeddedBroker() as broker:
        asyncio.run(ensure_topics(broker.bootstrap, topology))
        names = {k: t.name for k, t in topology.source_topics().items()}
        _say(f"bench: publishing one open ticket and one satisfaction event for each of {customers:,} customers")
        sent = asyncio.run(_publish(broker.bootstrap, names, customers))
        env = {**os.environ, "CXSTREAM_TOPOLOGY": str(settings.topology or "topology.yaml")}
        _say("bench: ingesting them (fresh process)")
        first = _child(f"ingest({tmp!r}, {broker.bootstrap!r}, {sent})", env)
        _say("bench: restarting on that state (fresh process)")
        again = _child(f"restart({tmp!r}, {broker.bootstrap!r})", env)
    report = (
        f"customers                  {customers:,} (one open ticket and one satisfaction event each)\n"
        f"ingest                     {first['events_per_s']:,.0f} events/s, {first['tickets']:,} tickets in state, "
        f"peak RSS {first['peak_rss_mb']:,.0f} MB\n"
        f"restart -> ready           {again['ready_s']:.1f} s ({again['tickets']:,} open tickets and "
        f"{again['customers']:,} customer histories restored)\n"
        f"peak RSS after restart     {again['peak_rss_mb']:,.0f} MB"
    )
    return {"customers": customers, "ingest_events_per_s": round(first["events_per_s"]), "tickets": first["tickets"],
            "first_peak_rss_mb": round(first["peak_rss_mb"]), "restart": again, "report": report}  # fmt: skip
