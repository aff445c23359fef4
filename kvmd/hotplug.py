"""Hot-plug and unplug of disks and NICs on a running VM.

Plug: validate the device exactly as the spec parser would (errors by field path),
check the host side (image file, bridge), then `blockdev-add` (or `netdev_add`, with a
tap fd passed over QMP via `getfd`) and `device_add` into a free PCIe root port; on any
failure the backend nodes are removed again. Unplug: `device_del`, then wait for QEMU's
`DEVICE_DELETED` (the guest must acknowledge) up to a timeout, then `blockdev-del` /
`netdev_del`. A timed-out unplug is reported as such and the device stays recorded; if
the guest acknowledges later, the removal completes then. The running spec and, for a
persistent VM, its stored definition always follow what is really attached.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import os
from typing import TYPE_CHECKING, Any

from kvmd import failpoints, hostcheck, netdev, runtime, storage
from kvmd.errors import KvmdError, NoSuchDevice, NotSupported, SpecError, Timeout
from kvmd.qemu import cmdline, pci
from kvmd.spec import from_dict, to_dict
from kvmd.spec.model import Disk, Nic, VMSpec

if TYPE_CHECKING:
    from kvmd.manager import Manager
    from kvmd.vm import VM

log = logging.getLogger(__name__)

DEFAULT_UNPLUG_TIMEOUT = 10.0


def ports(vm: VM) -> int:
    """How many hotplug-capable slots the running QEMU has (fixed at launch)."""
    spec = vm.live_spec
    assert spec is not None
    if not spec.is_q35:
        return pci.max_slots(spec)
    argv = vm.record.argv if vm.record else []
    return sum(1 for a in argv if a.startswith("pcie-root-port,"))


def _free_slot(vm: VM, spec: VMSpec, wanted: int | None) -> int:
    used = {d.slot for d in pci.hotpluggable(spec)}
    limit = ports(vm)
    if wanted is not None:
        if wanted in used or wanted >= limit:
            raise SpecError([("slot", f"slot {wanted} is taken or does not exist (this VM has {limit})")])
        return wanted
    for slot in range(limit):
        if slot not in used:
            return slot
    raise NotSupported(f"no free hotplug slot left in {vm.name!r} ({limit} in use; raise hotplugSlots and restart)")


def _validated(spec: VMSpec, kind: str, doc: Any) -> Disk | Nic:
    """Parse one device doc in the context of the running spec (uniqueness included)."""
    full = to_dict(spec)
    index = len(full[kind])
    full[kind].append(doc)
    prefix = f"{kind}[{index}]"
    try:
        new = from_dict(full)
    except SpecError as e:
        raise SpecError([(path.replace(prefix, kind[:-1], 1), reason) for path, reason in e.problems]) from None
    return getattr(new, kind)[-1]


def _add_to_definition(vm: VM, kind: str, dev: Disk | Nic) -> None:
    if not vm.persistent or vm.spec is vm.live_spec:
        return
    dev = copy.deepcopy(dev)
    items = getattr(vm.spec, kind)
    if any(d.name == dev.name for d in items):
        return
    if dev.slot is not None and dev.slot in {d.slot for d in pci.hotpluggable(vm.spec)}:
        dev.slot = None
    items.append(dev)
    pci.assign_slots(vm.spec)


def _remove_from_specs(vm: VM, kind: str, name: str) -> None:
    for spec in (vm.live_spec, vm.spec if vm.persistent else None):
        if spec is not None:
            setattr(spec, kind, [d for d in getattr(spec, kind) if d.name != name])


async def hotplug_disk(vm: VM, doc: Any) -> dict[str, Any]:
    async with vm.lock:
        spec = _running_spec(vm)
        disk = _validated(spec, "disks", doc)
        assert isinstance(disk, Disk)
        if disk.bus == "sata":
            raise NotSupported("sata disks cannot be hot-plugged (QEMU's AHCI has no hotplug); use virtio or scsi")
        if disk.bus == "scsi" and not any(d.bus == "scsi" for d in spec.disks):
            raise NotSupported(f"{vm.name!r} has no virtio-scsi controller (define it with a scsi disk to get one)")
        lun = 0
        if disk.bus == "virtio":
            disk.slot = _free_slot(vm, spec, disk.slot)
        else:
            disk.slot = None
            luns = [i for i, d in enumerate(d for d in spec.disks if d.bus == "scsi")]
            lun = max(luns) + 1 if luns else 0
        problems = await storage.check_paths(hostcheck.disk_items(disk, "disk.path"))
        if problems:
            raise SpecError(problems)
        _intend(vm, "disks", disk)
        added: list[str] = []
        try:
            for node in cmdline.blockdev_args(disk):
                await vm.qmp("blockdev-add", node)
                added.append(node["node-name"])
            failpoints.hit("hotplug.nodes-added")
            await vm.qmp("device_add", cmdline.disk_device_props(spec, disk, disk.boot_index, scsi_lun=lun))
            failpoints.hit("hotplug.device-added")
        except KvmdError:
            for node_name in reversed(added):
                with contextlib.suppress(KvmdError):
                    await vm.qmp("blockdev-del", {"node-name": node_name})
            _intend(vm, None)
            raise
        spec.disks.append(disk)
        _add_to_definition(vm, "disks", disk)
        _done(vm)
        return _describe(disk)


async def hotplug_nic(vm: VM, doc: Any) -> dict[str, Any]:
    async with vm.lock:
        spec = _running_spec(vm)
        nic = _validated(spec, "nics", doc)
        assert isinstance(nic, Nic)
        nic.slot = _free_slot(vm, spec, nic.slot)
        problems = hostcheck.local_problems(VMSpec(name=spec.name, uuid=spec.uuid, nics=[nic]), [])
        if problems:
            raise SpecError([(p.replace("nics[0]", "nic", 1), r) for p, r in problems])
        fdname = None
        if nic.backend == "tap":
            nic.tap = netdev.tap_name(spec.uuid, nic, len(spec.nics))
            fd = netdev.open_tap(nic.tap, nic.bridge, nic.mac if nic.no_mac_spoofing else None)
            fdname = f"tap-{nic.name}"
            try:
                assert vm.monitor is not None
                vm.monitor.send_fd(fd)
                await vm.qmp("getfd", {"fdname": fdname})
            finally:
                os.close(fd)
        props = cmdline.netdev_props(nic, fdname)
        _intend(vm, "nics", nic)
        try:
            if props:
                await vm.qmp("netdev_add", props)
            await vm.qmp("device_add", cmdline.nic_device_props(spec, nic, nic.boot_index))
            failpoints.hit("hotplug.device-added")
        except KvmdError:
            if props:
                with contextlib.suppress(KvmdError):
                    await vm.qmp("netdev_del", {"id": f"netdev-{nic.name}"})
            if nic.no_mac_spoofing and nic.tap:
                netdev.remove_mac_filter(nic.tap)
            _intend(vm, None)
            raise
        spec.nics.append(nic)
        _add_to_definition(vm, "nics", nic)
        _done(vm)
        return _describe(nic)


async def _unplug(vm: VM, kind: str, name: str, timeout: float | None) -> dict[str, Any]:
    timeout = DEFAULT_UNPLUG_TIMEOUT if timeout is None else timeout
    async with vm.lock:
        spec = _running_spec(vm)
        dev = next((d for d in getattr(spec, kind) if d.name == name), None)
        if dev is None:
            raise NoSuchDevice(f"{vm.name!r} has no {kind[:-1]} named {name!r}", {"vm": vm.name, "device": name})
        if isinstance(dev, Disk) and dev.bus == "sata":
            raise NotSupported("sata disks cannot be hot-unplugged; use virtio or scsi")
        dev_id = cmdline.device_id(dev)
        deleted = vm.wait_event(lambda e, d: e == "DEVICE_DELETED" and d.get("device") == dev_id)
        try:
            await vm.qmp("device_del", {"id": dev_id})
            await asyncio.wait_for(asyncio.shield(deleted), timeout)
        except asyncio.TimeoutError:
            raise Timeout(f"the guest did not acknowledge the unplug of {dev_id} within {timeout:g}s; "
                          "it stays attached and recorded (it is removed if the guest acknowledges later)",
                          {"vm": vm.name, "device": name}) from None
        finally:
            if not deleted.done():
                deleted.cancel()
        task = vm.removals.get(dev_id)
    if task is not None:
        await task
    return _describe(dev)


async def hotunplug_disk(vm: VM, name: str, timeout: float | None = None) -> dict[str, Any]:
    return await _unplug(vm, "disks", name, timeout)


async def hotunplug_nic(vm: VM, name: str, timeout: float | None = None) -> dict[str, Any]:
    return await _unplug(vm, "nics", name, timeout)


def on_device_event(vm: VM, event: str, data: dict[str, Any]) -> None:
    """DEVICE_DELETED for one of our disks/NICs: finish its removal (also when late)."""
    if event != "DEVICE_DELETED" or vm.live_spec is None:
        return
    dev_id = data.get("device") or ""
    for kind in ("disks", "nics"):
        for dev in getattr(vm.live_spec, kind):
            if cmdline.device_id(dev) == dev_id and dev_id not in vm.removals:
                vm.removals[dev_id] = asyncio.create_task(_finish_removal(vm, kind, dev))


async def _finish_removal(vm: VM, kind: str, dev: Disk | Nic) -> None:
    dev_id = cmdline.device_id(dev)
    try:
        if isinstance(dev, Disk):
            for node in reversed(cmdline.blockdev_args(dev)):
                with contextlib.suppress(KvmdError):
                    await vm.qmp("blockdev-del", {"node-name": node["node-name"]})
        elif dev.backend != "none":
            with contextlib.suppress(KvmdError):
                await vm.qmp("netdev_del", {"id": f"netdev-{dev.name}"})
        _remove_from_specs(vm, kind, dev.name)
        vm.changed()
        log.info("%s: %s unplugged", vm.name, dev_id)
    finally:
        vm.removals.pop(dev_id, None)


def _intend(vm: VM, kind: str | None, dev: Disk | Nic | None = None) -> None:
    """Write down the plug about to happen (or, with None, that none is), in the runtime
    record, before QEMU is touched: a kvmd killed half way lets the next one finish or
    undo it (`reconcile`)."""
    if vm.record is None:
        return
    if kind is None:
        if vm.record.pending is not None:
            vm.record.pending = None
            runtime.save(vm.cfg.run_dir, vm.record)
        return
    assert dev is not None
    desc = _describe(dev)
    del desc["device"]
    vm.record.pending = {"op": "plug", "kind": kind, "device": desc}
    runtime.save(vm.cfg.run_dir, vm.record)


def _done(vm: VM) -> None:
    """The plug is in the running spec: record (and definition) follow, the intent goes."""
    if vm.record is not None:
        vm.record.pending = None
    vm.changed()


async def reconcile(vm: VM) -> None:
    """After a kvmd restart: make the running spec say what QEMU really has attached.

    A plug that was under way (the record's `pending`) is completed if QEMU has its
    device, else its backend (block nodes, netdev) is removed and it never happened. A
    device in the spec that QEMU no longer has was unplugged while no kvmd listened for
    its DEVICE_DELETED: its removal is finished now."""
    spec = vm.live_spec
    if spec is None or vm.record is None or not (vm.record.pending or spec.disks or spec.nics):
        return  # nothing that could have been half plugged or unplugged: no QMP round trip
    present = {p["name"] for p in await vm.qmp("qom-list", {"path": "/machine/peripheral"})
               if str(p.get("type", "")).startswith("child<")}
    pending, changed = vm.record.pending, False
    if pending and pending.get("op") == "plug" and pending.get("kind") in ("disks", "nics"):
        kind, doc = pending["kind"], dict(pending.get("device") or {})
        try:
            dev = _validated(spec, kind, doc)
        except SpecError as e:
            dev = None
            log.error("%s: unreadable pending plug %s: %s", vm.name, doc, e)
        if dev is not None and cmdline.device_id(dev) in present:
            getattr(spec, kind).append(dev)
            _add_to_definition(vm, kind, dev)
            log.info("%s: completed the plug of %s interrupted by the restart", vm.name, cmdline.device_id(dev))
        elif dev is not None:
            await _remove_backend(vm, dev)
            log.info("%s: undid the plug of %s interrupted by the restart", vm.name, cmdline.device_id(dev))
        vm.record.pending, changed = None, True
    for kind in ("disks", "nics"):
        for dev in list(getattr(spec, kind)):
            if cmdline.device_id(dev) not in present:
                log.info("%s: %s was unplugged while kvmd was away", vm.name, cmdline.device_id(dev))
                await _remove_backend(vm, dev)
                _remove_from_specs(vm, kind, dev.name)
                changed = True
    if changed:
        vm.changed()


async def _remove_backend(vm: VM, dev: Disk | Nic) -> None:
    if isinstance(dev, Disk):
        for node in reversed(cmdline.blockdev_args(dev)):
            with contextlib.suppress(KvmdError):
                await vm.qmp("blockdev-del", {"node-name": node["node-name"]})
    elif dev.backend != "none":
        with contextlib.suppress(KvmdError):
            await vm.qmp("netdev_del", {"id": f"netdev-{dev.name}"})
        if dev.no_mac_spoofing and dev.tap:
            netdev.remove_mac_filter(dev.tap)


def _running_spec(vm: VM) -> VMSpec:
    from kvmd.states import State
    if vm.state not in (State.RUNNING, State.PAUSED) or vm.live_spec is None:
        from kvmd.errors import WrongState
        raise WrongState(f"cannot hotplug on {vm.name!r}: it is {vm.state}", {"name": vm.name, "state": str(vm.state)})
    return vm.live_spec


def _describe(dev: Disk | Nic) -> dict[str, Any]:
    kind = "disks" if isinstance(dev, Disk) else "nics"
    probe = VMSpec(name="x", uuid="00000000-0000-0000-0000-000000000000")
    setattr(probe, kind, [dev])
    out = to_dict(probe)[kind][0]
    out["device"] = cmdline.device_id(dev)
    return out


def api_methods(m: Manager) -> dict[str, Any]:
    async def plug_disk(name: str, disk: dict) -> dict:
        return await hotplug_disk(m.get(name), disk)

    async def unplug_disk(name: str, disk: str, timeout: float | None = None) -> dict:
        return await hotunplug_disk(m.get(name), disk, timeout)

    async def plug_nic(name: str, nic: dict) -> dict:
        return await hotplug_nic(m.get(name), nic)

    async def unplug_nic(name: str, nic: str, timeout: float | None = None) -> dict:
        return await hotunplug_nic(m.get(name), nic, timeout)

    return {"vm.hotplug_disk": plug_disk, "vm.hotunplug_disk": unplug_disk,
            "vm.hotplug_nic": plug_nic, "vm.hotunplug_nic": unplug_nic}
