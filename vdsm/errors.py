"""VDSM's error codes (the numbers the oVirt engine branches on) and their exception.

Only the codes this endpoint can produce; values and default messages are VDSM's.
"""

from __future__ import annotations

from typing import Any

NO_VM = 1
EXIST = 4
UNSUPPORTED_VM_TYPE = 5
VM_DOWN = 6
CANNOT_CREATE_VM = 9
MISSING_PARAM = 11
MIGRATION_ERROR = 12
IMAGE_FILE_NOT_FOUND = 13
UNEXPECTED = 16
TICKET_ERROR = 18
NON_RESPONSIVE_GUEST_AGENT = 19
DESTROY_FAILED = 42
NOT_IMPLEMENTED = 44
HOTPLUG_DISK = 45
HOTUNPLUG_DISK = 46
MIGRATE_CANCEL = 47
SNAPSHOT = 48
HOTPLUG_NIC = 49
HOTUNPLUG_NIC = 50
MIGRATION_IN_PROGRESS = 51
BALLOON = 53
UPDATE_DEVICE = 56
RECOVERY = 99

MESSAGES = {
    NO_VM: "Virtual machine does not exist",
    EXIST: "Virtual machine already exists",
    UNSUPPORTED_VM_TYPE: "Unsupported VM type",
    VM_DOWN: "Virtual machine is down",
    CANNOT_CREATE_VM: "Error creating the requested VM",
    MISSING_PARAM: "Missing required parameter",
    MIGRATION_ERROR: "Fatal error during migration",
    IMAGE_FILE_NOT_FOUND: "Image file not found",
    UNEXPECTED: "Unexpected exception",
    TICKET_ERROR: "Error setting VM ticket",
    NON_RESPONSIVE_GUEST_AGENT: "Guest agent non-responsive",
    DESTROY_FAILED: "Virtual machine destroy error",
    NOT_IMPLEMENTED: "Method not implemented",
    HOTPLUG_DISK: "Failed to hotplug disk",
    HOTUNPLUG_DISK: "Failed to hotunplug disk",
    MIGRATE_CANCEL: "Failed to cancel migration",
    SNAPSHOT: "Snapshot failed",
    HOTPLUG_NIC: "Failed to hotplug NIC",
    HOTUNPLUG_NIC: "Failed to hotunplug NIC",
    MIGRATION_IN_PROGRESS: "Command not supported during migration",
    BALLOON: "Failed to set balloon target",
    UPDATE_DEVICE: "Failed to update device",
    RECOVERY: "Recovering from crash or Initializing",
}


class VdsmError(Exception):
    """An error the engine sees as a JSON-RPC error `{code, message}`."""

    def __init__(self, code: int, detail: str = "", data: Any = None, message: str | None = None):
        base = MESSAGES.get(code, "Error")
        super().__init__(message or (f"{base}: {detail}" if detail else base))
        self.code = code
        self.message = str(self)
        self.data = data

    def to_json(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message}
