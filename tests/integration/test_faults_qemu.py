"""QEMU itself failing under kvmd: killed mid-migration, or hung (SIGSTOP) under a call.

(The destination QEMU killed mid-migration is in test_migration.py.)
"""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from kvmd import errors
from kvmd.client import ApiError, Client
from tests.conftest import firmware_spec
from tests.support.daemon import Daemon
from tests.support.faults import assert_consistent, qemu_processes, qmp_status, wait_for
from tests.support.sideqmp import side_qmp_args


def test_source_qemu_killed_mid_migration_crashes_the_vm_and_the_destination_cleans_up(pair):
    src, dst = pair
    a, b = src.client(), dst.client()
    a.call("vm.define", spec=firmware_spec("mig"))
    pid = a.call("vm.start", name="mig")["pid"]
    a.call("vm.migrate", name="mig", dest=dst.socket, bandwidth="64KiB", wait=False)
    wait_for(lambda: (s := a.call("vm.migrate_status", name="mig"))["state"] == "active" and s["transferred"] > 0,
             20, "the migration to be under way")
    os.kill(pid, signal.SIGKILL)
    status = wait_for(lambda: (s := a.call("vm.migrate_status", name="mig"))["state"] in ("failed", "cancelled",
                                                                                          "completed") and s,
                      20, "the migration to end")
    assert status["state"] == "failed" and status["error"], status
    info = a.call("vm.info", name="mig")
    assert info["state"] == "crashed" and "SIGKILL" in info["reason"] and info["pid"] is None, info
    wait_for(lambda: b.call("vm.list") == [] and not qemu_processes(dst.base), 15, "the destination to clean up")
    assert_consistent(a, src.base)
    # the definition stays here, and the VM starts again
    assert a.call("vm.start", name="mig")["state"] == "running"


@pytest.fixture
def quick_qmp(tmpdir_short):
    """A kvmd whose QMP commands time out after 1 s (config qmpTimeout); every QEMU it
    starts is sent SIGCONT before the clean-up, whatever the test stopped."""
    cfg = os.path.join(tmpdir_short, "kvmd.yaml")
    with open(cfg, "w") as f:
        f.write("qmpTimeout: 1\n")
    d = Daemon(tmpdir_short, config=cfg)
    stopped: list[int] = []
    try:
        d.start()
        yield d, stopped
    finally:
        for pid in stopped:
            try:
                os.kill(pid, signal.SIGCONT)
            except ProcessLookupError:
                pass
        d.cleanup()


def test_a_qemu_that_stops_answering_times_out_its_calls_and_the_others_are_served(quick_qmp):
    d, stopped = quick_qmp
    c = d.client()
    sides = {n: os.path.join(d.base, f"{n}.side") for n in ("hung", "other")}
    for name, path in sides.items():
        c.call("vm.create", spec=firmware_spec(name, qemuArgs=side_qmp_args(path)))
    hung = c.call("vm.info", name="hung")["pid"]
    os.kill(hung, signal.SIGSTOP)
    stopped.append(hung)
    outcome: dict = {}

    def pause_hung() -> None:
        started = time.monotonic()
        try:
            with Client(d.socket) as cl:
                cl.call("vm.pause", name="hung")
            outcome["error"] = None
        except ApiError as e:
            outcome["error"] = e
        outcome["took"] = time.monotonic() - started

    t = threading.Thread(target=pause_hung)
    t.start()
    time.sleep(0.2)  # the pause is now waiting on the silent QMP socket
    # meanwhile every other call is answered at once
    for _ in range(5):
        started = time.monotonic()
        assert {vm["name"] for vm in c.call("vm.list")} == {"hung", "other"}
        assert c.call("vm.info", name="other")["state"] == "running"
        assert time.monotonic() - started < 0.5
    assert c.call("vm.pause", name="other")["state"] == "paused"
    assert c.call("vm.resume", name="other")["state"] == "running"
    stats = c.call("vm.stats", timeout=0.5)
    assert "error" in stats["hung"] and "error" not in stats["other"]
    t.join(10)
    err = outcome["error"]
    assert err is not None and err.code == errors.TIMEOUT, outcome
    assert "QMP command stop timed out after 1s" in err.message
    assert outcome["took"] < 3, outcome
    assert qmp_status(sides["other"])["running"]
    # QEMU answers again: the command it was sent runs then, and kvmd's view follows
    os.kill(hung, signal.SIGCONT)
    stopped.remove(hung)
    wait_for(lambda: c.call("vm.info", name="hung")["state"] == "paused", 10, "the late stop to be seen")
    assert qmp_status(sides["hung"])["status"] == "paused"
    assert c.call("vm.resume", name="hung")["state"] == "running"
    assert qmp_status(sides["hung"])["running"]
    assert_consistent(c, d.base)
