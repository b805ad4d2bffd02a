"""The Faust app: hosts the ingest agent, the web server and (later) tables.

Faust gives the worker its lifecycle (start, graceful stop on SIGTERM), its web
server (``/metrics``, ``/healthz``, ``/readyz``) and, for later stages, tables
with changelogs. The hot ingest path is a batch service (see
:mod:`stream.ingest.agent`).
"""

from __future__ import annotations

import asyncio
import json
from datetime import datetime
from pathlib import Path

import faust
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ..ingest.agent import IngestAgent
from ..query.trace import TicketNotFound, trace
from ..settings import Settings
from ..sink.clickhouse import Writer, connect, migrate
from ..topology import Topology
from . import metrics


def open_writer(settings: Settings, topology: Topology) -> Writer:
    """Connect to ClickHouse (chDB when embedded) and apply the DDL."""
    sink = topology.sink
    if settings.embedded_clickhouse:
        Path(settings.data_dir, "clickhouse").mkdir(parents=True, exist_ok=True)
    client = connect(settings.clickhouse_dsn)
    migrate(client, sink.database, sink.raw_ttl, sink.dead_letter_ttl)
    return Writer(
        client,
        sink.database,
        retries=sink.insert_retries,
        backoff=sink.retry_backoff,
        on_retry=lambda table, exc: metrics.SINK_RETRIES.labels(table).inc(),
    )


def _json_default(value):
    return value.isoformat() if isinstance(value, datetime) else str(value)


def build_app(settings: Settings, topology: Topology, bootstrap: str, writer: Writer) -> tuple[faust.App, IngestAgent]:
    app = faust.App(
        "cxstream",
        broker=f"kafka://{bootstrap}",
        datadir=str(Path(settings.data_dir, "faust")),
        web_host=settings.web_host,
        web_port=settings.web_port,
        web_in_thread=False,
        broker_rebalance_timeout=topology.consumer.rebalance_timeout.total_seconds(),
        broker_session_timeout=topology.consumer.session_timeout.total_seconds(),
        broker_heartbeat_interval=max(0.1, topology.consumer.session_timeout.total_seconds() / 4),
        topic_replication_factor=1,
        store="memory://",
        loghandlers=[],
    )
    agent = app.add_dependency(IngestAgent(bootstrap=bootstrap, topology=topology, writer=writer))

    @app.page("/metrics")
    async def _metrics(web, request):
        return web.bytes(generate_latest(), content_type=CONTENT_TYPE_LATEST.split(";")[0])

    # Reads get their own client: the ingest agent's client is busy in its thread.
    reader = connect(settings.clickhouse_dsn)

    @app.page("/tickets/{ticket_id}/trace")
    async def _trace(web, request, ticket_id: str):
        """The journey of one ticket (see ``cxstream trace``); 404 for an unknown ticket."""
        try:
            result = await asyncio.to_thread(trace, reader, topology.sink.database, ticket_id)
        except TicketNotFound as exc:
            return web.json({"error": str(exc)}, status=404)
        return web.bytes(json.dumps(result, default=_json_default).encode(), content_type="application/json")

    @app.page("/healthz")
    async def _healthz(web, request):
        """Alive: the process serves HTTP. A failing check means restart the worker."""
        return web.json({"status": "ok"})

    @app.page("/readyz")
    async def _readyz(web, request):
        """Ready: ClickHouse schema applied and the ingest consumer has its partitions."""
        ready = agent.ready.is_set()
        return web.json({"ready": ready, **agent.progress.totals}, status=200 if ready else 503)

    return app, agent
