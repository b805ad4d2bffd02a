"""Lifecycle state, SLA timing, restart and tracing against the real broker and chDB."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import datetime, timedelta, timezone

import pytest
from aiokafka import AIOKafkaProducer

from stream.contract import TicketEvent
from stream.runtime.worker import WorkerProcess

from .conftest import start_agent, stop_agent
from .test_worker_process import _base_env, cxstream

pytestmark = pytest.mark.integration

REGION = {"province": "P01", "city": "P01-C01", "district": "P01-C01-D01"}


def created(ticket: str, at: datetime, deadline: datetime) -> TicketEvent:
    return TicketEvent(
        schema_version=1, event_id=f"{ticket}-created", event_time=at, source_system="CRM", customer_id=f"c-{ticket}",
        ticket_id=ticket, step="created", region=REGION, channel="hotline", business_line="broadband",
        complaint_category="network", complaint_phenomenon="slow_speed", customer_tier="gold", sla_deadline=deadline,
    )  # fmt: skip


async def send(bootstrap: str, topic: str, events: list[TicketEvent]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for e in events:
            await producer.send_and_wait(topic, e.model_dump_json(exclude_none=True).encode(), key=e.customer_id.encode())
    finally:
        await producer.stop()


def fast_sla(topology):
    tickets = topology.state.tickets.model_copy(update={"sla_check_interval": timedelta(milliseconds=200)})
    return topology.model_copy(update={"state": topology.state.model_copy(update={"tickets": tickets})})


def breach_of(writer, ticket: str) -> str | None:
    rows = writer.client.query(
        f"SELECT sla_breach FROM {writer.database}.ticket_state FINAL WHERE ticket_id = %(t)s", parameters={"t": ticket}
    ).result_rows
    return rows[0][0] if rows else None


async def test_silent_open_ticket_breaches_on_time_and_after_a_restart(broker, topology, topics, tmp_path):
    """No further event arrives: the breach is found by the SLA clock, also by a restarted worker."""
    topology = fast_sla(topology)
    now = datetime.now(timezone.utc)
    # The restart takes ~8 s on Tansu (it waits out the old member's session), so the second deadline is later.
    first_deadline, second_deadline = now + timedelta(seconds=4), now + timedelta(seconds=20)
    await send(broker.bootstrap, topics["ticket_events"],
               [created("T-SILENT-1", now, first_deadline), created("T-SILENT-2", now, second_deadline)])  # fmt: skip

    agent, writer = await start_agent(broker, topology, tmp_path)
    try:
        while agent.progress.totals["ingested"] < 2:
            await asyncio.sleep(0.05)
        assert breach_of(writer, "T-SILENT-1") == ""  # open, not yet due
        while datetime.now(timezone.utc) < first_deadline + timedelta(seconds=3) and breach_of(writer, "T-SILENT-1") == "":
            await asyncio.sleep(0.1)
        found_at = datetime.now(timezone.utc)
        assert breach_of(writer, "T-SILENT-1") == "open_overdue"
        assert first_deadline <= found_at <= first_deadline + timedelta(seconds=2), found_at - first_deadline
        assert breach_of(writer, "T-SILENT-2") == ""
    finally:
        await stop_agent(agent, writer)

    # A new worker (state rebuilt from ClickHouse for its partitions) still catches the second deadline.
    agent, writer = await start_agent(broker, topology, tmp_path)
    try:
        await asyncio.wait_for(agent.ready.wait(), 30)
        # Both are still open (one overdue): both are restored, the second still waiting for its deadline.
        assert "T-SILENT-1" in agent.tickets.store and "T-SILENT-2" in agent.tickets.store
        assert datetime.now(timezone.utc) < second_deadline, "restart too slow for this test's timing"
        assert breach_of(writer, "T-SILENT-2") == ""
        while datetime.now(timezone.utc) < second_deadline + timedelta(seconds=3) and breach_of(writer, "T-SILENT-2") == "":
            await asyncio.sleep(0.1)
        found_at = datetime.now(timezone.utc)
        assert breach_of(writer, "T-SILENT-2") == "open_overdue"
        assert second_deadline <= found_at <= second_deadline + timedelta(seconds=2), found_at - second_deadline
    finally:
        await stop_agent(agent, writer)


def test_trace_over_http_and_cli(broker, topology, topics, worker_env, tmp_path):
    from stream.simulate import generate
    from stream.simulate.publish import publish

    from .conftest import SIM_START

    sim = generate(3000, seed=21, start=SIM_START)
    asyncio.run(publish(sim.records, bootstrap_servers=broker.bootstrap, topic_names=topics))
    worker = WorkerProcess(worker_env, log_file=tmp_path / "worker.log").start()
    try:
        worker.wait_ready()
        deadline = time.monotonic() + 60
        while worker.metric("cxstream_events_total") < 3000:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        # A ticket with a hand-off, a close and a follow-up: find it through the worker's own trace endpoint.
        tickets = {json.loads(r.value)["ticket_id"] for r in sim.records
                   if r.kind == "valid" and r.stream == "satisfaction_events" and b'"ticket_id"' in r.value}  # fmt: skip
        ticket = sorted(tickets)[0]
        status, body = worker.get(f"/tickets/{ticket}/trace")
        assert status == 200
        doc = json.loads(body)
        assert doc["ticket"]["ticket_id"] == ticket
        times = [s["event_time"] for s in doc["journey"]]
        assert times == sorted(times) and doc["journey"][0]["step"] == "created"
        assert doc["followups"] and doc["followups"][0]["overall_score"] >= 1
        expected_steps = sorted(
            (json.loads(r.value)["event_time"], json.loads(r.value)["step"]) for r in sim.records
            if r.kind == "valid" and r.stream == "ticket_events" and json.loads(r.value)["ticket_id"] == ticket
        )  # fmt: skip
        assert [s["step"] for s in doc["journey"]] == [s for _, s in expected_steps]

        status, body = worker.get("/tickets/NO-SUCH-TICKET/trace")
        assert status == 404 and "not found" in json.loads(body)["error"]

        # The CLI goes through the running worker (it owns the embedded chDB).
        env = _base_env() | worker_env
        out = cxstream("trace", ticket, env=env)
        assert out.returncode == 0, out.stderr
        assert f"Ticket {ticket}" in out.stdout and "created" in out.stdout and "follow-up" in out.stdout
        missing = cxstream("trace", "NO-SUCH-TICKET", env=env)
        assert missing.returncode == 1 and "not found" in missing.stderr and "Traceback" not in missing.stderr
    finally:
        assert worker.stop() == 0

    # With the worker stopped, the CLI reads ClickHouse directly and agrees.
    out = cxstream("trace", ticket, "--json", env=_base_env() | worker_env)
    assert out.returncode == 0, out.stderr
    assert [s["step"] for s in json.loads(out.stdout)["journey"]] == [s for _, s in expected_steps]
