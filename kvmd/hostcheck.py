"""Checks of a spec against this host, run when a VM starts (never when parsing).

Problems use the same field-path style as spec validation (`disks[0].path: no such
file: /img/a.qcow2`) and are all reported at once.
"""

from __future__ import annotations

import os

from kvmd.errors import SpecError
from kvmd.spec.model import VMSpec

UNIX_PATH_MAX = 107


def check(spec: VMSpec, sockets: list[str], ovmf_code: str | None = None) -> None:
    problems: list[tuple[str, str]] = []

    def need_file(path_field: str, path: str | None, writable: bool = False) -> None:
        if not path:
            return
        if not os.path.exists(path):
            problems.append((path_field, f"no such file: {path}"))
        elif not os.access(path, os.R_OK | (os.W_OK if writable else 0)):
            problems.append((path_field, f"not {'writable' if writable else 'readable'}: {path}"))

    for i, disk in enumerate(spec.disks):
        need_file(f"disks[{i}].path", disk.path, writable=not disk.readonly)
    need_file("boot.kernel", spec.boot.kernel)
    need_file("boot.initrd", spec.boot.initrd)
    if spec.boot.firmware == "uefi" and ovmf_code:
        need_file("boot.firmware", ovmf_code)
    for i, nic in enumerate(spec.nics):
        if nic.backend == "tap" and nic.bridge and not os.path.isdir(f"/sys/class/net/{nic.bridge}/bridge"):
            problems.append((f"nics[{i}].bridge", f"no bridge named {nic.bridge!r} on this host"))
        if nic.backend == "tap" and nic.tap and not nic.bridge and not os.path.exists(f"/sys/class/net/{nic.tap}"):
            problems.append((f"nics[{i}].tap", f"no network interface named {nic.tap!r}"))
    if spec.serial.type == "file" and spec.serial.path:
        parent = os.path.dirname(os.path.abspath(spec.serial.path))
        if not os.path.isdir(parent):
            problems.append(("serial.path", f"no such directory: {parent}"))
    for sock in sockets:
        if len(sock.encode()) > UNIX_PATH_MAX:
            problems.append(("name", f"socket path too long for this run dir ({len(sock)} > {UNIX_PATH_MAX} bytes): {sock}"))
            break
    if problems:
        raise SpecError(problems)
