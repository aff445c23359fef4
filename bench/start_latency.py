#!/usr/bin/env python3
"""Start latency of one firmware-only VM: bare QEMU vs kvmd vs libvirt.

    bench/start_latency.py [--runs N] [--json FILE] [--no-libvirt]

The same VM each time — q35, TCG, 256 MiB, one vCPU, no disks, no NICs, no display —
started N times by each of, in alternating (rotating) order:

  bare     qemu-system-x86_64 -S ... with a QMP unix socket (a pre-bound listening
           socket handed to QEMU, as kvmd does), raw QMP over a plain socket: greeting,
           qmp_capabilities, cont, query-status until it says running; then killed.
  kvmd     a private kvmd (tests/support/daemon.Daemon) through its socket API:
           vm.create (replies once the VM runs); then vm.destroy.
  libvirt  createXML of the equivalent domain on a private libvirtd
           (tests/support/libvirtd.PrivateLibvirtd), timed until createXML returns with
           the domain running; then destroy. Skipped without libvirt-python/libvirtd.

Each method gets one untimed warm-up start first (libvirt probes QEMU's capabilities on
its first start, kvmd probes the binary once). Wall time per start is measured with
time.perf_counter in this process. The last line printed is always

    kvmd_over_bare=R1 libvirt_over_kvmd=R2

(ratios of medians, two decimals; R2 is `na` without libvirt). Everything started here
is stopped on exit, Ctrl-C or error.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from tests.support.daemon import Daemon  # noqa: E402
from tests.support.libvirtd import (  # noqa: E402
    PrivateLibvirtd,
    firmware_domain_xml,
    unavailable_reason,
)
from tests.support.procs import kill_all, pids_mentioning  # noqa: E402

QEMU = shutil.which("qemu-system-x86_64") or "/usr/bin/qemu-system-x86_64"
MEMORY_MIB = 256
VM_NAME = "bench-fw"
VM_UUID = str(uuid.uuid4())


class BenchError(RuntimeError):
    pass


# -- (a) bare QEMU + raw QMP ---------------------------------------------------------------


class RawQMP:
    """Just enough QMP over a plain socket: line-delimited JSON, events skipped."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.buf = b""

    def recv(self) -> dict:
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise BenchError("QMP connection closed by QEMU")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def execute(self, cmd: str) -> object:
        self.sock.sendall(json.dumps({"execute": cmd}).encode() + b"\n")
        while True:
            msg = self.recv()
            if "event" in msg:
                continue
            if "error" in msg:
                raise BenchError(f"QMP {cmd}: {msg['error']}")
            return msg["return"]


class Bare:
    name = "bare"

    def __init__(self, base: str):
        self.base = base
        self.qmp_path = os.path.join(base, "bare.qmp")
        self.log_path = os.path.join(base, "bare.log")
        self.proc: subprocess.Popen | None = None

    def start(self) -> float:
        if os.path.exists(self.qmp_path):
            os.unlink(self.qmp_path)
        t0 = time.perf_counter()
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            listener.bind(self.qmp_path)
            listener.listen(1)
            fd = listener.fileno()
            argv = [QEMU, "-name", f"guest={VM_NAME}", "-S",
                    "-machine", "q35", "-accel", "tcg", "-m", str(MEMORY_MIB),
                    "-nodefaults", "-display", "none",
                    "-chardev", f"socket,id=qmp,fd={fd},server=on,wait=off",
                    "-mon", "chardev=qmp,mode=control"]
            with open(self.log_path, "ab") as log:
                self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                             stderr=log, pass_fds=[fd], start_new_session=True)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(30)
            sock.connect(self.qmp_path)  # queued in the backlog until QEMU accepts
        finally:
            listener.close()
        with sock:
            qmp = RawQMP(sock)
            greeting = qmp.recv()
            if "QMP" not in greeting:
                raise BenchError(f"unexpected QMP greeting {greeting}")
            qmp.execute("qmp_capabilities")
            qmp.execute("cont")
            status = qmp.execute("query-status")
            elapsed = time.perf_counter() - t0
        if not (isinstance(status, dict) and status.get("running")):
            raise BenchError(f"bare QEMU not running after cont: {status}")
        return elapsed

    def stop(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=30)
            self.proc = None

    def close(self) -> None:
        self.stop()


# -- (b) kvmd through its API ----------------------------------------------------------------


class Kvmd:
    name = "kvmd"

    def __init__(self, base: str):
        os.makedirs(os.path.join(base, "k"), exist_ok=True)
        self.daemon = Daemon(os.path.join(base, "k"))
        self.client = None
        self.spec = {
            "name": VM_NAME,
            "uuid": VM_UUID,
            "machine": "q35",
            "cpu": {"count": 1},
            "memory": {"size": f"{MEMORY_MIB}MiB", "balloon": False},
            "serial": {"type": "none"},
            "hotplugSlots": 0,
        }

    def open(self) -> Kvmd:
        self.daemon.start()
        self.client = self.daemon.client()
        return self

    def start(self) -> float:
        t0 = time.perf_counter()
        info = self.client.call("vm.create", spec=self.spec)
        elapsed = time.perf_counter() - t0
        if info.get("state") != "running":
            raise BenchError(f"kvmd: vm.create replied with state {info.get('state')!r}")
        return elapsed

    def stop(self) -> None:
        self.client.call("vm.destroy", name=VM_NAME)

    def close(self) -> None:
        self.daemon.cleanup()


# -- (c) libvirt createXML -------------------------------------------------------------------


