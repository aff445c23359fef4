"""Live migration between two real kvmd daemons on this machine (two "hosts").

The real guest prints `KVMD-COUNTER n` every second on its serial console; QEMU logs the
console to `consoleLog` on each side. A migration that loses nothing shows, in the
source's log followed by the destination's, every number from 1 on, in order, once.
Every daemon and QEMU a test starts is killed by the fixtures, pass or fail.
"""

from __future__ import annotations

import os
import pty
import re
import signal
import subprocess
import sys

import pytest

from kvmd import errors
from kvmd.client import ApiError
from tests.conftest import firmware_spec, guest_spec
from tests.support.console import Console
from tests.support.daemon import Daemon
from tests.support.faults import wait_for
from tests.support.procs import alive, pids_mentioning

COUNTER = re.compile(rb"KVMD-COUNTER (\d+)")


def qemu_pids(daemon: Daemon) -> list[int]:
    out = []
    for pid in pids_mentioning(daemon.base):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                if b"qemu-system" in f.read().split(b"\0")[0] and alive(pid):
                    out.append(pid)
        except OSError:
            continue
    return out


def read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def counters(data: bytes) -> list[int]:
    return [int(n) for n in COUNTER.findall(data)]


def boot_guest(client, guest, name: str) -> tuple[dict, Console]:
    client.call("vm.define", spec=guest_spec(guest, name))
    info = client.call("vm.start", name=name)
    con = Console(info["console"])
    con.expect("KVMD-COUNTER 2", timeout=90)
    return info, con


def assert_counter_continues(src_log: str, dst_log: str, extra: int = 2) -> list[int]:
    """The destination counts on past the source's last number; no gap, no repeat, no reset."""
    last = max(counters(read(src_log)))
    wait_for(lambda: max(counters(read(dst_log)) or [0]) >= last + extra, 30, f"counter {last + extra} on the destination")
    seen = counters(read(src_log) + read(dst_log))
    assert seen == list(range(1, len(seen) + 1)), f"counter sequence has a gap or repeat: {seen}"
    assert counters(read(dst_log))[0] <= last + 1
    return seen


@pytest.mark.slow
def test_guest_keeps_counting_on_the_destination_and_nothing_is_left_on_the_source(pair, guest):
    src, dst = pair
    a, b = src.client(), dst.client()
    info, con = boot_guest(a, guest, "mig")
    con.close()
    status = a.call("vm.migrate", name="mig", dest=dst.socket)
    assert status["state"] == "completed" and status["percent"] == 100.0
    assert isinstance(status["downtime"], int) and status["totalTime"] > 0, status
    # the source forgot the VM and its QEMU is gone; the definition moved
    assert a.call("vm.list") == []
    assert not os.path.exists(os.path.join(src.state_dir, "vms", "mig.yaml"))
    wait_for(lambda: not alive(info["pid"]), 10, "the source QEMU to exit")
    assert qemu_pids(src) == []
    assert a.call("vm.migrate_status", name="mig")["state"] == "completed"
    there = b.call("vm.info", name="mig")
    assert there["state"] == "running" and there["persistent"] and there["reason"] == "migrated in"
    assert os.path.exists(os.path.join(dst.state_dir, "vms", "mig.yaml"))
    assert_counter_continues(info["consoleLog"], there["consoleLog"])
    # the guest's shell answers on the destination's console
    dcon = Console(there["console"])
    try:
        assert "hello-there" in dcon.run("echo hello-there")
    finally:
        dcon.close()


@pytest.mark.slow
def test_destination_qemu_killed_mid_migration_leaves_the_source_running(pair, guest):
    src, dst = pair
    a, b = src.client(), dst.client()
    info, con = boot_guest(a, guest, "victim")
    try:
        a.call("vm.migrate", name="victim", dest=dst.socket, bandwidth="1MiB", wait=False)
        wait_for(lambda: a.call("vm.migrate_status", name="victim")["transferred"] > 256 << 10, 30,
                 "the migration to be under way")
        dst_pid = b.call("vm.info", name="victim")["pid"]
        os.kill(dst_pid, signal.SIGKILL)
        status = wait_for(lambda: (s := a.call("vm.migrate_status", name="victim"))["state"] in
                          ("completed", "failed", "cancelled") and s, 30, "the migration to end")
        assert status["state"] == "failed" and status["error"]
        here = a.call("vm.info", name="victim")
        assert here["state"] == "running" and here["pid"] == info["pid"]
        assert here["reason"].startswith("migration failed")
        # the guest never stopped counting here
        last = max(counters(con.buf))
        con.expect(f"KVMD-COUNTER {last + 2}", timeout=15)
        wait_for(lambda: b.call("vm.list") == [], 10, "the destination to forget the VM")
        assert qemu_pids(dst) == []
    finally:
        con.close()


@pytest.mark.slow
def test_postcopy_switch_resumes_the_guest_on_the_destination_before_its_memory_arrived(pair, guest):
    src, dst = pair
    a, b = src.client(), dst.client()
    info, con = boot_guest(a, guest, "pc")
    con.close()
    a.call("vm.migrate", name="pc", dest=dst.socket, bandwidth="2MiB", postcopy=True, wait=False)
    early = wait_for(lambda: (s := a.call("vm.migrate_status", name="pc"))["transferred"] > 512 << 10 and s, 30,
                     "the precopy phase to be under way")
    assert early["percent"] < 50
    a.call("vm.migrate_postcopy", name="pc")
    with pytest.raises(ApiError) as exc:  # once switched to postcopy there is no going back
        wait_for(lambda: a.call("vm.migrate_status", name="pc")["postcopy"], 10, "the switch to postcopy")
        a.call("vm.migrate_cancel", name="pc")
    assert exc.value.code in (errors.NOT_SUPPORTED, errors.WRONG_STATE)
    status = wait_for(lambda: (s := a.call("vm.migrate_status", name="pc"))["state"] in
                      ("completed", "failed", "cancelled") and s, 60, "the migration to end")
    assert status["state"] == "completed" and status["postcopy"], status
    assert a.call("vm.list") == [] and qemu_pids(src) == []
    there = b.call("vm.info", name="pc")
    assert there["state"] == "running"
    assert_counter_continues(info["consoleLog"], there["consoleLog"])


