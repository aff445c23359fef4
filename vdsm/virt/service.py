"""VirtService: the VDSM verbs over one or two libvirt-shaped backends.

It owns the backends (`backends.Backend`), the VM records (`vmrecord.VmRecord`), the
event feed (lifecycle events → `|virt|VM_status|<vmId>` notifications) and recovery
(on start, the VM list is rebuilt from every backend's running domains without touching
them). Blocking libvirt calls run in worker threads so the STOMP loop keeps serving.
The verbs live in `host_verbs`, `vm_verbs`, `device_verbs`, `migration_verbs` and
`snapshot_verbs`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from vdsm import errors
from vdsm.config import Config
from vdsm.errors import VdsmError
from vdsm.virt import status as st
from vdsm.virt.backends import Backend
from vdsm.virt.hookcalls import HookCalls
from vdsm.virt.vmrecord import VmRecord

log = logging.getLogger(__name__)

Emit = Callable[[str, dict[str, Any]], None]


class VirtService:
    def __init__(self, cfg: Config, emit: Emit):
        self.cfg = cfg
        self.emit = emit
        self.backends: dict[str, Backend] = {}
        self.vms: dict[str, VmRecord] = {}
        self.hooks = HookCalls(cfg)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.jobs: dict[str, dict[str, Any]] = {}  # Host.getJobs: jobs by id (snapshots)
        self.completed_jobs: dict[str, dict[str, Any]] = {}  # vmId -> the backend's last job statistics

    # -- wiring ------------------------------------------------------------------------

    def handlers(self) -> dict[str, Callable[..., Any]]:
        from vdsm.virt import device_verbs, host_verbs, migration_verbs, snapshot_verbs, vm_verbs
        out: dict[str, Callable[..., Any]] = {}
        for module in (host_verbs, vm_verbs, device_verbs, migration_verbs, snapshot_verbs):
            out.update(module.handlers(self))
        return out

    def uri_for(self, name: str) -> str:
        if name == "kvmd":
            return f"kvmd:///?socket={self.cfg.kvmd_socket}"
        return self.cfg.libvirt_uri

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        names = [self.cfg.backend] + [b for b in set(self.cfg.vm_backends.values()) if b != self.cfg.backend]
        for name in names:
            backend = Backend(name, self.uri_for(name), self._on_lifecycle, self._on_job)
            await asyncio.to_thread(backend.open)
            self.backends[name] = backend
        await self.recover()

    async def close(self) -> None:
        for backend in self.backends.values():
            await asyncio.to_thread(backend.close)
        self.backends.clear()

    # -- helpers for verbs ---------------------------------------------------------------

    def backend(self, name: str | None = None) -> Backend:
        name = name or self.cfg.backend
        backend = self.backends.get(name)
        if backend is None:
            raise VdsmError(errors.UNEXPECTED, f"backend {name!r} is not connected")
        return backend

    def backend_for_new(self, vm_id: str, custom: dict[str, str]) -> Backend:
        name = custom.get("backend") or self.cfg.vm_backends.get(vm_id) or self.cfg.backend
        if name not in ("kvmd", "libvirt"):
            raise VdsmError(errors.CANNOT_CREATE_VM, f"unknown backend {name!r}")
        if name not in self.backends:
            raise VdsmError(errors.CANNOT_CREATE_VM, f"backend {name!r} is not configured on this host")
        return self.backends[name]

    def record(self, vm_id: str) -> VmRecord:
        rec = self.vms.get(vm_id)
        if rec is None:
            raise VdsmError(errors.NO_VM, f"{{'vmId': '{vm_id}'}}")
        return rec

    def active(self, vm_id: str) -> VmRecord:
        """The record of a VM that is running (or paused); VM_DOWN / NO_VM otherwise."""
        rec = self.record(vm_id)
        if rec.status == st.DOWN:
            raise VdsmError(errors.VM_DOWN, f"{{'vmId': '{vm_id}'}}")
        if rec.status == st.WAIT_FOR_LAUNCH:
            raise VdsmError(errors.NO_VM, f"{vm_id} is still being launched")
        return rec

    async def call(self, backend: Backend, fn: Callable[..., Any], *args: Any,
                   code: int = errors.UNEXPECTED) -> Any:
        """Run a blocking libvirt call in a thread; libvirtError becomes VdsmError(code)."""
        try:
            return await asyncio.to_thread(fn, *args)
        except backend.lv.libvirtError as e:
            if e.get_error_code() == backend.lv.VIR_ERR_NO_DOMAIN:
                raise VdsmError(errors.NO_VM, e.get_error_message() or "") from None
            raise VdsmError(code, e.get_error_message() or str(e)) from None

    async def domain(self, rec: VmRecord) -> Any:
        backend = self.backend(rec.backend)
        return await self.call(backend, backend.conn.lookupByUUIDString, rec.vm_id, code=errors.NO_VM)

    def publish(self, rec: VmRecord) -> None:
        self.emit(f"|virt|VM_status|{rec.vm_id}", {rec.vm_id: rec.status_event()})

    def set_status(self, rec: VmRecord, status: str) -> None:
        if rec.set_status(status):
            self.publish(rec)

    # -- events --------------------------------------------------------------------------

    def _on_lifecycle(self, backend: str, vm_id: str, event: int, detail: int) -> None:
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self.lifecycle, backend, vm_id, event, detail)

    def _on_job(self, backend: str, vm_id: str, stats: dict[str, Any]) -> None:
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self.completed_jobs.__setitem__, vm_id, stats)

    def lifecycle(self, backend: str, vm_id: str, event: int, detail: int) -> None:
        rec = self.vms.get(vm_id)
        if rec is None or rec.backend != backend:
            return
        if rec.incoming:  # a migration destination: its watcher (migration_verbs) reads the state
            if rec.wake is not None:
                rec.wake.set()
            return
        if event == st.EV_STOPPED:
            if rec.status == st.DOWN:
                return
            if detail == st.STOPPED_MIGRATED:
                rec.set_down(st.NORMAL, st.MIGRATION_SUCCEEDED)
            elif detail == st.STOPPED_DESTROYED and rec.shutdown_requested:
                rec.set_down(st.NORMAL, st.ADMIN_SHUTDOWN)
            elif detail == st.STOPPED_DESTROYED:
                rec.set_down(st.NORMAL, st.ADMIN_SHUTDOWN if rec.destroy_requested else st.SUCCESS,
                             "Admin shut down from the engine" if rec.destroy_requested else "")
            elif detail == st.STOPPED_SHUTDOWN:
                reason = st.ADMIN_SHUTDOWN if rec.shutdown_requested else st.USER_SHUTDOWN
                rec.set_down(st.NORMAL, reason)
            elif detail == st.STOPPED_CRASHED:
                rec.set_down(st.ERROR, st.LOST_QEMU_CONNECTION, "Lost connection with qemu process")
            else:
                rec.set_down(st.ERROR, st.GENERIC_ERROR)
            self.publish(rec)
            if rec.destroy_requested or rec.exit_reason == st.MIGRATION_SUCCEEDED:
                return  # a migrated VM gets after_vm_migrate_source instead (migration_verbs)
            asyncio.ensure_future(self.hooks.notify("after_vm_destroy", rec))
        elif event == st.EV_CRASHED:
            rec.set_down(st.ERROR, st.LOST_QEMU_CONNECTION, "Lost connection with qemu process")
            self.publish(rec)
        elif event == st.EV_SUSPENDED:
            self.set_status(rec, st.MIGRATION_SOURCE if rec.migrating else st.PAUSED)
        elif event in (st.EV_RESUMED, st.EV_STARTED):
            if rec.status not in (st.WAIT_FOR_LAUNCH,):
                self.set_status(rec, st.UP)
        elif event == st.EV_SHUTDOWN and not rec.destroy_requested:
            self.set_status(rec, st.POWERING_DOWN)

    # -- recovery ------------------------------------------------------------------------

    async def recover(self) -> None:
        """Rebuild the VM list from what runs on each backend; touch nothing."""
        for backend in self.backends.values():
            doms = await self.call(backend, backend.conn.listAllDomains, 0)
            for dom in doms:
                vm_id = await asyncio.to_thread(dom.UUIDString)
                if vm_id in self.vms:
                    continue
                state = (await asyncio.to_thread(dom.state, 0))[0]
                if st.from_libvirt_state(state) == st.DOWN:
                    continue
                rec = VmRecord(vm_id=vm_id, name=await asyncio.to_thread(dom.name), backend=backend.name)
                rec.set_status(st.from_libvirt_state(state))
                self.vms[vm_id] = rec
                log.info("recovered VM %s (%s) on %s: %s", rec.name, vm_id, backend.name, rec.status)
