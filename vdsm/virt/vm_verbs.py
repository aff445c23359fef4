"""VM lifecycle verbs: create, destroy, shutdown, reset, pause, cont, getStats, getInfo.

`VM.create` answers at once with status WaitForLaunch (as VDSM does) and launches in the
background: `before_vm_start` hooks over the engine's XML, `createXML` on the VM's
backend, `after_vm_start`. Failures end in status Down with exitCode 1 and the reason.
A VM that went Down stays listed until the engine calls `VM.destroy`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

from vdsm import errors
from vdsm.errors import VdsmError
from vdsm.virt import domxml
from vdsm.virt import stats as vmstats
from vdsm.virt import status as st
from vdsm.virt.vmrecord import VmRecord

if TYPE_CHECKING:
    from vdsm.virt.service import VirtService

log = logging.getLogger(__name__)

SHUTDOWN_TIMEOUT = 120


def handlers(svc: VirtService) -> dict[str, Any]:
    launches: dict[str, asyncio.Task] = {}

    async def launch(rec: VmRecord, xml: str, paused: bool) -> None:
        backend = svc.backend(rec.backend)
        try:
            xml = await svc.hooks.domxml("before_vm_start", xml, rec, code=errors.CANNOT_CREATE_VM)
            flags = backend.lv.VIR_DOMAIN_START_PAUSED if paused else 0
            dom = await svc.call(backend, backend.conn.createXML, xml, flags, code=errors.CANNOT_CREATE_VM)
            rec.xml = await svc.call(backend, dom.XMLDesc, 0)
        except VdsmError as e:
            reason = st.DESTROYED_ON_STARTUP if rec.destroy_requested else st.LIBVIRT_START_FAILED
            rec.set_down(st.ERROR, reason, e.message)
            svc.publish(rec)
            return
        if rec.status == st.WAIT_FOR_LAUNCH:
            svc.set_status(rec, st.PAUSED if paused else st.UP)
        await svc.hooks.notify("after_vm_start", rec)

    async def create(vmID: str, vmParams: dict) -> dict:  # noqa: N803 - VDSM's names
        xml = vmParams.get("xml")
        if not isinstance(xml, str) or not xml.strip():
            raise VdsmError(errors.MISSING_PARAM, "vmParams.xml (the domain XML)")
        facts = domxml.read(xml)
        if facts.uuid != vmID.lower():
            raise VdsmError(errors.CANNOT_CREATE_VM, f"vmID {vmID} does not match the domain XML uuid {facts.uuid}")
        old = svc.vms.get(vmID)
        if old is not None:
            raise VdsmError(errors.EXIST, f"{{'vmId': '{vmID}'}}")
        backend = svc.backend_for_new(vmID, facts.custom)
        rec = VmRecord(vm_id=vmID, name=facts.name, backend=backend.name, custom=facts.custom, xml=xml)
        svc.vms[vmID] = rec
        paused = facts.launch_paused or str(vmParams.get("launchPaused", "")).lower() == "true"
        task = asyncio.create_task(launch(rec, xml, paused))
        launches[vmID] = task
        task.add_done_callback(lambda _t: launches.pop(vmID, None))
        out = domxml.definition(rec, xml)
        out["status"] = st.WAIT_FOR_LAUNCH
        return out

    async def destroy(vmID: str, gracefulAttempts: int = 1) -> None:  # noqa: N803
        rec = svc.record(vmID)
        if rec.status == st.DOWN:
            svc.vms.pop(vmID, None)
            return
        rec.destroy_requested = True
        task = launches.get(vmID)
        if task is not None:
            with contextlib.suppress(Exception):
                await task
        if rec.status != st.DOWN:
            backend = svc.backend(rec.backend)
            with contextlib.suppress(VdsmError):
                await svc.hooks.domxml("before_vm_destroy", rec.xml, rec)
            try:
                dom = await svc.domain(rec)
                try:
                    await svc.call(backend, dom.destroyFlags, backend.lv.VIR_DOMAIN_DESTROY_GRACEFUL,
                                   code=errors.DESTROY_FAILED)
                except VdsmError:
                    await svc.call(backend, dom.destroy, code=errors.DESTROY_FAILED)
            except VdsmError as e:
                if e.code != errors.NO_VM:
                    raise
            if rec.status != st.DOWN:
                rec.set_down(st.NORMAL, st.ADMIN_SHUTDOWN, "Admin shut down from the engine")
                svc.publish(rec)
            await svc.hooks.notify("after_vm_destroy", rec)
        svc.vms.pop(vmID, None)

    async def shutdown(vmID: str, delay: int = 30, message: str = "", reboot: bool = False,  # noqa: N803
                       timeout: int = SHUTDOWN_TIMEOUT, force: bool = False) -> None:
        rec = svc.active(vmID)
        backend = svc.backend(rec.backend)
        dom = await svc.domain(rec)
        if _truthy(reboot):
            svc.set_status(rec, st.REBOOT_IN_PROGRESS)
            await svc.call(backend, dom.reboot, 0)
            svc.set_status(rec, st.UP)
            return
        rec.shutdown_requested = True
        svc.set_status(rec, st.POWERING_DOWN)
        await svc.call(backend, dom.shutdownFlags, 0)
        asyncio.create_task(_force_after(rec, int(timeout or SHUTDOWN_TIMEOUT), _truthy(force)))

    async def _force_after(rec: VmRecord, timeout: int, force: bool) -> None:
        for _ in range(timeout * 10):
            if rec.status == st.DOWN:
                return
            await asyncio.sleep(0.1)
        if force and rec.status != st.DOWN:
            backend = svc.backend(rec.backend)
            with contextlib.suppress(VdsmError):
                dom = await svc.domain(rec)
                await svc.call(backend, dom.destroy)
        elif rec.status == st.POWERING_DOWN:
            rec.shutdown_requested = False
            svc.set_status(rec, st.UP)

    async def reset(vmID: str) -> None:  # noqa: N803
        rec = svc.active(vmID)
        backend = svc.backend(rec.backend)
        dom = await svc.domain(rec)
        await svc.call(backend, dom.reset, 0)

    async def _pause_or_cont(vm_id: str, verb: str, method: str, status: str) -> dict:
        rec = svc.active(vm_id)
        backend = svc.backend(rec.backend)
        await svc.hooks.domxml(f"before_vm_{verb}", rec.xml, rec)
        dom = await svc.domain(rec)
        await svc.call(backend, getattr(dom, method))
        svc.set_status(rec, status)
        await svc.hooks.notify(f"after_vm_{verb}", rec)
        return domxml.definition(rec, "")

    async def pause(vmID: str) -> dict:  # noqa: N803
        return await _pause_or_cont(vmID, "pause", "suspend", st.PAUSED)

    async def cont(vmID: str) -> dict:  # noqa: N803
        return await _pause_or_cont(vmID, "cont", "resume", st.UP)

    async def get_stats(vmID: str) -> list:  # noqa: N803
        rec = svc.record(vmID)
        stats = await vmstats.collect(svc, rec)
        return [await svc.hooks.json("after_get_vm_stats", stats, rec)]

    async def get_info(vmID: str) -> dict:  # noqa: N803
        rec = svc.record(vmID)
        xml = rec.xml
        if rec.status != st.DOWN:
            with contextlib.suppress(VdsmError):
                dom = await svc.domain(rec)
                xml = await svc.call(svc.backend(rec.backend), dom.XMLDesc, 0)
        return domxml.definition(rec, xml)

    return {"VM.create": create, "VM.destroy": destroy, "VM.shutdown": shutdown, "VM.reset": reset,
            "VM.pause": pause, "VM.cont": cont, "VM.getStats": get_stats, "VM.getInfo": get_info}


def _truthy(value: Any) -> bool:
    return value is True or str(value).lower() == "true"
