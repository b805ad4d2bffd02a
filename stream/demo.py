"""``cxstream demo``: embedded broker + worker + simulator, start to finish.

Starts Tansu, runs the real worker (``cxstream run``) as a child process on
it, publishes a seeded simulation, waits until the ingest group's committed
offsets reach the end of every source partition (the agent commits only after
storing), stops the worker and accounts for every event from ClickHouse.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from .reference.subscribers import seed_embedded
from .runtime.broker import EmbeddedBroker, ensure_topics, free_port
from .runtime.worker import WorkerProcess, committed_total
from .settings import Settings
from .simulate import generate
from .simulate.publish import publish
from .sink.clickhouse import connect
from .topology import Topology, load_topology

RAW_TABLES = ("ticket_events", "satisfaction_events", "dead_letters")


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def table_rows(dsn: str, database: str) -> tuple[dict[str, int], str | None]:
    """Rows per raw table as queries see them (FINAL: after deduplication), and a ticket worth tracing."""
    client = connect(dsn)
    try:
        rows = {t: int(client.query(f"SELECT count() FROM {database}.{t} FINAL").result_rows[0][0]) for t in RAW_TABLES}
        # A ticket with a story: handed off, breached, reopened or disputed by the customer, with a follow-up.
        example = client.query(
            f"SELECT ticket_id FROM {database}.ticket_state FINAL WHERE followup_event_id != '' AND length(finding_kinds) = 0 "
            f"ORDER BY (handoffs > 0) + sla_breached + (reopen_count > 0) + coalesce(perception_gap, false) DESC, ticket_id "
            f"LIMIT 1"
        ).result_rows
        return rows, (example[0][0] if example else None)
    finally:
        client.close()


async def _wait_drained(bootstrap: str, topology: Topology, produced: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    last = -1
    while True:
        committed = await committed_total(bootstrap, topology)
        if committed >= produced:
            return
        if committed != last:
            say(f"  worker: {committed:,}/{produced:,} records stored or dead-lettered")
            last = committed
        if time.monotonic() > deadline:
            raise TimeoutError(f"worker stored {committed} of {produced} records within {timeout_s}s")
        await asyncio.sleep(0.5)


def run_demo(
    events: int, seed: int, settings: Settings, data_dir: Path | None = None, start: datetime | None = None
) -> dict[str, Any]:
    topology = load_topology(settings.topology)
    data_dir = Path(data_dir or Path(settings.data_dir, "demo")).resolve()
    if data_dir.exists():
        shutil.rmtree(data_dir)  # a demo always starts from nothing, so its counts add up
    data_dir.mkdir(parents=True)
    start = start or (datetime.now(timezone.utc) - timedelta(days=1)).replace(minute=0, second=0, microsecond=0)
    began = time.monotonic()

    say(f"demo: generating {events:,} simulated events (seed {seed})")
    sim = generate(events, seed, start)
    with EmbeddedBroker(log_file=data_dir / "broker.log") as broker:
        asyncio.run(ensure_topics(broker.bootstrap, topology))
        seed_embedded(broker.bootstrap, topology.topics["subscriber_base"].name, seed)  # before the worker starts
        web_port = free_port()
        env = {
            "CXSTREAM_KAFKA_BOOTSTRAP": broker.bootstrap,
            "CXSTREAM_DATA_DIR": str(data_dir),
            "CXSTREAM_WEB_PORT": str(web_port),
            "CXSTREAM_CLICKHOUSE_URL": "",
        }
        if settings.topology:
            env["CXSTREAM_TOPOLOGY"] = str(settings.topology)
        worker = WorkerProcess(env, log_file=data_dir / "worker.log").start()
        try:
            say(f"demo: worker starting (log: {data_dir / 'worker.log'})")
            worker.wait_ready()
            say(f"demo: publishing to the embedded broker at {broker.bootstrap}")
            topic_names = {k: t.name for k, t in topology.source_topics().items()}
            sent = asyncio.run(
                publish(
                    sim.records,
                    bootstrap_servers=broker.bootstrap,
                    topic_names=topic_names,
                    progress=lambda n: say(f"  published {n:,}/{events:,}"),
                )
            )
            asyncio.run(_wait_drained(broker.bootstrap, topology, sent, timeout_s=max(120.0, events / 500)))
            counted = {o: int(worker.metric("cxstream_events_total", outcome=o)) for o in ("ingested", "rejected", "duplicate")}
        finally:
            code = worker.stop()
        if code not in (0, None):
            say(f"demo: worker exited with code {code}")
    rows, example = table_rows(f"chdb:///{data_dir}/clickhouse", topology.sink.database)
    summary = sim.summary()
    return {
        "produced": sent,
        "ingested": counted["ingested"],
        "rejected": counted["rejected"],
        "deduplicated": counted["duplicate"],
        "accounted": counted["ingested"] + counted["rejected"] + counted["duplicate"] == sent,
        "rows": rows,
        "simulated": {k: summary[k] for k in ("valid", "malformed", "resent") if k in summary},
        "elapsed_s": round(time.monotonic() - began, 2),
        "data_dir": str(data_dir),
        "example_ticket": example,
        "plants": summary.get("plants"),
    }
