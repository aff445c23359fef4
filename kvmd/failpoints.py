"""Crash points for fault tests: stop kvmd dead at a chosen step, as a power cut would.

`KVMD_FAILPOINTS=start.spawned,hotplug.device-added` (read once, at import) makes kvmd
SIGKILL itself when it reaches one of the named points, so a test can check that a
restarted kvmd recovers from every window between two steps of an operation (QEMU
spawned but not yet recorded, a device added but not yet in the spec...). Unset in
production: `hit` is then one set lookup.
"""

from __future__ import annotations

import os
import signal

ACTIVE = frozenset(p for p in os.environ.get("KVMD_FAILPOINTS", "").split(",") if p)


def hit(name: str) -> None:
    if name in ACTIVE:
        os.kill(os.getpid(), signal.SIGKILL)
