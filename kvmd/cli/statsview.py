"""How `kvmctl stats` shows `vm.stats` results to people (pure: data in, text out).

Without a VM name: one table row per VM (state, uptime, cpu seconds, RSS, balloon,
disk and network totals). With a name: that VM in detail, one line per vCPU, disk and
NIC. Missing values show as `-`; an `error` entry is shown as its own line.
"""

from __future__ import annotations

from typing import Any

from kvmd.cli.output import NONE, human_duration, human_size


def _secs(v: float | None) -> str:
    return NONE if v is None else f"{v:.2f}s"


def _sum(items: list[dict[str, Any]], key: str) -> int | None:
    vals: list[int] = [i[key] for i in items if i.get(key) is not None]
    return sum(vals) if vals else None


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)


def stats_table(stats: dict[str, dict[str, Any]]) -> str:
    """All VMs, one row each."""
    if not stats:
        return "no active VMs"
    rows = [["NAME", "STATE", "UPTIME", "CPU", "RSS", "BALLOON", "DISK-RD", "DISK-WR", "NET-RX", "NET-TX"]]
    notes = []
    for name, s in sorted(stats.items()):
        cpu = s.get("cpu") or {}
        used = None if cpu.get("user_s") is None else cpu["user_s"] + (cpu.get("system_s") or 0)
        mem = s.get("memory") or {}
        disks, nics = s.get("disks") or [], s.get("nics") or []
        rows.append([name, s.get("state", "?"), human_duration(s.get("uptime")), _secs(used),
                     human_size(mem.get("rss")), human_size(mem.get("actual")),
                     human_size(_sum(disks, "rd_bytes")), human_size(_sum(disks, "wr_bytes")),
                     human_size(_sum(nics, "rx_bytes")), human_size(_sum(nics, "tx_bytes"))])
        if s.get("error"):
            notes.append(f"{name}: {s['error']}")
    return "\n".join([_table(rows), *notes])


def stats_detail(name: str, s: dict[str, Any]) -> str:
    """One VM in detail."""
    lines = [f"{name}: {s.get('state', '?')}"]
    if s.get("error"):
        lines.append(f"  error: {s['error']}")
    if "uptime" in s:
        lines.append(f"  uptime: {human_duration(s.get('uptime'))}")
    cpu = s.get("cpu")
    if cpu:
        lines.append(f"  cpu: user {_secs(cpu.get('user_s'))}, system {_secs(cpu.get('system_s'))}")
        for v in cpu.get("vcpus", []):
            lines.append(f"    vcpu {v.get('cpu')} (thread {v.get('thread_id')}): "
                         f"user {_secs(v.get('user_s'))}, system {_secs(v.get('system_s'))}")
    mem = s.get("memory")
    if mem:
        lines.append(f"  memory: size {human_size(mem.get('size'))}, balloon {human_size(mem.get('actual'))}, "
                     f"rss {human_size(mem.get('rss'))}")
    for d in s.get("disks", []):
        lines.append(f"  disk {d['name']}: read {human_size(d.get('rd_bytes'))} in {d.get('rd_ops')} ops "
                     f"({d.get('rd_latency_ns', 0) / 1000:.0f}us avg), written {human_size(d.get('wr_bytes'))} "
                     f"in {d.get('wr_ops')} ops ({d.get('wr_latency_ns', 0) / 1000:.0f}us avg), "
                     f"{d.get('flush_ops')} flushes")
    for n in s.get("nics", []):
        if n.get("unavailable"):
            lines.append(f"  nic {n['name']}: counters unavailable ({n['unavailable']})")
        else:
            lines.append(f"  nic {n['name']}: rx {human_size(n.get('rx_bytes'))} / {n.get('rx_packets')} pkts, "
                         f"tx {human_size(n.get('tx_bytes'))} / {n.get('tx_packets')} pkts")
    return "\n".join(lines)
