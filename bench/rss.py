#!/usr/bin/env python3
"""Resident memory of the kvmd daemon with N idle firmware-only VMs.

    bench/rss.py [--vms N] [--tracemalloc FILE] [--no-release]

Starts a private kvmd (tests/support/daemon.Daemon) and N firmware-only VMs through it
(q35, TCG, 64 MiB, no balloon, no NIC, so no iPXE ROM to run: no disks, no display),
8 `vm.create` calls in flight at a time. Once the host has settled (the firmware of
every VM has finished and the CPU is mostly idle again), one `vm.list` and one
`vm.stats` round warm the daemon's caches, and the daemon's VmRSS is read from
/proc/PID/status (the daemon only: its file worker and the QEMUs are not counted). The
RSS of the same daemon with no VM yet is printed for reference. The last line is

    kvmd_rss_mib=M vms=N

Goal (issue 9): M <= 60 for N = 100.

`--tracemalloc FILE` runs the daemon with tracemalloc on (PYTHONTRACEMALLOC, through a
`sitecustomize` in a private folder on PYTHONPATH that dumps a snapshot on SIGUSR1) and
writes the top allocation sites, by file and by line, after the warm-up round to FILE;
the RSS figure then includes tracemalloc's own bookkeeping. Every process started here
is killed at the end, on error or Ctrl-C too.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from kvmd.client import AsyncClient  # noqa: E402
from tests.support.daemon import Daemon  # noqa: E402
from tests.support.procs import kill_all, pids_mentioning  # noqa: E402
from benchlib import settle  # noqa: E402  (bench/ is the script directory)

MEMORY_MIB = 64

SITECUSTOMIZE = '''
import os, signal, tracemalloc
if os.environ.get("KVMD_BENCH_TRACEMALLOC_OUT"):
    def _dump(_sig, _frame):
        out = os.environ["KVMD_BENCH_TRACEMALLOC_OUT"]
        snap = tracemalloc.take_snapshot().filter_traces(
            [tracemalloc.Filter(False, tracemalloc.__file__)])
        current, peak = tracemalloc.get_traced_memory()
        with open(out + ".tmp", "w") as f:
            f.write(f"traced now {current / 2**20:.1f} MiB, peak {peak / 2**20:.1f} MiB\\n\\n")
            for key, n in (("filename", 30), ("lineno", 30)):
                stats = snap.statistics(key)
                f.write(f"top {n} by {key} (of {sum(s.size for s in stats) / 2**20:.1f} MiB)\\n")
                for s in stats[:n]:
                    f.write(f"{s.size / 2**10:9.0f} KiB {s.count:7d} blocks  {s.traceback[0]}\\n")
                f.write("\\n")
        os.replace(out + ".tmp", out)
    signal.signal(signal.SIGUSR1, _dump)
'''


def spec(i: int) -> dict:
    return {"name": f"rss{i:03d}", "memory": {"size": f"{MEMORY_MIB}MiB", "balloon": False},
            "hotplugSlots": 0}


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


async def create_all(socket_path: str, n: int, parallel: int = 8) -> None:
    clients = [await AsyncClient(socket_path).connect() for _ in range(parallel)]
    try:
        todo = iter(range(n))

        async def worker(c: AsyncClient) -> None:
            for i in todo:
                info = await c.call("vm.create", spec=spec(i))
                if info.get("state") != "running":
                    raise RuntimeError(f"rss{i:03d}: state {info.get('state')!r} after vm.create")

        await asyncio.gather(*(worker(c) for c in clients))
    finally:
        for c in clients:
            await c.close()


async def warm(socket_path: str, n: int) -> None:
    c = await AsyncClient(socket_path).connect()
    try:
        vms = await c.call("vm.list")
        running = [v for v in vms if v["state"] == "running"]
        if len(running) != n:
            raise RuntimeError(f"{len(running)} of {n} VMs running")
        stats = await c.call("vm.stats")
        bad = {k: v.get("error") for k, v in stats.items() if v.get("error")}
        if len(stats) != n or bad:
            raise RuntimeError(f"vm.stats answered for {len(stats)}/{n} VMs; errors: {bad}")
    finally:
        await c.close()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--vms", type=int, default=100, help="number of idle VMs (default 100)")
    p.add_argument("--tracemalloc", metavar="FILE", help="write the daemon's top allocation sites to FILE")
    args = p.parse_args()

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)

    base = tempfile.mkdtemp(prefix="kvrss", dir="/tmp")
    env = {}
    if args.tracemalloc:
        site = os.path.join(base, "site")
        os.makedirs(site)
        with open(os.path.join(site, "sitecustomize.py"), "w") as f:
            f.write(SITECUSTOMIZE)
        env = {"PYTHONTRACEMALLOC": "1", "KVMD_BENCH_TRACEMALLOC_OUT": os.path.join(base, "trace.txt"),
               "PYTHONPATH": os.pathsep.join(filter(None, [site, os.environ.get("PYTHONPATH")]))}
    daemon = Daemon(base, env=env, args=["--log-level", "WARNING"])
    try:
        daemon.start()
        pid = daemon.proc.pid
        empty = rss_mib(pid)
        print(f"kvmd RSS with no VM: {empty:.1f} MiB", flush=True)
        t0 = time.monotonic()
        asyncio.run(create_all(daemon.socket, args.vms))
        print(f"{args.vms} VMs running after {time.monotonic() - t0:.1f}s "
              f"(RSS {rss_mib(pid):.1f} MiB)", flush=True)
        # the firmware of every VM idles after a few seconds; the RSS does not depend on it
        print(f"firmware: {settle(30)}", flush=True)
        asyncio.run(warm(daemon.socket, args.vms))
        time.sleep(0.5)
        rss = rss_mib(pid)
        print(f"kvmd RSS with {args.vms} idle VMs after vm.list + vm.stats: {rss:.1f} MiB "
              f"({(rss - empty) * 1024 / max(1, args.vms):.0f} KiB per VM)", flush=True)
        if args.tracemalloc:
            out = env["KVMD_BENCH_TRACEMALLOC_OUT"]
            os.kill(pid, signal.SIGUSR1)
            deadline = time.monotonic() + 30
            while not os.path.exists(out) and time.monotonic() < deadline:
                time.sleep(0.1)
            shutil.copyfile(out, args.tracemalloc)
            print(f"tracemalloc top allocation sites written to {args.tracemalloc}", flush=True)
    except KeyboardInterrupt:
        print("interrupted; everything started was stopped", file=sys.stderr)
        return 130
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        daemon.cleanup()
        kill_all(pids_mentioning(base))
        shutil.rmtree(base, ignore_errors=True)
    print(f"kvmd_rss_mib={rss:.1f} vms={args.vms}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
