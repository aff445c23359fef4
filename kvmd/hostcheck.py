"""Checks of a spec against this host, run when a VM starts (never when parsing).

Problems use the same field-path style as spec validation (`disks[0].path: no such
file: /img/a.qcow2`) and are all reported at once. File checks on VM storage go through
the out-of-process worker (`kvmd.storage`), so a hung mount cannot block the daemon.
"""

from __future__ import annotations

import os

from kvmd import storage
from kvmd.errors import SpecError
from kvmd.spec.model import Disk, VMSpec

UNIX_PATH_MAX = 107


def disk_items(disk: Disk, field: str) -> list[tuple[str, str, bool]]:
    return [(field, disk.path, not disk.readonly)] if disk.path else []


async def check(spec: VMSpec, sockets: list[str], ovmf_code: str | None = None) -> None:
    problems: list[tuple[str, str]] = []
    items: list[tuple[str, str, bool]] = []
    for i, disk in enumerate(spec.disks):
        items += disk_items(disk, f"disks[{i}].path")
    for key in ("kernel", "initrd"):
        path = getattr(spec.boot, key)
        if path:
            items.append((f"boot.{key}", path, False))
    if spec.boot.firmware == "uefi" and ovmf_code:
        items.append(("boot.firmware", ovmf_code, False))
    problems += await storage.check_paths(items)
    problems += local_problems(spec, sockets)
    if problems:
        raise SpecError(problems)


def local_problems(spec: VMSpec, sockets: list[str]) -> list[tuple[str, str]]:
    """Checks that touch only local, kernel-backed state (sysfs, path lengths)."""
    problems: list[tuple[str, str]] = []
    for i, nic in enumerate(spec.nics):
        if nic.backend == "tap" and nic.bridge and not os.path.isdir(f"/sys/class/net/{nic.bridge}/bridge"):
            problems.append((f"nics[{i}].bridge", f"no bridge named {nic.bridge!r} on this host"))
    if spec.serial.type == "file" and spec.serial.path:
        parent = os.path.dirname(os.path.abspath(spec.serial.path))
        if not os.path.isdir(parent):
            problems.append(("serial.path", f"no such directory: {parent}"))
    for sock in sockets:
        if len(sock.encode()) > UNIX_PATH_MAX:
            problems.append(("name", f"socket path too long for this run dir ({len(sock)} > {UNIX_PATH_MAX} bytes): {sock}"))
            break
    return problems
