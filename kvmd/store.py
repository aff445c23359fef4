"""Durable files: atomic writes, and the VM definitions kept under the state dir.

Every write is temp file + fsync + rename + directory fsync, so a crash (or a full
disk) leaves either the old file or the new one, never a torn one. A write that fails
(ENOSPC, EROFS...) raises StorageFailure with the path and the reason, and the old
file is untouched.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from typing import Any

from kvmd.errors import SpecError, StorageFailure
from kvmd.spec import VMSpec, dumps, loads


def atomic_write(path: str, data: bytes, mode: int = 0o600, durable: bool = True) -> None:
    """Replace `path` with `data` atomically; `durable` also fsyncs file and directory.

    Records under the run dir (tmpfs, gone with the OS, whose loss kills QEMU anyway)
    skip the fsyncs: the rename alone protects them against a kvmd crash.
    """
    directory = os.path.dirname(path) or "."
    fd, tmp = -1, ""
    try:
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=directory)
        os.fchmod(fd, mode)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        if durable:
            os.fsync(fd)
        os.close(fd)
        fd = -1
        os.rename(tmp, path)
        tmp = ""
        if not durable:
            return
        dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError as e:
        reason = "no space left on device" if e.errno == errno.ENOSPC else (e.strerror or str(e))
        raise StorageFailure(f"cannot write {path}: {reason}", {"path": path, "errno": e.errno}) from None
    finally:
        if fd >= 0:
            os.close(fd)
        if tmp:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def write_json(path: str, obj: Any, durable: bool = True) -> None:
    atomic_write(path, json.dumps(obj, indent=1, sort_keys=True).encode(), durable=durable)


def read_json(path: str) -> Any:
    with open(path, "rb") as f:
        return json.loads(f.read())


class DefinitionStore:
    """Persistent VM definitions: one YAML spec file per VM in `directory`."""

    def __init__(self, directory: str):
        self.directory = directory
        os.makedirs(directory, mode=0o700, exist_ok=True)

    def path(self, name: str) -> str:
        return os.path.join(self.directory, f"{name}.yaml")

    def save(self, spec: VMSpec) -> None:
        atomic_write(self.path(spec.name), dumps(spec).encode())

    def delete(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path(name))

    def load_all(self) -> tuple[list[VMSpec], list[tuple[str, str]]]:
        """All stored specs, and (file, reason) for each file that could not be read."""
        specs, bad = [], []
        for entry in sorted(os.listdir(self.directory)):
            if not entry.endswith(".yaml") or entry.startswith("."):
                continue
            path = os.path.join(self.directory, entry)
            try:
                with open(path, encoding="utf-8") as f:
                    specs.append(loads(f.read()))
            except (OSError, SpecError, UnicodeDecodeError) as e:
                bad.append((path, str(e)))
        return specs, bad
