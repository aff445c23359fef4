"""QMP steps shared by live migration and snapshots.

- Migration capabilities and parameters. QEMU keeps both for the life of the process,
  so every migration (a live one, or a memory state saved for a snapshot) sets all the
  capabilities kvmd uses, not only the ones it wants on, and always turns on `events`
  (MIGRATION state changes as QMP events).
- The memory state to or from a file, on QEMU 7.2 without `file:` URIs and with
  `-sandbox spawn=deny` ruling out `exec:`: kvmd opens the file and passes the
  descriptor (`getfd`), then `migrate fd:NAME` / `migrate-incoming fd:NAME`.
- Block nodes: which node is each disk's active top (`query-block`), which node holds
  an image file (`query-named-block-nodes`), and running a block job to its end.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from typing import TYPE_CHECKING, Any

from kvmd.errors import KvmdError, QemuFailure, Timeout
from kvmd.qemu import cmdline

if TYPE_CHECKING:
    from kvmd.vm import VM

# "No limit" for max-bandwidth (QEMU caps the value near 2**64 / 1000).
UNLIMITED = 1 << 40
MEMORY_TIMEOUT = 600.0
JOB_TIMEOUT = 600.0
CAPABILITIES = ("events", "postcopy-ram", "auto-converge", "pause-before-switchover")
END_STATES = ("completed", "failed", "cancelled")


async def set_capabilities(vm: VM, **wanted: bool) -> None:
    """Set every capability kvmd uses: `events` on, the ones in `wanted` (snake_case), the rest off."""
    caps = dict.fromkeys(CAPABILITIES, False)
    caps.update({k.replace("_", "-"): v for k, v in wanted.items()})
    caps["events"] = True
    await vm.qmp("migrate-set-capabilities",
                 {"capabilities": [{"capability": k, "state": v} for k, v in caps.items()]})


async def set_parameters(vm: VM, bandwidth: int | None = None, downtime_ms: int | None = None) -> None:
    params: dict[str, Any] = {"max-bandwidth": bandwidth or UNLIMITED}
    if downtime_ms is not None:
        params["downtime-limit"] = downtime_ms
    await vm.qmp("migrate-set-parameters", params)


async def _pass_fd(vm: VM, fd: int, fdname: str) -> None:
    if vm.monitor is None:
        raise QemuFailure(f"{vm.name}: no QMP connection to QEMU")
    with contextlib.suppress(KvmdError):  # a stale one from an earlier failed attempt
        await vm.qmp("closefd", {"fdname": fdname})
    vm.monitor.send_fd(fd)
    await vm.qmp("getfd", {"fdname": fdname})


def _ended(event: str, data: dict[str, Any]) -> bool:
    return event == "MIGRATION" and data.get("status") in END_STATES


async def save_memory(vm: VM, path: str) -> dict[str, Any]:
    """Write the (paused) VM's state to a new file `path`; the final query-migrate."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        await set_capabilities(vm)
        await set_parameters(vm)
        await _pass_fd(vm, fd, "snapshot-memory")
    except BaseException:
        os.unlink(path)
        raise
    finally:
        os.close(fd)
    ended = vm.wait_event(_ended)
    try:
        await vm.qmp("migrate", {"uri": "fd:snapshot-memory"})
        await asyncio.wait_for(asyncio.shield(ended), MEMORY_TIMEOUT)
        info = await vm.qmp("query-migrate")
        if info.get("status") != "completed":
            raise QemuFailure(f"{vm.name}: saving the memory state failed: {info.get('error-desc', info.get('status'))}")
        return info
    except BaseException as e:
        with contextlib.suppress(OSError):
            os.unlink(path)
        if isinstance(e, asyncio.TimeoutError):
            with contextlib.suppress(KvmdError):
                await vm.qmp("migrate_cancel")
            raise Timeout(f"{vm.name}: saving the memory state took over {MEMORY_TIMEOUT:g}s") from None
        raise
    finally:
        ended.cancel()


