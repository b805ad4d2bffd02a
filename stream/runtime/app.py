"""The Faust app: hosts the ingest agent, the web server and (later) tables.

Faust gives the worker its lifecycle (start, graceful stop on SIGTERM), its web
server (``/metrics``, ``/healthz``, ``/readyz``) and, for later stages, tables
with changelogs. The hot ingest path is a batch service (see
:mod:`stream.ingest.agent`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import faust
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ..alerts.delivery import AlertDelivery
from ..alerts.supervision import SupervisionError
from ..ingest.agent import IngestAgent
from ..quality import metrics as quality_metrics
from ..quality.report import quality_report, report_json, store_report
from ..query.explain import DistrictNotFound, explain_district
from ..query.trace import TicketNotFound, trace
from ..reference.subscribers import SubscriberBaseService
from ..settings import Settings
from ..sink.clickhouse import Writer, connect, migrate
from ..topology import Topology
from . import metrics

log = logging.getLogger("cxstream.app")


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
        dsn=settings.clickhouse_dsn,
    )


def _supervision_events(client, db: str, ticket_id: str) -> list[dict]:
    result = client.query(
        f"SELECT action, status, at, by, assignee, note, alert_status, closed_while_bad, time_to_ack_s, time_to_close_s "
        f"FROM {db}.supervision_events FINAL WHERE ticket_id = %(t)s ORDER BY at",
        parameters={"t": ticket_id},
    )
    return [dict(zip(result.column_names, row, strict=True)) for row in result.result_rows]


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
    # Reference data: subscriber bases from their compacted topic into ClickHouse
    # (complaint rates per 10k join them by window start). Its own client: it writes from its own thread.
    reference = app.add_dependency(
        SubscriberBaseService(
            bootstrap=bootstrap,
            topic=topology.topics["subscriber_base"].name,
            writer=Writer(connect(settings.clickhouse_dsn), topology.sink.database),
        )
    )

    # Alerts: delivered to Alertmanager and a webhook from queues, after each batch's commit.
    delivery = app.add_dependency(
        AlertDelivery(
            topology.alerts.delivery, settings.alertmanager_url, settings.alert_webhook_url,
            active=lambda: agent.active_alerts(("firing",)),
        )
    )  # fmt: skip
    agent.on_alerts = delivery.submit

    def _json(web, doc, status: int = 200):
        return web.bytes(json.dumps(doc, default=_json_default).encode(), content_type="application/json", status=status)

    @app.page("/alerts")
    async def _alerts(web, request):
        """Current alerts (``?status=pending,firing``, the default; also ``predicted``, ``resolved``)."""
        statuses = tuple(request.query.get("status", "pending,firing").split(","))
        return _json(web, await asyncio.to_thread(agent.active_alerts, statuses))

    @app.page("/supervision")
    async def _supervision(web, request):
        """Supervision tickets, newest first (``?status=open|assigned|acknowledged|closed``)."""
        status = request.query.get("status")
        return _json(web, [t.as_dict() for t in agent.alerts.book.tickets(status)])

    @app.page("/supervision/{ticket_id}")
    async def _supervision_ticket(web, request, ticket_id: str):
        """One supervision ticket and its changes (404 if unknown)."""
        try:
            ticket = agent.alerts.book.get(ticket_id).as_dict()
        except SupervisionError as exc:
            return _json(web, {"error": str(exc)}, 404)
        events = await asyncio.to_thread(read, _supervision_events, ticket_id)
        return _json(web, {"ticket": ticket, "events": events})

    @app.page("/supervision/{ticket_id}/{action}")
    class _Supervise(faust.web.View):
        """POST ``{"by": "...", "note": "...", "assignee": "..."}`` to assign, acknowledge or close a ticket."""

        async def post(self, request, ticket_id: str, action: str):
            try:
                body = await request.json()
            except ValueError:
                body = {}
            try:
                ticket = await agent.supervise(ticket_id, action, str(body.get("by", "")), str(body.get("note", "")),
                                               str(body.get("assignee", "")))  # fmt: skip
            except SupervisionError as exc:
                unknown = "no supervision ticket" in str(exc)
                return _json(self, {"error": str(exc)}, 404 if unknown else 409)
            return _json(self, ticket)

    @app.page("/metrics")
    async def _metrics(web, request):
        return web.bytes(generate_latest(), content_type=CONTENT_TYPE_LATEST.split(";")[0])

    # Reads get their own client (the ingest agent's is busy in its thread), one
    # query at a time: an HTTP session of a ClickHouse server refuses concurrent queries.
    reader = connect(settings.clickhouse_dsn)
    reader_lock = threading.Lock()
    db = topology.sink.database

    def read(fn, *args):
        with reader_lock:
            return fn(reader, db, *args)

    @app.page("/tickets/{ticket_id}/trace")
    async def _trace(web, request, ticket_id: str):
        """The journey of one ticket (see ``cxstream trace``); 404 for an unknown ticket."""
        try:
            result = await asyncio.to_thread(read, trace, ticket_id)
        except TicketNotFound as exc:
            return web.json({"error": str(exc)}, status=404)
        return web.bytes(json.dumps(result, default=_json_default).encode(), content_type="application/json")

    @app.page("/districts/{district}/explain")
    async def _explain(web, request, district: str):
        """Top factors behind a district's satisfaction: ``?window=86400&end=ISO&top=5`` (see ``cxstream explain``)."""
        q = request.query
        try:
            window = timedelta(seconds=int(q.get("window", 86400)))
            end = datetime.fromisoformat(q["end"]) if "end" in q else None
            if end is not None and end.tzinfo is None:
                end = end.replace(tzinfo=timezone.utc)
            top = int(q.get("top", 5))
        except ValueError as exc:
            return web.json({"error": f"bad parameter: {exc}"}, status=400)
        try:
            result = await asyncio.to_thread(read, explain_district, district, window, end, top)
        except DistrictNotFound as exc:
            return web.json({"error": str(exc)}, status=404)
        return web.bytes(json.dumps(result, default=_json_default).encode(), content_type="application/json")

    @app.page("/quality")
    async def _quality(web, request):
        """Data quality per source system: ``?window=3600&since=ISO`` (see ``cxstream quality``)."""
        q = request.query
        try:
            window = timedelta(seconds=int(q.get("window", topology.quality.window.total_seconds())))
            since = datetime.fromisoformat(q["since"]) if "since" in q else None
        except ValueError as exc:
            return web.json({"error": f"bad parameter: {exc}"}, status=400)
        rows = await asyncio.to_thread(read, quality_report, window, since, topology.state.tickets.lateness)
        return web.json(report_json(rows))

    @app.timer(interval=topology.quality.refresh_interval.total_seconds())
    async def _refresh_quality():
        """Recompute the recent windows, store them (``quality_reports``) and export them as metrics."""
        qs = topology.quality
        since = datetime.now(timezone.utc) - qs.horizon

        def refresh():
            rows = read(quality_report, qs.window, since, topology.state.tickets.lateness)
            read(store_report, rows)
            return rows

        try:
            quality_metrics.export(await asyncio.to_thread(refresh))
        except Exception as exc:  # a report is not worth stopping the worker for
            log.warning("data-quality refresh failed: %s", exc)

    @app.page("/healthz")
    async def _healthz(web, request):
        """Alive: the process serves HTTP. A failing check means restart the worker."""
        return web.json({"status": "ok"})

    @app.page("/readyz")
    async def _readyz(web, request):
        """Ready: ClickHouse schema applied, the ingest consumer has its partitions (their open
        tickets and indicator cells restored) and the subscriber bases are loaded."""
        ready = agent.ready.is_set() and reference.loaded.is_set()
        return web.json({"ready": ready, **agent.progress.totals}, status=200 if ready else 503)

    return app, agent
