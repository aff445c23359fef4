"""The VM registry: definitions on disk, VMs in memory, recovery, admission.

On start it loads every stored definition and every runtime record, and re-attaches to
each QEMU still running (concurrently), so a kvmd restart never loses, pauses or
restarts a guest. VMs whose QEMU ended while kvmd was down are reported as such.
Transient VMs (`create`) exist while they run and vanish when they stop.
"""

from __future__ import annotations

import asyncio
import logging
import os
import platform
import time
from collections.abc import Callable
from typing import Any

from kvmd import __version__, cgroups, hotplug, runtime
from kvmd.config import Config, private_dir
from kvmd.errors import AlreadyExists, KvmdError, NoSuchVM, QuotaExceeded, SpecError, WrongState
from kvmd.qemu import pci, probe
from kvmd.qemu.process import end_orphans
from kvmd.spec import VMSpec, from_dict, loads
from kvmd.states import ACTIVE, INACTIVE, State
from kvmd.store import DefinitionStore
from kvmd.vm import VM

log = logging.getLogger(__name__)

Subscriber = Callable[[dict[str, Any]], None]


def parse_spec(doc: Any) -> VMSpec:
    """A spec from an API argument: a mapping, or YAML/JSON text."""
    spec = loads(doc) if isinstance(doc, str) else from_dict(doc)
    try:
        pci.assign_slots(spec)
    except ValueError as e:
        raise SpecError([("nics", str(e))]) from None
    return spec


