"""The destination half of a live migration: a paused QEMU waiting for the stream.

`prepare` (API `vm.migrate_incoming`) is called by the source kvmd with the VM's
running spec. It registers a transient VM in state `migrating-in`, launches QEMU with
`-incoming defer`, turns on MIGRATION events (and postcopy when asked), and starts
listening with `migrate-incoming tcp:HOST:0`; QEMU picks a free port, read back from
`query-migrate`'s `socket-address`, so there is no port race. For a storage copy it
first creates empty target images (qemu-img, same format and virtual size) and then
exports them writable over NBD (`nbd-server-start` on a listening socket kvmd bound and
passed in with `getfd`, `block-export-add` per disk) for the source's `blockdev-mirror`.

The destination never resumes the guest on its own: when its QEMU reports the stream
`completed`, the guest stays paused until the source, which has seen its own side
complete, calls `finish` (API `vm.migrate_finish`). Only then is it resumed, made
persistent if the source's VM was, and given the source's snapshot metadata. A QEMU
source resumes its guest by itself when a migration fails late, so a destination that
resumed on its own could leave the guest running twice. With postcopy the source calls
`finish` as soon as it switched over (the guest must run here while pages are pulled),
and the VM is finalised when the stream completes.

Failure here is simple: a QEMU whose incoming migration fails exits by itself, `abort`
(the source gave up) destroys it, and so does an idle deadline when the source never
starts streaming. In every case the VM is forgotten and the images created for it
are deleted.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import os
import socket
import time
import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kvmd import failpoints, runtime, snapshot, storage
from kvmd.errors import AlreadyExists, InvalidParams, KvmdError, MigrationFailed, WrongState
from kvmd.manager import parse_spec
from kvmd.migration import qemu as mqemu
from kvmd.spec import from_dict
from kvmd.states import INACTIVE, State

if TYPE_CHECKING:
    from kvmd.manager import Manager
    from kvmd.vm import VM

log = logging.getLogger(__name__)

# Destroy an incoming VM whose source has not started streaming (nor called us) for this long.
IDLE_TIMEOUT = 120.0
FINISH_TIMEOUT = 60.0
NBD_FDNAME = "migration-nbd"


@dataclass
class Incoming:
    vm: VM
    persistent: bool
    definition: dict[str, Any] | None
    snapshots: dict[str, Any] | None
    resume: bool
    images: list[str] = field(default_factory=list)
    exports: list[str] = field(default_factory=list)
    status: str = "setup"
    error: str = ""
    contact: float = field(default_factory=time.monotonic)
    resumed: bool = False
    finished: bool = False
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    watch: asyncio.Task | None = None

    def touch(self) -> None:
        self.contact = time.monotonic()

    def set_status(self, status: str) -> None:
        self.status = status
        ev, self.changed = self.changed, asyncio.Event()
        ev.set()

    def info(self) -> dict[str, Any]:
        return {"name": self.vm.name, "direction": "in", "state": self.status, "error": self.error or None,
                "resumed": self.resumed}


_tables: weakref.WeakKeyDictionary[Manager, dict[str, Incoming]] = weakref.WeakKeyDictionary()


def table(m: Manager) -> dict[str, Incoming]:
    return _tables.setdefault(m, {})


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


async def _create_targets(spec: Any, disks: dict[str, Any], storage_dir: str | None) -> list[str]:
    """Empty images for a storage copy; the spec's disks are pointed at them."""
    created: list[str] = []
    by_name = {d.name: d for d in spec.disks}
    try:
        for name, want in disks.items():
            disk = by_name.get(name)
            if disk is None or not disk.path or not isinstance(want, dict):
                raise InvalidParams(f"disks: {name!r} is not a disk with an image in the spec", {"param": "disks"})
            fmt, size = want.get("format", disk.format), want.get("size")
            if not isinstance(size, int) or size <= 0:
                raise InvalidParams(f"disks.{name}.size must be a positive integer", {"param": "disks"})
            path = os.path.join(storage_dir or os.path.dirname(disk.path), os.path.basename(disk.path))
            await storage.create_image(path, fmt, size)
            created.append(path)
            disk.path, disk.format = path, fmt
    except BaseException:
        _remove(created)
        raise
    return created


def _remove(paths: list[str]) -> None:
    for path in paths:
        with contextlib.suppress(OSError):
            os.unlink(path)


async def _listen(vm: VM, host: str, postcopy: bool) -> str:
    caps = [{"capability": "events", "state": True}, {"capability": "postcopy-ram", "state": postcopy}]
    await vm.qmp("migrate-set-capabilities", {"capabilities": caps})
    await vm.qmp("migrate-incoming", {"uri": f"tcp:{_url_host(host)}:0"})
    info = await vm.qmp("query-migrate")
    addrs = info.get("socket-address") or []
    if not addrs or "port" not in addrs[0]:
        raise MigrationFailed(f"{vm.name}: QEMU did not say which port it listens on ({info})")
    return f"tcp:{_url_host(host)}:{addrs[0]['port']}"


