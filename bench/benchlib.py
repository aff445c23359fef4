"""What the benchmarks share: measuring how busy the host is, and waiting for it to
settle before timing (this machine is shared and noisy; ratios are measured in one run,
but a burst of someone else's CPU load should not land inside a timed section)."""

from __future__ import annotations

import os
import time


def host_busy(interval: float = 1.0) -> float:
    """Fraction of the host's CPU time spent busy over `interval` seconds (/proc/stat)."""
    def sample() -> tuple[int, int]:
        with open("/proc/stat") as f:
            vals = [int(v) for v in f.readline().split()[1:]]
        idle = vals[3] + vals[4]
        return sum(vals) - idle, sum(vals)
    b0, t0 = sample()
    time.sleep(interval)
    b1, t1 = sample()
    return (b1 - b0) / max(1, t1 - t0)


def settle(limit: float = 60.0, busy_below: float = 0.5, interval: float = 1.0) -> str:
    """Wait (at most `limit` s) until the CPU is mostly idle; say how it went."""
    started = time.monotonic()
    busy = 1.0
    while time.monotonic() - started < limit:
        busy = host_busy(interval)
        if busy < busy_below:
            break
    return (f"host {busy:.0%} busy after {time.monotonic() - started:.1f}s of settling, "
            f"loadavg {os.getloadavg()[0]:.2f}")
