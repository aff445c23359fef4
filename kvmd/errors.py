"""kvmd's error hierarchy; every error maps to a stable JSON-RPC error code.

Codes are part of the public API (docs/api.md): clients branch on them, so they never
change meaning. JSON-RPC's own codes (-32700..-32600) are used for protocol errors.
"""

from __future__ import annotations

from typing import Any

# JSON-RPC 2.0 protocol codes
PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603

# kvmd application codes
NO_SUCH_VM = 1
ALREADY_EXISTS = 2
INVALID_SPEC = 3
WRONG_STATE = 4
QEMU_FAILURE = 5
TIMEOUT = 6
QUOTA_EXCEEDED = 7
PERMISSION_DENIED = 8
STORAGE_FAILURE = 9
NOT_SUPPORTED = 10
AGENT_UNRESPONSIVE = 11
NO_SUCH_DEVICE = 12
AGENT_ERROR = 13
MIGRATION_FAILED = 14


class KvmdError(Exception):
    """Base of every error kvmd reports to a client."""

    code = INTERNAL_ERROR

    def __init__(self, message: str, data: Any = None):
        super().__init__(message)
        self.message = message
        self.data = data

    def to_json(self) -> dict[str, Any]:
        err: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            err["data"] = self.data
        return err


class NoSuchVM(KvmdError):
    code = NO_SUCH_VM

    def __init__(self, name: str):
        super().__init__(f"no VM named {name!r}", {"name": name})


class AlreadyExists(KvmdError):
    code = ALREADY_EXISTS


class SpecError(KvmdError):
    """A spec (or host check of it) failed; `problems` holds every (path, reason)."""

    code = INVALID_SPEC

    def __init__(self, problems: list[tuple[str, str]]):
        self.problems = list(problems)
        lines = [f"{path}: {reason}" if path else reason for path, reason in self.problems]
        super().__init__(
            "invalid spec: " + "; ".join(lines),
            {"errors": [{"path": p, "reason": r} for p, r in self.problems]},
        )


class WrongState(KvmdError):
    code = WRONG_STATE


class QemuFailure(KvmdError):
    code = QEMU_FAILURE


class Timeout(KvmdError):
    code = TIMEOUT


class QuotaExceeded(KvmdError):
    code = QUOTA_EXCEEDED


class PermissionDenied(KvmdError):
    code = PERMISSION_DENIED


class StorageFailure(KvmdError):
    code = STORAGE_FAILURE


class NotSupported(KvmdError):
    code = NOT_SUPPORTED


class InvalidParams(KvmdError):
    code = INVALID_PARAMS


class MethodNotFound(KvmdError):
    code = METHOD_NOT_FOUND


class NoSuchDevice(KvmdError):
    code = NO_SUCH_DEVICE


class AgentUnresponsive(KvmdError):
    """The guest agent did not answer in time (not running, not installed, guest busy)."""

    code = AGENT_UNRESPONSIVE


class AgentError(KvmdError):
    """The guest agent answered, with an error (its own words are in the message)."""

    code = AGENT_ERROR


class MigrationFailed(KvmdError):
    """A migration failed or was cancelled, or the destination kvmd cannot be reached."""

    code = MIGRATION_FAILED
