"""Runtime statistics of VMs (cpu, memory, block, network), collected concurrently.

`vm.stats(names=None)` answers for many VMs at once, so it must never be a chain of
blocking round trips: every VM is one task (`asyncio.gather`), and each VM's QMP queries
are issued together on its one QMP connection, so the whole call costs about one QMP
round trip of the slowest VM. A VM whose QMP does not answer within a short timeout (a
stopped or wedged QEMU) gets an `error` entry with whatever could be read from /proc,
instead of stalling the others.

Only what changes is asked for each time. Per QEMU run, the vCPU thread ids
(`query-cpus-fast`) are asked once (kvmd has no vCPU hotplug), and the balloon's actual
size once (`query-balloon`), then followed through QEMU's BALLOON_CHANGE events (QEMU
sends at most one a second, so it may lag the guest by that much). So a steady-state
call costs one `query-blockstats` per VM with disks, and nothing else over QMP.

What comes from where:

    cpu.user_s/system_s        /proc/<pid>/stat of the QEMU process (all its threads)
    cpu.vcpus[]                query-cpus-fast thread ids + /proc/<pid>/task/<tid>/stat
    memory.actual              query-balloon (only when the VM has a balloon)
    memory.rss                 /proc/<pid>/statm
    disks[]                    query-blockstats, mapped back to spec disk names by the
                               device id (`disk-NAME`) or node name (`fmt-NAME`)
    nics[]                     /sys/class/net/<tap>/statistics for tap backends, swapped
                               to the guest's view (the host's rx is the guest's tx);
                               `user` (slirp) and `none` backends have no counters

Reading /proc and /sys is a few small in-memory files per VM: done inline, and never
on paths that can block (no /proc/<pid>/cmdline, no guest filesystems).
"""

from __future__ import annotations

import asyncio
import os
import time
import weakref
from dataclasses import dataclass
from typing import Any

from kvmd.errors import InvalidParams, KvmdError
from kvmd.manager import Manager
from kvmd.spec.model import Nic, VMSpec
from kvmd.states import ACTIVE, State
from kvmd.vm import VM

# Default QMP answer time for stats queries: a healthy QEMU answers in well under 10 ms.
QMP_TIMEOUT = 2.0

_CLK_TCK = os.sysconf("SC_CLK_TCK")
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
_NET_COUNTERS = ("rx_bytes", "tx_bytes", "rx_packets", "tx_packets")
# host tap counter -> guest-view key: what the host receives, the guest transmitted
_TAP_TO_GUEST = {"rx_bytes": "tx_bytes", "tx_bytes": "rx_bytes",
                 "rx_packets": "tx_packets", "tx_packets": "rx_packets"}


# -- /proc and /sys ------------------------------------------------------------------

def _read(path: str) -> str | None:
    """A small /proc or /sys file (one read; no buffered text layer: this runs per VM)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        return os.read(fd, 4096).decode()
    except OSError:
        return None
    finally:
        os.close(fd)


def proc_cpu_times(path: str) -> tuple[float, float] | None:
    """(user_s, system_s) from a /proc/.../stat file; None if it is gone."""
    text = _read(path)
    if not text:
        return None
    # comm (field 2) may hold spaces and parentheses: split after the last ')'
    fields = text[text.rfind(")") + 2:].split()
    try:
        return int(fields[11]) / _CLK_TCK, int(fields[12]) / _CLK_TCK
    except (IndexError, ValueError):
        return None


def proc_rss(pid: int) -> int | None:
    text = _read(f"/proc/{pid}/statm")
    try:
        return int(text.split()[1]) * _PAGE_SIZE if text else None
    except (IndexError, ValueError):
        return None


def _cpu(pid: int, vcpus: list[dict[str, Any]] | None) -> dict[str, Any]:
    times = proc_cpu_times(f"/proc/{pid}/stat")
    out: dict[str, Any] = {"user_s": times[0] if times else None,
                           "system_s": times[1] if times else None}
    if vcpus is not None:
        out["vcpus"] = []
        for cpu in sorted(vcpus, key=lambda c: c.get("cpu-index", 0)):
            tid = cpu.get("thread-id")
            t = proc_cpu_times(f"/proc/{pid}/task/{tid}/stat") if tid else None
            out["vcpus"].append({"cpu": cpu.get("cpu-index"), "thread_id": tid,
                                 "user_s": t[0] if t else None, "system_s": t[1] if t else None})
    return out


def nic_stats(nic: Nic) -> dict[str, Any]:
    """Counters of one NIC in the guest's view, or nulls with an `unavailable` reason."""
    out: dict[str, Any] = {"name": nic.name, **dict.fromkeys(_NET_COUNTERS)}
    if nic.backend == "tap":
        if not nic.tap:
            out["unavailable"] = "tap device name not known"
            return out
        base = f"/sys/class/net/{nic.tap}/statistics"
        for host_key, guest_key in _TAP_TO_GUEST.items():
            text = _read(f"{base}/{host_key}")
            if text is None:
                out.update(dict.fromkeys(_NET_COUNTERS))
                out["unavailable"] = f"no statistics for tap {nic.tap}"
                return out
            out[guest_key] = int(text)
        return out
    out["unavailable"] = ("user-mode networking (slirp) exposes no counters" if nic.backend == "user"
                          else f"no backend ({nic.backend})")
    return out


