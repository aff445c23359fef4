"""VM.snapshot: a live snapshot of a VM's disks (and optionally its memory).

VDSM builds a `<domainsnapshot>` of the drives the engine lists and calls libvirt's
`snapshotCreateXML` with REUSE_EXT | NO_METADATA | DISK_ONLY (without DISK_ONLY and with
an external `<memory>` when the memory is saved too); this endpoint does the same
through the VM's backend (libvirt, or the kvmd shim). There is no storage layer here,
so the subset honoured is:

- `snapDrives`: each drive names the disk by `name` (target dev, e.g. `vda`), or by
  `imageID` (the disk's `<serial>`, as the engine's XML has it), and gives the new
  overlay's path in `newVolume` (or `path`). An existing file is taken as it is (REUSE_EXT:
  a qcow2 whose backing file is the disk's current image, as VDSM's pre-created volumes
  are); a missing one is created by the backend; without a path the backend names it
  (libvirt's rule: `/dir/STEM.SNAPNAME`). A drive whose current image already is that
  path is skipped, as VDSM does. Disks not listed are left out (`snapshot='no'`).
  Storage-domain volumes (`domainID`/`volumeID` without a path) are refused: code 48.
- `snapMemory`: a file path for the memory state (VDSM's volume string is refused).
- `frozen`: unless true (and for a disk-only snapshot), the snapshot is taken with
  QUIESCE (the guest's filesystems frozen through its agent); if that fails (no agent,
  agent not answering) it is taken again without, as VDSM did before freezing apart.
- `jobUUID`: names the snapshot and is reported by Host.getJobs (status done/failed,
  job_type `virt`, description `snapshot_vm`). The snapshot is taken before the verb
  answers; `timeout` and `freeze_timeout` are accepted and not needed.

Any failure is error 48 (snapshot failed) with the backend's reason.
"""

from __future__ import annotations

import asyncio
import logging
import os
import uuid as uuidlib
import xml.etree.ElementTree as ET
from typing import TYPE_CHECKING, Any

from vdsm import errors
from vdsm.errors import VdsmError

if TYPE_CHECKING:
    from vdsm.virt.service import VirtService

log = logging.getLogger(__name__)


def vm_disks(xml: str) -> list[dict[str, str]]:
    """(dev, path, serial, device) of each `<disk>` of a domain XML."""
    out = []
    for d in ET.fromstring(xml).iterfind("./devices/disk"):
        target, source = d.find("target"), d.find("source")
        out.append({"dev": target.get("dev", "") if target is not None else "",
                    "path": (source.get("file") or source.get("dev") or "") if source is not None else "",
                    "serial": (d.findtext("serial") or "").strip(), "device": d.get("device", "disk"),
                    "readonly": "1" if d.find("readonly") is not None else ""})
    return out


def plan(disks: list[dict[str, str]], drives: list[Any]) -> dict[str, str | None]:
    """{target dev: new overlay path or None (the backend names it)} for `snapDrives`."""
    out: dict[str, str | None] = {}
    for i, drive in enumerate(drives):
        if not isinstance(drive, dict):
            raise VdsmError(errors.SNAPSHOT, f"snapDrives[{i}] must be an object")
        disk = None
        if drive.get("name"):
            disk = next((d for d in disks if d["dev"] == drive["name"]), None)
        elif drive.get("imageID"):
            disk = next((d for d in disks if d["serial"] and d["serial"] == drive["imageID"]), None)
        if disk is None:
            raise VdsmError(errors.SNAPSHOT, f"snapDrives[{i}]: no disk {drive.get('name') or drive.get('imageID')!r} "
                            "(name a disk by its target dev in 'name', or by 'imageID' = its serial)")
        if disk["device"] != "disk" or disk["readonly"] or not disk["path"]:
            raise VdsmError(errors.SNAPSHOT, f"snapDrives[{i}]: disk {disk['dev']} is not a writable disk image")
        path = drive.get("newVolume") or drive.get("path")
        if path is None and drive.get("volumeID"):
            raise VdsmError(errors.SNAPSHOT, f"snapDrives[{i}]: storage-domain volumes are not served here; "
                            "give the overlay's path in 'newVolume'")
        if path is not None and (not isinstance(path, str) or not os.path.isabs(path)):
            raise VdsmError(errors.SNAPSHOT, f"snapDrives[{i}].newVolume must be an absolute path")
        if path is not None and os.path.realpath(path) == os.path.realpath(disk["path"]):
            log.debug("snapshot: %s already uses %s; skipped", disk["dev"], path)
            continue
        out[disk["dev"]] = path
    return out