async def _export(vm: VM, inc: Incoming, host: str, disks: list[str]) -> dict[str, Any]:
    """NBD exports of the target disks, on a socket bound here (port known, no race)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.bind((host, 0))
        sock.listen(16)
        port = sock.getsockname()[1]
        assert vm.monitor is not None
        vm.monitor.send_fd(sock.fileno())
        await vm.qmp("getfd", {"fdname": NBD_FDNAME})
    finally:
        sock.close()
    await vm.qmp("nbd-server-start", {"addr": {"type": "fd", "data": {"str": NBD_FDNAME}}})
    for name in disks:
        await vm.qmp("block-export-add", {"type": "nbd", "id": f"migrate-{name}", "node-name": f"fmt-{name}",
                                          "name": name, "writable": True})
        inc.exports.append(name)
    return {"host": host, "port": port, "exports": {name: name for name in disks}}


async def _unexport(vm: VM, inc: Incoming) -> None:
    if not inc.exports:
        return
    names, inc.exports = inc.exports, []
    for name in names:
        with contextlib.suppress(KvmdError):
            await vm.qmp("block-export-del", {"id": f"migrate-{name}", "mode": "hard"})
    with contextlib.suppress(KvmdError):
        await vm.qmp("nbd-server-stop")


async def prepare(m: Manager, spec: dict[str, Any] | str, listen: str = "127.0.0.1",
                  definition: dict[str, Any] | None = None, persistent: bool = False, resume: bool = True,
                  postcopy: bool = False, disks: dict[str, Any] | None = None, storage_dir: str | None = None,
                  snapshots: dict[str, Any] | None = None) -> dict[str, Any]:
    """Launch the incoming QEMU; return where the source sends the stream (and disks)."""
    vmspec = parse_spec(spec)
    name = vmspec.name
    if name in m.vms:
        raise AlreadyExists(f"a VM named {name!r} already exists here", {"name": name})
    m._check_new(vmspec)
    if storage_dir is not None and not os.path.isabs(storage_dir):
        raise InvalidParams("storage_dir must be an absolute path", {"param": "storage_dir"})
    images = await _create_targets(vmspec, disks, storage_dir) if disks else []
    vm = m._new_vm(vmspec, False)
    inc = Incoming(vm, persistent, definition, snapshots, resume, images=images)
    try:
        m._admit(vm)
        m.vms[name] = vm
        table(m)[name] = inc
        vm.device_handlers.append(lambda _vm, event, data: _on_event(m, inc, event, data))
        try:
            await vm.start(incoming="defer")
        finally:
            if vm.state in INACTIVE and m.vms.get(name) is vm:
                del m.vms[name]
        inc.watch = asyncio.create_task(_watch(m, inc), name=f"incoming-{name}")
        if vm.record is not None:  # a restarted kvmd ends this QEMU unless the guest runs here
            vm.record.migration = {"direction": "in", "persistent": persistent, "definition": definition}
            runtime.save(m.cfg.run_dir, vm.record)
        uri = await _listen(vm, listen, postcopy)
        nbd = await _export(vm, inc, listen, list(disks)) if disks else None
    except BaseException:
        if vm.state not in INACTIVE:
            with contextlib.suppress(KvmdError):
                await vm.destroy(reason="incoming migration setup failed")
        if inc.watch is None:
            _cleanup(m, inc)
        else:
            await asyncio.shield(inc.watch)
        raise
    log.info("%s: waiting for the incoming migration on %s", name, uri)
    return {"name": name, "uri": uri, "nbd": nbd, "disks": {d.name: d.path for d in vmspec.disks if d.path}}


def _on_event(m: Manager, inc: Incoming, event: str, data: dict[str, Any]) -> None:
    if event != "MIGRATION":
        return
    inc.set_status(str(data.get("status", "")))
    if inc.status == "completed" and inc.resumed and not inc.finished:
        asyncio.create_task(_complete(m, inc))  # postcopy: resumed earlier, now whole


async def _watch(m: Manager, inc: Incoming) -> None:
    """Until the VM is finalised or gone: the idle deadline, then the clean-up."""
    vm = inc.vm
    while not inc.finished and vm.state not in INACTIVE:
        await vm.wait_state(lambda s: s in INACTIVE, 2.0)
        idle = time.monotonic() - inc.contact
        if inc.status == "setup" and idle > IDLE_TIMEOUT and vm.state not in INACTIVE:
            log.warning("%s: no migration stream after %.0fs; giving up", vm.name, idle)
            with contextlib.suppress(KvmdError):
                await vm.destroy(reason="incoming migration abandoned: the source went silent")
    if not inc.finished:
        if inc.status not in ("failed", "cancelled"):
            inc.set_status("failed")
        inc.error = inc.error or vm.reason
        _cleanup(m, inc)


def _cleanup(m: Manager, inc: Incoming) -> None:
    _remove(inc.images)
    inc.images = []
    if table(m).get(inc.vm.name) is inc:
        del table(m)[inc.vm.name]
    if m.vms.get(inc.vm.name) is inc.vm and inc.vm.state in INACTIVE:
        del m.vms[inc.vm.name]


def _get(m: Manager, name: str) -> Incoming:
    inc = table(m).get(name)
    if inc is None:
        raise WrongState(f"no incoming migration of {name!r} here", {"name": name})
    inc.touch()
    return inc


async def finish(m: Manager, name: str, timeout: float = FINISH_TIMEOUT) -> dict[str, Any]:
    """The source saw its side complete (or switch to postcopy): resume the guest here."""
    inc = _get(m, name)
    vm = inc.vm
    deadline = time.monotonic() + timeout
    while inc.status not in ("completed", "postcopy-active") and vm.state not in INACTIVE:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or inc.status == "failed":
            break
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(inc.changed.wait(), min(remaining, 1.0))
    if inc.status not in ("completed", "postcopy-active") or vm.state in INACTIVE:
        raise MigrationFailed(f"{name}: the incoming migration did not complete here "
                              f"(status {inc.status}; VM {vm.state}: {vm.reason})", {"name": name, "state": inc.status})
    failpoints.hit("incoming.finishing")
    if inc.resume and not inc.resumed:
        await _unexport(vm, inc)
        await mqemu.cont_after_incoming(vm)
        failpoints.hit("incoming.resumed")
    inc.resumed = True
    if inc.status == "completed":
        await _complete(m, inc)
    return {**vm.info(), "migration": inc.info()}


async def _complete(m: Manager, inc: Incoming) -> None:
    """The guest is whole here: an ordinary VM from now on (persistent if it was)."""
    if inc.finished:
        return
    inc.finished = True
    vm = inc.vm
    await _unexport(vm, inc)
    if inc.persistent:
        vm.spec = _definition(inc, vm)
        vm.persistent = True
        if vm.record is not None:
            vm.record.persistent = True
    if vm.record is not None:
        vm.record.migration = None
    vm.changed()
    if inc.snapshots:
        snapshot.import_metadata(m.cfg, vm.name, inc.snapshots)
    running = (await vm.qmp("query-status")).get("running", False)
    vm._set_state(State.RUNNING if running else State.PAUSED, "migrated in")
    if table(m).get(vm.name) is inc:
        del table(m)[vm.name]
    log.info("%s: incoming migration complete (%s)", vm.name, vm.state)


def _definition(inc: Incoming, vm: VM) -> Any:
    """The source's definition, with disk images where they are on this host."""
    assert vm.live_spec is not None
    if inc.definition is None:
        return copy.deepcopy(vm.live_spec)
    spec = from_dict(inc.definition)
    here = {d.name: d for d in vm.live_spec.disks}
    for disk in spec.disks:
        if disk.name in here:
            disk.path, disk.format = here[disk.name].path, here[disk.name].format
    return spec


