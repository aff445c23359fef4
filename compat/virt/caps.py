"""`virConnect.getCapabilities()` and `getInfo()` for a kvmd host, from kvmd's `host.info`.

libvirt's capabilities XML describes the host (CPU arch and topology, NUMA cells, memory)
and what guests it can run (os type, arch, emulator, machine types, domain types). Callers
(VDSM's caps, hooks) read a few of these: arch, the emulator, whether `kvm` is a domain
type, the host's memory and CPU count. The shim prints those from what kvmd reports, in
libvirt's layout; CPU models and features are not probed (kvmd passes `cpu.model` on
to QEMU as given), so `<host><cpu>` has only arch and topology.
"""

from __future__ import annotations

import os
import platform
import uuid as uuidlib
import xml.etree.ElementTree as ET
from typing import Any

MACHINES = ("q35", "pc")


def host_uuid() -> str:
    """The host's UUID: DMI product uuid, else /etc/machine-id, else a stable hash of the name."""
    for path in ("/sys/class/dmi/id/product_uuid", "/etc/machine-id"):
        try:
            with open(path) as f:
                text = f.read().strip()
            return str(uuidlib.UUID(text))
        except (OSError, ValueError):
            continue
    return str(uuidlib.uuid5(uuidlib.NAMESPACE_DNS, platform.node()))


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    el = ET.SubElement(parent, tag, attrs)
    if text is not None:
        el.text = text
    return el


def capabilities_xml(host: dict[str, Any]) -> str:
    qemu = host.get("qemu") or {}
    cpus = int(host.get("cpus") or os.cpu_count() or 1)
    memory_kib = int(host.get("memory") or 0) // 1024
    arch = platform.machine() or "x86_64"
    root = ET.Element("capabilities")
    h = _sub(root, "host")
    _sub(h, "uuid", host_uuid())
    cpu = _sub(h, "cpu")
    _sub(cpu, "arch", arch)
    _sub(cpu, "topology", sockets="1", dies="1", cores=str(cpus), threads="1")
    _sub(h, "power_management")
    _sub(h, "iommu", support="no")
    topo = _sub(_sub(h, "topology"), "cells", num="1")
    cell = _sub(topo, "cell", id="0")
    _sub(cell, "memory", str(memory_kib), unit="KiB")
    cpus_el = _sub(cell, "cpus", num=str(cpus))
    for i in range(cpus):
        _sub(cpus_el, "cpu", id=str(i), socket_id="0", core_id=str(i), siblings=str(i))
    sec = _sub(h, "secmodel")
    _sub(sec, "model", "none")
    _sub(sec, "doi", "0")
    guest = _sub(root, "guest")
    _sub(guest, "os_type", "hvm")
    arch_el = _sub(guest, "arch", name=arch)
    _sub(arch_el, "wordsize", "64" if arch.endswith("64") else "32")
    if qemu.get("binary"):
        _sub(arch_el, "emulator", qemu["binary"])
    for machine in MACHINES:
        _sub(arch_el, "machine", machine)
    _sub(arch_el, "domain", type="qemu")
    if qemu.get("kvmDevice") and "kvm" in (host.get("accel") or []):
        _sub(arch_el, "domain", type="kvm")
    feats = _sub(guest, "features")
    _sub(feats, "acpi", default="on", toggle="yes")
    _sub(feats, "apic", default="on", toggle="no")
    ET.indent(root)
    return ET.tostring(root, encoding="unicode") + "\n"


def version_number(version: str | None) -> int:
    """'7.2.22' -> 7002022, libvirt's major * 1,000,000 + minor * 1,000 + release."""
    parts = [int(p) for p in (version or "0").split(".")[:3] if p.isdigit()]
    parts += [0] * (3 - len(parts))
    return parts[0] * 1_000_000 + parts[1] * 1_000 + parts[2]


def node_info(host: dict[str, Any]) -> list[Any]:
    """virConnect.getInfo(): [arch, memory MiB, cpus, MHz, NUMA nodes, sockets, cores, threads]."""
    cpus = int(host.get("cpus") or os.cpu_count() or 1)
    mhz = 0
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("cpu MHz"):
                    mhz = int(float(line.split(":")[1]))
                    break
    except (OSError, ValueError):
        pass
    return [platform.machine() or "x86_64", int(host.get("memory") or 0) >> 20, cpus, mhz, 1, 1, cpus, 1]
