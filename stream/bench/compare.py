"""``cxstream bench compare``: this tree against another commit, over the full pipeline, in one run.

A change worth a few per cent cannot be seen across runs on a shared 2-core machine: its speed drifts by more than
that within an hour. So both trees consume the same prepared topic, on one embedded broker, in fresh processes,
alternating, ``rounds`` times each:

1. the other commit is checked out into a temporary git worktree (this needs a git checkout of the project);
2. N simulated events are published once;
3. each run is a fresh Python process with ``PYTHONPATH`` set to its tree: it starts a worker's ingest agent on its
   tree's ``topology.yaml`` with its own consumer group and chDB directory, consumes every event (validation,
   lifecycle, indicators, factor model, alerts, ClickHouse, commit) and reports events/s from its first poll to its
   last commit, and its peak RSS.

It prints each run, the medians and their ratio, and the same for the CPU time per event (the worker's, from its first
poll to its last event, every thread): a steadier figure than events/s on a shared machine, since other processes
slow a run's wall clock far more than its CPU time. The other commit must have ``stream.bench.ingest.pipeline_consume``
(every commit since issue 8's first round).
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..runtime.broker import EmbeddedBroker, ensure_topics
from ..simulate import generate
from ..simulate.publish import publish
from ..topology import load_topology
from . import cpu_seconds

#: one run, in a fresh process whose ``stream`` package is the tree's own
_RUN = """
import asyncio, json, resource, sys
from pathlib import Path
import stream.ingest.agent
from stream.bench import peak_rss_mb
from stream.bench.ingest import _group, pipeline_consume
from stream.runtime.worker import tune_gc
from stream.settings import Settings
from stream.topology import load_topology
bootstrap, data_dir, group, expected, topology = sys.argv[1:6]
expected = int(expected)
# The agent, to time the CPU from its first poll to its last event: measured here, the same way for every tree
# (older trees' pipeline_consume does not report CPU, and their stream.bench has no cpu_seconds)
agents, _init = [], stream.ingest.agent.IngestAgent.__init__
def init(self, *args, **kwargs):
    _init(self, *args, **kwargs)
    agents.append(self)
stream.ingest.agent.IngestAgent.__init__ = init
def cpu():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime
async def main():
    settings = Settings(data_dir=Path(data_dir), kafka_bootstrap=bootstrap, clickhouse_url=None)
    run = asyncio.ensure_future(pipeline_consume(bootstrap, _group(load_topology(topology), group), settings, expected))
    first = last = None
    while not run.done():
        if agents and first is None and agents[0].first_polled_at is not None:
            first = cpu()
        if agents and last is None and sum(agents[0].progress.totals.values()) >= expected:
            last = cpu()
        await asyncio.sleep(0.01)
    return run.result()[0], (last - first) if first is not None and last is not None else None
