"""What the endpoint remembers of each VM: status as the engine sees it, exit info.

VDSM keeps a VM that went Down in its list (with exitCode, exitMessage, exitReason)
until the engine acknowledges it with `VM.destroy`; so does this endpoint.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from vdsm.virt import status as st


@dataclass
class VmRecord:
    vm_id: str
    name: str
    backend: str
    status: str = st.WAIT_FOR_LAUNCH
    status_time: int = field(default_factory=lambda: int(time.monotonic() * 1000))
    started: float = field(default_factory=time.time)
    exit_code: int | None = None
    exit_message: str = ""
    exit_reason: int | None = None
    custom: dict[str, str] = field(default_factory=dict)
    xml: str = ""
    shutdown_requested: bool = False
    destroy_requested: bool = False
    migrating: bool = False           # the source of an outgoing migration
    incoming: bool = False            # the destination of a migration, until the guest runs here
    wake: Any = None                  # asyncio.Event set on the backend's events of an incoming VM
    migration_progress: int = 0
    device_hash: int = 0

    def set_status(self, status: str) -> bool:
        if status == self.status:
            return False
        self.status = status
        self.status_time = int(time.monotonic() * 1000)
        return True

    def set_down(self, code: int, reason: int, message: str = "") -> None:
        self.exit_code = code
        self.exit_reason = reason
        self.exit_message = message or st.EXIT_MESSAGES.get(reason, "")
        self.set_status(st.DOWN)

    def short(self) -> dict[str, Any]:
        return {"vmId": self.vm_id, "status": self.status, "statusTime": self.status_time}

    def status_event(self) -> dict[str, Any]:
        out: dict[str, Any] = {"status": self.status, "statusTime": self.status_time}
        if self.status == st.DOWN:
            out.update(exitCode=self.exit_code, exitMessage=self.exit_message, exitReason=self.exit_reason)
        elif self.status in (st.UP, st.POWERING_UP):
            out["elapsedTime"] = str(int(time.time() - self.started))
        return out

    def exited_stats(self) -> dict[str, Any]:
        return {"vmId": self.vm_id, "status": st.DOWN, "exitCode": self.exit_code,
                "exitMessage": self.exit_message, "exitReason": self.exit_reason,
                "timeOffset": "0", "statusTime": self.status_time}
