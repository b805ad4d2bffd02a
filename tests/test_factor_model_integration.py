"""The factor model in the running pipeline: restart persistence, publication, explain (real broker and chDB)."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import timedelta

import pytest
from aiokafka import AIOKafkaConsumer

from stream.contract import FactorCoefficients
from stream.model import NETWORK
from stream.runtime.worker import WorkerProcess
from stream.simulate import generate
from stream.simulate.publish import publish

from .conftest import REPO, SIM_START, start_agent, stop_agent
from .test_worker_process import _base_env, cxstream

pytestmark = pytest.mark.integration


def fast_publication(topology, every=timedelta(seconds=1)):
    return topology.model_copy(update={"model": topology.model.model_copy(update={"publish_interval": every})})


async def _handle(agent, expected: int, timeout_s: float = 90) -> None:
    deadline = time.monotonic() + timeout_s
    while sum(agent.progress.totals.values()) < expected:
        assert time.monotonic() < deadline, f"agent handled {dict(agent.progress.totals)} of {expected}"
        await asyncio.sleep(0.05)


async def test_restart_keeps_the_models_and_learns_every_event_once(broker, topology, topics, tmp_path):
    topology = fast_publication(topology)
    sim = generate(12_000, seed=21, start=SIM_START, malformed_share=0.0, resend_share=0.0)
    half = len(sim.records) // 2
    satisfaction = sum(1 for r in sim.records if r.stream == "satisfaction_events")

    await publish(sim.records[:half], bootstrap_servers=broker.bootstrap, topic_names=topics)
    agent, writer = await start_agent(broker, topology, tmp_path)
    try:
        await _handle(agent, half)
    finally:
        await stop_agent(agent, writer)  # a graceful stop publishes and snapshots what was learned
    before = {d: agent.model.model.report(d) for d in agent.model.model.districts()}
    assert before[NETWORK].n > 0

    agent, writer = await start_agent(broker, topology, tmp_path)
    try:
        await asyncio.wait_for(agent.ready.wait(), 60)
        after = {d: agent.model.model.report(d) for d in agent.model.model.districts()}
        assert after == before  # every district's model, exactly as it was

        await publish(sim.records[half:], bootstrap_servers=broker.bootstrap, topic_names=topics)
        await _handle(agent, len(sim.records) - half)
        await asyncio.sleep(1.2)  # one publish_interval: the idle agent publishes on time
        rows = writer.client.query(
            f"SELECT argMax(n, published_at) FROM {writer.database}.factor_coefficients WHERE district = '*'"
        ).result_rows
        assert rows[0][0] == satisfaction  # every satisfaction event learned exactly once across the restart
    finally:
        await stop_agent(agent, writer)


async def _messages(bootstrap: str, topic: str) -> list[bytes]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None)
    await consumer.start()
    try:
        polled = await consumer.getmany(timeout_ms=3000)
        return [m.value for msgs in polled.values() for m in msgs]
    finally:
        await consumer.stop()


def test_explain_over_http_and_cli_and_coefficients_on_the_topic(broker, topology, topics, worker_env, tmp_path):
    fast = tmp_path / "topology.yaml"
    fast.write_text((REPO / "topology.yaml").read_text().replace("publish_interval: 1m", "publish_interval: 1s"))
    env = worker_env | {"CXSTREAM_TOPOLOGY": str(fast)}
    sim = generate(6000, seed=5, start=SIM_START, malformed_share=0.0, resend_share=0.0)
    asyncio.run(publish(sim.records, bootstrap_servers=broker.bootstrap, topic_names=topics))
    district = json.loads(next(r.value for r in sim.records if r.stream == "satisfaction_events"))["region"]["district"]
    worker = WorkerProcess(env, log_file=tmp_path / "worker.log").start()
    try:
        worker.wait_ready()
        deadline = time.monotonic() + 60
        while worker.metric("cxstream_model_publications_total") < 1 or worker.metric("cxstream_events_total") < 6000:
            assert time.monotonic() < deadline, "no factor-model publication"
            time.sleep(0.2)
        time.sleep(1.5)  # the publication after the last batch

        status, body = worker.get(f"/districts/{district}/explain?window=604800&top=3")
        assert status == 200, body
        doc = json.loads(body)
        assert doc["district"] == district and doc["samples"] > 0 and len(doc["factors"]) == 3
        impacts = [f["impact"] for f in doc["factors"]]
        assert impacts == sorted(impacts)  # most negative first
        status, body = worker.get("/districts/NO-SUCH-DISTRICT/explain")
        assert status == 404 and "no factor model" in json.loads(body)["error"]

        out = cxstream("explain", "*", "--window", "7d", env=_base_env() | env)
        assert out.returncode == 0, out.stderr
        assert "District *" in out.stdout and "complaints_network" in out.stdout
        missing = cxstream("explain", "NO-SUCH-DISTRICT", env=_base_env() | env)
        assert missing.returncode == 1 and "no factor model" in missing.stderr and "Traceback" not in missing.stderr
    finally:
        assert worker.stop() == 0

    # Stopped: the CLI reads ClickHouse itself, and the network model has learned every satisfaction event.
    out = cxstream("explain", "*", "--window", "7d", "--top", "40", "--json", "--direct", env=_base_env() | env)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    satisfaction = sum(1 for r in sim.records if r.stream == "satisfaction_events")
    assert doc["model"]["n"] == satisfaction == doc["samples"]
    coef = {f["factor"]: f["coefficient"] for f in doc["factors"]}
    assert coef["complaints_network"] < 0

    # Every publication is on the topic as a valid FactorCoefficients message.
    values = asyncio.run(_messages(broker.bootstrap, topology.topics["factor_coefficients"].name))
    models = [FactorCoefficients.model_validate_json(v) for v in values]
    assert {m.district for m in models} >= {NETWORK, district}
    assert max(m.n for m in models if m.district == NETWORK) == satisfaction
