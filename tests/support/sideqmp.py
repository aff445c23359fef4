"""A second QMP monitor on a test VM, to check what QEMU really has, behind kvmd's back.

kvmd owns the VM's main QMP socket (one client at a time). A test that wants to see
QEMU's own view (query-block, query-vnc, query-cpus-fast...) adds a second monitor to
the spec with `qemuArgs: side_qmp_args(path)` and talks to it with `SideQMP(path)`.
"""

from __future__ import annotations

import time
from typing import Any

from qemu.qmp.legacy import QEMUMonitorProtocol


def side_qmp_args(path: str) -> list[str]:
    return ["-qmp", f"unix:{path},server=on,wait=off"]


class SideQMP:
    def __init__(self, path: str, timeout: float = 10.0):
        deadline = time.monotonic() + timeout
        while True:
            self.qmp = QEMUMonitorProtocol(path)
            try:
                self.qmp.connect(negotiate=True)
                break
            except Exception:
                self.qmp.close()
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        self.qmp.settimeout(timeout)

    def cmd(self, name: str, **args: Any) -> Any:
        return self.qmp.cmd(name, **args)

    def close(self) -> None:
        self.qmp.close()
