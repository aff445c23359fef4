"""kvmd spec -> OVF envelope (the reading half and the format notes: `compat.ovf`).

The writer starts from the envelope recorded at import (`metadata.ovf.envelope`) or from
a fresh skeleton, and rewrites what the spec owns: the VM's name and id, BiosType, CPU
model, memory, and the hardware Items of CPUs, memory, disks (with their DiskSection
`Disk` and `References/File`), CD-ROMs, NICs, graphics, balloon, rng and console. An
Item the spec still has is updated in place (a disk matched by its image/volume ids, a
NIC by its MAC, graphics by protocol), so everything else the engine wrote survives.
Disks that are not oVirt images get ids derived from the VM uuid and disk name, and
kvmd's `<kvmd:Path>` / `<kvmd:Name>` in their Item so they come back as they were.
"""

from __future__ import annotations

import re
from typing import Any

from lxml import etree

from compat.errors import UnsupportedSpec
from compat.ovf import (
    CDROM,
    CPU,
    DEVNAME_RE,
    DISK,
    GRAPHICS,
    KVMD,
    MEMORY,
    NIC,
    NIC_TYPES,
    NSMAP,
    OTHER,
    OVF,
    RASD,
    VSSD_NS,
    XSI,
    ZERO,
    _section,
    _set,
    _t,
    stable_id,
)
from compat.xmlutil import parse
from kvmd.errors import SpecError
from kvmd.spec import VMSpec, from_dict
from kvmd.spec.model import Disk, Nic

RHEV_RE = re.compile(r"^/rhev/data-center/(?:mnt/[^/]+/)?([0-9a-f-]{36})/([0-9a-f-]{36})/images/"
                     r"([0-9a-f-]{36})/([0-9a-f-]{36})$")
FORMATS = {"qcow2": ("COW", "Sparse"), "raw": ("RAW", "Preallocated")}
INTERFACES = {"virtio": "VirtIO", "scsi": "VirtIO_SCSI", "sata": "SATA"}


def write(spec: dict[str, Any]) -> str:
    try:
        s = from_dict(spec)
    except SpecError as e:
        raise UnsupportedSpec(*e.problems[0]) from None
    record = s.metadata.get("ovf")
    text = record.get("envelope") if isinstance(record, dict) else None
    root = parse(text) if text else skeleton()
    Writer(s, root).write()
    etree.indent(root, space="  ")
    return etree.tostring(root, encoding="unicode") + "\n"


def skeleton() -> etree._Element:
    root = etree.Element(OVF + "Envelope", nsmap=NSMAP)
    root.set(OVF + "version", "4.4.0.0")
    etree.SubElement(root, "References")
    for kind, info in (("NetworksSection_Type", "List of networks"),
                       ("DiskSection_Type", "List of Virtual Disks")):
        sec = etree.SubElement(root, "Section")
        sec.set(XSI + "type", "ovf:" + kind)
        _set(sec, "Info", info)
    content = etree.SubElement(root, "Content")
    content.set(OVF + "id", "out")
    content.set(XSI + "type", "ovf:VirtualSystem_Type")
    _set(content, "Name", "")
    _set(content, "Description", "")
    os_sec = etree.SubElement(content, "Section")
    os_sec.set(OVF + "required", "false")
    os_sec.set(XSI + "type", "ovf:OperatingSystemSection_Type")
    _set(os_sec, "Info", "Guest Operating System")
    _set(os_sec, "Description", "other_linux")
    hw = etree.SubElement(content, "Section")
    hw.set(XSI + "type", "ovf:VirtualHardwareSection_Type")
    _set(hw, "Info", "")
    system = etree.SubElement(hw, "System")
    _set(system, f"{{{VSSD_NS}}}VirtualSystemType", "ENGINE 4.4.0.0")
    return root


def _upd(parent: etree._Element, tag: str, value: Any) -> None:
    """Set child text unless it already says the same (case-insensitively for booleans)."""
    value = "" if value is None else str(value)
    if (_t(parent, tag) or "").lower() != value.lower():
        _set(parent, tag, value)


def _bool(value: bool) -> str:
    return "true" if value else "false"