# -- QMP results -> spec names -------------------------------------------------------

def _disk_name(entry: dict[str, Any], names: set[str]) -> str | None:
    """Map a query-blockstats entry back to a spec disk name (None: not one of ours)."""
    qdev = entry.get("qdev") or ""
    if qdev.startswith("/machine/peripheral/"):
        qdev = qdev.split("/")[3]
    if qdev.startswith("disk-") and qdev[5:] in names:
        return qdev[5:]
    node = entry.get("node-name") or ""
    if node.startswith("fmt-") and node[4:] in names:
        return node[4:]
    dev = entry.get("device") or ""
    return dev[5:] if dev.startswith("disk-") and dev[5:] in names else None


def disk_stats(spec: VMSpec, blockstats: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per spec disk, in spec order; a disk QEMU does not report (empty cdrom) has zeros."""
    names = {d.name for d in spec.disks}
    by_name: dict[str, dict[str, Any]] = {}
    for entry in blockstats:
        name = _disk_name(entry, names)
        if name is not None and name not in by_name:
            by_name[name] = entry.get("stats", {})
    out = []
    for disk in spec.disks:
        s = by_name.get(disk.name, {})
        rd_ops, wr_ops = s.get("rd_operations", 0), s.get("wr_operations", 0)
        out.append({
            "name": disk.name,
            "rd_bytes": s.get("rd_bytes", 0), "wr_bytes": s.get("wr_bytes", 0),
            "rd_ops": rd_ops, "wr_ops": wr_ops,
            "rd_latency_ns": s.get("rd_total_time_ns", 0) // rd_ops if rd_ops else 0,
            "wr_latency_ns": s.get("wr_total_time_ns", 0) // wr_ops if wr_ops else 0,
            "flush_ops": s.get("flush_operations", 0),
        })
    return out


# -- what is known of a QEMU run --------------------------------------------------------

@dataclass
class _Run:
    """Per QEMU process: answers that do not change, and the balloon as events tell it."""

    pid: int
    vcpus: list[dict[str, Any]] | None = None
    balloon: int | None = None
    balloon_events: int = 0


_runs: weakref.WeakKeyDictionary[VM, _Run] = weakref.WeakKeyDictionary()


def _run_of(vm: VM, pid: int) -> _Run:
    run = _runs.get(vm)
    if run is None or run.pid != pid:
        if run is None and _on_qmp_event not in vm.device_handlers:
            vm.device_handlers.append(_on_qmp_event)
        run = _runs[vm] = _Run(pid)
    return run


def _on_qmp_event(vm: VM, event: str, data: dict[str, Any]) -> None:
    if event == "BALLOON_CHANGE":
        run = _runs.get(vm)
        if run is not None and vm.proc is not None and vm.proc.pid == run.pid:
            run.balloon = data.get("actual")
            run.balloon_events += 1


# -- one VM, all VMs -----------------------------------------------------------------

async def vm_stats(vm: VM, timeout: float = QMP_TIMEOUT) -> dict[str, Any]:
    """Stats of one VM; inactive (or still starting) VMs report just their state."""
    out: dict[str, Any] = {"state": str(vm.state)}
    proc = vm.proc
    if vm.state not in ACTIVE or vm.state == State.STARTING or proc is None:
        return out
    spec = vm.live_spec or vm.spec
    pid = proc.pid
    run = _run_of(vm, pid)
    out["uptime"] = round(time.time() - vm.started_at, 3) if vm.started_at else None
    queries = []
    if spec.disks:
        queries.append("query-blockstats")
    if run.vcpus is None:
        queries.append("query-cpus-fast")
    if spec.memory.balloon and run.balloon is None:
        queries.append("query-balloon")
    events_before = run.balloon_events
    if len(queries) == 1:  # the steady state: no gather (no extra tasks)
        try:
            results: list[Any] = [await vm.qmp(queries[0], timeout=timeout)]
        except KvmdError as e:
            results = [e]
    else:
        results = await asyncio.gather(*(vm.qmp(q, timeout=timeout) for q in queries),
                                       return_exceptions=True)
    answers: dict[str, Any] = {}
    errors = []
    for q, r in zip(queries, results, strict=True):
        if isinstance(r, KvmdError):
            errors.append(r.message)
        elif isinstance(r, BaseException):
            errors.append(f"{q}: {type(r).__name__}: {r}")
        else:
            answers[q] = r
    if "query-cpus-fast" in answers:
        run.vcpus = answers["query-cpus-fast"]
    balloon = answers.get("query-balloon")
    if isinstance(balloon, dict) and run.balloon_events == events_before:  # no newer event
        run.balloon = balloon.get("actual")
    out["cpu"] = _cpu(pid, run.vcpus)
    if any(v["user_s"] is None for v in out["cpu"].get("vcpus", [])):
        run.vcpus = None  # a thread is gone: ask QEMU again next time
    out["memory"] = {"size": spec.memory.size, "actual": run.balloon if spec.memory.balloon else None,
                     "rss": proc_rss(pid)}
    if not spec.disks:
        out["disks"] = []
    elif "query-blockstats" in answers:
        out["disks"] = disk_stats(spec, answers["query-blockstats"])
    out["nics"] = [nic_stats(nic) for nic in spec.nics]
    if errors:
        out["error"] = "; ".join(dict.fromkeys(errors))  # one timeout says it all
    return out


async def collect(m: Manager, names: list[str] | None = None,
                  timeout: float = QMP_TIMEOUT) -> dict[str, dict[str, Any]]:
    """{name: stats} for `names` (unknown names fail: NoSuchVM), or every active VM."""
    if names is None:
        vms = [vm for vm in m.vms.values() if vm.state in ACTIVE]
    else:
        vms = [m.get(name) for name in dict.fromkeys(names)]
    vms.sort(key=lambda v: v.name)
    results = await asyncio.gather(*(_guarded(vm, timeout) for vm in vms))
    return {vm.name: r for vm, r in zip(vms, results, strict=True)}


async def _guarded(vm: VM, timeout: float) -> dict[str, Any]:
    """vm_stats with an outer bound: one VM can never hold up the whole answer."""
    try:
        async with asyncio.timeout(timeout + 0.5):  # unlike wait_for, no extra task
            return await vm_stats(vm, timeout)
    except TimeoutError:
        return {"state": str(vm.state), "error": f"no stats within {timeout:g}s"}
    except KvmdError as e:
        return {"state": str(vm.state), "error": e.message}


def api_methods(m: Manager) -> dict[str, Any]:
    async def stats(names: list | str | None = None, timeout: float | None = None) -> dict:
        if isinstance(names, str):
            names = [names]
        if names is not None and not all(isinstance(n, str) for n in names):
            raise InvalidParams("vm.stats: names must be a list of VM names", {"param": "names"})
        t = QMP_TIMEOUT if timeout is None else timeout
        if t <= 0:
            raise InvalidParams("vm.stats: timeout must be positive", {"param": "timeout"})
        return await collect(m, names, t)

    return {"vm.stats": stats}
