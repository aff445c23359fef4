"""VmStats as VDSM reports them, built from the libvirt-shaped connection.

Field names follow VDSM's `RunningVmStats` / `ExitedVmStats`. Rates (cpuUsage, disk
read/write rates) are computed against the previous sample of the same VM. All of one
VM's libvirt calls run in one worker thread; all VMs are collected concurrently.
"""

from __future__ import annotations

import asyncio
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from vdsm.virt import status as st

if TYPE_CHECKING:
    from vdsm.virt.service import VirtService
    from vdsm.virt.vmrecord import VmRecord


@dataclass
class Sample:
    when: float
    cpu_user: float = 0.0
    cpu_sys: float = 0.0
    disks: dict[str, tuple[int, int]] = field(default_factory=dict)


_prev: dict[str, Sample] = {}


def devices(xml: str) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """(disks, nics) of a domain XML: target dev, source, serial / mac, target, model."""
    root = ET.fromstring(xml)
    disks, nics = [], []
    for d in root.iterfind("./devices/disk"):
        target = d.find("target")
        source = d.find("source")
        disks.append({"dev": target.get("dev", "") if target is not None else "",
                      "path": (source.get("file") or source.get("dev") or "") if source is not None else "",
                      "device": d.get("device", "disk"),
                      "serial": (d.findtext("serial") or "")})
    for n in root.iterfind("./devices/interface"):
        mac = n.find("mac")
        target = n.find("target")
        alias = n.find("alias")
        model = n.find("model")
        nics.append({"mac": mac.get("address", "") if mac is not None else "",
                     "dev": target.get("dev", "") if target is not None else "",
                     "alias": alias.get("name", "") if alias is not None else "",
                     "model": model.get("type", "") if model is not None else ""})
    return disks, nics


def _gather(dom: Any, lv: Any) -> dict[str, Any]:
    """Every blocking call for one VM (runs in a worker thread)."""
    out: dict[str, Any] = {"xml": dom.XMLDesc(0), "info": dom.info()}
    try:
        cpu = dom.getCPUStats(True)
        out["cpu"] = cpu[0] if cpu else {}
    except (lv.libvirtError, AttributeError):
        out["cpu"] = {}
    try:
        out["mem"] = dom.memoryStats()
    except (lv.libvirtError, AttributeError):
        out["mem"] = {}
    disks, nics = devices(out["xml"])
    out["disks"], out["nics"] = {}, {}
    for d in disks:
        try:
            out["disks"][d["dev"]] = (d, dom.blockStats(d["dev"]))
        except lv.libvirtError:
            out["disks"][d["dev"]] = (d, None)
    for n in nics:
        key = n["dev"] or n["mac"]
        try:
            out["nics"][key] = (n, dom.interfaceStats(key))
        except lv.libvirtError:
            out["nics"][key] = (n, None)
    return out


async def collect(svc: VirtService, rec: VmRecord) -> dict[str, Any]:
    if rec.status == st.DOWN:
        return rec.exited_stats()
    backend = svc.backend(rec.backend)
    try:
        dom = await svc.domain(rec)
        raw = await asyncio.to_thread(_gather, dom, backend.lv)
    except Exception as e:  # the engine wants an answer for every VM
        return {"vmId": rec.vm_id, "status": rec.status, "statusTime": rec.status_time,
                "monitorResponse": "-1", "exitMessage": str(e)}
    now = time.monotonic()
    prev = _prev.get(rec.vm_id)
    state, max_kib, mem_kib, vcpus, _cpu_ns = raw["info"]
    user_s = raw["cpu"].get("user_time", 0) / 1e9
    sys_s = raw["cpu"].get("system_time", 0) / 1e9
    interval = (now - prev.when) if prev else 0.0

    def pct(cur: float, old: float) -> str:
        return f"{max(0.0, (cur - old) / interval * 100 / max(vcpus, 1)):.2f}" if interval > 0 else "0.00"

    disks: dict[str, Any] = {}
    sample = Sample(now, user_s, sys_s)
    for dev, (d, bs) in raw["disks"].items():
        rd_req, rd_bytes, wr_req, wr_bytes = (bs[0], bs[1], bs[2], bs[3]) if bs else (0, 0, 0, 0)
        sample.disks[dev] = (rd_bytes, wr_bytes)
        old = prev.disks.get(dev, (rd_bytes, wr_bytes)) if prev else (rd_bytes, wr_bytes)
        disks[dev] = {"readBytes": str(rd_bytes), "writtenBytes": str(wr_bytes),
                      "readOps": str(rd_req), "writeOps": str(wr_req),
                      "readRate": f"{(rd_bytes - old[0]) / interval:.1f}" if interval > 0 else "0.0",
                      "writeRate": f"{(wr_bytes - old[1]) / interval:.1f}" if interval > 0 else "0.0",
                      "readLatency": "0", "writeLatency": "0", "flushLatency": "0",
                      "apparentsize": "0", "truesize": "0", "imageID": d.get("serial", "")}
    network: dict[str, Any] = {}
    for key, (n, ns) in raw["nics"].items():
        rx, _rxp, rxe, rxd, tx, _txp, txe, txd = ns if ns else (0,) * 8
        network[n["dev"] or n["alias"] or key] = {
            "name": n["dev"] or n["alias"] or key, "macAddr": n["mac"], "state": "unknown",
            "rx": str(rx), "tx": str(tx), "rxErrors": str(rxe), "txErrors": str(txe),
            "rxDropped": str(rxd), "txDropped": str(txd), "speed": "1000", "sampleTime": now}
    _prev[rec.vm_id] = sample
    mem = raw["mem"]
    usable, avail = mem.get("usable"), mem.get("available")
    mem_usage = int(100 * (avail - usable) / avail) if usable is not None and avail else 0
    out = {
        "vmId": rec.vm_id, "vmName": rec.name, "status": rec.status, "statusTime": rec.status_time,
        "elapsedTime": str(int(time.time() - rec.started)),
        "vmType": "kvm", "kvmEnable": "true", "acpiEnable": "true", "timeOffset": "0",
        "monitorResponse": "0", "vcpuCount": str(vcpus), "vcpuPeriod": 100000, "vcpuQuota": "-1",
        "cpuUser": pct(user_s, prev.cpu_user if prev else user_s),
        "cpuSys": pct(sys_s, prev.cpu_sys if prev else sys_s),
        "cpuUsage": str(int((user_s + sys_s) * 1e9)),
        "memUsage": str(mem_usage),
        "memoryStats": {k: str(v) for k, v in mem.items()},
        "balloonInfo": {"balloon_max": str(max_kib), "balloon_cur": str(mem.get("actual", mem_kib)),
                        "balloon_target": str(mem.get("actual", mem_kib)), "balloon_min": "0",
                        "ballooning_enabled": True},
        "disks": disks, "network": network, "disksUsage": [],
        "hash": str(hash((tuple(sorted(disks)), tuple(sorted(network)))) & 0xFFFFFFFF),
        "guestIPs": "", "guestFQDN": "", "netIfaces": [], "displayInfo": _display(raw["xml"]),
        "migrationProgress": 0, "pid": "0",
    }
    return out


def _display(xml: str) -> list[dict[str, str]]:
    out = []
    for g in ET.fromstring(xml).iterfind("./devices/graphics"):
        out.append({"type": g.get("type", ""), "port": g.get("port", "-1"),
                    "tlsPort": g.get("tlsPort", "-1"), "ipAddress": g.get("listen", "")})
    return out
