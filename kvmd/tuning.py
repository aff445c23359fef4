"""Runtime tuning of a running VM: display tickets, balloon target, removable media.

- `vm.set_ticket`: a one-time display password (VNC or SPICE) with an expiry, via QMP
  `set_password` + `expire_password`, as oVirt's engine hands out console tickets. A
  VNC display takes passwords only if it was started with password authentication, i.e.
  the spec's graphics entry has a `password` (it may be expired right away).
- `vm.set_balloon`: the balloon target (QMP `balloon`); the guest's driver moves towards
  it, `vm.stats` shows where it is (`memory.actual`).
- `vm.change_media`: insert or eject a CD-ROM's medium, the -blockdev way (open the tray,
  remove the medium, delete/add the `file-NAME`/`fmt-NAME` nodes, insert, close the
  tray), so node names stay those of `kvmd.qemu.cmdline`. The live spec follows what is
  really inserted and is persisted (`VM.changed`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
import weakref
from typing import Any

from kvmd.errors import InvalidParams, KvmdError, NoSuchDevice, NotSupported, QemuFailure
from kvmd.manager import Manager
from kvmd.qemu import cmdline
from kvmd.spec.model import Disk, VMSpec
from kvmd.units import format_size, parse_size
from kvmd.vm import VM

PROTOCOLS = ("vnc", "spice")

_media_locks: weakref.WeakKeyDictionary[VM, asyncio.Lock] = weakref.WeakKeyDictionary()


def _spec(vm: VM) -> VMSpec:
    return vm.live_spec or vm.spec


# -- display tickets -----------------------------------------------------------------

def expire_time(expires_s: float | None) -> str:
    """QMP expire_password time: 'never', 'now' or '+N' (seconds from now)."""
    if expires_s is None:
        return "never"
    if expires_s <= 0:
        return "now"
    return f"+{max(1, round(expires_s))}"


async def set_ticket(vm: VM, password: str, expires_s: float | None = None,
                     protocol: str | None = None) -> dict[str, Any]:
    displays = [g.type for g in _spec(vm).graphics]
    if protocol is not None and protocol not in PROTOCOLS:
        raise InvalidParams(f"protocol must be one of {', '.join(PROTOCOLS)}, not {protocol!r}",
                            {"param": "protocol"})
    if protocol is None:
        if not displays:
            raise NotSupported(f"VM {vm.name!r} has no graphics display to set a ticket on",
                               {"name": vm.name})
        protocol = displays[0]
    elif protocol not in displays:
        raise NotSupported(f"VM {vm.name!r} has no {protocol} display", {"name": vm.name, "protocol": protocol})
    try:
        await vm.qmp("set_password", {"protocol": protocol, "password": password})
    except QemuFailure as e:
        if protocol == "vnc":
            raise NotSupported(
                f"VM {vm.name!r}: its VNC display does not take passwords ({e.message}); it was started "
                "without password authentication: give its graphics entry a password in the spec",
                {"name": vm.name, "protocol": protocol}) from None
        raise
    when = expire_time(expires_s)
    await vm.qmp("expire_password", {"protocol": protocol, "time": when})
    expires_at = None if when == "never" else time.time() + (0 if when == "now" else int(when[1:]))
    return {"name": vm.name, "protocol": protocol, "expires": when, "expiresAt": expires_at}


# -- balloon ---------------------------------------------------------------------------

async def set_balloon(vm: VM, size: str | int) -> dict[str, Any]:
    spec = _spec(vm)
    try:
        target = parse_size(size)
    except ValueError as e:
        raise InvalidParams(f"size: {e}", {"param": "size"}) from None
    if not spec.memory.balloon:
        raise NotSupported(f"VM {vm.name!r} has no balloon device (spec memory.balloon: false)",
                           {"name": vm.name})
    if target <= 0:
        raise InvalidParams("size must be more than 0", {"param": "size"})
    if target > spec.memory.size:
        raise InvalidParams(f"size {format_size(target)} is more than the VM's memory "
                            f"({format_size(spec.memory.size)})", {"param": "size"})
    await vm.qmp("balloon", {"value": target})
    return {"name": vm.name, "target": target}


# -- removable media ---------------------------------------------------------------------

def _cdrom(vm: VM, name: str) -> Disk:
    for disk in _spec(vm).disks:
        if disk.name == name:
            if disk.media != "cdrom":
                raise InvalidParams(f"disk {name!r} of {vm.name!r} is not a cdrom: its medium cannot change",
                                    {"param": "disk"})
            return disk
    raise NoSuchDevice(f"VM {vm.name!r} has no disk named {name!r}", {"vm": vm.name, "device": name})


async def _eject(vm: VM, disk: Disk) -> None:
    dev = cmdline.device_id(disk)
    await vm.qmp("blockdev-open-tray", {"id": dev, "force": True})
    await vm.qmp("blockdev-remove-medium", {"id": dev})
    for node in reversed(cmdline.blockdev_args(disk)):
        try:
            await vm.qmp("blockdev-del", {"node-name": node["node-name"]})
        except QemuFailure:  # already gone (e.g. attached by an earlier kvmd differently)
            pass


async def _insert(vm: VM, disk: Disk) -> None:
    dev = cmdline.device_id(disk)
    nodes = cmdline.blockdev_args(disk)
    added = []
    try:
        for node in nodes:
            await vm.qmp("blockdev-add", node)
            added.append(node["node-name"])
        await vm.qmp("blockdev-open-tray", {"id": dev, "force": True})
        await vm.qmp("blockdev-insert-medium", {"id": dev, "node-name": nodes[-1]["node-name"]})
    except KvmdError:
        for name in reversed(added):
            try:
                await vm.qmp("blockdev-del", {"node-name": name})
            except KvmdError:
                pass
        raise


async def _medium(vm: VM, disk: Disk) -> dict[str, Any]:
    """What QEMU reports for the device now: {file, tray_open} (file null when empty)."""
    dev = cmdline.device_id(disk)
    for entry in await vm.qmp("query-block"):
        qdev = entry.get("qdev", "")
        if qdev == dev or qdev.startswith(f"/machine/peripheral/{dev}/") or qdev == f"/machine/peripheral/{dev}":
            inserted = entry.get("inserted") or {}
            return {"file": inserted.get("file"), "tray_open": entry.get("tray_open")}
    return {"file": None, "tray_open": None}


async def change_media(vm: VM, disk_name: str, path: str | None = None,
                       format: str | None = None) -> dict[str, Any]:
    """Eject the medium of cdrom `disk_name` and, if `path` is given, insert that image."""
    if format is not None and format not in ("raw", "qcow2"):
        raise InvalidParams(f"format must be raw or qcow2, not {format!r}", {"param": "format"})
    lock = _media_locks.setdefault(vm, asyncio.Lock())
    async with lock:
        disk = _cdrom(vm, disk_name)
        dev = cmdline.device_id(disk)
        try:
            if disk.path:
                await _eject(vm, disk)
                _record(vm, disk_name, None, disk.format)
            if path:
                new = dataclasses.replace(disk, path=path, format=format or disk.format)
                await _insert(vm, new)
                _record(vm, disk_name, path, new.format)
        finally:
            with contextlib.suppress(KvmdError):  # the guest sees a closed (maybe empty) drive
                await vm.qmp("blockdev-close-tray", {"id": dev})
        medium = await _medium(vm, disk)
    return {"name": vm.name, "disk": disk_name, "path": path or None, **medium}


def _record(vm: VM, disk_name: str, path: str | None, fmt: str) -> None:
    """Make the live spec say what is inserted now, and persist it."""
    spec = _spec(vm)
    spec.disks = [dataclasses.replace(d, path=path, format=fmt) if d.name == disk_name else d
                  for d in spec.disks]
    vm.changed()


def api_methods(m: Manager) -> dict[str, Any]:
    async def set_ticket_(name: str, password: str, expires_s: float | None = None,
                          protocol: str | None = None) -> dict:
        return await set_ticket(m.get(name), password, expires_s, protocol)

    async def set_balloon_(name: str, size: str | int) -> dict:
        return await set_balloon(m.get(name), size)

    async def change_media_(name: str, disk: str, path: str | None = None,
                            format: str | None = None) -> dict:
        return await change_media(m.get(name), disk, path, format)

    return {"vm.set_ticket": set_ticket_, "vm.set_balloon": set_balloon_,
            "vm.change_media": change_media_}