def test_cancel_keeps_the_source_running_and_cleans_up_the_destination(pair):
    src, dst = pair
    a, b = src.client(), dst.client()
    a.call("vm.create", spec=firmware_spec("fw"))
    started = a.call("vm.migrate", name="fw", dest=dst.socket, bandwidth="64KiB", wait=False)
    assert started["state"] in ("setup", "active")
    assert a.call("vm.info", name="fw")["state"] == "migrating-out"
    wait_for(lambda: a.call("vm.migrate_status", name="fw")["state"] == "active", 10, "an active migration")
    with pytest.raises(ApiError) as exc:
        a.call("vm.pause", name="fw")
    assert exc.value.code == errors.WRONG_STATE
    status = a.call("vm.migrate_cancel", name="fw")
    assert status["state"] == "cancelled" and status["error"] == "cancelled on request"
    assert a.call("vm.info", name="fw")["state"] == "running"
    wait_for(lambda: b.call("vm.list") == [] and qemu_pids(dst) == [], 10, "the destination to clean up")
    with pytest.raises(ApiError) as exc:
        a.call("vm.migrate_cancel", name="fw")
    assert exc.value.code == errors.WRONG_STATE


def test_unreachable_destination_fails_and_the_vm_keeps_running(pair, tmpdir_short):
    src, dst = pair
    a, b = src.client(), dst.client()
    a.call("vm.create", spec=firmware_spec("fw"))
    with pytest.raises(ApiError) as exc:
        a.call("vm.migrate", name="fw", dest=os.path.join(tmpdir_short, "nobody.sock"))
    assert exc.value.code == errors.MIGRATION_FAILED and "cannot connect" in exc.value.message
    assert a.call("vm.info", name="fw")["state"] == "running"
    # a destination that already has a VM of that name refuses it, and nothing changes
    b.call("vm.define", spec=firmware_spec("fw"))
    with pytest.raises(ApiError) as exc:
        a.call("vm.migrate", name="fw", dest=dst.socket)
    assert exc.value.code == errors.MIGRATION_FAILED and "already exists" in exc.value.message
    assert a.call("vm.info", name="fw")["state"] == "running"
    assert a.call("vm.migrate_status", name="fw")["state"] == "failed"
    assert qemu_pids(dst) == []


def test_copy_storage_mirrors_disks_to_images_created_on_the_destination(pair):
    src, dst = pair
    a, b = src.client(), dst.client()
    img = os.path.join(src.base, "data.qcow2")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", img, "24M"], check=True)
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x5a 1M 3M", img], check=True, capture_output=True)
    a.call("vm.define", spec=firmware_spec("st", disks=[{"name": "data", "path": img, "format": "qcow2"}]))
    a.call("vm.start", name="st")
    status = a.call("vm.migrate", name="st", dest=dst.socket, copy_storage=True, storage_dir=dst.base)
    assert status["state"] == "completed"
    info = b.call("vm.info", name="st", spec=True)
    target = os.path.join(dst.base, "data.qcow2")
    assert info["state"] == "running" and info["spec"]["disks"][0]["path"] == target
    assert info["definition"]["disks"][0]["path"] == target
    b.call("vm.destroy", name="st")
    same = subprocess.run(["qemu-img", "compare", "-q", img, target], capture_output=True, text=True)
    assert same.returncode == 0, same.stdout + same.stderr


def test_kvmctl_migrate_draws_a_progress_bar_and_prints_the_outcome(pair):
    src, dst = pair
    src.client().call("vm.create", spec=firmware_spec("cli"))
    master, slave = pty.openpty()  # a terminal for stderr: the bar is drawn there
    try:
        proc = subprocess.run([sys.executable, "-m", "kvmd.cli.main", "--socket", src.socket, "migrate", "cli",
                               dst.socket, "--bandwidth", "1GiB", "--downtime", "500"],
                              stdout=subprocess.PIPE, stderr=slave, text=True, timeout=60)
        os.close(slave)
        slave = -1
        bar = b""
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            if not chunk:
                break
            bar += chunk
    finally:
        if slave >= 0:
            os.close(slave)
        os.close(master)
    assert proc.returncode == 0, proc.stdout
    assert re.match(r"VM 'cli' migrated to \S+ in \d+ ms \(downtime \d+ ms\)", proc.stdout), proc.stdout
    assert b"100%" in bar and b"memory" in bar, bar
    assert dst.client().call("vm.info", name="cli")["state"] == "running"
    failed = subprocess.run([sys.executable, "-m", "kvmd.cli.main", "--socket", dst.socket, "migrate", "cli",
                             "/nonexistent/kvmd.sock"], capture_output=True, text=True, timeout=60)
    assert failed.returncode == 1 and failed.stderr.startswith("kvmctl: error: cannot migrate 'cli'"), failed.stderr
