"""kvmd's `vm.stats` in libvirt's shapes: blockStats, interfaceStats, memoryStats, and
the typed-parameter records of `getAllDomainStats` (VDSM's bulk sampling).

kvmd reports CPU time in seconds, sizes in bytes and disk latency as an average per
request; libvirt reports nanoseconds, KiB and total times. Values kvmd does not collect
are left out of the records (libvirt, too, omits what a driver cannot give), except in
the fixed tuples of blockStats (errors: -1, libvirt's "unknown") and interfaceStats
(errors and drops: 0).
"""

from __future__ import annotations

from typing import Any

from compat.virt import constants as c
from compat.virt import errors
from compat.virt.states import to_libvirt

NS = 1_000_000_000


def cpu_ns(s: dict[str, Any]) -> int:
    cpu = s.get("cpu") or {}
    return int(((cpu.get("user_s") or 0) + (cpu.get("system_s") or 0)) * NS)


def balloon_kib(s: dict[str, Any], default_kib: int) -> int:
    actual = (s.get("memory") or {}).get("actual")
    return int(actual) // 1024 if actual else default_kib


def _disk(s: dict[str, Any], name: str) -> dict[str, Any]:
    for d in s.get("disks") or []:
        if d.get("name") == name:
            return d
    if s.get("error"):
        raise errors.make(c.VIR_ERR_OPERATION_FAILED, f"no statistics for disk {name}: {s['error']}")
    return {}


def block_tuple(s: dict[str, Any], name: str) -> tuple[int, int, int, int, int]:
    d = _disk(s, name)
    return (int(d.get("rd_ops", 0)), int(d.get("rd_bytes", 0)), int(d.get("wr_ops", 0)),
            int(d.get("wr_bytes", 0)), -1)


def interface_tuple(s: dict[str, Any], name: str) -> tuple[int, ...]:
    for n in s.get("nics") or []:
        if n.get("name") == name:
            if n.get("unavailable"):
                raise errors.make(c.VIR_ERR_INTERNAL_ERROR, f"no statistics for interface {name}: {n['unavailable']}")
            return (int(n.get("rx_bytes") or 0), int(n.get("rx_packets") or 0), 0, 0,
                    int(n.get("tx_bytes") or 0), int(n.get("tx_packets") or 0), 0, 0)
    raise errors.make(c.VIR_ERR_INVALID_ARG, f"'{name}' is not a known interface", c.VIR_FROM_DOMAIN)


def memory_dict(s: dict[str, Any]) -> dict[str, int]:
    """virDomainMemoryStats keys kvmd has: actual (balloon, KiB), rss (KiB)."""
    mem = s.get("memory") or {}
    out = {}
    if mem.get("actual"):
        out["actual"] = int(mem["actual"]) // 1024
    if mem.get("rss"):
        out["rss"] = int(mem["rss"]) // 1024
    return out


def record(info: dict[str, Any], s: dict[str, Any], groups: int, disk_devs: dict[str, str] | None = None,
           ) -> dict[str, Any]:
    """One domain's getAllDomainStats record for VIR_DOMAIN_STATS_* `groups` (0 = all)."""
    groups = groups or (c.VIR_DOMAIN_STATS_STATE | c.VIR_DOMAIN_STATS_CPU_TOTAL | c.VIR_DOMAIN_STATS_BALLOON
                        | c.VIR_DOMAIN_STATS_VCPU | c.VIR_DOMAIN_STATS_INTERFACE | c.VIR_DOMAIN_STATS_BLOCK)
    out: dict[str, Any] = {}
    active = bool(s.get("cpu"))
    if groups & c.VIR_DOMAIN_STATS_STATE:
        state, reason = to_libvirt(info.get("state", ""), info.get("reason", ""))
        out["state.state"], out["state.reason"] = state, reason
    if groups & c.VIR_DOMAIN_STATS_CPU_TOTAL and active:
        cpu = s["cpu"]
        out["cpu.time"] = cpu_ns(s)
        out["cpu.user"] = int((cpu.get("user_s") or 0) * NS)
        out["cpu.system"] = int((cpu.get("system_s") or 0) * NS)
    if groups & c.VIR_DOMAIN_STATS_BALLOON:
        max_kib = int(info.get("memory") or 0) // 1024
        out["balloon.maximum"] = max_kib
        if active:
            out["balloon.current"] = balloon_kib(s, max_kib)
            rss = (s.get("memory") or {}).get("rss")
            if rss:
                out["balloon.rss"] = int(rss) // 1024
    if groups & c.VIR_DOMAIN_STATS_VCPU:
        out["vcpu.current"] = out["vcpu.maximum"] = int(info.get("vcpus") or 1)
        for i, v in enumerate((s.get("cpu") or {}).get("vcpus") or []):
            out[f"vcpu.{i}.state"] = 1  # VIR_VCPU_RUNNING
            out[f"vcpu.{i}.time"] = int(((v.get("user_s") or 0) + (v.get("system_s") or 0)) * NS)
    if groups & c.VIR_DOMAIN_STATS_INTERFACE and active:
        nics = s.get("nics") or []
        out["net.count"] = len(nics)
        for i, n in enumerate(nics):
            out[f"net.{i}.name"] = n.get("tap") or n.get("name")
            for ours, theirs in (("rx_bytes", "rx.bytes"), ("rx_packets", "rx.pkts"),
                                 ("tx_bytes", "tx.bytes"), ("tx_packets", "tx.pkts")):
                if n.get(ours) is not None:
                    out[f"net.{i}.{theirs}"] = int(n[ours])
    if groups & c.VIR_DOMAIN_STATS_BLOCK and active and "disks" in s:
        disks = s["disks"]
        out["block.count"] = len(disks)
        for i, d in enumerate(disks):
            p = f"block.{i}."
            out[p + "name"] = (disk_devs or {}).get(d["name"], d["name"])
            out[p + "rd.reqs"], out[p + "rd.bytes"] = int(d.get("rd_ops", 0)), int(d.get("rd_bytes", 0))
            out[p + "rd.times"] = int(d.get("rd_latency_ns", 0)) * int(d.get("rd_ops", 0))
            out[p + "wr.reqs"], out[p + "wr.bytes"] = int(d.get("wr_ops", 0)), int(d.get("wr_bytes", 0))
            out[p + "wr.times"] = int(d.get("wr_latency_ns", 0)) * int(d.get("wr_ops", 0))
            out[p + "fl.reqs"] = int(d.get("flush_ops", 0))
    return out
