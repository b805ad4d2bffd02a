"""Alerts in the running pipeline (real broker, chDB, Alertmanager): a planted incident, a quiet day,
a restart mid-incident, supervision tickets, delivery."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
import time
import urllib.request
from collections import Counter
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import pytest
from aiokafka import AIOKafkaConsumer

from stream.alerts.delivery import AlertDelivery
from stream.alerts.engine import fingerprint
from stream.contract import Alert, SupervisionEvent
from stream.simulate import World, default_plants, generate
from stream.simulate.publish import publish

from .conftest import SIM_START, start_agent, stop_agent

pytestmark = pytest.mark.integration

EVENTS = 60_000
SEED = 1
THRESHOLD = 80  # topology.yaml's complaint_surge: complaints per district-hour


def _hourly_complaints(sim) -> Counter:
    """The truth: tickets created per (district, hour start), from the simulated records."""
    out: Counter = Counter()
    for r in sim.records:
        if r.kind == "valid" and r.stream == "ticket_events":
            d = json.loads(r.value)
            if d["step"] == "created":
                t = datetime.fromisoformat(d["event_time"]).astimezone(timezone.utc)
                out[(d["region"]["district"], t.replace(minute=0, second=0, microsecond=0))] += 1
    return out


async def _handle(agent, expected: int, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while sum(agent.progress.totals.values()) < expected:
        assert time.monotonic() < deadline, f"agent handled {dict(agent.progress.totals)} of {expected}"
        await asyncio.sleep(0.05)


async def _messages(bootstrap: str, topic: str) -> list[bytes]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None)
    await consumer.start()
    try:
        out = []
        while True:
            polled = await consumer.getmany(timeout_ms=1500)
            if not polled:
                return out
            out += [m.value for msgs in polled.values() for m in msgs]
    finally:
        await consumer.stop()


def _stored_alerts(writer) -> list[dict]:
    r = writer.client.query(
        f"SELECT rule, status, district, since, window_start, value FROM {writer.database}.alerts FINAL "
        f"WHERE rule = 'complaint_surge' ORDER BY evaluated_at"
    )
    return [dict(zip(r.column_names, row, strict=True)) for row in r.result_rows]


def _utc(v: datetime) -> datetime:
    return v if v.tzinfo else v.replace(tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def incident():
    return generate(EVENTS, seed=SEED, start=SIM_START)


async def test_planted_incident_fires_within_its_first_window_once_across_a_restart_and_resolves(
    broker, topology, topics, tmp_path, incident
):
    sim = incident
    plants = sim.plants
    hourly = _hourly_complaints(sim)
    spike_hours = {h for (d, h), n in hourly.items() if n >= THRESHOLD}
    # the test's premise: only the planted district, only within the planted incident, crosses the threshold
    assert {d for (d, h), n in hourly.items() if n >= THRESHOLD} == {plants.spike_district}
    assert min(spike_hours) == plants.spike_start and max(spike_hours) < plants.spike_end

    # Half the traffic, a restart (mid-incident: the records arrive in arrival-time order), then the rest.
    half = len(sim.records) // 2
    await publish(sim.records[:half], bootstrap_servers=broker.bootstrap, topic_names=topics)
    agent, writer = await start_agent(broker, topology, tmp_path)
    try:
        await _handle(agent, half)
    finally:
        await stop_agent(agent, writer)
    agent, writer = await start_agent(broker, topology, tmp_path)
    try:
        await publish(sim.records[half:], bootstrap_servers=broker.bootstrap, topic_names=topics)
        await _handle(agent, len(sim.records) - half)
        stored = _stored_alerts(writer)
        tickets = writer.client.query(
            f"SELECT ticket_id, rule, district, status FROM {writer.database}.supervision_tickets FINAL"
        ).result_rows
    finally:
        await stop_agent(agent, writer)

    firing = [a for a in stored if a["status"] == "firing"]
    resolved = [a for a in stored if a["status"] == "resolved"]
    assert [a["district"] for a in firing] == [plants.spike_district], stored  # once, only there
    # fires within one window of the incident's start (the first hour's count crosses the threshold only as
    # its late-arriving tickets come in: at 10:00 or, when they come after the restart, from 11:00), before
    # the incident ends, and resolves only after it ended
    assert plants.spike_start <= _utc(firing[0]["since"]) <= plants.spike_start + timedelta(hours=1)
    assert _utc(firing[0]["window_start"]) < plants.spike_end
    assert len(resolved) == 1 and _utc(resolved[0]["window_start"]) >= plants.spike_end
    assert [(t[1], t[2], t[3]) for t in tickets if t[1] == "complaint_surge"] == [("complaint_surge", plants.spike_district, "open")]

    # On the topic: each status change once, valid against the contract, with factors and links
    docs = [Alert.model_validate_json(v) for v in await _messages(broker.bootstrap, topology.topics["alerts"].name)]
    surge = [d for d in docs if d.rule == "complaint_surge"]
    assert Counter(d.status for d in surge) == Counter({"firing": 1, "resolved": 1}), " ".join(
        f"{d.status}@{d.window_start:%H}:{d.evaluated_at:%M:%S.%f}" for d in surge
    )
    fired = next(d for d in surge if d.status == "firing")
    assert fired.labels["district"] == plants.spike_district and fired.labels["team"] == "network-ops"
    assert fired.value >= THRESHOLD and fired.threshold == THRESHOLD and fired.volume == fired.value
    assert fired.links.explain.startswith(f"cxstream explain {plants.spike_district}")
    assert fired.links.dashboard and "var-district=" in fired.links.dashboard
    assert fired.fingerprint == fingerprint("complaint_surge", {"province": fired.labels["province"],
                                            "city": fired.labels["city"], "district": plants.spike_district})  # fmt: skip
    events = [SupervisionEvent.model_validate_json(v)
              for v in await _messages(broker.bootstrap, topology.topics["supervision_events"].name)]  # fmt: skip
    assert [(e.action, e.alert_id) for e in events if e.rule == "complaint_surge"] == [("opened", fired.alert_id)]


async def test_quiet_day_fires_no_complaint_surge(broker, topology, topics, tmp_path):
    world = World.build(SEED)
    plants = default_plants(world, SIM_START)
    quiet = replace(plants, spike_start=SIM_START + timedelta(days=30), spike_end=SIM_START + timedelta(days=30, hours=2))
    sim = generate(EVENTS, seed=SEED, start=SIM_START, world=world, plants=quiet)
    assert max(_hourly_complaints(sim).values()) < THRESHOLD
    await publish(sim.records, bootstrap_servers=broker.bootstrap, topic_names=topics)
    agent, writer = await start_agent(broker, topology, tmp_path)
    try:
        await _handle(agent, len(sim.records))
        assert _stored_alerts(writer) == []
    finally:
        await stop_agent(agent, writer)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def alertmanager(tmp_path):
    """A real Prometheus Alertmanager (Debian package prometheus-alertmanager) on loopback."""
    binary = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
    assert binary, "Alertmanager is not installed: `make test` installs the Debian package prometheus-alertmanager"
    port, cluster = _free_port(), _free_port()
    config = tmp_path / "alertmanager.yml"
    config.write_text("route:\n  receiver: oncall\n  group_wait: 1s\nreceivers:\n  - name: oncall\n")
    proc = subprocess.Popen(
        [binary, f"--config.file={config}", f"--storage.path={tmp_path / 'am-data'}",
         f"--web.listen-address=127.0.0.1:{port}", f"--cluster.listen-address=127.0.0.1:{cluster}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            with urllib.request.urlopen(f"{url}/-/ready", timeout=1) as r:
                if r.status == 200:
                    break
        except OSError:
            pass
        assert time.monotonic() < deadline and proc.poll() is None, "alertmanager did not start"
        time.sleep(0.2)
    yield url
    proc.terminate()
    proc.wait(10)


def _am_alerts(url: str) -> list[dict]:
    with urllib.request.urlopen(f"{url}/api/v2/alerts", timeout=5) as r:
        return json.loads(r.read())


async def test_alertmanager_receives_the_alert_and_supervision_closes_the_loop(
    broker, topology, topics, tmp_path, alertmanager, incident
):
    sim = incident
    plants = sim.plants
    cut = next(i for i, r in enumerate(sim.records) if r.kind == "valid"
               and datetime.fromisoformat(json.loads(r.value)["event_time"]) >= plants.spike_start + timedelta(minutes=70))  # fmt: skip
    await publish(sim.records[:cut], bootstrap_servers=broker.bootstrap, topic_names=topics)
    agent, writer = await start_agent(broker, topology, tmp_path)
    delivery = AlertDelivery(topology.alerts.delivery, alertmanager, None)
    await delivery.start()
    agent.on_alerts = delivery.submit
    try:
        await _handle(agent, cut)
        deadline = time.monotonic() + 20
        while not (got := [a for a in _am_alerts(alertmanager) if a["labels"].get("alertname") == "complaint_surge"]):
            assert time.monotonic() < deadline, (delivery.delivered, [t.status for t in agent.alerts.engine.alerts()])
            await asyncio.sleep(0.3)
        [am] = got
        assert am["labels"]["district"] == plants.spike_district and am["labels"]["severity"] == "critical"
        assert am["labels"]["team"] == "network-ops" and am["status"]["state"] == "active"
        ann = am["annotations"]
        assert "complaints" in ann["summary"] and ann["threshold"] == str(THRESHOLD) and float(ann["value"]) >= THRESHOLD
        assert ann["runbook_url"].startswith("https://") and ann["explain"].startswith("cxstream explain")
        assert am["startsAt"].startswith(plants.spike_start.strftime("%Y-%m-%dT%H:%M"))

        # The supervision ticket the alert opened: acknowledge, then close while the alert still fires.
        [ticket] = [t for t in agent.alerts.book.tickets() if t.rule == "complaint_surge"]
        acked = await agent.supervise(ticket.ticket_id, "acknowledge", by="li.wei", note="crew dispatched")
        assert acked["status"] == "acknowledged" and acked["time_to_ack_s"] >= 0
        closed = await agent.supervise(ticket.ticket_id, "close", by="li.wei", note="done?")
        assert closed["status"] == "closed" and closed["closed_while_bad"] is True
        with pytest.raises(Exception, match="already closed"):
            await agent.supervise(ticket.ticket_id, "close", by="li.wei")
        rows = writer.client.query(
            f"SELECT action, by, closed_while_bad FROM {writer.database}.supervision_events FINAL "
            f"WHERE ticket_id = %(t)s ORDER BY at", parameters={"t": ticket.ticket_id},
        ).result_rows  # fmt: skip
        assert [(a, b) for a, b, _ in rows] == [("opened", "cxstream"), ("acknowledged", "li.wei"), ("closed", "li.wei")]
        assert rows[-1][2] is True
        assert delivery.delivered["alertmanager"] >= 1
    finally:
        await delivery.stop()
        await stop_agent(agent, writer)


async def test_delivery_retries_and_never_blocks_when_alertmanager_is_down(topology):
    """Nothing listens: the alert waits in the queue, attempts are counted as failures, submit returns at once."""
    from stream.runtime import metrics

    dead = f"http://127.0.0.1:{_free_port()}"
    settings = topology.alerts.delivery.model_copy(update={"backoff": timedelta(milliseconds=50), "retries": 3})
    delivery = AlertDelivery(settings, dead, None)
    await delivery.start()
    before = metrics.ALERT_DELIVERY_FAILURES.labels("alertmanager")._value.get()
    try:
        doc = {"status": "firing", "rule": "r", "severity": "critical", "indicator": "complaints", "window": "1h",
               "scope": "district", "labels": {"district": "D1"}, "summary": "s", "value": 1.0, "threshold": 0.5,
               "since": SIM_START, "volume": 1.0, "top_factors": [], "alert_id": "a-1", "evaluated_at": SIM_START,
               "links": {"explain": "e", "query": "q", "dashboard": None, "runbook": None}}  # fmt: skip
        t0 = time.perf_counter()
        delivery.submit([doc])
        assert time.perf_counter() - t0 < 0.01
        await asyncio.sleep(1.0)
        failures = metrics.ALERT_DELIVERY_FAILURES.labels("alertmanager")._value.get() - before
        assert failures == 4  # the first attempt and 3 retries, then given up
        assert delivery.delivered["alertmanager"] == 0
    finally:
        await delivery.stop()


async def test_webhook_receives_every_status_change_as_the_alert_document(topology):
    """A local HTTP receiver: the webhook gets the Alert JSON of each change, in order."""
    from aiohttp import web

    received: list[dict] = []

    async def hook(request):
        received.append(await request.json())
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    port = _free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    delivery = AlertDelivery(topology.alerts.delivery, None, f"http://127.0.0.1:{port}/hook")
    await delivery.start()
    try:
        from stream.alerts.stage import AlertStage
        from stream.alerts.engine import CellUpdate
        from stream.indicators.counters import INDEX, WIDTH
        import numpy as np

        stage = AlertStage(topology.alerts, topology.indicators)

        def cell(hour: int, n: float) -> CellUpdate:
            row = np.zeros(WIDTH)
            row[INDEX["complaints"]] = n
            start = int(SIM_START.timestamp()) + hour * 3600
            return CellUpdate("1h", start, start + 3600, "P1", "C1", "D1", "hotline", "", 1, row)

        now = datetime.now(timezone.utc)
        docs = []
        for hour, n in ((0, 10), (1, 95), (2, 20), (3, 20), (4, 1)):
            docs += stage.apply([cell(hour, n)], None, now, SIM_START + timedelta(hours=hour, minutes=59)).alerts
        delivery.submit(docs)
        deadline = time.monotonic() + 10
        while len(received) < len(docs):
            assert time.monotonic() < deadline, received
            await asyncio.sleep(0.05)
        got = [Alert.model_validate(d) for d in received]
        assert [(a.rule, a.status) for a in got] == [("complaint_surge", "firing"), ("complaint_surge", "resolved")]
        assert got[0].value == 95 and got[0].labels["district"] == "D1"
    finally:
        await delivery.stop()
        await runner.cleanup()


def test_alerts_and_supervision_through_the_cli_and_http_of_a_running_worker(
    broker, topology, topics, worker_env, tmp_path, incident
):
    from stream.runtime.worker import WorkerProcess

    from .test_worker_process import _base_env, cxstream

    sim = incident
    asyncio.run(publish(sim.records, bootstrap_servers=broker.bootstrap, topic_names=topics))
    # Alertmanager unreachable: delivery fails (and retries) without holding anything back
    worker_env = worker_env | {"CXSTREAM_ALERTMANAGER_URL": f"http://127.0.0.1:{_free_port()}"}
    worker = WorkerProcess(worker_env, log_file=tmp_path / "worker.log").start()
    env = _base_env() | worker_env
    try:
        worker.wait_ready()
        deadline = time.monotonic() + 120
        while worker.metric("cxstream_alert_transitions_total", rule="complaint_surge", status="resolved") < 1:
            assert time.monotonic() < deadline, "the incident never resolved"
            time.sleep(0.3)

        out = cxstream("alerts", "--status", "firing,resolved", "--json", env=env)
        assert out.returncode == 0, out.stderr
        # the worker's own view: the incident's alert, resolved
        status, body = worker.get("/alerts?status=resolved")
        assert status == 200
        assert any(a["rule"] == "complaint_surge" and a["labels"]["district"] == sim.plants.spike_district
                   for a in json.loads(body))  # fmt: skip

        listed = cxstream("supervision", "--json", env=env)
        assert listed.returncode == 0, listed.stderr
        [ticket] = [t for t in json.loads(listed.stdout) if t["rule"] == "complaint_surge"]
        tid = ticket["ticket_id"]
        assert ticket["status"] == "open" and ticket["district"] == sim.plants.spike_district

        assert cxstream("supervision", "assign", tid, "--to", "li.wei", "--by", "duty.manager", env=env).returncode == 0
        ack = cxstream("supervision", "ack", tid, "--by", "li.wei", "--note", "crew dispatched", env=env)
        assert ack.returncode == 0 and "acknowledged" in ack.stdout, ack.stderr
        closed = cxstream("supervision", "close", tid, "--by", "li.wei", "--json", env=env)
        assert closed.returncode == 0, closed.stderr
        doc = json.loads(closed.stdout)
        assert doc["status"] == "closed" and doc["closed_while_bad"] is False  # the alert had resolved
        again = cxstream("supervision", "close", tid, "--by", "li.wei", env=env)
        assert again.returncode == 1 and "already closed" in again.stderr and "Traceback" not in again.stderr

        shown = cxstream("supervision", "show", tid, "--json", env=env)
        events = json.loads(shown.stdout)["events"]
        assert [e["action"] for e in events] == ["opened", "assigned", "acknowledged", "closed"]
        assert worker.metric("cxstream_supervision_events_total", action="closed") == 1
        status, _ = worker.get("/supervision/NO-SUCH")
        assert status == 404

        # /metrics of the running worker: every family the operations surface documents, with values
        nonzero = [
            "cxstream_events_total", "cxstream_rejects_total", "cxstream_batch_records_count",
            "cxstream_batch_seconds_count", "cxstream_event_to_commit_seconds_count", "cxstream_sink_insert_seconds_count",
            "cxstream_messages_out_total", "cxstream_state_tickets", "cxstream_dedup_seen_ids", "cxstream_model_customers",
            "cxstream_model_learned_total", "cxstream_alert_transitions_total", "cxstream_alert_state_cells",
            "cxstream_alert_delivery_failures_total", "cxstream_supervision_events_total",
            "cxstream_supervision_ack_seconds_count", "cxstream_supervision_close_seconds_count",
        ]  # fmt: skip
        zero = [m for m in nonzero if not worker.metric(m) > 0]
        assert zero == [], f"metrics without a value: {zero}"
        _, body = worker.get("/metrics")
        for family in ("cxstream_consumer_lag", "cxstream_alerts", "cxstream_alert_delivery_queue"):
            assert f"\n{family}{{" in body.decode(), family
    finally:
        assert worker.stop() == 0

    # stopped: the CLI reads ClickHouse itself
    out = cxstream("supervision", "show", tid, "--direct", env=env)
    assert out.returncode == 0 and "closed" in out.stdout, out.stderr
