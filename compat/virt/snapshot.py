"""Snapshots through the shim: libvirt's snapshot XML and calls on kvmd's external snapshots.

kvmd's snapshots are external — a new qcow2 overlay on each disk, the memory state in a
file — which is what libvirt calls `snapshot='external'`. So `snapshotCreateXML` takes

    <domainsnapshot>
      <name>s1</name>                                  optional: libvirt's default, epoch seconds
      <memory snapshot='no'/>                          or snapshot='external' file='/path'
      <disks>
        <disk name='vda' snapshot='external'>          target dev (or source path)
          <source file='/path/overlay.qcow2'/>         optional: libvirt's default name,
        </disk>                                        /dir/STEM.s1 for /dir/STEM.qcow2
        <disk name='vdb' snapshot='no'/>               left out of the snapshot
      </disks>
    </domainsnapshot>

with VIR_DOMAIN_SNAPSHOT_CREATE_DISK_ONLY (or an external `<memory>`), and maps it onto
`vm.snapshot_create(disks, overlays, memory_file, quiesce, reuse)`. Disks not listed are
snapshotted too (libvirt's default for external snapshots); read-only disks and CD-ROMs
never are. Flags: DISK_ONLY, QUIESCE (needs a guest agent channel, as libvirt), ATOMIC and
VALIDATE (kvmd switches all disks in one transaction and always validates), REUSE_EXT
(the overlays exist already, qcow2 on the disks' current images), NO_METADATA (accepted;
kvmd keeps its record anyway: it needs it to manage the overlays). Internal snapshots,
REDEFINE, CURRENT, HALT and LIVE are VIR_ERR_NO_SUPPORT / VIR_ERR_CONFIG_UNSUPPORTED.

`virDomainSnapshot` (getName, getXMLDesc, delete, getParent, isCurrent, hasMetadata,
getDomain, getConnect) reads `vm.snapshot_list`; its XML has libvirt's shape (name, state,
parent, creationTime, memory, disks) without the `<domain>` copy and `<description>`,
which kvmd does not keep. `delete` is `vm.snapshot_delete` (the layer above the snapshot is
merged into its image, as libvirt 9 does for external snapshots); revert is
`vm.snapshot_revert` (libvirt 9.0 cannot revert external snapshots at all).
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any

from compat.virt import constants as c
from compat.virt import errors

if TYPE_CHECKING:
    from compat.virt.connection import virConnect
    from compat.virt.domain import virDomain

CREATE_FLAGS = (c.VIR_DOMAIN_SNAPSHOT_CREATE_REDEFINE | c.VIR_DOMAIN_SNAPSHOT_CREATE_CURRENT
                | c.VIR_DOMAIN_SNAPSHOT_CREATE_NO_METADATA | c.VIR_DOMAIN_SNAPSHOT_CREATE_HALT
                | c.VIR_DOMAIN_SNAPSHOT_CREATE_DISK_ONLY | c.VIR_DOMAIN_SNAPSHOT_CREATE_REUSE_EXT
                | c.VIR_DOMAIN_SNAPSHOT_CREATE_QUIESCE | c.VIR_DOMAIN_SNAPSHOT_CREATE_ATOMIC
                | c.VIR_DOMAIN_SNAPSHOT_CREATE_LIVE | c.VIR_DOMAIN_SNAPSHOT_CREATE_VALIDATE)
_NOT_KVMD = {
    "VIR_DOMAIN_SNAPSHOT_CREATE_REDEFINE": "kvmd records the snapshots it takes itself",
    "VIR_DOMAIN_SNAPSHOT_CREATE_CURRENT": "only meaningful with REDEFINE",
    "VIR_DOMAIN_SNAPSHOT_CREATE_HALT": "kvmd leaves the VM running; destroy it afterwards",
}
LIST_FLAGS = (c.VIR_DOMAIN_SNAPSHOT_LIST_ROOTS | c.VIR_DOMAIN_SNAPSHOT_LIST_METADATA
              | c.VIR_DOMAIN_SNAPSHOT_LIST_LEAVES | c.VIR_DOMAIN_SNAPSHOT_LIST_NO_LEAVES
              | c.VIR_DOMAIN_SNAPSHOT_LIST_NO_METADATA | c.VIR_DOMAIN_SNAPSHOT_LIST_INACTIVE
              | c.VIR_DOMAIN_SNAPSHOT_LIST_ACTIVE | c.VIR_DOMAIN_SNAPSHOT_LIST_DISK_ONLY
              | c.VIR_DOMAIN_SNAPSHOT_LIST_INTERNAL | c.VIR_DOMAIN_SNAPSHOT_LIST_EXTERNAL
              | c.VIR_DOMAIN_SNAPSHOT_LIST_TOPOLOGICAL)
INACTIVE_STATES = ("defined", "stopped", "crashed")


def _error(code: int, detail: str) -> errors.libvirtError:
    return errors.make(code, detail, c.VIR_FROM_DOMAIN_SNAPSHOT)


def default_overlay(source: str, snap: str) -> str:
    """libvirt's name for an external overlay nobody named: the suffix replaced by the snapshot's."""
    stem, dot, suffix = source.rpartition(".")
    base = stem if dot and "/" not in suffix else source
    return f"{base}.{snap}"


def writable_disks(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """The spec's disks kvmd can snapshot (an image, writable, not a CD-ROM), with target dev."""
    from compat.virt.xmlconv import _spec_disks

    devs = {d["name"]: d for d in _spec_disks(spec)}
    out = []
    for disk in spec.get("disks") or []:
        if disk.get("path") and not disk.get("readonly") and disk.get("media", "disk") == "disk":
            out.append({"name": disk["name"], "dev": (devs.get(disk["name"]) or {}).get("dev") or disk["name"],
                        "path": disk["path"]})
    return out


