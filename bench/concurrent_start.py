#!/usr/bin/env python3
"""N firmware-only VMs started at once: kvmd vs libvirt.

    bench/concurrent_start.py [--vms N] [--rounds R] [--no-libvirt]

The same VM as bench/start_latency.py (q35, TCG, 128 MiB, one vCPU, no disk, no NIC, no
display), N of them (default 20) created at the same moment:

  kvmd     a private kvmd (tests/support/daemon.Daemon): N `vm.create` requests sent
           together, each on its own API connection (asyncio), timed until the last
           reply (kvmd replies once the VM runs);
  libvirt  a private libvirtd (tests/support/libvirtd.PrivateLibvirtd): N threads, each
           with its own connection, released together by a barrier, each calling
           `createXML`, timed until the last call has returned with its domain running.

Connections are opened before timing. Each contender gets one untimed warm-up round,
then R (default 3) timed rounds alternate between them (kvmd first in odd rounds,
libvirt first in even ones); after every round all N are destroyed and the host is
given time to settle (CPU mostly idle, bounded wait) before the next. The figure of
each contender is the median of its rounds. The last line printed is

    concurrent_start_ms kvmd=A libvirt=B vms=N

(`libvirt=na` where no private libvirtd can run). Everything started here is stopped
on exit, Ctrl-C or error.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from kvmd.client import AsyncClient  # noqa: E402
from tests.support.daemon import Daemon  # noqa: E402
from tests.support.libvirtd import PrivateLibvirtd, firmware_domain_xml, unavailable_reason  # noqa: E402
from tests.support.procs import kill_all, pids_mentioning  # noqa: E402
from benchlib import settle  # noqa: E402  (bench/ is the script directory)

QEMU = shutil.which("qemu-system-x86_64") or "/usr/bin/qemu-system-x86_64"
MEMORY_MIB = 128


class BenchError(RuntimeError):
    pass


class Kvmd:
    name = "kvmd"

    def __init__(self, base: str, n: int):
        self.daemon = Daemon(os.path.join(base, "k"), args=["--log-level", "WARNING"])
        os.makedirs(self.daemon.base, exist_ok=True)
        self.n = n
        self.uuids = [str(uuid.uuid4()) for _ in range(n)]
        self.loop = asyncio.new_event_loop()
        self.clients: list[AsyncClient] = []

    def spec(self, i: int) -> dict:
        return {"name": f"cs{i:03d}", "uuid": self.uuids[i], "machine": "q35", "cpu": {"count": 1},
                "memory": {"size": f"{MEMORY_MIB}MiB", "balloon": False},
                "serial": {"type": "none"}, "hotplugSlots": 0}

    def open(self) -> None:
        self.daemon.start()

        async def connect() -> list[AsyncClient]:
            return [await AsyncClient(self.daemon.socket).connect() for _ in range(self.n)]

        self.clients = self.loop.run_until_complete(connect())

    def round(self) -> float:
        async def create(i: int) -> None:
            info = await self.clients[i].call("vm.create", spec=self.spec(i))
            if info.get("state") != "running":
                raise BenchError(f"kvmd: cs{i:03d} in state {info.get('state')!r} after vm.create")

        async def all_at_once() -> float:
            t0 = time.perf_counter()
            await asyncio.gather(*(create(i) for i in range(self.n)))
            return time.perf_counter() - t0

        return self.loop.run_until_complete(all_at_once())

    def clear(self) -> None:
        async def destroy_all() -> None:
            c = self.clients[0]
            for vm in await c.call("vm.list"):
                await c.call("vm.destroy", name=vm["name"])
        self.loop.run_until_complete(destroy_all())

    def close(self) -> None:
        try:
            for c in self.clients:
                self.loop.run_until_complete(c.close())
        except Exception:
            pass
        self.loop.close()
        self.daemon.cleanup()


class Libvirt:
    name = "libvirt"

    def __init__(self, base: str, n: int):
        self.lv = PrivateLibvirtd(os.path.join(base, "lv"))
        self.n = n
        self.xml = [firmware_domain_xml(f"cs{i:03d}", MEMORY_MIB, QEMU).replace(
            f"<name>cs{i:03d}</name>", f"<name>cs{i:03d}</name>\n  <uuid>{uuid.uuid4()}</uuid>")
            for i in range(n)]
        self.conns: list = []
        self.pool = ThreadPoolExecutor(n)

    def open(self) -> None:
        self.lv.start()
        self.conns = [self.lv.connect() for _ in range(self.n)]

    def round(self) -> float:
        import libvirt

        barrier = threading.Barrier(self.n + 1)
        ends: list[float] = []

        def create(i: int) -> None:
            barrier.wait()
            dom = self.conns[i].createXML(self.xml[i], 0)
            ends.append(time.perf_counter())
            if dom.state()[0] != libvirt.VIR_DOMAIN_RUNNING:
                raise BenchError(f"libvirt: cs{i:03d} in state {dom.state()} after createXML")

        futures = [self.pool.submit(create, i) for i in range(self.n)]
        while barrier.n_waiting < self.n:  # every thread parked at the barrier
            time.sleep(0.001)
        t0 = time.perf_counter()
        barrier.wait()
        for f in futures:
            f.result()
        return max(ends) - t0

    def clear(self) -> None:
        doms = self.conns[0].listAllDomains(0)
        list(self.pool.map(lambda d: d.destroy(), doms))

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.lv.stop()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--vms", type=int, default=20, help="VMs started at once (default 20)")
    p.add_argument("--rounds", type=int, default=3, help="timed rounds per contender (default 3)")
    p.add_argument("--no-libvirt", action="store_true", help="skip the libvirt measurement")
    args = p.parse_args()
    if args.vms < 1 or args.rounds < 1:
        p.error("--vms and --rounds must be at least 1")

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)

    base = tempfile.mkdtemp(prefix="kvcs", dir="/tmp")
    contenders: list = []
    times: dict[str, list[float]] = {}
    try:
        k = Kvmd(base, args.vms)
        contenders.append(k)
        k.open()
        why = "--no-libvirt" if args.no_libvirt else unavailable_reason()
        if why:
            print(f"libvirt: skipped ({why})", flush=True)
        else:
            lv = Libvirt(base, args.vms)
            contenders.append(lv)
            lv.open()
        times = {c.name: [] for c in contenders}
        for c in contenders:  # warm-up: libvirt probes QEMU's capabilities, kvmd the binary
            c.round()
            c.clear()
            print(f"{c.name}: warm-up done; {settle(30, 0.4, 0.5)}", flush=True)
        for r in range(args.rounds):
            order = contenders if r % 2 == 0 else contenders[::-1]
            for c in order:
                t = c.round()
                times[c.name].append(t * 1000)
                c.clear()
                print(f"round {r + 1} {c.name}: {args.vms} VMs running after {t * 1000:.0f} ms; "
                      f"{settle(30, 0.4, 0.5)}", flush=True)
    except KeyboardInterrupt:
        print("interrupted; everything started was stopped", file=sys.stderr)
        return 130
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        for c in reversed(contenders):
            try:
                c.close()
            except Exception as e:
                print(f"cleanup of {c.name} failed: {e}", file=sys.stderr)
        kill_all(pids_mentioning(base))
        shutil.rmtree(base, ignore_errors=True)
    med = {n: statistics.median(v) for n, v in times.items() if v}
    for n, v in times.items():
        print(f"{n}: " + " ".join(f"{t:.0f}" for t in v) + f" ms (median {med[n]:.0f})")
    lv_text = f"{med['libvirt']:.0f}" if "libvirt" in med else "na"
    if "libvirt" in med:
        print(f"libvirt_over_kvmd={med['libvirt'] / med['kvmd']:.2f}")
    print(f"concurrent_start_ms kvmd={med['kvmd']:.0f} libvirt={lv_text} vms={args.vms}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
