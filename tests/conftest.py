"""Shared fixtures: a real Kafka-protocol broker (Tansu) per test, on a free loopback port."""

from __future__ import annotations

import asyncio
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