def parse_create(xml: str, info: dict[str, Any], flags: int) -> tuple[str, dict[str, Any]]:
    """(snapshot name, vm.snapshot_create keyword arguments) for snapshotCreateXML."""
    from compat.virt.domain import check_flags
    from compat.virt.xmlconv import disk_by_path

    check_flags("virDomainSnapshotCreateXML", flags, CREATE_FLAGS)
    for name, why in _NOT_KVMD.items():
        if flags & getattr(c, name):
            raise errors.unsupported(f"virDomain.snapshotCreateXML flag {name}", why)
    root = _parse(xml)
    spec = info["spec"]
    active = info.get("state") not in INACTIVE_STATES
    disk_only = bool(flags & c.VIR_DOMAIN_SNAPSHOT_CREATE_DISK_ONLY)
    name = (root.findtext("name") or "").strip() or str(int(time.time()))
    mem = root.find("memory")
    mem_mode = mem.get("snapshot") if mem is not None else None
    memory_file = mem.get("file") if mem is not None else None
    if memory_file and not mem_mode:
        mem_mode = "external"
    if disk_only and mem_mode not in (None, "no"):
        raise _error(c.VIR_ERR_INVALID_ARG, "disk-only snapshots cannot have memory state")
    if mem_mode == "internal" or (not disk_only and mem_mode in (None, "internal") and active):
        raise _error(c.VIR_ERR_CONFIG_UNSUPPORTED, "kvmd takes external snapshots only: use "
                     "VIR_DOMAIN_SNAPSHOT_CREATE_DISK_ONLY or <memory snapshot='external' file='...'/>")
    if not disk_only and not active and mem_mode != "no":
        raise _error(c.VIR_ERR_CONFIG_UNSUPPORTED, "kvmd snapshots an inactive domain's disks only "
                     "(VIR_DOMAIN_SNAPSHOT_CREATE_DISK_ONLY)")
    memory = mem_mode == "external"
    if memory and not memory_file:
        raise _error(c.VIR_ERR_XML_ERROR, "memory state cannot be saved without a file (<memory file=...>)")
    if flags & c.VIR_DOMAIN_SNAPSHOT_CREATE_LIVE:
        if not memory:
            raise errors.make(c.VIR_ERR_OPERATION_UNSUPPORTED,
                              "live snapshot creation is supported only during full system snapshots")
        raise errors.unsupported("virDomain.snapshotCreateXML flag VIR_DOMAIN_SNAPSHOT_CREATE_LIVE",
                                 "kvmd pauses the guest while its memory is written")
    quiesce = bool(flags & c.VIR_DOMAIN_SNAPSHOT_CREATE_QUIESCE)
    if quiesce and not disk_only:
        raise _error(c.VIR_ERR_OPERATION_INVALID, "quiesce requires disk-only")
    if quiesce and not spec.get("guestAgent"):
        raise errors.make(c.VIR_ERR_ARGUMENT_UNSUPPORTED, "QEMU guest agent is not configured")
    usable = {d["name"]: d for d in writable_disks(spec)}
    chosen = dict.fromkeys(usable)  # kvmd disk name -> overlay path (None: libvirt's default)
    disks_el = root.find("disks")
    for el in disks_el if disks_el is not None else []:
        if not isinstance(el.tag, str) or el.tag != "disk":
            continue
        ref = el.get("name") or ""
        try:
            disk = disk_by_path(spec, ref)
        except errors.libvirtError:
            raise _error(c.VIR_ERR_CONFIG_UNSUPPORTED, f"no disk named '{ref}'") from None
        mode = el.get("snapshot") or "external"
        if mode == "no":
            chosen.pop(disk, None)
            continue
        if mode != "external":
            raise _error(c.VIR_ERR_CONFIG_UNSUPPORTED, f"disk '{ref}': kvmd takes external snapshots only, "
                         f"not snapshot='{mode}'")
        if disk not in usable:
            raise _error(c.VIR_ERR_CONFIG_UNSUPPORTED, f"disk '{ref}' is read-only or has no image to snapshot")
        driver = el.find("driver")
        if driver is not None and driver.get("type", "qcow2") != "qcow2":
            raise _error(c.VIR_ERR_CONFIG_UNSUPPORTED, f"disk '{ref}': kvmd's overlays are qcow2")
        source = el.find("source")
        path = (source.get("file") or source.get("dev")) if source is not None else None
        if path and not os.path.isabs(path):
            raise _error(c.VIR_ERR_CONFIG_UNSUPPORTED, f"disk '{ref}': the overlay path must be absolute")
        chosen[disk] = path or None
    overlays = {d: path or default_overlay(usable[d]["path"], name) for d, path in chosen.items()}
    kwargs: dict[str, Any] = {"snap": name, "disks": list(chosen), "overlays": overlays, "memory": memory,
                              "quiesce": quiesce, "reuse": bool(flags & c.VIR_DOMAIN_SNAPSHOT_CREATE_REUSE_EXT)}
    if memory:
        kwargs["memory_file"] = memory_file
    return name, kwargs


