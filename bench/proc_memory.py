"""Resident memory of this process, for the benchmarks (stdlib only: the upstream scripts
import it from upstream's own virtual environment too)."""

from __future__ import annotations

import os
import sys


def rss_mb() -> float:
    """Current resident set size, MB."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:  # not Linux: the peak is the best available figure
        return peak_rss_mb()


def peak_rss_mb() -> float:
    """Peak resident memory, MB: VmHWM on Linux (per address space, so it starts afresh at
    exec, whereas a child's ru_maxrss includes its forking parent's peak)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (2**20 if sys.platform == "darwin" else 1024)