class Libvirt:
    name = "libvirt"

    def __init__(self, base: str):
        self.lv = PrivateLibvirtd(os.path.join(base, "lv"))
        self.conn = None
        self.dom = None
        self.xml = firmware_domain_xml(VM_NAME, MEMORY_MIB, QEMU).replace(
            f"<name>{VM_NAME}</name>", f"<name>{VM_NAME}</name>\n  <uuid>{VM_UUID}</uuid>")

    def open(self) -> Libvirt:
        self.lv.start()
        self.conn = self.lv.connect()
        return self

    def start(self) -> float:
        import libvirt

        t0 = time.perf_counter()
        self.dom = self.conn.createXML(self.xml, 0)
        elapsed = time.perf_counter() - t0
        state, _ = self.dom.state()
        if state != libvirt.VIR_DOMAIN_RUNNING:
            raise BenchError(f"libvirt: domain state {state} after createXML")
        return elapsed

    def stop(self) -> None:
        if self.dom is not None:
            self.dom.destroy()
            self.dom = None

    def close(self) -> None:
        self.lv.stop()


# -- the run -----------------------------------------------------------------------------------


def ms(x: float) -> str:
    return f"{x * 1000:.1f}"


def summarize(samples: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    return {name: {"median": statistics.median(v), "min": min(v), "max": max(v),
                   "mean": statistics.fmean(v), "runs": len(v)}
            for name, v in samples.items() if v}


def ratio(a: float | None, b: float | None) -> str:
    return "na" if not a or not b else f"{a / b:.2f}"


def ignore_signals() -> None:
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)


def run(args: argparse.Namespace, base: str, log: Callable[[str], None]) -> dict:
    methods: list = [Bare(base)]
    opened: list = []
    try:
        k = Kvmd(base)
        opened.append(k)
        k.open()
        methods.append(k)
        libvirt_note = None
        if not args.no_libvirt:
            reason = unavailable_reason()
            if reason:
                libvirt_note = reason
            else:
                lv = Libvirt(base)
                opened.append(lv)
                lv.open()
                methods.append(lv)
        else:
            libvirt_note = "--no-libvirt"
        if libvirt_note:
            log(f"libvirt: skipped: {libvirt_note}")

        samples: dict[str, list[float]] = {m.name: [] for m in methods}
        for m in methods:  # warm-up, untimed
            for _ in range(args.warmup):
                m.start()
                m.stop()
        for i in range(args.runs):
            order = methods[i % len(methods):] + methods[:i % len(methods)]
            for m in order:
                try:
                    samples[m.name].append(m.start())
                finally:
                    m.stop()
            if args.verbose:
                log(f"run {i + 1}: " + "  ".join(f"{n}={ms(v[-1])}ms" for n, v in samples.items()))
        return {"samples": samples, "libvirt_skipped": libvirt_note}
    finally:
        ignore_signals()  # a second Ctrl-C must not cut the cleanup short
        for m in reversed(opened):
            try:
                m.close()
            except Exception as e:  # keep cleaning up
                log(f"cleanup of {m.name} failed: {e}")
        methods[0].close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=10, help="timed starts per method (default 10)")
    p.add_argument("--warmup", type=int, default=1, help="untimed starts per method first (default 1)")
    p.add_argument("--json", metavar="FILE", help="also write samples and figures to FILE")
    p.add_argument("--no-libvirt", action="store_true", help="skip the libvirt measurement")
    p.add_argument("-v", "--verbose", action="store_true", help="print every run")
    args = p.parse_args(argv)
    if args.runs < 1:
        p.error("--runs must be at least 1")

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    # Ctrl-C (even if started with SIGINT ignored, as `cmd &` in a script does) and
    # SIGTERM/SIGHUP unwind as KeyboardInterrupt, so the finally blocks clean up.
    def on_signal(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)

    os.environ.setdefault("KVMD_ACCEL", "tcg")
    base = tempfile.mkdtemp(prefix="kvsl", dir="/tmp")
    try:
        result = run(args, base, log)
    except KeyboardInterrupt:
        log("interrupted; everything started was stopped")
        return 130
    finally:
        ignore_signals()
        kill_all(pids_mentioning(base))
        shutil.rmtree(base, ignore_errors=True)

    stats = summarize(result["samples"])
    print(f"start latency of a firmware-only q35 VM (TCG, {MEMORY_MIB} MiB), "
          f"{args.runs} runs each, wall time in ms")
    print(f"{'method':<8} {'runs':>4} {'median':>8} {'min':>8} {'max':>8} {'mean':>8}")
    for name, s in stats.items():
        print(f"{name:<8} {s['runs']:>4} {ms(s['median']):>8} {ms(s['min']):>8} "
              f"{ms(s['max']):>8} {ms(s['mean']):>8}")
    if result["libvirt_skipped"]:
        print(f"libvirt: skipped ({result['libvirt_skipped']})")
    med = {n: s["median"] for n, s in stats.items()}
    r1 = ratio(med.get("kvmd"), med.get("bare"))
    r2 = ratio(med.get("libvirt"), med.get("kvmd"))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"runs": args.runs, "warmup": args.warmup, "vm": {
                "machine": "q35", "accel": "tcg", "memoryMiB": MEMORY_MIB, "disks": 0, "nics": 0},
                "samplesSeconds": result["samples"], "stats": stats,
                "libvirtSkipped": result["libvirt_skipped"],
                "kvmd_over_bare": r1, "libvirt_over_kvmd": r2}, f, indent=1)
            f.write("\n")
    print(f"kvmd_over_bare={r1} libvirt_over_kvmd={r2}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
