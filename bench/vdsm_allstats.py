#!/usr/bin/env python3
"""The VDSM endpoint's `Host.getAllVmStats` over STOMP, on kvmd and on libvirt.

    bench/vdsm_allstats.py [--vms N] [--runs R] [--no-libvirt] [--profile DIR]

Two endpoints (`python -m vdsm.app`, tests/support/vdsm_endpoint.Endpoint) run side by
side: one on a private kvmd (tests/support/daemon.Daemon), one on a private libvirtd
(tests/support/libvirtd.PrivateLibvirtd). Through each, N VMs (default 20) are created
with `VM.create` and the engine-style domain XML of the parity tests
(tests/vdsm_parity/engine_xml.py: oVirt metadata, firmware only, 128 MiB, virtio
balloon, no disk, no NIC) and awaited until `Up`. Once the host has settled, R
(default 10) `Host.getAllVmStats` calls are timed on each endpoint with the stomp.py
client (vdsm.client.StompRpcClient), alternating between the two (the order flips every
call); each figure is the median of its R calls, after one untimed warm-up call. The
last line is

    vdsm_allstats_ms kvmd=A libvirt=B vms=N

(`libvirt=na` where no private libvirtd can run). `--profile DIR` runs each endpoint
under cProfile and writes DIR/vdsm-kvmd.prof and DIR/vdsm-libvirt.prof (pstats files;
the top functions by cumulative time are printed too); timings then include the
profiler's overhead. Everything started here is stopped on exit, Ctrl-C or error.
"""

from __future__ import annotations

import argparse
import os
import pstats
import shutil
import signal
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from tests.support.daemon import Daemon  # noqa: E402
from tests.support.libvirtd import PrivateLibvirtd, unavailable_reason  # noqa: E402
from tests.support.procs import kill_all, pids_mentioning  # noqa: E402
from tests.support.vdsm_endpoint import Endpoint  # noqa: E402
from tests.vdsm_parity.engine_xml import engine_xml  # noqa: E402
from benchlib import settle  # noqa: E402  (bench/ is the script directory)

MEMORY_MIB = 128


def create_vms(c, kind: str, n: int, timeout: float = 300) -> list[str]:
    ids = []
    for i in range(n):
        vm_id, xml = engine_xml(f"as-{kind}-{i:03d}", memory_mib=MEMORY_MIB)
        c.call("VM.create", vmID=vm_id, vmParams={"xml": xml})
        ids.append(vm_id)
    deadline = time.monotonic() + timeout
    while True:
        status = {vm["vmId"]: vm["status"] for vm in c.call("Host.getVMList")}
        if all(status.get(v) == "Up" for v in ids):
            return ids
        if time.monotonic() > deadline:
            raise RuntimeError(f"{kind}: not all VMs Up after {timeout}s: {status}")
        time.sleep(0.2)


def check(kind: str, answer: list, ids: list[str]) -> None:
    got = {s.get("vmId"): s for s in answer}
    missing = set(ids) - set(got)
    bad = {v: s.get("exitMessage") or s.get("status") for v, s in got.items()
           if s.get("status") != "Up" or s.get("monitorResponse") != "0"}
    if missing or bad:
        raise RuntimeError(f"{kind}: Host.getAllVmStats missing {sorted(missing)}, not healthy {bad}")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--vms", type=int, default=20, help="VMs per backend (default 20)")
    p.add_argument("--runs", type=int, default=10, help="timed calls per backend (default 10)")
    p.add_argument("--no-libvirt", action="store_true", help="skip the libvirt backend")
    p.add_argument("--profile", metavar="DIR", help="run the endpoints under cProfile, stats into DIR")
    args = p.parse_args()

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)

    base = tempfile.mkdtemp(prefix="kvas", dir="/tmp")
    daemon = Daemon(os.path.join(base, "k"), args=["--log-level", "WARNING"])
    lv: PrivateLibvirtd | None = None
    endpoints: dict[str, Endpoint] = {}
    profiles: dict[str, str] = {}
    times: dict[str, list[float]] = {}
    try:
        os.makedirs(daemon.base)
        daemon.start()
        endpoints["kvmd"] = Endpoint(base, "kvmd", kvmd_socket=daemon.socket, extra=["--log-level", "WARNING"])
        why = "--no-libvirt" if args.no_libvirt else unavailable_reason()
        if why:
            print(f"libvirt: skipped ({why})", flush=True)
        else:
            lv = PrivateLibvirtd(os.path.join(base, "lv"))
            lv.start()
            endpoints["libvirt"] = Endpoint(base, "libvirt", libvirt_uri=lv.uri, extra=["--log-level", "WARNING"])
        if args.profile:
            os.makedirs(args.profile, exist_ok=True)
        for kind, ep in endpoints.items():
            if args.profile:
                profiles[kind] = os.path.abspath(os.path.join(args.profile, f"vdsm-{kind}.prof"))
                i = ep.argv.index("-m")
                ep.argv[i:i + 2] = ["-m", "cProfile", "-o", profiles[kind], "-m", "vdsm.app"]
            ep.start()
        clients = {kind: ep.client(events=False, timeout=120) for kind, ep in endpoints.items()}
        ids = {}
        for kind, c in clients.items():
            t0 = time.monotonic()
            ids[kind] = create_vms(c, kind, args.vms)
            print(f"{kind}: {args.vms} VMs Up after {time.monotonic() - t0:.1f}s", flush=True)
        print(f"settled: {settle(90)}", flush=True)
        for kind, c in clients.items():  # warm-up, and a check of the answer
            check(kind, c.call("Host.getAllVmStats"), ids[kind])
        kinds = list(clients)
        times = {k: [] for k in kinds}
        for r in range(args.runs):
            for kind in (kinds if r % 2 == 0 else kinds[::-1]):
                t = time.perf_counter()
                answer = clients[kind].call("Host.getAllVmStats")
                times[kind].append((time.perf_counter() - t) * 1000)
                if len(answer) != args.vms:
                    raise RuntimeError(f"{kind}: {len(answer)} stats for {args.vms} VMs")
        for kind in kinds:
            print(f"{kind} Host.getAllVmStats ms: " + " ".join(f"{t:.1f}" for t in times[kind]), flush=True)
    except KeyboardInterrupt:
        print("interrupted; everything started was stopped", file=sys.stderr)
        return 130
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        for ep in endpoints.values():
            try:
                ep.stop()  # SIGTERM: a clean exit, so cProfile writes its stats
            except Exception as e:
                print(f"stopping an endpoint failed: {e}", file=sys.stderr)
        if lv is not None:
            lv.stop()
        daemon.cleanup()
        kill_all(pids_mentioning(base))
        shutil.rmtree(base, ignore_errors=True)
    for kind, path in profiles.items():
        if os.path.exists(path):
            print(f"--- cProfile of the {kind} endpoint ({path}), top by cumulative time")
            pstats.Stats(path).sort_stats("cumulative").print_stats(25)
    med = {k: statistics.median(v) for k, v in times.items() if v}
    lv_text = f"{med['libvirt']:.1f}" if "libvirt" in med else "na"
    if "libvirt" in med:
        print(f"libvirt_over_kvmd={med['libvirt'] / med['kvmd']:.2f}")
    print(f"vdsm_allstats_ms kvmd={med['kvmd']:.1f} libvirt={lv_text} vms={args.vms}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
