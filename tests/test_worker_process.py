"""`cxstream run` as a real child process: SIGKILL mid-stream, and `cxstream demo` end to end."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time

import pytest

from stream.runtime.worker import WorkerProcess, committed_total
from stream.simulate import generate
from stream.simulate.publish import publish

from .conftest import REPO, SIM_START

pytestmark = pytest.mark.integration


def cxstream(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "stream", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
    )


def _wait_committed(broker, topology, expected: int, timeout_s: float = 120) -> int:
    deadline = time.monotonic() + timeout_s
    while True:
        done = asyncio.run(committed_total(broker.bootstrap, topology))
        if done >= expected or time.monotonic() > deadline:
            return done
        time.sleep(0.3)


def test_sigkill_mid_stream_loses_nothing_and_duplicates_nothing(broker, topology, topics, worker_env, tmp_path):
    events = 30_000
    sim = generate(events, seed=11, start=SIM_START)
    worker = WorkerProcess(worker_env, log_file=tmp_path / "worker-1.log").start()
    worker.wait_ready()

    # Publish at a steady rate in the background and kill the worker while it is busy.
    feed = threading.Thread(
        target=lambda: asyncio.run(publish(sim.records, bootstrap_servers=broker.bootstrap, topic_names=topics, rate=6000))
    )
    feed.start()
    time.sleep(2.5)
    worker.kill()
    at_kill = asyncio.run(committed_total(broker.bootstrap, topology))
    feed.join()
    assert 0 < at_kill < events, f"the kill must land mid-stream (committed {at_kill} of {events})"

    restarted = WorkerProcess(worker_env, log_file=tmp_path / "worker-2.log").start()
    try:
        restarted.wait_ready()
        assert _wait_committed(broker, topology, events) == events
    finally:
        assert restarted.stop() == 0

    summary = sim.summary()
    tickets = sum(1 for r in sim.records if r.kind == "valid" and r.stream == "ticket_events")
    out = cxstream(
        "query",
        "SELECT (SELECT count() FROM cxstream.ticket_events FINAL) t, (SELECT uniqExact(event_id) FROM cxstream.ticket_events) tu,"
        " (SELECT count() FROM cxstream.satisfaction_events FINAL) s, (SELECT uniqExact(event_id) FROM cxstream.satisfaction_events) su,"
        " (SELECT count() FROM cxstream.dead_letters FINAL) d",
        "--json",
        env=_base_env() | worker_env,
    )
    assert out.returncode == 0, out.stderr
    row = json.loads(out.stdout)[0]
    assert row == {"t": tickets, "tu": tickets, "s": summary["valid"] - tickets, "su": summary["valid"] - tickets,
                   "d": summary["malformed"]}  # fmt: skip

    # The factor model learned every satisfaction event exactly once across the kill (stored events
    # relearned from ClickHouse at the restart, redelivered ones recognised).
    out = cxstream("explain", "*", "--json", "--direct", env=_base_env() | worker_env)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["model"]["n"] == summary["valid"] - tickets


def test_demo_accounts_for_every_event(tmp_path):
    demo_dir = tmp_path / "demo"
    out = cxstream("demo", "--events", "6000", "--seed", "3", "--json", "--demo-dir", str(demo_dir), env=_base_env())
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout)
    assert result["produced"] == 6000
    assert result["ingested"] + result["rejected"] + result["deduplicated"] == result["produced"]
    assert result["rejected"] == result["simulated"]["malformed"] > 0
    assert result["deduplicated"] == result["simulated"]["resent"] > 0
    rows = result["rows"]
    assert rows["ticket_events"] + rows["satisfaction_events"] == result["ingested"]
    assert rows["dead_letters"] == result["rejected"]

    # The raw tables hold exactly the ingested events, as `cxstream query` sees them.
    q = cxstream(
        "query", "--data-dir", str(demo_dir),
        "SELECT (SELECT uniqExact(event_id) FROM cxstream.ticket_events) + (SELECT uniqExact(event_id) FROM cxstream.satisfaction_events) n",
        "--json", env=_base_env(),
    )  # fmt: skip
    assert q.returncode == 0, q.stderr
    assert json.loads(q.stdout) == [{"n": result["ingested"]}]

    # ... and `cxstream trace` shows a simulated ticket's journey in time order, with its follow-up.
    ticket = result["example_ticket"]
    t = cxstream("trace", "--data-dir", str(demo_dir), ticket, "--json", env=_base_env())
    assert t.returncode == 0, t.stderr
    doc = json.loads(t.stdout)
    journey = doc["journey"]
    assert journey[0]["step"] == "created" and [s["event_time"] for s in journey] == sorted(s["event_time"] for s in journey)
    assert doc["followups"] and doc["ticket"]["followup_event_id"] == doc["followups"][-1]["event_id"]
    text = cxstream("trace", "--data-dir", str(demo_dir), ticket, env=_base_env())
    assert f"Ticket {ticket}" in text.stdout and "follow-up" in text.stdout and "resolution:" in text.stdout

    # `cxstream quality` counts exactly the defects and resends the simulator planted, per source system.
    from collections import Counter, defaultdict

    from .conftest import DEFECT_REASON

    q = cxstream("quality", "--data-dir", str(demo_dir), "--window", "30d", "--json", env=_base_env())
    assert q.returncode == 0, q.stderr
    got_rejects: dict[str, Counter] = defaultdict(Counter)
    got_dups: Counter = Counter()
    for row in json.loads(q.stdout):
        source = "" if row["source_system"] == "(unattributed)" else row["source_system"]
        got_rejects[source].update(row["rejected_by_reason"])
        got_dups[source] += row["duplicates"]["duplicates"]
    planted = result["plants"]["data_quality"]
    want_rejects: dict[str, Counter] = defaultdict(Counter)
    for source, defects in planted["defects_by_source"].items():
        for defect, n in defects.items():
            want_rejects["" if defect == "not_json" else source][DEFECT_REASON[defect]] += n
    assert {s: dict(c) for s, c in got_rejects.items() if c} == {s: dict(c) for s, c in want_rejects.items()}
    assert {s: n for s, n in got_dups.items() if n} == planted["resends_by_source"]


def _base_env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith("CXSTREAM_")}
