"""Find and kill processes a test started, by a marker string in their command line.

QEMU outlives kvmd by design, so killing the daemon does not clean up its guests: the
fixtures kill every process whose argv mentions the test's private directory.
"""

from __future__ import annotations

import os
import signal
import time


def pids_mentioning(marker: str) -> list[int]:
    out = []
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                if marker.encode() in f.read():
                    out.append(int(entry))
        except OSError:
            continue
    return out


def kill_all(pids: list[int], timeout: float = 5.0) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + timeout
    for pid in pids:
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            try:  # reap if it is our child
                if os.waitpid(pid, os.WNOHANG)[0]:
                    break
            except ChildProcessError:
                # an orphan's zombie waits for pid 1 to reap it (here ~1-2 s): it is dead
                # already, holds no socket, file or cgroup
                if not alive(pid):
                    break
            time.sleep(0.02)


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1][0] != "Z"
    except OSError:
        return False
