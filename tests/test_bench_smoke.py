"""The benchmarks still measure what they print (they are not timed tests: only that every figure is there).

A benchmark that silently prints ``None`` hides a regression (the latency hook once stopped firing when the agent
began running two batches in flight); this runs the latency benchmark briefly and checks its figures exist.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from stream.bench import cpu_seconds

from .conftest import REPO


def test_latency_benchmark_reports_every_figure(tmp_path):
    env = {**os.environ, "CXSTREAM_DATA_DIR": str(tmp_path / "data"), "CXSTREAM_TOPOLOGY": str(REPO / "topology.yaml")}
    out = subprocess.run(
        [sys.executable, "-m", "stream.cli", "bench", "alerts", "--rate", "400", "--duration", "6", "--json"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=240,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout)
    assert result["sent"] > 2000 and result["handled"] == result["sent"]
    assert result["batches"] > 2
    for figures in (result["indicator_latency_ms"], result["alert_latency_ms"]):
        assert isinstance(figures["p50"], int) and isinstance(figures["p99"], int), result
        assert 0 <= figures["p50"] <= figures["p99"]
    assert result["alerts"] > 0
    # the worker's own CPU (the events come from a publisher process): some, and not absurd for a few thousand events
    assert 10 < result["worker_cpu_us_per_event"] < 100_000, result["worker_cpu_us_per_event"]
    assert "worker CPU" in result["report"]
    # where a batch's time goes: every stage measured, once per batch for validation and derivation
    stages = result["stages"]
    assert set(stages) == {"validate", "derive", "store_raw", "store_derived", "publish", "commit"}
    assert stages["validate"]["batches"] == stages["derive"]["batches"] >= result["batches"]
    assert all(s["batches"] > 0 and s["mean_ms"] > 0 for s in stages.values()), stages
    assert "stages, mean per batch" in result["report"]


def test_compare_runs_this_tree_and_a_commit_over_one_topic(tmp_path):
    head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()  # fmt: skip
    env = {**os.environ, "CXSTREAM_DATA_DIR": str(tmp_path / "data")}
    out = subprocess.run(
        [sys.executable, "-m", "stream.cli", "bench", "compare", "--against", "HEAD", "--events", "3000", "--rounds", "1",
         "--json"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout)
    assert result["against"] == head and result["events"] > 2900
    for key in ("this_events_per_s", "other_events_per_s", "this_peak_rss_mb", "other_peak_rss_mb"):
        assert len(result[key]) == 1 and result[key][0] > 0, result
    assert result["ratio"] > 0 and f"this / {head}" in result["report"]
    for key in ("this_cpu_us_per_event", "other_cpu_us_per_event"):  # timed in the run's own process
        assert len(result[key]) == 1 and result[key][0] > 0, result
    assert result["cpu_ratio"] > 0 and "CPU per event" in result["report"]
    worktrees = subprocess.run(["git", "-C", str(REPO), "worktree", "list"], capture_output=True, text=True).stdout
    assert "cxstream-compare-" not in worktrees  # the temporary checkout is gone


def test_compare_names_a_commit_it_cannot_find(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "stream.cli", "bench", "compare", "--against", "no-such-commit-xyz", "--events", "100"],
        capture_output=True, text=True, cwd=tmp_path, timeout=60,
    )  # fmt: skip
    assert out.returncode == 2
    assert "no-such-commit-xyz" in out.stderr and "Traceback" not in out.stderr


def test_cpu_seconds_counts_another_process_and_this_one():
    spin = "import time\nend = time.process_time() + 0.4\nwhile time.process_time() < end: pass\ninput()"
    child = subprocess.Popen([sys.executable, "-c", spin], stdin=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 20
        while cpu_seconds(child.pid) < 0.35 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert 0.35 <= cpu_seconds(child.pid) < 5
    finally:
        child.kill()
        child.wait()
    assert cpu_seconds(child.pid) == 0.0  # gone: no figure, not an error
    before = cpu_seconds()
    end = time.process_time() + 0.2
    while time.process_time() < end:
        pass
    assert cpu_seconds() - before >= 0.15
