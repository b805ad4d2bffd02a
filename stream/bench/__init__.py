"""Benchmarks: commands that print figures, each against a baseline in the same run."""

from __future__ import annotations

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