def snapshot_xml(name: str, disks: list[dict[str, str]], chosen: dict[str, str | None], memory: str | None) -> str:
    root = ET.Element("domainsnapshot")
    ET.SubElement(root, "name").text = name
    if memory:
        ET.SubElement(root, "memory", snapshot="external", file=memory)
    el = ET.SubElement(root, "disks")
    for d in disks:
        if d["device"] != "disk" or d["readonly"] or not d["path"]:
            continue
        if d["dev"] in chosen:
            disk = ET.SubElement(el, "disk", name=d["dev"], snapshot="external", type="file")
            if chosen[d["dev"]]:
                ET.SubElement(disk, "source", file=str(chosen[d["dev"]]))
        else:
            ET.SubElement(el, "disk", name=d["dev"], snapshot="no")
    return ET.tostring(root, encoding="unicode")


def handlers(svc: VirtService) -> dict[str, Any]:
    def record_job(job_id: str | None, ok: bool, message: str = "") -> None:
        if not job_id:
            return
        job: dict[str, Any] = {"id": job_id, "status": "done" if ok else "failed", "job_type": "virt",
                               "description": "snapshot_vm", "progress": 100}
        if not ok:
            job["error"] = {"code": errors.SNAPSHOT, "message": message}
        svc.jobs[job_id] = job

    async def snapshot(vmID: str, snapDrives: list, snapMemory: str | None = None,  # noqa: N803 - VDSM's names
                       frozen: bool = False, jobUUID: str | None = None, timeout: int | None = None,  # noqa: N803
                       freeze_timeout: int | None = None) -> None:
        rec = svc.active(vmID)
        if rec.migrating or rec.incoming:
            raise VdsmError(errors.MIGRATION_IN_PROGRESS, f"{vmID} is migrating")
        backend = svc.backend(rec.backend)
        lv = backend.lv
        try:
            if snapMemory and not os.path.isabs(str(snapMemory)):
                raise VdsmError(errors.SNAPSHOT, "snapMemory must be the path of the file for the memory state here "
                                "(storage-domain volumes are not served)")
            dom = await svc.domain(rec)
            disks = vm_disks(await svc.call(backend, dom.XMLDesc, 0, code=errors.SNAPSHOT))
            chosen = plan(disks, snapDrives)
            if not chosen and not snapMemory:
                log.info("%s: snapshot: every drive already uses its new volume", vmID)
                record_job(jobUUID, True)
                return
            exist = {dev: bool(p and os.path.exists(p)) for dev, p in chosen.items()}
            if any(exist.values()) and not all(exist.values()):
                raise VdsmError(errors.SNAPSHOT, "either every newVolume exists already (taken as it is) or "
                                f"none does (made by the backend): {exist}")
            name = jobUUID or str(uuidlib.uuid4())
            xml = snapshot_xml(name, disks, chosen, str(snapMemory) if snapMemory else None)
            flags = lv.VIR_DOMAIN_SNAPSHOT_CREATE_NO_METADATA | lv.VIR_DOMAIN_SNAPSHOT_CREATE_ATOMIC
            if chosen and all(exist.values()):
                flags |= lv.VIR_DOMAIN_SNAPSHOT_CREATE_REUSE_EXT
            if not snapMemory:
                flags |= lv.VIR_DOMAIN_SNAPSHOT_CREATE_DISK_ONLY
            quiesce = not frozen and not snapMemory
            try:
                if not quiesce:
                    raise _NoQuiesce()
                await asyncio.to_thread(dom.snapshotCreateXML, xml, flags | lv.VIR_DOMAIN_SNAPSHOT_CREATE_QUIESCE)
            except (_NoQuiesce, lv.libvirtError) as e:
                if isinstance(e, lv.libvirtError):
                    log.info("%s: snapshot with quiesce failed (%s); taking it without", vmID, e.get_error_message())
                await asyncio.to_thread(dom.snapshotCreateXML, xml, flags)
            rec.xml = await svc.call(backend, dom.XMLDesc, 0)
        except lv.libvirtError as e:
            record_job(jobUUID, False, e.get_error_message() or str(e))
            raise VdsmError(errors.SNAPSHOT, e.get_error_message() or str(e)) from None
        except VdsmError as e:
            record_job(jobUUID, False, e.message)
            if e.code == errors.NO_VM:
                raise
            raise VdsmError(errors.SNAPSHOT, message=e.message if e.code == errors.SNAPSHOT else None,
                            detail=e.message) from None
        record_job(jobUUID, True)
        log.info("%s: snapshot %s taken (%s%s)", vmID, name, ", ".join(chosen) or "no disks",
                 ", memory" if snapMemory else "")

    return {"VM.snapshot": snapshot}


class _NoQuiesce(Exception):
    pass
