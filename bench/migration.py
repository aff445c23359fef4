#!/usr/bin/env python3
"""Live migration of the real test guest (256 MiB, TCG) between two kvmd instances.

    bench/migration.py [--runs N] [--bandwidth SIZE] [--json FILE]

Two private kvmd daemons (tests/support/daemon.Daemon) run on this machine. The guest
(tests/guest: kernel + busybox initramfs, printing a counter every second) boots on
the first and is migrated back and forth N times (default 3) over their unix sockets,
the migration stream on 127.0.0.1. For each run:

  migrate_ms   wall time of the `vm.migrate` API call, from the request to the reply:
               the destination prepared, the memory sent, the destination resumed and
               the source QEMU ended
  qemu_ms      QEMU's own `total-time` of the stream
  downtime_ms  QEMU's `downtime`: how long the guest was paused

The last line printed is always

    migrate_ms=T downtime_ms=D

(medians over the runs, whole milliseconds). Everything started here is stopped on
exit, Ctrl-C or error.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from tests.support.console import Console  # noqa: E402
from tests.support.daemon import Daemon  # noqa: E402

GUEST_DIR = os.environ.get("GUEST_DIR", os.path.join(ROOT, "build", "guest"))
VM = "bench-mig"


def guest_spec() -> dict:
    if not os.path.exists(os.path.join(GUEST_DIR, "vmlinuz")):
        subprocess.run([os.path.join(ROOT, "tests", "guest", "build.sh")], check=True)
    with open(os.path.join(GUEST_DIR, "cmdline")) as f:
        cmdline = f.read().strip()
    return {"name": VM, "memory": {"size": "256MiB"},
            "boot": {"kernel": os.path.join(GUEST_DIR, "vmlinuz"),
                     "initrd": os.path.join(GUEST_DIR, "initramfs.img"), "cmdline": cmdline}}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--bandwidth", default=None, help="max-bandwidth per migration, e.g. 1GiB (default: none)")
    ap.add_argument("--json", metavar="FILE", help="also write every run as JSON")
    args = ap.parse_args()
    os.environ.setdefault("KVMD_ACCEL", "tcg")
    base = tempfile.mkdtemp(prefix="kvbm", dir="/tmp")
    daemons = []
    try:
        for side in "ab":
            os.mkdir(os.path.join(base, side))
            daemons.append(Daemon(os.path.join(base, side)).start())
        clients = [d.client() for d in daemons]
        clients[0].call("vm.define", spec=guest_spec())
        info = clients[0].call("vm.start", name=VM)
        con = Console(info["console"])
        con.expect("KVMD-COUNTER 2", timeout=120)
        con.close()
        runs = []
        for i in range(args.runs):
            src, dst = i % 2, (i + 1) % 2
            params = {"bandwidth": args.bandwidth} if args.bandwidth else {}
            t0 = time.perf_counter()
            st = clients[src].call("vm.migrate", name=VM, dest=daemons[dst].socket, **params)
            wall = (time.perf_counter() - t0) * 1000
            run = {"run": i + 1, "migrate_ms": round(wall, 1), "qemu_ms": st["totalTime"],
                   "downtime_ms": st["downtime"], "transferred": st["transferred"]}
            runs.append(run)
            print(f"run {i + 1}: {'ab'[src]} -> {'ab'[dst]}  migrate {wall:.0f} ms, QEMU stream "
                  f"{st['totalTime']} ms, downtime {st['downtime']} ms, {st['transferred'] / 2**20:.1f} MiB sent",
                  flush=True)
            assert clients[dst].call("vm.info", name=VM)["state"] == "running"
        if args.json:
            with open(args.json, "w") as f:
                json.dump(runs, f, indent=1)
        mig = statistics.median(r["migrate_ms"] for r in runs)
        down = statistics.median(r["downtime_ms"] for r in runs)
        print(f"migrate_ms={mig:.0f} downtime_ms={down:.0f}")
        return 0
    finally:
        for d in daemons:
            d.cleanup()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
