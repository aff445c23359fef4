"""How fast a restarted kvmd re-attaches to the VMs an earlier kvmd left running.

    bench/recovery.py [--vms N] [--profile FILE]

Starts N firmware-only VMs (no kernel, no disk) through a private kvmd, `kill -9`s the
daemon (every QEMU keeps running), starts a new kvmd and measures the time from its
start until all N VMs are listed as running and each answers `vm.info`. The last line
printed is `reattach_ms=T vms=N`; the goal is T <= 1000 for N = 100.

`--profile FILE` runs the second kvmd under cProfile and writes the stats to FILE
(the measured time then includes the profiler's overhead).

Every QEMU and daemon it starts is killed at the end, on error or Ctrl-C too.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from kvmd.client import AsyncClient  # noqa: E402
from tests.support.daemon import Daemon  # noqa: E402


def spec(name: str) -> dict:
    return {"name": name, "memory": {"size": "64MiB"}}


async def start_vms(socket_path: str, n: int, parallel: int = 8) -> None:
    clients = [await AsyncClient(socket_path).connect() for _ in range(parallel)]
    try:
        names = iter(f"rec{i:03d}" for i in range(n))

        async def worker(c: AsyncClient) -> None:
            for name in names:
                await c.call("vm.create", spec=spec(name))

        await asyncio.gather(*(worker(c) for c in clients))
    finally:
        for c in clients:
            await c.close()


async def wait_all_running(socket_path: str, n: int, started: float, timeout: float = 120) -> float:
    """Seconds since `started` until vm.list shows n running VMs that all answer vm.info."""
    deadline = started + timeout
    while not os.path.exists(socket_path):
        if time.monotonic() > deadline:
            raise TimeoutError("kvmd did not create its socket")
        await asyncio.sleep(0.002)
    # kvmd binds its socket once recovery is done: the rest is answering the queries
    print(f"socket after {(time.monotonic() - started) * 1000:.0f} ms", flush=True)
    c = AsyncClient(socket_path)
    while True:
        try:
            await c.connect()
            break
        except (ConnectionRefusedError, FileNotFoundError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.002)
    try:
        while True:
            vms = await c.call("vm.list")
            running = [vm["name"] for vm in vms if vm["state"] == "running"]
            if len(running) == n:
                infos = await asyncio.gather(*(c.call("vm.info", name=name) for name in running))
                if all(i["state"] == "running" for i in infos):
                    return time.monotonic() - started
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {len(running)} of {n} VMs running after {timeout}s")
            await asyncio.sleep(0.005)
    finally:
        await c.close()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--vms", type=int, default=50)
    p.add_argument("--profile", help="write cProfile stats of the restarted kvmd here")
    args = p.parse_args()
    base = tempfile.mkdtemp(prefix="kvb", dir="/tmp")
    daemon = Daemon(base)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    try:
        daemon.start()
        t0 = time.monotonic()
        asyncio.run(start_vms(daemon.socket, args.vms))
        print(f"started {args.vms} VMs in {time.monotonic() - t0:.1f}s", flush=True)
        daemon.kill(signal.SIGKILL)
        os.unlink(daemon.socket)
        argv = [sys.executable, "-m", "kvmd.daemon", "--state-dir", daemon.state_dir,
                "--run-dir", daemon.run_dir, "--log-level", "WARNING"]
        if args.profile:
            argv[1:3] = ["-m", "cProfile", "-o", os.path.abspath(args.profile), "-m", "kvmd.daemon"]
        with open(daemon.log_path, "ab") as log:
            started = time.monotonic()
            daemon.proc = subprocess.Popen(argv, env=daemon.env, stdout=log, stderr=log,
                                           stdin=subprocess.DEVNULL)
        elapsed = asyncio.run(wait_all_running(daemon.socket, args.vms, started))
        if args.profile:
            daemon.kill(signal.SIGINT)  # a clean exit writes the profile
    finally:
        daemon.cleanup()
        shutil.rmtree(base, ignore_errors=True)
    print(f"reattach_ms={elapsed * 1000:.0f} vms={args.vms}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
