"""VM device and tuning verbs: setTicket, hot(un)plug disk/NIC, updateDevice,
setBalloonTarget, freeze/thaw. All go through the libvirt-shaped connection:
`attachDevice`/`detachDevice`/`updateDeviceFlags`/`setMemory`/`fsFreeze`.

Hot-plug params carry the device as XML (`params.xml`, a `<hotplug><devices>…` document
as the engine sends it); the device element is what the hooks see and what is attached.
"""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from typing import TYPE_CHECKING, Any

from defusedxml import ElementTree as SafeET

from vdsm import errors
from vdsm.errors import VdsmError
from vdsm.virt import domxml

if TYPE_CHECKING:
    from vdsm.virt.service import VirtService


def device_xml(params: dict[str, Any], kind: str, code: int) -> str:
    """The `<disk>`/`<interface>` element out of the engine's hotplug params."""
    xml = params.get("xml")
    if not isinstance(xml, str):
        raise VdsmError(errors.MISSING_PARAM, "params.xml (the device XML)")
    try:
        root = SafeET.fromstring(xml)
    except Exception as e:
        raise VdsmError(code, f"invalid device XML: {e}") from None
    dev = root if root.tag == kind else root.find(f".//devices/{kind}")
    if dev is None:
        raise VdsmError(code, f"no <{kind}> element in params.xml")
    return ET.tostring(dev, encoding="unicode")


def handlers(svc: VirtService) -> dict[str, Any]:
    def live_flags(backend: Any) -> int:
        return backend.lv.VIR_DOMAIN_AFFECT_LIVE

    async def plug(vm_id: str, params: dict, kind: str, point: str, code: int, attach: bool) -> dict:
        rec = svc.active(vm_id)
        backend = svc.backend(rec.backend)
        dev = device_xml(params, kind, code)
        dev = await svc.hooks.domxml(f"before_{point}", dev, rec, code=code)
        dom = await svc.domain(rec)
        fn = dom.attachDeviceFlags if attach else dom.detachDeviceFlags
        try:
            await svc.call(backend, fn, dev, live_flags(backend), code=code)
        except VdsmError:
            if kind == "interface":
                await svc.hooks.notify(f"after_{point}_fail", rec, xml=dev)
            raise
        rec.xml = await svc.call(backend, dom.XMLDesc, 0)
        await svc.hooks.notify(f"after_{point}", rec, xml=dev)
        return domxml.definition(rec, "")

    async def hotplug_disk(vmID: str, params: dict) -> dict:  # noqa: N803 - VDSM's names
        return await plug(vmID, params, "disk", "disk_hotplug", errors.HOTPLUG_DISK, True)

    async def hotunplug_disk(vmID: str, params: dict) -> dict:  # noqa: N803
        return await plug(vmID, params, "disk", "disk_hotunplug", errors.HOTUNPLUG_DISK, False)

    async def hotplug_nic(vmID: str, params: dict) -> dict:  # noqa: N803
        return await plug(vmID, params, "interface", "nic_hotplug", errors.HOTPLUG_NIC, True)

    async def hotunplug_nic(vmID: str, params: dict) -> dict:  # noqa: N803
        return await plug(vmID, params, "interface", "nic_hotunplug", errors.HOTUNPLUG_NIC, False)

    async def set_ticket(vmID: str, password: str, ttl: int, existingConnAction: str = "disconnect",  # noqa: N803
                         params: dict | None = None) -> None:
        rec = svc.active(vmID)
        backend = svc.backend(rec.backend)
        dom = await svc.domain(rec)
        xml = await svc.call(backend, dom.XMLDesc, 0)
        graphics = ET.fromstring(xml).find("./devices/graphics")
        if graphics is None:
            raise VdsmError(errors.TICKET_ERROR, "the VM has no graphics device")
        wanted = (params or {}).get("graphicsType")
        if wanted:
            graphics = next((g for g in ET.fromstring(xml).iterfind("./devices/graphics") if g.get("type") == wanted), None)
            if graphics is None:
                raise VdsmError(errors.TICKET_ERROR, f"the VM has no {wanted} display")
        # the current element, password changed: a backend refuses edits to anything else
        elem = graphics
        elem.set("passwd", password)
        if int(ttl) > 0:
            elem.set("passwdValidTo", time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(time.time() + int(ttl))))
        else:
            elem.attrib.pop("passwdValidTo", None)
        if elem.get("type") == "spice" and existingConnAction in ("keep", "disconnect", "fail"):
            elem.set("connected", existingConnAction)
        dev = ET.tostring(elem, encoding="unicode")
        dev = await svc.hooks.domxml("before_vm_set_ticket", dev, rec, code=errors.TICKET_ERROR)
        await svc.call(backend, dom.updateDeviceFlags, dev, live_flags(backend), code=errors.TICKET_ERROR)
        await svc.hooks.notify("after_vm_set_ticket", rec, xml=dev)

    async def update_device(vmID: str, params: dict) -> dict:  # noqa: N803
        rec = svc.active(vmID)
        backend = svc.backend(rec.backend)
        if params.get("deviceType") not in (None, "disk", "graphics", "interface") or not params.get("xml"):
            raise VdsmError(errors.UPDATE_DEVICE, "only device XML updates (params.xml) are supported")
        kind = {"disk": "disk", "graphics": "graphics", "interface": "interface"}.get(params.get("deviceType") or "disk")
        dev = device_xml(params, kind, errors.UPDATE_DEVICE)
        dev = await svc.hooks.domxml("before_update_device", dev, rec, code=errors.UPDATE_DEVICE)
        dom = await svc.domain(rec)
        try:
            await svc.call(backend, dom.updateDeviceFlags, dev, live_flags(backend), code=errors.UPDATE_DEVICE)
        except VdsmError:
            await svc.hooks.notify("after_update_device_fail", rec, xml=dev)
            raise
        await svc.hooks.notify("after_update_device", rec, xml=dev)
        return domxml.definition(rec, "")

    async def set_balloon_target(vmID: str, target: int) -> None:  # noqa: N803
        rec = svc.active(vmID)
        backend = svc.backend(rec.backend)
        dom = await svc.domain(rec)
        await svc.call(backend, dom.setMemory, int(target), code=errors.BALLOON)

    async def freeze(vmID: str) -> None:  # noqa: N803
        rec = svc.active(vmID)
        backend = svc.backend(rec.backend)
        dom = await svc.domain(rec)
        await svc.call(backend, dom.fsFreeze, None, 0, code=errors.NON_RESPONSIVE_GUEST_AGENT)

    async def thaw(vmID: str) -> None:  # noqa: N803
        rec = svc.active(vmID)
        backend = svc.backend(rec.backend)
        dom = await svc.domain(rec)
        await svc.call(backend, dom.fsThaw, None, 0, code=errors.NON_RESPONSIVE_GUEST_AGENT)

    return {"VM.hotplugDisk": hotplug_disk, "VM.hotunplugDisk": hotunplug_disk,
            "VM.hotplugNic": hotplug_nic, "VM.hotunplugNic": hotunplug_nic,
            "VM.setTicket": set_ticket, "VM.updateDevice": update_device,
            "VM.setBalloonTarget": set_balloon_target, "VM.freeze": freeze, "VM.thaw": thaw}