def _parse(xml: str) -> Any:
    from compat.errors import MalformedXML, UnsupportedXML
    from compat.xmlutil import parse

    try:
        root = parse(xml)
    except MalformedXML as e:
        raise errors.make(c.VIR_ERR_XML_DETAIL, str(e), c.VIR_FROM_XML) from None
    except UnsupportedXML as e:
        raise errors.make(c.VIR_ERR_XML_ERROR, str(e), c.VIR_FROM_XML) from None
    if root.tag != "domainsnapshot":
        raise errors.make(c.VIR_ERR_XML_ERROR, f"expecting root element of 'domainsnapshot', not '{root.tag}'",
                          c.VIR_FROM_XML)
    return root


def describe(entry: dict[str, Any], spec: dict[str, Any]) -> str:
    """libvirt's `<domainsnapshot>` for one vm.snapshot_list entry."""
    from lxml import etree

    root = etree.Element("domainsnapshot")
    etree.SubElement(root, "name").text = entry["name"]
    if entry.get("memory"):
        state = "paused" if entry.get("vmState") == "paused" else "running"
    elif entry.get("vmState") in INACTIVE_STATES:
        state = "shutoff"
    else:
        state = "disk-snapshot"
    etree.SubElement(root, "state").text = state
    if entry.get("parent"):
        etree.SubElement(etree.SubElement(root, "parent"), "name").text = entry["parent"]
    etree.SubElement(root, "creationTime").text = str(int(entry.get("createdAt") or 0))
    if entry.get("memoryFile"):
        etree.SubElement(root, "memory", snapshot="external", file=entry["memoryFile"])
    else:
        etree.SubElement(root, "memory", snapshot="no")
    disks = etree.SubElement(root, "disks")
    devs = {d["name"]: d["dev"] for d in writable_disks(spec)}
    for name, p in (entry.get("disks") or {}).items():
        el = etree.SubElement(disks, "disk", name=devs.get(name, name), snapshot="external", type="file")
        etree.SubElement(el, "driver", type="qcow2")
        etree.SubElement(el, "source", file=p["overlay"])
    for name, dev in devs.items():
        if name not in (entry.get("disks") or {}):
            etree.SubElement(disks, "disk", name=dev, snapshot="no")
    etree.indent(root, "  ")
    return etree.tostring(root, encoding="unicode") + "\n"