tune_gc()
rate, cpu_s = asyncio.run(main())
print(json.dumps({"rate": rate, "rss_mb": peak_rss_mb(), "cpu_s": cpu_s}))
"""


class CompareError(RuntimeError):
    """The other commit could not be checked out or run."""


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _git(root: Path, *args: str) -> str:
    try:
        done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, check=False)
    except FileNotFoundError as exc:
        raise CompareError("bench compare needs git on the PATH") from exc
    if done.returncode:
        raise CompareError(f"git {' '.join(args)}: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout.strip()


def _run(tree: Path, bootstrap: str, data_dir: Path, group: str, expected: int, timeout: float) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    try:
        done = subprocess.run(
            [sys.executable, "-c", _RUN, bootstrap, str(data_dir), group, str(expected), str(tree / "topology.yaml")],
            env=env, cwd=data_dir.parent, capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip
    except subprocess.TimeoutExpired as exc:
        raise CompareError(f"the run of {tree} did not finish within {timeout:.0f} s") from exc
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode or not lines:
        raise CompareError(f"the run of {tree} failed (exit {done.returncode}):\n{done.stderr[-2000:]}")
    return json.loads(lines[-1])


def run_compare(
    against: str, events: int = 150_000, rounds: int = 3, seed: int = 7, timeout: float = 900
) -> dict[str, Any]:
    """Events/s of this tree and of commit ``against``, alternating over one prepared topic."""
    here = Path(__file__).resolve().parents[2]
    try:
        root = Path(_git(here, "rev-parse", "--show-toplevel"))
    except CompareError as exc:
        raise CompareError(f"bench compare runs from a git checkout of cxstream ({exc})") from exc
    commit = _git(root, "rev-parse", "--verify", "--short", f"{against}^{{commit}}")
    topology = load_topology(root / "topology.yaml")
    runs: dict[str, list[dict]] = {"this": [], "other": []}
    with tempfile.TemporaryDirectory(prefix="cxstream-compare-") as tmp:
        other = Path(tmp) / f"tree-{commit}"
        _git(root, "worktree", "add", "--detach", str(other), commit)
        try:
            _say(f"bench: generating {events:,} simulated events")
            sim = generate(events, seed, datetime(2026, 11, 1, tzinfo=timezone.utc))
            with EmbeddedBroker() as broker:
                asyncio.run(ensure_topics(broker.bootstrap, topology))
                names = {k: t.name for k, t in topology.source_topics().items()}
                _say(f"bench: publishing to {broker.bootstrap}")
                asyncio.run(publish(sim.records, bootstrap_servers=broker.bootstrap, topic_names=names))
                for r in range(rounds):
                    for key, tree in (("this", root), ("other", other)):
                        label = "this tree" if key == "this" else commit
                        data_dir = Path(tmp) / f"{key}-{r}"
                        data_dir.mkdir()
                        broker_cpu = cpu_seconds(broker.pid)
                        result = _run(tree, broker.bootstrap, data_dir, f"compare-{key}-{r}", len(sim.records), timeout)
                        result["broker_cpu_s"] = cpu_seconds(broker.pid) - broker_cpu
                        runs[key].append(result)
                        _say(f"bench: round {r + 1}/{rounds}, {label}: {result['rate']:,.0f} events/s")
        finally:
            _git(root, "worktree", "remove", "--force", str(other))
    this = [x["rate"] for x in runs["this"]]
    that = [x["rate"] for x in runs["other"]]
    ratio = statistics.median(this) / statistics.median(that)

    n = len(sim.records)
    cpu = {k: [x["cpu_s"] / n * 1e6 for x in v if x.get("cpu_s") is not None] for k, v in runs.items()}
    broker_us = {k: statistics.median(x["broker_cpu_s"] / n * 1e6 for x in v) for k, v in runs.items()}
    cpu_ratio = statistics.median(cpu["this"]) / statistics.median(cpu["other"]) if all(cpu.values()) else None

    def cpu_line(label: str, key: str) -> str:
        if not cpu[key]:
            return f"{label:<16} CPU per event: not measured"
        figures = "  ".join(f"{x:>8,.1f}" for x in cpu[key])
        return (f"{label:<16} {figures} us CPU per event   median {statistics.median(cpu[key]):,.1f}"
                f"   (broker {broker_us[key]:,.1f} us)")  # fmt: skip

    def line(label: str, rates: list[float], rss: list[float]) -> str:
        figures = "  ".join(f"{x:>8,.0f}" for x in rates)
        return (f"{label:<16} {figures} events/s   median {statistics.median(rates):,.0f}"
                f"   peak RSS {min(rss):,.0f}-{max(rss):,.0f} MB")  # fmt: skip

    report = "\n".join([
        f"events           {len(sim.records):,} (one topic; a fresh process per run, the trees alternating)",
        line("this tree", this, [x["rss_mb"] for x in runs["this"]]),
        line(commit, that, [x["rss_mb"] for x in runs["other"]]),
        f"this / {commit:<9} {ratio:.3f} (median over median)",
        cpu_line("this tree", "this"),
        cpu_line(commit, "other"),
        f"this / {commit:<9} {cpu_ratio:.3f} CPU per event (median over median; below 1 is less work)"
        if cpu_ratio else f"this / {commit:<9} CPU per event: n/a",
        f"machine          {os.cpu_count()} cores, Python {sys.version.split()[0]}",
    ])  # fmt: skip
    return {
        "events": len(sim.records), "against": commit, "rounds": rounds,
        "this_events_per_s": [round(x) for x in this], "other_events_per_s": [round(x) for x in that],
        "this_peak_rss_mb": [round(x["rss_mb"]) for x in runs["this"]],
        "other_peak_rss_mb": [round(x["rss_mb"]) for x in runs["other"]],
        "ratio": round(ratio, 3), "report": report,
        "this_cpu_us_per_event": [round(x, 1) for x in cpu["this"]],
        "other_cpu_us_per_event": [round(x, 1) for x in cpu["other"]],
        "cpu_ratio": cpu_ratio and round(cpu_ratio, 3),
    }  # fmt: skip