class Manager:
    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.vms: dict[str, VM] = {}
        self.store = DefinitionStore(os.path.join(cfg.state_dir, "vms"))
        self._subscribers: list[Subscriber] = []
        self.load_problems: list[tuple[str, str]] = []
        self.started = time.time()
        private_dir(cfg.run_dir, cfg.socket_group)
        os.makedirs(os.path.join(cfg.state_dir, "logs"), mode=0o700, exist_ok=True)
        self.cgroups = cgroups.for_config(cfg)
        self._background: set[asyncio.Task] = set()

    # -- events ------------------------------------------------------------------------

    def subscribe(self, callback: Subscriber) -> None:
        self._subscribers.append(callback)

    def unsubscribe(self, callback: Subscriber) -> None:
        if callback in self._subscribers:
            self._subscribers.remove(callback)

    def _new_vm(self, spec: VMSpec, persistent: bool) -> VM:
        vm = VM(spec, self.cfg, persistent, self._notify)
        vm.on_change = self._save_definition
        vm.device_handlers.append(hotplug.on_device_event)
        return vm

    def _save_definition(self, vm: VM) -> None:
        if vm.persistent:
            self.store.save(vm.spec)

    def _notify(self, vm: VM, event: dict[str, Any]) -> None:
        for callback in list(self._subscribers):
            try:
                callback(event)
            except Exception:
                log.exception("event subscriber failed")
        if event.get("type") == "state" and vm.state in INACTIVE and not vm.persistent:
            if self.vms.get(vm.name) is vm:
                del self.vms[vm.name]

    # -- recovery ------------------------------------------------------------------------

    async def load(self) -> None:
        specs, self.load_problems = self.store.load_all()
        for path, reason in self.load_problems:
            log.error("cannot load definition %s: %s", path, reason)
        for spec in specs:
            self.vms[spec.name] = self._new_vm(spec, True)
        records = runtime.load_all(self.cfg.run_dir)
        await asyncio.gather(*(self._recover(rec) for rec in records))
        self.cgroups.prune({p for vm in self.vms.values() if vm.proc and vm.record for p in vm.record.cgroups})

    async def _recover(self, rec: runtime.RuntimeRecord) -> None:
        vm = self.vms.get(rec.name)
        if vm is None:
            try:
                spec = from_dict(rec.spec)
            except SpecError as e:
                log.error("runtime record of %s unreadable: %s", rec.name, e)
                return
            vm = self._new_vm(spec, False)
            self.vms[rec.name] = vm
        if await vm.attach(rec):
            if vm.state not in ACTIVE:  # a start that had not completed: ended (vm.attach)
                log.warning("%s: %s", rec.name, vm.reason)
                return
            log.info("%s: re-attached to QEMU pid %d (%s: %s)", rec.name, rec.pid, vm.state, vm.reason)
            if vm.monitor is not None:
                await self._finish_interrupted(vm, rec)
            return
        ended = await end_orphans(rec) if rec.pid <= 0 else 0
        runtime.remove(self.cfg.run_dir, rec.name)
        await cgroups.remove_async(rec.cgroups)
        if rec.starting:
            state, reason = State.STOPPED, ("start interrupted: kvmd stopped before the start completed; "
                                            + ("QEMU ended" if ended else "QEMU was not running"))
        else:
            state, reason = runtime.ended_while_away(rec, vm.paths.log)
        log.warning("%s: %s", rec.name, reason)
        if vm.persistent:
            vm.state, vm.reason = state, reason
        else:
            self.vms.pop(rec.name, None)

    async def _finish_interrupted(self, vm: VM, rec: runtime.RuntimeRecord) -> None:
        """Finish or undo what the last kvmd left half done on this re-attached VM: a
        hot(un)plug (kvmd.hotplug.reconcile), a live migration (kvmd.migration)."""
        try:
            await hotplug.reconcile(vm)
        except KvmdError as e:
            log.error("%s: cannot reconcile devices after the restart: %s", vm.name, e)
        if rec.migration:
            from kvmd.migration import recover_interrupted  # light; loads the rest on demand

            self._background.add(task := asyncio.create_task(recover_interrupted(self, vm, rec.migration),
                                                             name=f"migration-recovery-{vm.name}"))
            task.add_done_callback(self._background.discard)

    async def close(self) -> None:
        """Stop managing; every QEMU keeps running for the next kvmd to re-attach."""
        await asyncio.gather(*(vm.detach() for vm in self.vms.values()), return_exceptions=True)

    # -- lookups ---------------------------------------------------------------------------

    def get(self, name: str) -> VM:
        vm = self.vms.get(name)
        if vm is None:
            raise NoSuchVM(name)
        return vm

    def _check_new(self, spec: VMSpec, replacing: VM | None = None) -> None:
        for other in self.vms.values():
            if other is not replacing and other.spec.uuid == spec.uuid:
                raise AlreadyExists(f"uuid {spec.uuid} is already used by VM {other.name!r}",
                                    {"name": other.name, "uuid": spec.uuid})

    def _admit(self, vm: VM) -> None:
        """Refuse a start that would exceed this instance's quotas."""
        q = self.cfg.quotas
        spec = vm.spec
        active = [v for v in self.vms.values() if v is not vm and v.state in ACTIVE]
        if q.max_vms is not None and len(active) + 1 > q.max_vms:
            raise QuotaExceeded(f"quota maxVms={q.max_vms} reached ({len(active)} running)",
                                {"limit": "maxVms", "max": q.max_vms, "used": len(active)})
        vcpus = sum((v.live_spec or v.spec).cpu.count for v in active)
        if q.max_vcpus is not None and vcpus + spec.cpu.count > q.max_vcpus:
            raise QuotaExceeded(f"quota maxVcpus={q.max_vcpus} exceeded: {vcpus} in use, {spec.cpu.count} requested",
                                {"limit": "maxVcpus", "max": q.max_vcpus, "used": vcpus})
        mem = sum((v.live_spec or v.spec).memory.size for v in active)
        if q.max_memory is not None and mem + spec.memory.size > q.max_memory:
            raise QuotaExceeded(f"quota maxMemory={q.max_memory} bytes exceeded: {mem} in use, {spec.memory.size} requested",
                                {"limit": "maxMemory", "max": q.max_memory, "used": mem})

    # -- verbs -------------------------------------------------------------------------------

    async def define(self, doc: Any) -> dict[str, Any]:
        spec = parse_spec(doc)
        vm = self.vms.get(spec.name)
        if vm is not None:
            if vm.spec.uuid != spec.uuid:
                raise AlreadyExists(f"a VM named {spec.name!r} already exists with uuid {vm.spec.uuid}",
                                    {"name": spec.name})
            self._check_new(spec, replacing=vm)
            self.store.save(spec)
            vm.spec, vm.persistent = spec, True
            return vm.info()
        self._check_new(spec)
        self.store.save(spec)
        vm = self._new_vm(spec, True)
        self.vms[spec.name] = vm
        return vm.info()

    async def undefine(self, name: str) -> None:
        vm = self.get(name)
        self.store.delete(name)
        if vm.state in ACTIVE:
            vm.persistent = False  # keeps running as a transient VM, as libvirt does
        else:
            del self.vms[name]

    async def create(self, doc: Any, paused: bool = False) -> dict[str, Any]:
        spec = parse_spec(doc)
        if spec.name in self.vms:
            raise AlreadyExists(f"a VM named {spec.name!r} already exists", {"name": spec.name})
        self._check_new(spec)
        vm = self._new_vm(spec, False)
        self._admit(vm)
        self.vms[spec.name] = vm
        try:
            await vm.start(paused=paused)
        except BaseException:
            if self.vms.get(spec.name) is vm and vm.state in INACTIVE:
                del self.vms[spec.name]
            raise
        return vm.info()

    async def start(self, name: str, paused: bool = False) -> dict[str, Any]:
        vm = self.get(name)
        if vm.state in ACTIVE:
            raise WrongState(f"cannot start {name!r}: it is {vm.state}", {"name": name, "state": str(vm.state)})
        self._admit(vm)
        await vm.start(paused=paused)
        return vm.info()

    async def pause(self, name: str) -> dict[str, Any]:
        vm = self.get(name)
        await vm.pause()
        return vm.info()

    async def resume(self, name: str) -> dict[str, Any]:
        vm = self.get(name)
        await vm.resume()
        return vm.info()

    async def reset(self, name: str) -> dict[str, Any]:
        vm = self.get(name)
        await vm.reset()
        return vm.info()

    async def shutdown(self, name: str, timeout: float | None = None, wait: bool = True,
                       mode: str = "acpi") -> dict[str, Any]:
        vm = self.get(name)
        await vm.shutdown(timeout=timeout, wait=wait, mode=mode)
        return vm.info()

    async def destroy(self, name: str) -> dict[str, Any]:
        vm = self.get(name)
        await vm.destroy()
        return vm.info()

    def list(self) -> list[dict[str, Any]]:
        return [vm.info() for vm in sorted(self.vms.values(), key=lambda v: v.name)]

    def info(self, name: str, spec: bool = False) -> dict[str, Any]:
        return self.get(name).info(with_spec=spec)

    def host_info(self) -> dict[str, Any]:
        try:
            caps = probe.probe(self.cfg.qemu).to_json()
        except probe.ProbeError as e:
            caps = {"error": str(e)}
        active = [v for v in self.vms.values() if v.state in ACTIVE]
        q = self.cfg.quotas
        return {
            "hostname": platform.node(),
            "kvmdVersion": __version__,
            "uid": os.getuid(),
            "stateDir": self.cfg.state_dir,
            "runDir": self.cfg.run_dir,
            "socket": self.cfg.socket_path,
            "accel": list(self.cfg.accel),
            "qemu": caps,
            "cpus": os.cpu_count(),
            "memory": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"),
            "vms": {"defined": len(self.vms), "active": len(active)},
            "quotas": {"maxVms": q.max_vms, "maxVcpus": q.max_vcpus, "maxMemory": q.max_memory},
            "cgroups": self.cgroups.to_json(),
            "loadProblems": [{"path": p, "reason": r} for p, r in self.load_problems],
            "uptime": round(time.time() - self.started, 3),
        }
