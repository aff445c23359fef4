"""Benchmark: one `vm.stats()` call for N running VMs, against libvirt's getAllDomainStats.

    .venv/bin/python bench/stats.py [--vms N] [--runs R] [--no-libvirt]

Starts a private kvmd (tests/support/daemon.Daemon) in a temporary directory and N
firmware-only VMs (TCG, 128 MiB, balloon) each with one qcow2 disk (made with qemu-img)
and one virtio NIC on the `user` backend; times R (default 10) `vm.stats()` calls over
the API and takes the median. Then, where a private libvirtd can run
(tests/support/libvirtd.py), the same N domains under libvirt and R
`getAllDomainStats()` calls.

Both sides run the NIC without its boot ROM (kvmd: `-global virtio-net-pci.romfile=`,
libvirt: `<rom enabled='no'/>`): under TCG, iPXE costs each VM about 3.5 s of CPU at
boot, and N VMs doing that at once on a small host would measure CPU contention, not
stats collection. Timing starts once the host's CPU has settled. The last line is

    stats_all_ms=T vms=N libvirt_all_ms=L        (L is `na` without libvirt)

Goal (issue 4): T <= 100 ms for N = 100, and T <= L. Every process started here is
killed at the end, pass or fail.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from kvmd.client import AsyncClient  # noqa: E402
from tests.support.daemon import Daemon  # noqa: E402
from benchlib import settle  # noqa: E402  (bench/ is the script directory)

MEMORY_MIB = 128


def make_images(base: str, n: int) -> list[str]:
    paths = [os.path.join(base, f"disk{i}.qcow2") for i in range(n)]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda p: subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", p, "16M"],
                                               check=True), paths))
    return paths


def kvmd_spec(i: int, image: str) -> dict:
    return {"name": f"bench{i}", "memory": {"size": f"{MEMORY_MIB}MiB"},
            "disks": [{"name": "d0", "path": image, "format": "qcow2"}],
            "nics": [{"name": "n0", "backend": "user"}],
            "qemuArgs": ["-global", "virtio-net-pci.romfile="]}


async def bench_kvmd(socket: str, images: list[str], runs: int) -> tuple[float, list[float]]:
    client = AsyncClient(socket)
    await client.connect()
    try:
        sem = asyncio.Semaphore(8)

        async def create(i: int) -> None:
            async with sem:
                await client.call("vm.create", spec=kvmd_spec(i, images[i]))

        started = time.monotonic()
        await asyncio.gather(*(create(i) for i in range(len(images))))
        print(f"kvmd: {len(images)} VMs running after {time.monotonic() - started:.1f}s", flush=True)
        print(f"kvmd: {await asyncio.to_thread(settle, 120)}", flush=True)
        stats = await client.call("vm.stats")  # warm-up, and a check of the answer
        bad = {n: s.get("error") for n, s in stats.items() if "error" in s or s["state"] != "running"}
        if len(stats) != len(images) or bad:
            raise SystemExit(f"vm.stats answered for {len(stats)}/{len(images)} VMs; problems: {bad}")
        times = []
        for _ in range(runs):
            t = time.perf_counter()
            await client.call("vm.stats")
            times.append((time.perf_counter() - t) * 1000)
        return statistics.median(times), times
    finally:
        await client.close()


def libvirt_xml(i: int, image: str) -> str:
    emulator = shutil.which("qemu-system-x86_64") or "/usr/bin/qemu-system-x86_64"
    return f"""<domain type='qemu'>
  <name>bench{i}</name>
  <memory unit='MiB'>{MEMORY_MIB}</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='q35'>hvm</type></os>
  <devices>
    <emulator>{emulator}</emulator>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='{image}'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <interface type='user'><model type='virtio'/><rom enabled='no'/></interface>
    <video><model type='none'/></video>
    <memballoon model='virtio'/>
  </devices>
</domain>
"""


def bench_libvirt(images: list[str], runs: int) -> tuple[float | None, str]:
    try:
        from tests.support.libvirtd import PrivateLibvirtd, unavailable_reason
    except ImportError as e:
        return None, f"tests/support/libvirtd.py unavailable: {e}"
    reason = unavailable_reason()
    if reason:
        return None, reason
    lv = PrivateLibvirtd()
    try:
        lv.start()
        started = time.monotonic()
        conns = [lv.connect() for _ in range(4)]
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda i: conns[i % 4].createXML(libvirt_xml(i, images[i]), 0), range(len(images))))
        print(f"libvirt: {len(images)} domains running after {time.monotonic() - started:.1f}s", flush=True)
        print(f"libvirt: {settle(120)}", flush=True)
        conn = conns[0]
        records = conn.getAllDomainStats(0, 0)  # warm-up, and a check of the answer
        if len(records) != len(images):
            raise SystemExit(f"getAllDomainStats answered for {len(records)}/{len(images)} domains")
        times = []
        for _ in range(runs):
            t = time.perf_counter()
            conn.getAllDomainStats(0, 0)
            times.append((time.perf_counter() - t) * 1000)
        return statistics.median(times), ""
    finally:
        lv.stop()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--vms", type=int, default=50, help="number of VMs (default 50)")
    p.add_argument("--runs", type=int, default=10, help="timed calls; the median is reported (default 10)")
    p.add_argument("--no-libvirt", action="store_true", help="skip the libvirt comparison")
    args = p.parse_args()
    os.environ.setdefault("KVMD_ACCEL", "tcg")
    base = tempfile.mkdtemp(prefix="kvb", dir="/tmp")
    daemon = Daemon(base)
    try:
        images = make_images(base, args.vms)
        daemon.start()
        t_kvmd, all_kvmd = asyncio.run(bench_kvmd(daemon.socket, images, args.runs))
        print("kvmd vm.stats ms: " + " ".join(f"{t:.1f}" for t in all_kvmd), flush=True)
    finally:
        daemon.cleanup()
    lv_text = "na"
    if not args.no_libvirt:
        t_lv, why = bench_libvirt(images, args.runs)
        if t_lv is None:
            print(f"libvirt: not measured ({why})", flush=True)
        else:
            lv_text = f"{t_lv:.1f}"
    shutil.rmtree(base, ignore_errors=True)
    print(f"stats_all_ms={t_kvmd:.1f} vms={args.vms} libvirt_all_ms={lv_text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
