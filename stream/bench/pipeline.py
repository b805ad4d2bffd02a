"""``cxstream bench pipeline``: the whole pipeline against its baselines, in one run (issue 8).

On one freshly started embedded broker, over the same prepared topics of N simulated events:

1. **bare**: an aiokafka ``getmany`` loop reading every record (no decoding): the ceiling;
2. **faust take()**: a Faust agent over ``stream.take(1000)`` batches, validating each event (own process);
3. **faust naive**: the textbook per-event Faust agent: validate, deduplicate, update a ``Table`` per
   event (a changelog message each) (own process);
4. **full pipeline**: validation, dedup, lifecycle state, indicators, factor model, alerts, ClickHouse sink,
   dead letters, commit (best of ``repeat`` runs), with its CPU time per event (the worker's threads and the
   broker's) and the events/s that CPU allows with every core busy;
5. **recovery**: a restart of the pipeline on its stored state (open tickets, factor-model snapshot, alert
   windows): seconds from start to ready (partitions assigned and state restored);

and then, on a second broker, latency at a fixed rate (``cxstream bench alerts``). It prints events/s, the
ratios, p50/p99 latencies and peak RSS.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..runtime.broker import EmbeddedBroker, ensure_topics
from ..runtime.worker import tune_gc
from ..settings import Settings
from ..simulate import generate
from ..simulate.publish import publish
from ..topology import load_topology
from . import cpu_ceiling, cpu_seconds, peak_rss_mb, stage_breakdown, stage_lines, stage_totals
from .ingest import _fresh, _group, bare_consume, pipeline_consume, start_to_ready

#: issue 8's throughput target per worker process (events/s)
TARGET = 50_000


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _faust(mode: str, bootstrap: str, topics: list[str], expected: int, tmp: str, timeout: float) -> float | None:
    """Run a Faust baseline in its own process; events/s from its first to its last event, None on timeout."""
    out = Path(tmp) / f"faust-{mode}.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "stream.bench.faust_baseline", mode, bootstrap, ",".join(topics), str(expected), str(out)],
        cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + timeout
    try:
        while not out.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                return None
            time.sleep(0.2)
        time.sleep(0.1)
        doc = json.loads(out.read_text())
        return doc["n"] / max(doc["last"] - doc["first"], 1e-9)
    finally:
        proc.kill()
        proc.wait()


def run_pipeline_bench(
    events: int, seed: int, settings: Settings, repeat: int = 2, naive_events: int = 50_000, latency_seconds: float = 30
) -> dict[str, Any]:
    topology = load_topology(settings.topology)
    tune_gc()
    _say(f"bench: generating {events:,} simulated events")
    sim = generate(events, seed, datetime(2026, 11, 1, tzinfo=timezone.utc))
    with tempfile.TemporaryDirectory(prefix="cxstream-bench-") as tmp, EmbeddedBroker() as broker:
        base = Settings(data_dir=Path(tmp), kafka_bootstrap=broker.bootstrap, clickhouse_url=None, topology=settings.topology)
        asyncio.run(ensure_topics(broker.bootstrap, topology))
        names = {k: t.name for k, t in topology.source_topics().items()}
        topics = [names["ticket_events"], names["satisfaction_events"]]
        _say(f"bench: publishing to {broker.bootstrap}")
        asyncio.run(publish(sim.records, bootstrap_servers=broker.bootstrap, topic_names=names))
        _say("bench: bare aiokafka getmany loop")
        bare = asyncio.run(bare_consume(broker.bootstrap, topics, events, "cxstream-bench-bare"))
        _say("bench: Faust agent over stream.take(1000) (own process)")
        take = _faust("take", broker.bootstrap, topics, events, tmp, timeout=600)
        n_naive = min(naive_events, events)
        _say(f"bench: naive per-event Faust agent with a table, first {n_naive:,} events (own process)")
        naive = _faust("naive", broker.bootstrap, topics, n_naive, tmp, timeout=900)
        runs, worker_cpu, broker_cpu = [], [], []
        stages_before = stage_totals()
        for i in range(repeat):
            _say(f"bench: full pipeline, run {i + 1}/{repeat}")
            broker_before = cpu_seconds(broker.pid)
            run = asyncio.run(pipeline_consume(broker.bootstrap, _group(topology, f"full{i}"),
                                               _fresh(base, tmp, f"full{i}"), events))  # fmt: skip
            runs.append(run.rate)
            worker_cpu.append(run.cpu_s / events * 1e6)
            broker_cpu.append((cpu_seconds(broker.pid) - broker_before) / events * 1e6)
        stages = stage_breakdown(stages_before, stage_totals(), events * repeat)
        _say("bench: restart on the stored state (recovery)")
        recovery, _, _ = asyncio.run(start_to_ready(broker.bootstrap, _group(topology, f"full{repeat - 1}"),
                                                    _fresh(base, tmp, f"full{repeat - 1}"), 120))  # fmt: skip
    full = max(runs)
    cpu = min(worker_cpu) + min(broker_cpu)
    latency = None
    if latency_seconds > 0:
        from .alerts import run_alert_bench

        _say(f"bench: latency at 5,000 events/s for {latency_seconds:.0f} s")
        latency = run_alert_bench(rate=5000, duration=latency_seconds, seed=seed, settings=settings)
    peak_mb = peak_rss_mb()

    def ratio(x: float | None) -> str:
        return "n/a" if not x else f"{full / x:.2f}x"

    lines = [
        f"events                     {events:,}",
        f"bare aiokafka getmany      {bare:>12,.0f} events/s",
        f"faust stream.take(1000)    {take or 0:>12,.0f} events/s" + ("" if take else "  (did not finish)"),
        f"faust naive per-event      {naive or 0:>12,.0f} events/s   ({n_naive:,} events, table update each)",
        f"full pipeline              {full:>12,.0f} events/s   (best of {', '.join(f'{r:,.0f}' for r in runs)})",
        f"full / bare                {full / bare:>12.3f}",
        f"full / faust take()        {ratio(take):>12}",
        f"full / faust naive         {ratio(naive):>12}",
        f"recovery (restart->ready)  {recovery:>12.1f} s",
        "full pipeline by stage, time per event (validate and derive hold the GIL; the stores are mostly",
        "ClickHouse's work, overlapping the next batch; publish includes waiting for the broker's acks):",
        f"  {stage_lines(stages, 'event')}",
        (f"CPU per event, full pipeline  worker {min(worker_cpu):,.1f} us (all its threads)   broker"
         f" {min(broker_cpu):,.1f} us   (least of {len(runs)} runs)"),
        (f"  -> at most {cpu_ceiling(cpu):,.0f} events/s with all {os.cpu_count()} cores busy; {TARGET:,} events/s"
         f" needs <= {(os.cpu_count() or 1) * 1e6 / TARGET:,.0f} us"),
    ]
    if latency:
        lat, ind = latency["alert_latency_ms"], latency["indicator_latency_ms"]
        lines += [
            f"event -> indicator @5k/s   p50 {ind['p50']} ms   p99 {ind['p99']} ms",
            f"event -> alert @5k/s       p50 {lat['p50']} ms   p99 {lat['p99']} ms   ({latency['alerts']} alerts)",
            # per batch costs (inserts, the alert engine) dominate at a steady rate: a figure beside the one above
            (f"CPU per event @5k/s        worker {latency['worker_cpu_us_per_event']:,.0f} us   (batches of"
             f" {latency['handled'] / max(latency['batches'], 1):,.0f} events on average)"),
        ]
    lines += [f"peak RSS                   {peak_mb:>12,.0f} MB", f"machine                    {os.cpu_count()} cores, Python {sys.version.split()[0]}"]
    return {
        "events": events, "bare_events_per_s": round(bare), "faust_take_events_per_s": take and round(take),
        "faust_naive_events_per_s": naive and round(naive), "pipeline_events_per_s": round(full),
        "runs": [round(r) for r in runs], "recovery_s": round(recovery, 2), "stages": stages,
        "cpu_us_per_event": {"worker": [round(x, 1) for x in worker_cpu], "broker": [round(x, 1) for x in broker_cpu],
                             "ceiling_events_per_s": round(cpu_ceiling(cpu))}, "latency": latency,
        "peak_rss_mb": round(peak_mb), "report": "\n".join(lines),
    }  # fmt: skip
