"""OVF (the envelope the oVirt engine stores for a VM) -> kvmd spec; `ovf_write` the way back.

    ovf_to_spec(xml, disk_path=None) -> dict     spec_to_ovf(spec) -> str

What is read: `<Content>` (`Name`, `Description`, `BiosType`, `CustomEmulatedMachine`,
`CustomCpuName`, `UseHostCpu`, `MaxMemorySizeMb`, `BalloonEnabled`), the VM id (the
OperatingSystemSection's `ovf:id`), and the VirtualHardwareSection's `Item`s by
`rasd:ResourceType`: 3 CPU (`rasd:num_of_sockets`, `cpu_per_socket`, `threads_per_cpu`,
oVirt's extensions), 4 memory, 17 disk (with its DiskSection `Disk`: format, interface,
read-only, boot), 10 NIC (`rasd:ResourceSubType` model, `rasd:MACAddress`,
`rasd:Connection` = the network, whose bridge VDSM names after it), 15 CD-ROM, 20 video,
23 USB controller (DISABLED only: kvmd has no USB), 26 graphics (vnc/spice), and 0 for
oVirt's other devices (balloon, rng, console, controllers, the guest agent channel).
Any other resource type or device is refused with `UnsupportedXML` naming the Item.

A disk's path is where VDSM prepares an image on a host,
`/rhev/data-center/POOL/DOMAIN/images/IMAGE/VOLUME`, unless the Item carries kvmd's own
`<kvmd:Path>` (written by `spec_to_ovf` for disks that are plain files), or the caller
passes `disk_path(pool, domain, image, volume) -> str`.

The round trip. VM-level engine properties kvmd has no use for (Priority, TimeZone,
quotas...) are kept: the envelope is stored in the spec's `metadata.ovf.envelope`, and
`spec_to_ovf` starts from it, rewriting only what the spec says (name, CPUs, memory,
devices), so nothing the engine wrote is lost. A spec made for kvmd gets a fresh one.
"""

from __future__ import annotations

import copy
import re
import uuid as uuidlib
from collections.abc import Callable
from typing import Any

from lxml import etree

from compat.errors import UnsupportedXML
from compat.xmlutil import parse, to_string
from kvmd.errors import SpecError
from kvmd.spec import from_dict, to_dict

OVF_NS = "http://schemas.dmtf.org/ovf/envelope/1/"
RASD_NS = "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData"
VSSD_NS = "http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData"
XSI_NS = "http://www.w3.org/2001/XMLSchema-instance"
KVMD_NS = "urn:kvmd:ovf:1"
NSMAP = {"ovf": OVF_NS, "rasd": RASD_NS, "vssd": VSSD_NS, "xsi": XSI_NS, "kvmd": KVMD_NS}
OVF, RASD, XSI, KVMD = (f"{{{n}}}" for n in (OVF_NS, RASD_NS, XSI_NS, KVMD_NS))
ZERO = "00000000-0000-0000-0000-000000000000"
KEY = "ovf"

CPU, MEMORY, DISK, NIC, CDROM, VIDEO, USB, GRAPHICS, OTHER = "3", "4", "17", "10", "15", "20", "23", "26", "0"
# oVirt VmInterfaceType (rasd:ResourceSubType) <-> kvmd NIC model
NIC_MODELS = {"3": "virtio", "2": "e1000", "1": "rtl8139"}
NIC_TYPES = {v: k for k, v in NIC_MODELS.items()}
# oVirt DiskInterface <-> kvmd bus
BUSES = {"VirtIO": "virtio", "VirtIO_SCSI": "scsi", "SATA": "sata", "IDE": "sata"}
VOLUME_FORMATS = {"COW": "qcow2", "RAW": "raw"}
# oVirt BiosType -> (machine, firmware)
BIOS_TYPES = {"0": ("q35", "bios"), "1": ("pc", "bios"), "2": ("q35", "bios"), "3": ("q35", "uefi")}
OTHER_DEVICES = {("balloon", "memballoon"), ("rng", "virtio"), ("console", "console"),
                 ("channel", "unix"), ("controller", "virtio-serial"), ("controller", "virtio-scsi"),
                 ("controller", "usb"), ("controller", "pci")}
