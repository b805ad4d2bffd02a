"""Running the worker: in this process (``cxstream run``) or as a child process.

The child-process form is what ``cxstream demo`` and the integration tests use:
the same ``cxstream run`` a user runs, pointed at a broker by environment.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from aiokafka import AIOKafkaConsumer, TopicPartition

from ..settings import Settings
from ..topology import Topology, load_topology
from .broker import EmbeddedBroker, ensure_topics
from .memory import limit_arenas

log = logging.getLogger("cxstream.worker")


def tune_gc() -> None:
    """Collect the young generation less often, and keep the allocator to few arenas.

    The worker allocates ~20 objects per event and keeps a large, long-lived
    heap (ticket state, dedup ids); with the default thresholds the collector
    spends more time than validation does (measured: 2-3x batch throughput).
    After each batch the agent freezes what survived (``gc.freeze()``, which
    also resets the young generation's count), so a young collection only ever
    runs within a batch, where nearly everything it scans is alive: at a
    threshold of 200,000 a 150,000-event replay ran 5 of them, 65-93 ms each
    with every thread stopped, and they found 30-45 objects of garbage (cycles
    are rare here; refcounting frees the rest). At 1,000,000 a batch of 25,000
    events does not reach it, and the agent's full collection every 10 minutes
    finds what cycles there are.
    """
    gc.set_threshold(1_000_000, 20, 100)
    gc.freeze()  # what exists at start (modules, config) is never garbage
    limit_arenas()  # and the allocator: few arenas, so freed batch memory is reused, not held per thread


def run_worker(settings: Settings, simulate_rate: float | None = None, simulate_seed: int = 1) -> None:
    """``cxstream run``: start the embedded parts if needed, then the Faust worker (blocks)."""
    import faust

    tune_gc()
    from .app import build_app, open_writer

    topology = load_topology(settings.topology)
    broker = None
    if settings.embedded_kafka:
        Path(settings.data_dir).mkdir(parents=True, exist_ok=True)
        broker = EmbeddedBroker(log_file=Path(settings.data_dir, "broker.log"))
        broker.start()
        log.info("no CXSTREAM_KAFKA_BOOTSTRAP set: using the embedded broker at %s (in-memory)", broker.bootstrap)
    bootstrap = settings.kafka_bootstrap or broker.bootstrap
    try:
        created = asyncio.run(ensure_topics(bootstrap, topology))
        if created:
            log.info("created topics: %s", ", ".join(created))
        if settings.embedded_kafka:  # the simulator's subscriber bases, so complaint rates work out of the box
            from ..reference.subscribers import seed_embedded

            seed_embedded(bootstrap, topology.topics["subscriber_base"].name, simulate_seed)
        writer = open_writer(settings, topology)
        where = "embedded chDB at " + settings.clickhouse_dsn if settings.embedded_clickhouse else "ClickHouse server"
        log.info("storing to %s (database %s)", where, topology.sink.database)
        app, _agent = build_app(settings, topology, bootstrap, writer)
        if simulate_rate:
            from ..simulate.publish import publish_forever

            @app.task
            async def _simulated_feed() -> None:
                await publish_forever(
                    bootstrap_servers=bootstrap,
                    topic_names={k: t.name for k, t in topology.source_topics().items()},
                    rate=simulate_rate,
                    seed=simulate_seed,
                )

        faust.Worker(app, loglevel=settings.log_level, quiet=True).execute_from_commandline()
    finally:
        if broker:
            broker.stop()


class WorkerProcess:
    """``python -m stream run`` as a child process, for the demo and the tests."""

    def __init__(self, env: dict[str, str], log_file: Path | None = None, simulate_rate: float | None = None):
        self.env = {**os.environ, **env}
        self.log_file = log_file
        self.simulate_rate = simulate_rate
        self.proc: subprocess.Popen | None = None

    def start(self) -> "WorkerProcess":
        cmd = [sys.executable, "-m", "stream", "run"]
        if self.simulate_rate:
            cmd += ["--simulate", str(self.simulate_rate)]
        out = open(self.log_file, "ab") if self.log_file else subprocess.DEVNULL
        self.proc = subprocess.Popen(cmd, env=self.env, stdout=out, stderr=subprocess.STDOUT)
        return self

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.env['CXSTREAM_WEB_PORT']}"

    def get(self, path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(self.base_url + path, timeout=2) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as err:
            return err.code, err.read()

    def wait_ready(self, timeout_s: float = 90) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited with code {self.proc.returncode} (log: {self.log_file})")
            try:
                status, body = self.get("/readyz")
                if status == 200 and json.loads(body).get("ready"):
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"worker not ready within {timeout_s}s (log: {self.log_file})")

    def metric(self, name: str, **labels: str) -> float:
        """Sum of a Prometheus sample over the series matching ``labels``."""
        from prometheus_client.parser import text_string_to_metric_families

        _, body = self.get("/metrics")
        total = 0.0
        for family in text_string_to_metric_families(body.decode()):
            for sample in family.samples:
                if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                    total += sample.value
        return total

    def stop(self, timeout_s: float = 30) -> int:
        """Graceful stop (SIGTERM, as Kubernetes does)."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode if self.proc else 0

    def kill(self) -> None:
        """SIGKILL: the crash case; nothing gets to clean up."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


async def committed_total(bootstrap: str, topology: Topology) -> int:
    """Committed offsets of the ingest group, summed over the source partitions.

    On fresh topics this equals the number of records stored or dead-lettered,
    because the agent commits only after that. (End offsets are not used: the
    embedded broker's ListOffsets answer lags the log, measured here.)
    """
    topics = [t.name for t in topology.source_topics().values()]
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=topology.consumer.group_id, enable_auto_commit=False)
    await consumer.start()
    try:
        await consumer.topics()  # loads metadata for every topic
        total = 0
        for t in topics:
            for p in sorted(consumer.partitions_for_topic(t) or []):
                total += await consumer.committed(TopicPartition(t, p)) or 0
        return total
    finally:
        await consumer.stop()