def matches(entry: dict[str, Any], entries: list[dict[str, Any]], flags: int) -> bool:
    """Does a snapshot pass listAllSnapshots' VIR_DOMAIN_SNAPSHOT_LIST_* filters?"""
    L = c  # noqa: N806
    if flags & L.VIR_DOMAIN_SNAPSHOT_LIST_ROOTS and entry.get("parent"):
        return False
    leaf = not any(e.get("parent") == entry["name"] for e in entries)
    kind = (L.VIR_DOMAIN_SNAPSHOT_LIST_INACTIVE if entry.get("vmState") in INACTIVE_STATES and not entry.get("memory")
            else L.VIR_DOMAIN_SNAPSHOT_LIST_ACTIVE if entry.get("memory") else L.VIR_DOMAIN_SNAPSHOT_LIST_DISK_ONLY)
    groups = [
        (L.VIR_DOMAIN_SNAPSHOT_LIST_LEAVES | L.VIR_DOMAIN_SNAPSHOT_LIST_NO_LEAVES,
         L.VIR_DOMAIN_SNAPSHOT_LIST_LEAVES if leaf else L.VIR_DOMAIN_SNAPSHOT_LIST_NO_LEAVES),
        (L.VIR_DOMAIN_SNAPSHOT_LIST_METADATA | L.VIR_DOMAIN_SNAPSHOT_LIST_NO_METADATA,
         L.VIR_DOMAIN_SNAPSHOT_LIST_METADATA),
        (L.VIR_DOMAIN_SNAPSHOT_LIST_INACTIVE | L.VIR_DOMAIN_SNAPSHOT_LIST_ACTIVE | L.VIR_DOMAIN_SNAPSHOT_LIST_DISK_ONLY,
         kind),
        (L.VIR_DOMAIN_SNAPSHOT_LIST_INTERNAL | L.VIR_DOMAIN_SNAPSHOT_LIST_EXTERNAL,
         L.VIR_DOMAIN_SNAPSHOT_LIST_EXTERNAL),
    ]
    return all(not flags & mask or flags & have for mask, have in groups)


class virDomainSnapshot:  # noqa: N801  (libvirt's name)
    """One kvmd snapshot of a domain, as libvirt-python's snapshot handle."""

    def __init__(self, dom: virDomain, name: str):
        self._dom = dom
        self._name = name

    def __repr__(self) -> str:
        return f"<compat.libvirt.virDomainSnapshot {self._dom.name()}/{self._name}>"

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)

        def unsupported(*_args: Any, **_kwargs: Any) -> Any:
            raise errors.unsupported(f"virDomainSnapshot.{name}", "kvmd's libvirt shim does not provide it")

        return unsupported

    def _entry(self) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        entries = self._dom._snapshots()
        for entry in entries:
            if entry["name"] == self._name:
                return entry, entries
        raise not_found(self._name)

    def getName(self) -> str:  # noqa: N802
        return self._name

    def getDomain(self) -> virDomain:  # noqa: N802
        return self._dom

    domain = getDomain

    def getConnect(self) -> virConnect:  # noqa: N802
        return self._dom.connect()

    def getXMLDesc(self, flags: int = 0) -> str:  # noqa: N802
        from compat.virt.domain import check_flags

        check_flags("virDomainSnapshotGetXMLDesc", flags, c.VIR_DOMAIN_SNAPSHOT_XML_SECURE)
        entry, _ = self._entry()
        return describe(entry, self._dom._info(spec=True)["spec"])

    def getParent(self, flags: int = 0) -> virDomainSnapshot:  # noqa: N802
        entry, _ = self._entry()
        if not entry.get("parent"):
            raise _error(c.VIR_ERR_NO_DOMAIN_SNAPSHOT, f"snapshot '{self._name}' does not have a parent")
        return virDomainSnapshot(self._dom, entry["parent"])

    def isCurrent(self, flags: int = 0) -> int:  # noqa: N802
        return int(bool(self._entry()[0].get("current")))

    def hasMetadata(self, flags: int = 0) -> int:  # noqa: N802
        self._entry()
        return 1

    def delete(self, flags: int = 0) -> int:
        """Merge the layer above the snapshot into its images (vm.snapshot_delete)."""
        from compat.virt.domain import check_flags

        check_flags("virDomainSnapshotDelete", flags, c.VIR_DOMAIN_SNAPSHOT_DELETE_CHILDREN
                         | c.VIR_DOMAIN_SNAPSHOT_DELETE_METADATA_ONLY | c.VIR_DOMAIN_SNAPSHOT_DELETE_CHILDREN_ONLY)
        if flags:
            raise errors.unsupported("virDomainSnapshot.delete flags", "kvmd deletes one snapshot at a time, "
                                     "always merging its layer")
        self._dom._write("snapshotDelete")
        self._entry()
        self._dom._call("vm.snapshot_delete", name=self._dom.name(), snap=self._name)
        return 0


def not_found(name: str) -> errors.libvirtError:
    return errors.make(c.VIR_ERR_NO_DOMAIN_SNAPSHOT, f"no domain snapshot with matching name '{name}'")
