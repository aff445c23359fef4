"""The runtime record of a running VM: what a restarted kvmd needs to find it again.

One JSON file per running VM in the run dir, written atomically when QEMU is launched
and removed when it ends. Versioned (`version: 1`). It holds the pid with its /proc
start time (so a reused pid is never adopted), the QMP socket, the full QEMU argv, the
running spec (which may differ from the persistent definition, or be the only copy for
a transient VM) and its revision.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from kvmd import store

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

    def __post_init__(self) -> None:
        if not self.spec_revision:
            blob = json.dumps(self.spec, sort_keys=True).encode()
            self.spec_revision = hashlib.sha256(blob).hexdigest()[:16]


def path_for(run_dir: str, name: str) -> str:
    return os.path.join(run_dir, f"{name}.json")


def save(run_dir: str, record: RuntimeRecord) -> None:
    store.write_json(path_for(run_dir, record.name), asdict(record))


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