async def abort(m: Manager, name: str) -> dict[str, Any]:
    """The source gave up: destroy the incoming VM and forget it (never a resumed one)."""
    inc = table(m).get(name)
    if inc is None:  # never here, or finished: say what (if anything) runs under that name
        vm = m.vms.get(name)
        return {"name": name, "aborted": False, "state": str(vm.state) if vm else None,
                "uuid": (vm.live_spec or vm.spec).uuid if vm else None}
    if inc.resumed:
        raise WrongState(f"{name}: the guest already runs here; not aborting", {"name": name, "state": "resumed"})
    inc.error = inc.error or "cancelled by the source"
    inc.set_status("cancelled")
    if inc.vm.state not in INACTIVE:
        with contextlib.suppress(KvmdError):
            await inc.vm.destroy(reason="incoming migration cancelled by the source")
    if inc.watch is not None:
        await asyncio.shield(inc.watch)
    return {"name": name, "aborted": True}


async def recover(m: Manager, vm: VM, info: dict[str, Any]) -> None:
    """A restarted kvmd found `vm` still an incoming migration (never finalised here). If
    the source had it resumed here, it is finalised (made persistent if it was at the
    source); otherwise the guest never ran here and the source, which resumes it when a
    migration fails, must stay its only copy: this QEMU is ended and the VM forgotten."""
    try:
        running = bool((await vm.qmp("query-status")).get("running"))
    except KvmdError as e:
        log.error("%s: incoming migration interrupted by a restart, QEMU state unknown: %s", vm.name, e)
        return
    if not running:
        log.warning("%s: incoming migration interrupted by a kvmd restart; ending its QEMU", vm.name)
        with contextlib.suppress(KvmdError):
            await vm.destroy(reason="incoming migration abandoned: kvmd restarted before it completed")
        return
    if info.get("persistent"):
        definition = info.get("definition")
        vm.spec = from_dict(definition) if definition else copy.deepcopy(vm.live_spec or vm.spec)
        vm.persistent = True
    if vm.record is not None:
        vm.record.persistent = vm.persistent
        vm.record.migration = None
    vm.changed()
    vm._set_state(State.RUNNING, "migrated in (finalised after a kvmd restart)", force=True)
    log.info("%s: incoming migration finalised after a kvmd restart", vm.name)


def status(m: Manager, name: str) -> dict[str, Any] | None:
    inc = table(m).get(name)
    if inc is None:
        return None
    inc.touch()
    return inc.info()
