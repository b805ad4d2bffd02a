"""The benchmarks still measure what they print (they are not timed tests: only that every figure is there).

A benchmark that silently prints ``None`` hides a regression (the latency hook once stopped firing when the agent
began running two batches in flight); this runs the latency benchmark briefly and checks its figures exist.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

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
    # where a batch's time goes: every stage measured, once per batch for validation and derivation
    stages = result["stages"]
    assert set(stages) == {"validate", "derive", "store_raw", "store_derived", "publish", "commit"}
    assert stages["validate"]["batches"] == stages["derive"]["batches"] >= result["batches"]
    assert all(s["batches"] > 0 and s["mean_ms"] > 0 for s in stages.values()), stages
    assert "stages, mean per batch" in result["report"]
