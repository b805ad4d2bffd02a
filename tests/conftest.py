"""Shared fixtures: a real Kafka-protocol broker (Tansu) per test, on a free loopback port."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from stream.runtime.broker import EmbeddedBroker, ensure_topics, free_port
from stream.topology import Topology, load_topology

REPO = Path(__file__).resolve().parents[1]
SIM_START = datetime(2026, 11, 20, tzinfo=timezone.utc)


@pytest.fixture
def broker(tmp_path):
    with EmbeddedBroker(log_file=tmp_path / "broker.log") as b:
        yield b


@pytest.fixture
def topology() -> Topology:
    return load_topology(REPO / "topology.yaml")


@pytest.fixture
def topics(broker, topology) -> dict[str, str]:
    """Create the topology's topics on the test broker; logical -> Kafka name of the sources."""
    asyncio.run(ensure_topics(broker.bootstrap, topology))
    return {k: t.name for k, t in topology.source_topics().items()}


@pytest.fixture
def worker_env(tmp_path, broker) -> dict[str, str]:
    """Environment for a `cxstream run` child process on the test broker and a private chDB."""
    return {
        "CXSTREAM_KAFKA_BOOTSTRAP": broker.bootstrap,
        "CXSTREAM_DATA_DIR": str(tmp_path / "data"),
        "CXSTREAM_WEB_PORT": str(free_port()),
        "CXSTREAM_CLICKHOUSE_URL": "",
        "CXSTREAM_TOPOLOGY": str(REPO / "topology.yaml"),
    }


#: simulator defect -> the reason code ingest gives it (stream.ingest.decode)
DEFECT_REASON = {
    "not_json": "not_json",
    "missing_field": "missing_field",
    "out_of_range": "out_of_range",
    "unknown_code": "unknown_code",
    "bad_time": "bad_time",
    "wrong_version": "unsupported_version",
}


async def start_agent(broker, topology: Topology, data_dir: Path, agent_class=None):
    """The ingest agent (or ``agent_class``, a subclass) in this process, on the test broker and a chDB in
    ``data_dir``: (agent, writer)."""
    from stream.ingest.agent import IngestAgent
    from stream.runtime.app import open_writer
    from stream.settings import Settings

    settings = Settings(data_dir=data_dir, kafka_bootstrap=broker.bootstrap, clickhouse_url=None)
    writer = await asyncio.to_thread(open_writer, settings, topology)
    agent = (agent_class or IngestAgent)(bootstrap=broker.bootstrap, topology=topology, writer=writer)
    await agent.start()
    return agent, writer


async def stop_agent(agent, writer) -> None:
    await agent.stop()
    writer.client.close()  # chDB: one data directory per process at a time


async def wait_until(condition, describe, timeout_s: float = 30) -> None:
    """Poll ``condition()`` until it holds; past ``timeout_s`` fail with ``describe()`` (what was awaited, and where
    things stand)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, describe()
        await asyncio.sleep(0.05)


async def run_agent(broker, topology: Topology, data_dir: Path, expected: int, timeout_s: float = 60):
    """Run the ingest agent until it has handled ``expected`` records, then stop it; returns the agent."""
    agent, writer = await start_agent(broker, topology, data_dir)
    try:
        await wait_until(lambda: sum(agent.progress.totals.values()) >= expected,
                         lambda: f"agent handled {dict(agent.progress.totals)} of {expected}", timeout_s)  # fmt: skip
    finally:
        await stop_agent(agent, writer)
    return agent
