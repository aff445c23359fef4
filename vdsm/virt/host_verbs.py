"""Host.* verbs: ping2, echo, capabilities, stats, hardware, VM lists, dumpxmls, jobs."""

from __future__ import annotations

import asyncio
import logging
import os
import platform
import time
from typing import TYPE_CHECKING, Any

from vdsm.virt import stats as vmstats
from vdsm.virt import status as st

if TYPE_CHECKING:
    from vdsm.virt.service import VirtService

log = logging.getLogger(__name__)


def _meminfo() -> dict[str, int]:
    out = {}
    with open("/proc/meminfo") as f:
        for line in f:
            key, value = line.split(":", 1)
            out[key] = int(value.split()[0])
    return out


def handlers(svc: VirtService) -> dict[str, Any]:
    async def ping2() -> None:
        return None

    async def echo(message: str) -> str:
        log.info("Host.echo: %s", message)
        return message

    async def get_capabilities() -> dict[str, Any]:
        caps: dict[str, Any] = {
            "kvmEnabled": str(os.access("/dev/kvm", os.R_OK | os.W_OK)).lower(),
            "cpuCores": str(os.cpu_count()),
            "cpuThreads": str(os.cpu_count()),
            "cpuSockets": "1",
            "memSize": str(_meminfo().get("MemTotal", 0) // 1024),
            "operatingSystem": {"name": platform.system(), "release": platform.release(), "version": platform.version()},
            "hostname": platform.node(),
            "software_version": "4.50", "software_revision": "0",
            "supportedENGINEs": ["4.4", "4.5"], "clusterLevels": ["4.4", "4.5", "4.6", "4.7"],
            "version_name": "kvmd-vdsm",
            "backends": {"default": svc.cfg.backend, "active": sorted(svc.backends)},
        }
        for name, backend in svc.backends.items():
            try:
                caps[f"{name}Version"] = await asyncio.to_thread(backend.conn.getLibVersion)
            except Exception as e:  # report, do not fail the whole call
                caps[f"{name}Version"] = f"unavailable: {e}"
        caps = await svc.hooks.json("after_get_caps", caps)
        return caps

    async def get_stats() -> dict[str, Any]:
        mem = _meminfo()
        load = os.getloadavg()
        counts = {"vmCount": len(svc.vms),
                  "vmActive": sum(1 for r in svc.vms.values() if r.status != st.DOWN),
                  "vmMigrating": sum(1 for r in svc.vms.values() if r.migrating)}
        out = {"cpuLoad": f"{load[0]:.2f}", "memFree": mem.get("MemAvailable", 0) // 1024,
               "memAvailable": mem.get("MemAvailable", 0) // 1024, "memCommitted": 0,
               "swapTotal": mem.get("SwapTotal", 0) // 1024, "swapFree": mem.get("SwapFree", 0) // 1024,
               "elapsedTime": str(int(time.monotonic())), "bootTime": str(int(time.time() - time.monotonic())),
               **counts}
        return await svc.hooks.json("after_get_stats", out)

    async def get_hardware_info() -> dict[str, str]:
        def dmi(key: str) -> str:
            try:
                with open(f"/sys/class/dmi/id/{key}") as f:
                    return f.read().strip()
            except OSError:
                return ""
        return {"systemManufacturer": dmi("sys_vendor"), "systemProductName": dmi("product_name"),
                "systemVersion": dmi("product_version"), "systemSerialNumber": dmi("product_serial"),
                "systemUUID": dmi("product_uuid"), "systemFamily": dmi("product_family")}

    def _selected(vm_list: list | None) -> list:
        recs = list(svc.vms.values())
        if vm_list:
            wanted = set(vm_list)
            recs = [r for r in recs if r.vm_id in wanted]
        return recs

    async def get_vm_list(fullStatus: bool = False, vmList: list | None = None,  # noqa: N803 - VDSM names
                          onlyUUID: bool = False) -> list:  # noqa: N803
        recs = _selected(vmList)
        if onlyUUID:
            return [r.vm_id for r in recs]
        return [r.short() for r in recs]

    async def get_vm_full_list(vmList: list | None = None) -> list:  # noqa: N803
        return [r.short() for r in _selected(vmList)]

    async def get_all_vm_stats() -> list:
        out = await asyncio.gather(*(vmstats.collect(svc, rec) for rec in list(svc.vms.values())))
        return await svc.hooks.json("after_get_all_vm_stats", list(out))

    async def dumpxmls(vmList: list | None = None) -> dict[str, str]:  # noqa: N803
        out = {}
        for rec in _selected(vmList):
            if rec.status == st.DOWN:
                continue
            dom = await svc.domain(rec)
            backend = svc.backend(rec.backend)
            out[rec.vm_id] = await svc.call(backend, dom.XMLDesc, 0)
        return out

    async def get_jobs(job_type: str | None = None, job_ids: list | None = None) -> dict:
        """The jobs this endpoint ran (VM.snapshot with a jobUUID), as HostJobInfo records."""
        return {jid: dict(job) for jid, job in svc.jobs.items()
                if (not job_type or job.get("job_type") == job_type) and (not job_ids or jid in job_ids)}

    return {"Host.ping2": ping2, "Host.echo": echo, "Host.getCapabilities": get_capabilities,
            "Host.getStats": get_stats, "Host.getHardwareInfo": get_hardware_info,
            "Host.getVMList": get_vm_list, "Host.getVMFullList": get_vm_full_list,
            "Host.getAllVmStats": get_all_vm_stats, "Host.dumpxmls": dumpxmls, "Host.getJobs": get_jobs}