class Writer:
    def __init__(self, spec: VMSpec, root: etree._Element):
        self.s = spec
        self.root = root
        self.content = root.find("Content")
        self.hw = _section(self.content, "VirtualHardwareSection_Type")
        self.old = self.hw.findall("Item")
        for item in self.old:
            self.hw.remove(item)

    def write(self) -> None:
        s, c = self.s, self.content
        _upd(c, "Name", s.name)
        os_sec = _section(c, "OperatingSystemSection_Type")
        if os_sec is not None:
            os_sec.set(OVF + "id", s.uuid)
        bios = "1" if not s.is_q35 else ("3" if s.boot.firmware == "uefi" else "2")
        if s.boot.firmware == "uefi" and not s.is_q35:
            raise UnsupportedSpec("boot.firmware", "oVirt runs UEFI on q35 machines only")
        _upd(c, "BiosType", bios)
        if s.machine not in ("q35", "pc") or c.find("CustomEmulatedMachine") is not None:
            _upd(c, "CustomEmulatedMachine", "" if s.machine in ("q35", "pc") else s.machine)
        model = s.cpu.model
        _upd(c, "UseHostCpu", _bool(model == "host"))
        if model != "host" and (model or c.find("CustomCpuName") is not None):
            _upd(c, "CustomCpuName", model or "")
        mem_mb = s.memory.size >> 20
        _upd(c, "MaxMemorySizeMb", (s.memory.max or s.memory.size) >> 20)
        _upd(c, "BalloonEnabled", _bool(s.memory.balloon))
        _upd(self.hw, "Info", f"{s.cpu.count} CPU, {mem_mb} Memory")
        self.cpu_memory(mem_mb)
        self.disks()
        self.nics()
        self.others()

    # -- items -------------------------------------------------------------------------

    def _item(self, match: Any = None, **fields: Any) -> etree._Element:
        """The old Item for which `match(item)` holds (taken out of the pool), else a new one."""
        for item in self.old:
            if match is not None and match(item):
                self.old.remove(item)
                self.hw.append(item)
                return item
        item = etree.SubElement(self.hw, "Item")
        for tag, value in fields.items():
            _set(item, tag.replace("rasd_", RASD), value)
        return item

    def _rtype(self, rtype: str, kind: str | None = None, device: str | None = None):
        def match(item: etree._Element) -> bool:
            return (_t(item, RASD + "ResourceType") == rtype and (kind is None or _t(item, "Type") == kind)
                    and (device is None or _t(item, "Device") == device))
        return match

    def cpu_memory(self, mem_mb: int) -> None:
        c = self.s.cpu
        cpu = self._item(self._rtype(CPU), rasd_Caption=f"{c.count} virtual cpu",
                         rasd_Description="Number of virtual CPU", rasd_InstanceId="1", rasd_ResourceType=CPU)
        _upd(cpu, RASD + "Caption", f"{c.count} virtual cpu")
        threads = c.threads or 1
        cores = c.cores or 1
        sockets = c.sockets or max(1, -(-c.count // (cores * threads)))
        for tag, value in (("num_of_sockets", sockets), ("cpu_per_socket", cores),
                           ("threads_per_cpu", threads), ("VirtualQuantity", c.count)):
            _upd(cpu, RASD + tag, value)
        mem = self._item(self._rtype(MEMORY), rasd_Caption="", rasd_Description="Memory Size",
                         rasd_InstanceId="2", rasd_ResourceType=MEMORY, rasd_AllocationUnits="MegaBytes")
        _upd(mem, RASD + "Caption", f"{mem_mb} MB of memory")
        _upd(mem, RASD + "VirtualQuantity", mem_mb)

    def disks(self) -> None:
        disk_sec = _section(self.root, "DiskSection_Type")
        refs = self.root.find("References")
        old_disks = {d.get(OVF + "diskId"): d for d in disk_sec.findall("Disk")} if disk_sec is not None else {}
        old_files = {f.get(OVF + "id"): f for f in refs.findall("File")} if refs is not None else {}
        keep: set[str] = set()
        for d in self.s.disks:
            if d.media == "cdrom":
                self.cdrom(d)
                continue
            pool, sd, image, volume, native = self._ids(d)
            keep.add(volume)
            item = self._item(lambda i, v=volume: _t(i, RASD + "InstanceId") == v,
                              rasd_Caption=d.name, rasd_InstanceId=volume, rasd_ResourceType=DISK,
                              rasd_HostResource=f"{image}/{volume}", rasd_Parent=ZERO, rasd_Template=ZERO,
                              rasd_StorageId=sd, rasd_StoragePoolId=pool, Type="disk", Device="disk")
            self._device_common(item, d.boot_index, d.readonly)
            if native:
                _upd(item, KVMD + "Path", d.path)
            if native or d.name != _alias_name(old_disks.get(volume)):
                _upd(item, KVMD + "Name", d.name)
            meta = old_disks.get(volume)
            if meta is None and disk_sec is not None:
                meta = etree.SubElement(disk_sec, "Disk")
                meta.set(OVF + "diskId", volume)
                meta.set(OVF + "fileRef", f"{image}/{volume}")
                meta.set(OVF + "disk-alias", d.name)
            if meta is not None:
                fmt, vtype = FORMATS[d.format]
                if meta.get(OVF + "volume-format") != fmt:
                    meta.set(OVF + "volume-format", fmt)
                    meta.set(OVF + "volume-type", vtype)
                want = INTERFACES[d.bus]
                if not (want == "SATA" and meta.get(OVF + "disk-interface") == "IDE"):
                    meta.set(OVF + "disk-interface", want)
                meta.set(OVF + "read-only", _bool(d.readonly))
                meta.set(OVF + "boot", _bool(d.boot_index is not None))
            if refs is not None and volume not in old_files:
                f = etree.SubElement(refs, "File")
                f.set(OVF + "href", f"{image}/{volume}")
                f.set(OVF + "id", volume)
        for vol, el in old_disks.items():
            if vol not in keep:
                el.getparent().remove(el)
        for vol, el in old_files.items():
            if vol not in keep:
                el.getparent().remove(el)

    def _ids(self, d: Disk) -> tuple[str, str, str, str, bool]:
        m = RHEV_RE.match(d.path or "")
        if m:
            return m.group(1), m.group(2), m.group(3), m.group(4), False
        return ZERO, ZERO, stable_id(self.s.uuid, "image/" + d.name), stable_id(self.s.uuid, "volume/" + d.name), True

    def cdrom(self, d: Disk) -> None:
        item = self._item(lambda i: _t(i, RASD + "ResourceType") == CDROM and
                          (_t(i, KVMD + "Name") in (None, d.name)),
                          rasd_Caption="CDROM", rasd_InstanceId=stable_id(self.s.uuid, "cdrom/" + d.name),
                          rasd_ResourceType=CDROM, Type="disk", Device="cdrom")
        self._device_common(item, d.boot_index, True)
        params = item.find("SpecParams")
        if params is None:
            params = etree.SubElement(item, "SpecParams")
        _upd(params, "path", d.path or "")
        if not d.name.startswith("cd"):
            _upd(item, KVMD + "Name", d.name)

    def _device_common(self, item: etree._Element, boot: int | None, readonly: bool) -> None:
        _upd(item, "BootOrder", boot or 0)
        _upd(item, "IsPlugged", "true")
        _upd(item, "IsReadOnly", _bool(readonly))

    def nics(self) -> None:
        nets = _section(self.root, "NetworksSection_Type")
        known = {n.get(OVF + "name") for n in nets.findall("Network")} if nets is not None else set()
        for i, n in enumerate(self.s.nics):
            item = self._item(lambda it, mac=n.mac: (_t(it, RASD + "MACAddress") or "").lower() == mac,
                              rasd_Caption=f"Ethernet adapter on {n.bridge or 'user'}",
                              rasd_InstanceId=stable_id(self.s.uuid, "nic/" + n.name), rasd_ResourceType=NIC,
                              Type="interface", Device="bridge")
            self.nic(item, n, i)
            if n.bridge and nets is not None and n.bridge not in known:
                etree.SubElement(nets, "Network").set(OVF + "name", n.bridge)
                known.add(n.bridge)

    def nic(self, item: etree._Element, n: Nic, index: int) -> None:
        if n.backend == "tap" and not n.bridge:
            raise UnsupportedSpec(f"nics[{index}].tap", "oVirt NICs are on networks (bridges), not taps")
        if n.backend == "none":
            raise UnsupportedSpec(f"nics[{index}].backend", "a NIC without a backend has no OVF spelling")
        _upd(item, RASD + "ResourceSubType", NIC_TYPES[n.model])
        _upd(item, RASD + "Connection", n.bridge or "")
        _upd(item, RASD + "Name", n.name)
        _upd(item, RASD + "MACAddress", n.mac)
        if n.backend == "user":
            _upd(item, KVMD + "Backend", "user")
        self._device_common(item, n.boot_index, False)

    def others(self) -> None:
        s = self.s
        for g in s.graphics:
            self._item(self._rtype(GRAPHICS, device=g.type), rasd_Caption="Graphical Framebuffer",
                       rasd_InstanceId=stable_id(s.uuid, "graphics/" + g.type), rasd_ResourceType=GRAPHICS,
                       Type="graphics", Device=g.type)
        for item in list(self.old):  # video, USB, controllers: kept as the engine wrote them
            if _t(item, RASD + "ResourceType") in ("20", "23") or _t(item, "Type") == "controller":
                self.old.remove(item)
                self.hw.append(item)
        balloon = self._item(self._rtype(OTHER, "balloon"), rasd_ResourceType=OTHER,
                             rasd_InstanceId=stable_id(s.uuid, "balloon"), Type="balloon", Device="memballoon")
        params = balloon.find("SpecParams")
        if params is None:
            params = etree.SubElement(balloon, "SpecParams")
        _upd(params, "model", "virtio" if s.memory.balloon else "none")
        if s.rng:
            self._item(self._rtype(OTHER, "rng"), rasd_ResourceType=OTHER, rasd_InstanceId=stable_id(s.uuid, "rng"),
                       Type="rng", Device="virtio")
        if s.serial.type == "socket":
            self._item(self._rtype(OTHER, "console"), rasd_ResourceType=OTHER,
                       rasd_InstanceId=stable_id(s.uuid, "console"), Type="console", Device="console")
        if s.guest_agent:
            for item in list(self.old):
                if _t(item, "Type") == "channel":
                    self.old.remove(item)
                    self.hw.append(item)


def _alias_name(meta: etree._Element | None) -> str | None:
    if meta is None:
        return None
    alias = (meta.get(OVF + "disk-alias") or "").lower()
    return alias if DEVNAME_RE.match(alias) else None
