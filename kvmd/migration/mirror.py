"""Copying a migrating VM's disks when there is no shared storage: `blockdev-mirror`
of every writable disk to the NBD exports the destination kvmd prepared, kept READY until
the switch-over, then ended (a READY mirror cancelled is a complete copy) and its NBD
nodes dropped. Also the small helpers the outgoing driver shares with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from kvmd import snapshot
from kvmd.errors import KvmdError, MigrationFailed
from kvmd.migration import qemu
from kvmd.states import State

if TYPE_CHECKING:
    from kvmd.migration.outgoing import Job
    from kvmd.vm import VM

POLL = 0.25            # query-migrate / query-block-jobs while a migration runs
KEEPALIVE = 5.0        # tell the destination we are alive during a long storage copy


class _Cancelled(Exception):
    pass


# -- the verb ------------------------------------------------------------------------------


async def _next_event(job: Job, timeout: float) -> tuple[str, dict[str, Any]] | None:
    try:
        return await asyncio.wait_for(job.events.get(), timeout)
    except TimeoutError:
        return None


def _check_alive(vm: VM, job: Job) -> None:
    if vm.state != State.MIGRATING_OUT:
        raise MigrationFailed(f"the VM is now {vm.state} ({vm.reason})")
    if job.cancel_requested:
        raise _Cancelled("cancelled")


async def _disk_sizes(vm: VM) -> dict[str, dict[str, Any]]:
    assert vm.live_spec is not None
    nodes = await qemu.disk_nodes(vm)
    sizes = {}
    for blk in await vm.qmp("query-block"):
        inserted = blk.get("inserted") or {}
        if inserted.get("node-name") in nodes.values():
            sizes[inserted["node-name"]] = inserted.get("image", {}).get("virtual-size")
    out = {}
    for disk in vm.live_spec.disks:
        if snapshot._snapshottable(disk) and disk.name in nodes:
            out[disk.name] = {"size": sizes.get(nodes[disk.name]), "format": disk.format}
    return out


async def _mirror(vm: VM, job: Job) -> None:
    """Copy every disk to its NBD export and keep mirroring until the switch-over."""
    assert job.nbd is not None and job.client is not None
    nodes = await qemu.disk_nodes(vm)
    server = {"type": "inet", "host": job.nbd["host"], "port": str(job.nbd["port"])}
    for disk, export in job.nbd["exports"].items():
        node = f"mig-{disk}"
        await vm.qmp("blockdev-add", {"driver": "nbd", "node-name": node, "server": server, "export": export})
        job.nbd_nodes.append(node)
    for disk in job.nbd["exports"]:
        args: dict[str, Any] = {"job-id": f"mig-{disk}", "device": nodes[disk], "target": f"mig-{disk}",
                                "sync": "full"}
        if job.opts.bandwidth:
            args["speed"] = job.opts.bandwidth
        await vm.qmp("blockdev-mirror", args)
        job.mirror_jobs.append(args["job-id"])
    ready: set[str] = set()
    last_ping = time.monotonic()
    last = (time.monotonic(), 0)
    while ready != set(job.mirror_jobs):
        _check_alive(vm, job)
        ev = await _next_event(job, POLL)
        if ev is not None:
            event, data = ev
            dev = data.get("device")
            if event == "BLOCK_JOB_READY" and dev in job.mirror_jobs:
                ready.add(dev)
            elif event in ("BLOCK_JOB_COMPLETED", "BLOCK_JOB_CANCELLED", "BLOCK_JOB_ERROR") \
                    and dev in job.mirror_jobs:
                job.mirror_jobs.remove(dev)
                raise MigrationFailed(f"copying disk {dev[4:]} failed: {data.get('error') or event}")
            continue
        for info in await vm.qmp("query-block-jobs"):
            if info.get("device") in job.mirror_jobs:
                job.storage[info["device"][4:]] = {"offset": info.get("offset", 0), "len": info.get("len", 0)}
        now, done = time.monotonic(), sum(j["offset"] for j in job.storage.values())
        if now - last[0] >= 1.0:
            job.storage_speed, last = int((done - last[1]) / (now - last[0])), (now, done)
        if now - last_ping > KEEPALIVE:
            await job.client.call("vm.migrate_status", name=job.name)
            last_ping = now
    for dev in job.mirror_jobs:
        j = job.storage.get(dev[4:])
        if j:
            j["offset"] = j["len"]


def _job_ended(job_id: str) -> Callable[[str, dict[str, Any]], bool]:
    return lambda event, data: event in ("BLOCK_JOB_COMPLETED", "BLOCK_JOB_CANCELLED") \
        and data.get("device") == job_id


async def _release_storage(vm: VM, job: Job, force: bool = False) -> None:
    """End the mirror jobs (a READY one ends with its target complete) and drop the NBD nodes."""
    pending = list(job.mirror_jobs)
    ended = [vm.wait_event(_job_ended(j)) for j in pending]
    try:
        for jid in pending:
            with contextlib.suppress(KvmdError):
                await vm.qmp("block-job-cancel", {"device": jid, "force": force})
        if ended:
            await asyncio.wait(ended, timeout=30)
    finally:
        for fut in ended:
            fut.cancel()
    job.mirror_jobs = []
    for node in job.nbd_nodes:
        with contextlib.suppress(KvmdError):
            await vm.qmp("blockdev-del", {"node-name": node})
    job.nbd_nodes = []