DEVNAME_RE = re.compile(r"^[a-z][a-z0-9_-]{0,19}$")


def rhev_path(pool: str, domain: str, image: str, volume: str) -> str:
    return f"/rhev/data-center/{pool}/{domain}/images/{image}/{volume}"


# -- small helpers -------------------------------------------------------------------

def _t(el: etree._Element | None, tag: str, default: str | None = None) -> str | None:
    if el is None:
        return default
    found = el.find(tag)
    if found is None or found.text is None:
        return default
    return found.text.strip()


def _set(parent: etree._Element, tag: str, value: Any) -> etree._Element:
    """Set the text of child `tag` (created at the end if missing)."""
    el = parent.find(tag)
    if el is None:
        el = etree.SubElement(parent, tag)
    el.text = "" if value is None else str(value)
    return el


def _section(parent: etree._Element, kind: str) -> etree._Element | None:
    for sec in parent.findall("Section"):
        if (sec.get(XSI + "type") or "").endswith(kind):
            return sec
    return None


def _path(item: etree._Element, index: int) -> str:
    return f"/ovf:Envelope/Content/Section/Item[{index + 1}]"


def _bool(text: str | None, default: bool = False) -> bool:
    return default if text is None else text.strip().lower() == "true"


# -- OVF -> spec ---------------------------------------------------------------------

def ovf_to_spec(xml: str | bytes,
                disk_path: Callable[[str, str, str, str], str] | None = None) -> dict[str, Any]:
    """Convert an oVirt OVF envelope into a kvmd spec document (raises UnsupportedXML)."""
    root = parse(xml)
    if root.tag != OVF + "Envelope":
        raise UnsupportedXML("/" + (root.prefix + ":" if root.prefix else "") + etree.QName(root).localname,
                             "the document element must be <ovf:Envelope>")
    content = root.find("Content")
    if content is None:
        raise UnsupportedXML("/ovf:Envelope", "has no <Content> (the virtual system)")
    hw = _section(content, "VirtualHardwareSection_Type")
    if hw is None:
        raise UnsupportedXML("/ovf:Envelope/Content", "has no VirtualHardwareSection")
    os_sec = _section(content, "OperatingSystemSection_Type")
    spec: dict[str, Any] = {"name": _t(content, "Name")}
    vm_id = os_sec.get(OVF + "id") if os_sec is not None else None
    if vm_id:
        spec["uuid"] = vm_id
    bios = _t(content, "BiosType", "0")
    if bios not in BIOS_TYPES:
        raise UnsupportedXML("/ovf:Envelope/Content/BiosType", f"{bios!r}: kvmd boots SeaBIOS or OVMF "
                             "without secure boot: must be one of " + ", ".join(BIOS_TYPES))
    machine, firmware = BIOS_TYPES[bios]
    spec["machine"] = _t(content, "CustomEmulatedMachine") or machine
    spec["boot"] = {"firmware": firmware}
    disks_by_id = {d.get(OVF + "diskId"): d for d in root.iter("Disk")}
    conv = _Items(spec, disks_by_id, disk_path or rhev_path)
    for i, item in enumerate(hw.findall("Item")):
        conv.item(item, i)
    cpu_name = _t(content, "CustomCpuName")
    if _bool(_t(content, "UseHostCpu")):
        spec["cpu"]["model"] = "host"
    elif cpu_name:
        spec["cpu"]["model"] = cpu_name
    max_mb = _t(content, "MaxMemorySizeMb")
    if max_mb and max_mb.isdigit() and int(max_mb) > conv.mem_mb:
        spec["memory"]["max"] = f"{max_mb}MiB"
    spec["memory"]["balloon"] = conv.balloon and _bool(_t(content, "BalloonEnabled"), True)
    spec["guestAgent"] = True  # the engine gives every VM the qemu-ga channel
    envelope = copy.deepcopy(root)
    spec["metadata"] = {KEY: {"envelope": to_string(envelope)}}
    try:
        return to_dict(from_dict(spec))
    except SpecError as e:
        path, reason = e.problems[0]
        raise UnsupportedXML(conv.origin.get(path.split(".")[0], "/ovf:Envelope/Content"),
                             f"{reason} (kvmd spec field {path})") from None


