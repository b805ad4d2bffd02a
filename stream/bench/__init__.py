"""Benchmarks: commands that print figures, each against a baseline in the same run."""

from __future__ import annotations

import os
import resource


def peak_rss_mb() -> float:
    """This process's peak resident set, in MB.

    ``VmHWM`` where Linux has it: it starts afresh at ``exec``, whereas ``ru_maxrss`` carries the parent's peak
    over into a child process (a worker started by a benchmark would report the benchmark's own peak).
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_seconds(pid: int | None = None) -> float:
    """CPU time so far (user + system, every thread) of this process, or of process ``pid``.

    The figure a CPU-bound pipeline is judged by on a shared machine: other processes slow a run's wall clock down,
    but hardly its CPU time per event. ``pid`` needs Linux's ``/proc``; 0.0 where it is not readable.
    """
    if pid is None:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime in clock ticks


def cpu_ceiling(us_per_event: float, cores: int | None = None) -> float:
    """Events/s that ``us_per_event`` of CPU allows on ``cores`` (this machine's), were they all busy.

    >>> round(cpu_ceiling(50.0, cores=2))
    40000
    """
    return (cores or os.cpu_count() or 1) * 1e6 / us_per_event


def stage_totals() -> dict[str, tuple[float, int]]:
    """(seconds, observations) so far of each ingest-batch stage in this process (``cxstream_stage_seconds``)."""
    from ..runtime.metrics import STAGE_SECONDS, STAGES

    out = {name: [0.0, 0] for name in STAGES}
    for metric in STAGE_SECONDS.collect():
        for sample in metric.samples:
            stage = sample.labels.get("stage")
            if stage in out and sample.name.endswith("_sum"):
                out[stage][0] = sample.value
            elif stage in out and sample.name.endswith("_count"):
                out[stage][1] = int(sample.value)
    return {name: (seconds, n) for name, (seconds, n) in out.items()}


def stage_breakdown(before: dict, after: dict, events: int) -> dict[str, dict]:
    """Per stage between two :func:`stage_totals`: batches, mean ms per batch and µs per event.

    >>> stage_breakdown({"derive": (1.0, 2)}, {"derive": (4.0, 5)}, 1000)
    {'derive': {'batches': 3, 'mean_ms': 1000.0, 'us_per_event': 3000.0}}
    """
    out = {}
    for name, (seconds, n) in after.items():
        s0, n0 = before.get(name, (0.0, 0))
        batches, spent = n - n0, seconds - s0
        out[name] = {
            "batches": batches,
            "mean_ms": round(spent / batches * 1000, 1) if batches else None,
            "us_per_event": round(spent / events * 1e6, 1) if events else None,
        }
    return out


def stage_lines(breakdown: dict[str, dict], unit: str) -> str:
    """One line of the stages: ``unit`` "event" (µs per event) or "batch" (mean ms per batch)."""
    key, suffix = ("us_per_event", "us") if unit == "event" else ("mean_ms", "ms")
    shown = {name.replace("_", " "): v[key] for name, v in breakdown.items() if v[key] is not None}
    return "   ".join(f"{name} {value:,.1f} {suffix}" for name, value in shown.items())
