"""Recovery after `kill -9` of kvmd: what died meanwhile, reused pids, a real guest ticking on.

(The basic case — running and paused VMs re-attached in their true state — is in
test_lifecycle.py.)
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
import uuid

import pytest

from kvmd import runtime
from kvmd.qemu.process import start_time
from tests.conftest import firmware_spec, guest_spec
from tests.support.console import Console
from tests.support.procs import alive


def wait_gone(pid: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while alive(pid):
        assert time.monotonic() < deadline, f"pid {pid} did not go away"
        time.sleep(0.01)


def records(run_dir: str) -> list[str]:
    return sorted(e for e in os.listdir(run_dir) if e.endswith(".json"))


def vm_cgroups(host_info: dict, name: str) -> list[str]:
    return [os.path.join(p, name) for p in host_info["cgroups"]["paths"]]


def test_vms_whose_qemu_ended_while_kvmd_was_down_are_reported_with_what_is_known(daemon):
    c = daemon.client()
    for name in ("term", "nine"):
        c.call("vm.define", spec=firmware_spec(name))
    term = c.call("vm.start", name="term")["pid"]
    nine = c.call("vm.start", name="nine")["pid"]
    gone = c.call("vm.create", spec=firmware_spec("transient"))["pid"]
    cgroup_dirs = [d for n in ("term", "nine", "transient") for d in vm_cgroups(c.call("host.info"), n)]
    assert all(os.path.isdir(d) for d in cgroup_dirs)
    daemon.kill(signal.SIGKILL)
    os.kill(term, signal.SIGTERM)
    os.kill(nine, signal.SIGKILL)
    os.kill(gone, signal.SIGKILL)
    for pid in (term, nine, gone):
        wait_gone(pid)
    daemon.start()
    c = daemon.client()
    vms = {vm["name"]: vm for vm in c.call("vm.list")}
    assert sorted(vms) == ["nine", "term"], "a transient VM that ended is gone"
    assert vms["term"]["state"] == "stopped"
    # QEMU's own last words name the signal and who sent it (this test process)
    assert re.search(rf"terminated by signal 15 from pid {os.getpid()}\b", vms["term"]["reason"])
    assert vms["nine"]["state"] == "stopped"
    assert "QEMU ended while kvmd was not running" in vms["nine"]["reason"]
    assert "exit status unknown" in vms["nine"]["reason"]
    assert vms["term"]["pid"] is None and vms["nine"]["pid"] is None
    assert records(daemon.run_dir) == []
    assert not any(os.path.exists(d) for d in cgroup_dirs)
    # and they start again
    assert c.call("vm.start", name="term")["state"] == "running"
    c.call("vm.destroy", name="term")


def test_runtime_record_with_a_reused_pid_is_neither_adopted_nor_killed(daemon):
    c = daemon.client()
    ghost = c.call("vm.define", spec=firmware_spec("ghost"))
    real = c.call("vm.create", spec=firmware_spec("real"))
    daemon.kill(signal.SIGKILL)
    sleeper = subprocess.Popen(["sleep", "300"])
    try:
        # "ghost" claims a live process that is not QEMU at all; "imposter" claims the
        # live QEMU of another VM (right pid and start time, wrong uuid)
        for name, pid, vm_uuid in (("ghost", sleeper.pid, ghost["uuid"]),
                                   ("imposter", real["pid"], str(uuid.uuid4()))):
            runtime.save(daemon.run_dir, runtime.RuntimeRecord(
                name=name, uuid=vm_uuid, pid=pid, start_time=start_time(pid),
                qmp=os.path.join(daemon.run_dir, f"{name}.qmp"), argv=["qemu-system-x86_64"],
                spec=firmware_spec(name, uuid=vm_uuid), persistent=name == "ghost"))
        daemon.start()
        c = daemon.client()
        vms = {vm["name"]: vm for vm in c.call("vm.list")}
        assert sorted(vms) == ["ghost", "real"]
        assert vms["ghost"]["state"] == "stopped" and vms["ghost"]["pid"] is None
        assert vms["real"]["state"] == "running" and vms["real"]["pid"] == real["pid"]
        assert sleeper.poll() is None, "the process behind a reused pid must not be touched"
        assert alive(real["pid"])
        assert records(daemon.run_dir) == ["real.json"]
        assert c.call("vm.pause", name="real")["state"] == "paused"
        c.call("vm.destroy", name="real")
    finally:
        sleeper.kill()
        sleeper.wait()


def counters(buf: bytes) -> list[int]:
    return [int(n) for n in re.findall(rb"KVMD-COUNTER (\d+)\r?\n", buf)]


@pytest.mark.slow
def test_real_guest_keeps_running_through_kvmd_kill_and_restart_and_verbs_work_after(daemon, guest):
    c = daemon.client()
    c.call("vm.define", spec=guest_spec(guest, "tick"))
    before = c.call("vm.start", name="tick")
    console = Console(before["console"])
    try:
        console.expect("KVMD-GUEST-READY", timeout=90)
        console.expect("KVMD-COUNTER 2\r\n", timeout=30)
        first = counters(console.buf)[-1]
        t_first = time.monotonic()
        daemon.kill(signal.SIGKILL)
        # while no kvmd runs, the guest keeps ticking on its own console
        console.expect(f"KVMD-COUNTER {first + 2}\r\n", timeout=30)
        daemon.start()
        c = daemon.client()
        after = c.call("vm.info", name="tick")
        assert after["state"] == "running" and after["reason"] == "re-attached"
        assert after["pid"] == before["pid"] and after["startedAt"] == before["startedAt"]
        console.expect(f"KVMD-COUNTER {first + 4}\r\n", timeout=30)
        elapsed = time.monotonic() - t_first
        seen = counters(console.buf)
        assert seen == list(range(seen[0], seen[-1] + 1)), f"counter skipped or restarted: {seen}"
        # a second per tick: never paused (a pause would leave the counter behind the clock)
        assert seen[-1] - first >= elapsed - 2, (seen, elapsed)
        assert c.call("vm.info", name="tick")["uptime"] >= elapsed
        # every verb works on the re-attached VM
        assert c.call("vm.pause", name="tick")["state"] == "paused"
        assert c.call("vm.resume", name="tick")["state"] == "running"
        console.buf = b""
        console.expect("KVMD-COUNTER", timeout=30)
        assert c.call("vm.reset", name="tick")["state"] == "running"
        console.expect("KVMD-GUEST-READY", timeout=90)
        done = c.call("vm.shutdown", name="tick", timeout=60)
        assert done["state"] == "stopped" and done["reason"] == "guest shut down"
        assert not alive(before["pid"])
    finally:
        console.close()
