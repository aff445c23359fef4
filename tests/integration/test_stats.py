"""vm.stats against real QEMU: counters that follow what the guest does, vCPU threads as
QEMU reports them, one call for many VMs, and a wedged QEMU that must not stall it.

Firmware-only VMs wherever no guest OS is needed; the disk I/O test boots the real test
guest (slow). Every process a test starts is killed in a finalizer, pass or fail.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from kvmd.client import ApiError
from kvmd.errors import INVALID_PARAMS, NO_SUCH_VM
from tests.conftest import firmware_spec, guest_spec
from tests.support.console import Console
from tests.support.sideqmp import SideQMP, side_qmp_args

_BIN = os.path.join(os.path.dirname(sys.executable), "kvmctl")
KVMCTL = [_BIN] if os.access(_BIN, os.X_OK) else [sys.executable, "-m", "kvmd.cli.main"]
MiB = 1 << 20


def _disk(tmpdir: str, name: str, size: int = 8 * MiB) -> str:
    path = os.path.join(tmpdir, f"{name}.raw")
    with open(path, "wb") as f:
        f.write(os.urandom(size))
    return path


@pytest.mark.slow
def test_disk_and_cpu_counters_grow_when_the_guest_reads_and_writes_its_disk(client, guest, tmpdir_short):
    path = _disk(tmpdir_short, "data")
    spec = guest_spec(guest, "io", disks=[{"name": "data", "path": path}], nics=[{"name": "n0"}])
    info = client.call("vm.create", spec=spec)
    console = Console(info["console"])
    try:
        console.expect("KVMD-GUEST-READY", timeout=90)
        before = client.call("vm.stats", names=["io"])["io"]
        out = console.run("dd if=/dev/vda of=/dev/null bs=64k 2>&1; "
                          "dd if=/dev/zero of=/dev/vda bs=64k count=32 conv=fsync 2>&1")
        assert "128+0 records in" in out and "32+0 records out" in out, out
        after = client.call("vm.stats", names=["io"])["io"]
    finally:
        console.close()
    assert after["state"] == "running" and "error" not in after
    d0, d1 = before["disks"][0], after["disks"][0]
    assert d1["name"] == "data"
    assert d1["rd_bytes"] - d0["rd_bytes"] >= 8 * MiB
    assert d1["rd_ops"] > d0["rd_ops"]
    assert d1["wr_bytes"] - d0["wr_bytes"] >= 2 * MiB
    assert d1["wr_ops"] > d0["wr_ops"]
    assert d1["flush_ops"] > d0["flush_ops"], "conv=fsync flushes the disk"
    assert d1["rd_latency_ns"] > 0 and d1["wr_latency_ns"] > 0
    assert after["cpu"]["user_s"] + after["cpu"]["system_s"] > before["cpu"]["user_s"] + before["cpu"]["system_s"]
    vcpu0 = after["cpu"]["vcpus"][0]
    assert vcpu0["user_s"] + vcpu0["system_s"] > 0
    assert after["uptime"] > before["uptime"]
    mem = after["memory"]
    assert mem["size"] == 256 * MiB and mem["actual"] == 256 * MiB and mem["rss"] > 16 * MiB
    nic = after["nics"][0]
    assert nic["name"] == "n0" and nic["rx_bytes"] is None and "slirp" in nic["unavailable"]


def test_vcpu_threads_are_those_qemu_reports(client, tmpdir_short):
    side = os.path.join(tmpdir_short, "side.qmp")
    info = client.call("vm.create", spec=firmware_spec("cpus", cpu={"count": 3}, qemuArgs=side_qmp_args(side)))
    qmp = SideQMP(side)
    try:
        qemu_view = {c["cpu-index"]: c["thread-id"] for c in qmp.cmd("query-cpus-fast")}
    finally:
        qmp.close()
    vcpus = client.call("vm.stats", names=["cpus"])["cpus"]["cpu"]["vcpus"]
    assert {v["cpu"]: v["thread_id"] for v in vcpus} == qemu_view
    assert len(vcpus) == 3
    for v in vcpus:
        assert os.path.exists(f"/proc/{info['pid']}/task/{v['thread_id']}")
        assert v["user_s"] is not None and v["system_s"] is not None


def test_stats_cover_every_active_vm_and_only_the_state_of_an_inactive_one(client):
    for i in range(3):
        client.call("vm.create", spec=firmware_spec(f"s{i}", disks=[], nics=[{"name": "n0"}]))
    client.call("vm.define", spec=firmware_spec("idle"))
    stats = client.call("vm.stats")
    assert sorted(stats) == ["s0", "s1", "s2"]
    for s in stats.values():
        assert s["state"] == "running" and "error" not in s
        assert s["cpu"]["user_s"] is not None and s["memory"]["rss"] > 0
        assert s["disks"] == [] and s["nics"][0]["name"] == "n0"
    assert client.call("vm.stats", names=["idle", "s1"])["idle"] == {"state": "defined"}
    with pytest.raises(ApiError) as e:
        client.call("vm.stats", names=["nope"])
    assert e.value.code == NO_SUCH_VM
    with pytest.raises(ApiError) as e:
        client.call("vm.stats", timeout=0)
    assert e.value.code == INVALID_PARAMS


def test_a_stopped_qemu_gets_an_error_entry_while_the_others_are_reported_at_once(client):
    pids = {}
    for i in range(5):
        pids[f"w{i}"] = client.call("vm.create", spec=firmware_spec(f"w{i}"))["pid"]
    stopped = ["w1", "w2", "w4"]
    try:
        for name in stopped:
            os.kill(pids[name], signal.SIGSTOP)
        started = time.monotonic()
        stats = client.call("vm.stats", timeout=0.5)
        elapsed = time.monotonic() - started
        for name in stopped:
            assert "timed out" in stats[name]["error"], stats[name]
            assert stats[name]["state"] == "running"
        for name in ("w0", "w3"):
            assert "error" not in stats[name] and stats[name]["cpu"]["vcpus"], stats[name]
        # One wait for all the silent VMs, not one after another (that would be >= 1.5 s).
        assert elapsed < 1.2, f"stats took {elapsed:.2f}s"
    finally:
        for name in stopped:
            os.kill(pids[name], signal.SIGCONT)
    again = client.call("vm.stats", timeout=5)
    assert all("error" not in s for s in again.values()), again


def test_kvmctl_stats_shows_a_table_one_vm_and_json(daemon, client):
    client.call("vm.create", spec=firmware_spec("c1", nics=[{"name": "n0"}]))
    client.call("vm.create", spec=firmware_spec("c2"))

    def kvmctl(*args: str) -> str:
        r = subprocess.run([*KVMCTL, "--socket", daemon.socket, "stats", *args],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0 and r.stderr == "", r.stderr
        return r.stdout

    table = kvmctl().splitlines()
    assert table[0].split()[:4] == ["NAME", "STATE", "UPTIME", "CPU"]
    assert [line.split()[0] for line in table[1:]] == ["c1", "c2"]
    detail = kvmctl("c1")
    assert detail.startswith("c1: running") and "vcpu 0 (thread" in detail
    assert "nic n0: counters unavailable" in detail
    one = json.loads(kvmctl("c2", "--json"))
    assert one["state"] == "running" and one["cpu"]["vcpus"][0]["cpu"] == 0
    assert sorted(json.loads(kvmctl("--json"))) == ["c1", "c2"]
    r = subprocess.run([*KVMCTL, "--socket", daemon.socket, "stats", "ghost"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and r.stderr.startswith("kvmctl: error: ") and "ghost" in r.stderr
