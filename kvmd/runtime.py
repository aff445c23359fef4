"""The runtime record of a running VM: what a restarted kvmd needs to find it again.

One JSON file per running VM in the run dir, written atomically when QEMU is launched
and removed when it ends. Versioned (`version: 1`). It holds the pid with its /proc
start time (so a reused pid is never adopted), the QMP socket, the full QEMU argv, the
running spec (which may differ from the persistent definition, or be the only copy for
a transient VM) and its revision, and the VM's cgroups (removed when QEMU is gone).

`ended_while_away` says what is known of a QEMU that ended while no kvmd watched it:
there is no exit status then, only what QEMU wrote to its log in that run.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from kvmd import store
from kvmd.qemu.process import log_tail
from kvmd.states import State

VERSION = 1


@dataclass
class RuntimeRecord:
    name: str
    uuid: str
    pid: int
    start_time: int | None
    qmp: str
    argv: list[str]
    spec: dict[str, Any]
    persistent: bool
    started_at: float = field(default_factory=time.time)
    spec_revision: str = ""
    version: int = VERSION
    cgroups: list[str] = field(default_factory=list)
    # a start not yet complete: pid 0 = QEMU not spawned (or its pid not yet known);
    # a restarted kvmd ends such a QEMU unless it already runs the guest
    starting: bool = False
    # an operation under way that a restarted kvmd must finish or undo:
    # {"op": "plug", "kind": "disks"|"nics", "device": {...}} (kvmd.hotplug)
    pending: dict[str, Any] | None = None
    # a live migration of this VM: {"direction": "out", "dest", "keepSource", "wasRunning"}
    # on the source, {"direction": "in"} on the destination until the guest runs there
    migration: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if not self.spec_revision:
            blob = json.dumps(self.spec, sort_keys=True).encode()
            self.spec_revision = hashlib.sha256(blob).hexdigest()[:16]


def path_for(run_dir: str, name: str) -> str:
    return os.path.join(run_dir, f"{name}.json")


def save(run_dir: str, record: RuntimeRecord) -> None:
    store.write_json(path_for(run_dir, record.name), asdict(record), durable=False)


def remove(run_dir: str, name: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path_for(run_dir, name))


def load_all(run_dir: str) -> list[RuntimeRecord]:
    out = []
    for entry in sorted(os.listdir(run_dir)):
        if not entry.endswith(".json") or entry.startswith("."):
            continue
        try:
            data = store.read_json(os.path.join(run_dir, entry))
            if data.get("version") != VERSION:
                continue
            out.append(RuntimeRecord(**data))
        except (OSError, ValueError, TypeError):
            continue
    return out


_SIGNALLED = re.compile(r"terminating on signal (\d+)(?: from pid (\d+))?(?: \(([^)]*)\))?")
_CRASH = re.compile(r"(?i)assert|abort|segmentation fault|core dumped|fatal|panic|killed")


def ended_while_away(record: RuntimeRecord, log_path: str) -> tuple[State, str]:
    """(state, reason) of a VM whose QEMU ended while kvmd was not running."""
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.started_at))
    base = f"QEMU ended while kvmd was not running (pid {record.pid}, started {since})"
    tail = log_tail(log_path, 4)
    m = _SIGNALLED.search(tail)
    if m:
        signum, pid, comm = m.groups()
        who = f" from pid {pid}" + (f" ({comm})" if comm else "") if pid else ""
        return State.STOPPED, f"{base}: terminated by signal {signum}{who}"
    if tail and _CRASH.search(tail):
        return State.CRASHED, f"{base}; last QEMU output: {tail}"
    if tail:
        return State.STOPPED, f"{base}; exit status unknown; last QEMU output: {tail}"
    return State.STOPPED, f"{base}; exit status unknown, QEMU logged nothing"