async def load_memory(vm: VM, path: str) -> None:
    """Feed a saved state to an incoming (`-incoming defer`) VM and wait until it is loaded."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        await set_capabilities(vm)
        await _pass_fd(vm, fd, "snapshot-memory")
    finally:
        os.close(fd)
    ended = vm.wait_event(_ended)
    try:
        await vm.qmp("migrate-incoming", {"uri": "fd:snapshot-memory"})
        _, data = await asyncio.wait_for(asyncio.shield(ended), MEMORY_TIMEOUT)
    except TimeoutError:
        raise Timeout(f"{vm.name}: loading the memory state took over {MEMORY_TIMEOUT:g}s") from None
    finally:
        ended.cancel()
    if data.get("status") != "completed":
        raise QemuFailure(f"{vm.name}: loading the memory state from {path} failed ({data.get('status')})")


async def cont_after_incoming(vm: VM, timeout: float = 10.0) -> None:
    """`cont` a VM whose incoming migration just completed.

    QEMU emits MIGRATION completed before its main loop has finalised the incoming side
    (a bottom half), and a `cont` in between fails with "Migration is not finalized yet";
    there is no event for the end of that window, so retry briefly.
    """
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            await vm.qmp("cont")
            return
        except QemuFailure as e:
            if "not finalized" not in str(e) or asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.02)


async def disk_nodes(vm: VM) -> dict[str, str]:
    """disk name -> the node name at the top of its chain, as QEMU has it now."""
    assert vm.live_spec is not None
    ids = {cmdline.device_id(d): d.name for d in vm.live_spec.disks}
    out: dict[str, str] = {}
    for blk in await vm.qmp("query-block"):
        inserted = blk.get("inserted")
        qdev = str(blk.get("qdev") or "")
        parts = qdev.split("/")
        dev_id = parts[3] if qdev.startswith("/machine/peripheral/") and len(parts) > 3 else qdev
        if inserted and dev_id in ids:
            out[ids[dev_id]] = inserted["node-name"]
    return out


async def node_of(vm: VM, path: str) -> str:
    """The format node whose image is the file `path`."""
    for node in await vm.qmp("query-named-block-nodes", {"flat": True}):
        if node.get("file") == path and node.get("drv") not in ("file", "host_device"):
            return str(node["node-name"])
    raise QemuFailure(f"{vm.name}: no block node for {path}")


def _job_event(job_id: str, *events: str) -> Any:
    return lambda event, data: event in events and data.get("device") == job_id


async def run_job(vm: VM, cmd: str, args: dict[str, Any], pivot: bool = False,
                  timeout: float = JOB_TIMEOUT) -> None:
    """Start block job `args["job-id"]` and wait for its end; with `pivot`, wait for READY
    and complete it (an active commit switches the device onto the base)."""
    job_id = args["job-id"]
    first = ("BLOCK_JOB_READY", "BLOCK_JOB_COMPLETED", "BLOCK_JOB_CANCELLED")
    fut = vm.wait_event(_job_event(job_id, *first))
    try:
        await vm.qmp(cmd, args)
        event, data = await asyncio.wait_for(asyncio.shield(fut), timeout)
        if pivot and event == "BLOCK_JOB_READY":
            fut = vm.wait_event(_job_event(job_id, "BLOCK_JOB_COMPLETED", "BLOCK_JOB_CANCELLED"))
            await vm.qmp("job-complete", {"id": job_id})
            event, data = await asyncio.wait_for(asyncio.shield(fut), timeout)
    except TimeoutError:
        with contextlib.suppress(KvmdError):
            await vm.qmp("block-job-cancel", {"device": job_id, "force": True})
        raise Timeout(f"{vm.name}: block job {job_id} did not finish within {timeout:g}s") from None
    finally:
        fut.cancel()
    if event != "BLOCK_JOB_COMPLETED" or data.get("error"):
        raise QemuFailure(f"{vm.name}: {cmd} ({job_id}) failed: {data.get('error') or event}")