class _Items:
    """Reads VirtualHardwareSection Items into a spec."""

    def __init__(self, spec: dict[str, Any], disks: dict[str, etree._Element],
                 disk_path: Callable[[str, str, str, str], str]):
        self.spec = spec
        self.disks = disks
        self.disk_path = disk_path
        self.balloon = False
        self.mem_mb = 256
        self.origin: dict[str, str] = {"name": "/ovf:Envelope/Content/Name"}
        spec.update(cpu={"count": 1}, memory={"size": "256MiB"}, disks=[], nics=[], graphics=[],
                    serial={"type": "none"}, rng=False)

    def item(self, item: etree._Element, index: int) -> None:
        rtype = _t(item, RASD + "ResourceType")
        where = _path(item, index)
        kind, device = _t(item, "Type"), _t(item, "Device")
        handler = {CPU: self.cpu, MEMORY: self.memory, DISK: self.disk, CDROM: self.disk, NIC: self.nic,
                   VIDEO: self.video, USB: self.usb, GRAPHICS: self.graphics, OTHER: self.other}.get(rtype or "")
        if handler is None:
            raise UnsupportedXML(where + "/rasd:ResourceType", f"resource type {rtype!r} "
                                 f"({kind or '?'}/{device or '?'}) has no kvmd equivalent")
        handler(item, where, kind, device)

    def cpu(self, item: etree._Element, where: str, *_: Any) -> None:
        count = int(_t(item, RASD + "VirtualQuantity", "1"))
        cpu: dict[str, Any] = {"count": count}
        topo = [_t(item, RASD + k) for k in ("num_of_sockets", "cpu_per_socket", "threads_per_cpu")]
        if all(topo):
            cpu.update(sockets=int(topo[0]), cores=int(topo[1]), threads=int(topo[2]))
        self.spec["cpu"] = cpu
        self.origin["cpu"] = where

    def memory(self, item: etree._Element, where: str, *_: Any) -> None:
        unit = _t(item, RASD + "AllocationUnits", "MegaBytes")
        if unit != "MegaBytes":
            raise UnsupportedXML(where + "/rasd:AllocationUnits", f"{unit!r}: must be MegaBytes")
        value = _t(item, RASD + "VirtualQuantity", "")
        if not value.isdigit():
            raise UnsupportedXML(where + "/rasd:VirtualQuantity", f"{value!r} is not a number of MB")
        self.mem_mb = int(value)
        self.spec["memory"] = {"size": f"{value}MiB"}
        self.origin["memory"] = where

    def disk(self, item: etree._Element, where: str, kind: str | None, device: str | None) -> None:
        index = len(self.spec["disks"])
        self.origin[f"disks[{index}]"] = where
        cdrom = device == "cdrom" or _t(item, RASD + "ResourceType") == CDROM
        disk: dict[str, Any] = {"media": "cdrom" if cdrom else "disk"}
        boot = int(_t(item, "BootOrder", "0") or 0)
        if boot:
            disk["bootIndex"] = boot
        if cdrom:
            disk.update(name=_t(item, KVMD + "Name") or f"cd{index}", bus="sata")
            params = item.find("SpecParams")
            path = _t(params, "path") if params is not None else None
            if path:
                disk["path"] = path
            self.spec["disks"].append(disk)
            return
        host = _t(item, RASD + "HostResource", "")
        image, _, volume = host.partition("/")
        meta = self.disks.get(volume)
        if meta is None:
            raise UnsupportedXML(where + "/rasd:HostResource", f"{host!r} has no Disk in the DiskSection")
        alias = (meta.get(OVF + "disk-alias") or "").lower()
        disk["name"] = _t(item, KVMD + "Name") or (alias if DEVNAME_RE.match(alias) else f"disk{index}")
        disk["path"] = _t(item, KVMD + "Path") or self.disk_path(
            _t(item, RASD + "StoragePoolId", ZERO), _t(item, RASD + "StorageId", ZERO), image, volume)
        fmt = meta.get(OVF + "volume-format", "RAW")
        iface = meta.get(OVF + "disk-interface", "VirtIO")
        if fmt not in VOLUME_FORMATS:
            raise UnsupportedXML(f"/ovf:Envelope/Section/Disk[@ovf:diskId='{volume}']",
                                 "must be one of " + ", ".join(VOLUME_FORMATS), "ovf:volume-format", fmt)
        if iface not in BUSES:
            raise UnsupportedXML(f"/ovf:Envelope/Section/Disk[@ovf:diskId='{volume}']",
                                 "must be one of " + ", ".join(BUSES), "ovf:disk-interface", iface)
        if meta.get(OVF + "shareable", "false") == "true":
            raise UnsupportedXML(f"/ovf:Envelope/Section/Disk[@ovf:diskId='{volume}']",
                                 "kvmd has no shareable disks", "ovf:shareable", "true")
        # VDSM runs oVirt images with cache=none (io=threads on file storage)
        disk.update(format=VOLUME_FORMATS[fmt], bus=BUSES[iface], cache="none", aio="threads",
                    readonly=meta.get(OVF + "read-only", "false") == "true")
        self.spec["disks"].append(disk)

    def nic(self, item: etree._Element, where: str, *_: Any) -> None:
        index = len(self.spec["nics"])
        self.origin[f"nics[{index}]"] = where
        sub = _t(item, RASD + "ResourceSubType", "3")
        if sub not in NIC_MODELS:
            raise UnsupportedXML(where + "/rasd:ResourceSubType", f"{sub!r}: kvmd NIC models are "
                                 + ", ".join(f"{k} ({v})" for k, v in NIC_MODELS.items()))
        name = (_t(item, RASD + "Name") or "").lower()
        nic: dict[str, Any] = {"name": name if DEVNAME_RE.match(name) else f"net{index}",
                               "model": NIC_MODELS[sub]}
        mac = _t(item, RASD + "MACAddress")
        if mac:
            nic["mac"] = mac
        network = _t(item, RASD + "Connection")
        nic.update({"backend": "tap", "bridge": network} if network else {"backend": "user"})
        if _t(item, KVMD + "Backend") == "user":
            nic = {k: v for k, v in nic.items() if k != "bridge"} | {"backend": "user"}
        boot = int(_t(item, "BootOrder", "0") or 0)
        if boot:
            nic["bootIndex"] = boot
        self.spec["nics"].append(nic)

    def video(self, item: etree._Element, where: str, kind: str | None, device: str | None) -> None:
        if device not in (None, "vga", "qxl", "bochs", "cirrus", "virtio", "none"):
            raise UnsupportedXML(where + "/Device", f"video device {device!r} has no kvmd equivalent")

    def usb(self, item: etree._Element, where: str, *_: Any) -> None:
        policy = _t(item, RASD + "UsbPolicy", "DISABLED")
        if policy != "DISABLED":
            raise UnsupportedXML(where + "/rasd:UsbPolicy", f"{policy!r}: kvmd gives VMs no USB: must be DISABLED")

    def graphics(self, item: etree._Element, where: str, kind: str | None, device: str | None) -> None:
        if device not in ("vnc", "spice"):
            raise UnsupportedXML(where + "/Device", f"{device!r}: must be one of vnc, spice")
        self.spec["graphics"].append({"type": device})

    def other(self, item: etree._Element, where: str, kind: str | None, device: str | None) -> None:
        if (kind, device) not in OTHER_DEVICES:
            raise UnsupportedXML(where + "/Type", f"device {kind}/{device} has no kvmd equivalent")
        if kind == "balloon":
            params = item.find("SpecParams")
            self.balloon = (_t(params, "model", "virtio") if params is not None else "virtio") == "virtio"
        elif kind == "rng":
            self.spec["rng"] = True
        elif kind == "console":
            self.spec["serial"] = {"type": "socket"}


def stable_id(vm_uuid: str, what: str) -> str:
    """A UUID for a device that has none yet, the same every export."""
    return str(uuidlib.uuid5(uuidlib.UUID(vm_uuid), what))


def spec_to_ovf(spec: dict[str, Any]) -> str:
    """The OVF envelope of a kvmd spec document (raises UnsupportedSpec)."""
    from compat.ovf_write import write  # the writing half; it imports this module

    return write(spec)
