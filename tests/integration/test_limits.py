"""Resource limits: each VM's QEMU in its own cgroup with limits from the spec, and quotas
refused at admission with an error naming the limit (root kvmd, firmware-only VMs)."""

from __future__ import annotations

import os
import signal

import pytest

from kvmd import errors
from kvmd.cgroups import limits_for
from kvmd.client import ApiError
from tests.conftest import firmware_spec
from tests.support.daemon import Daemon

MiB = 1 << 20


def read(path: str) -> str:
    with open(path) as f:
        return f.read().strip()


def cgroup_of(pid: int) -> dict[str, str]:
    """controller -> cgroup path of `pid` (v1 lines `id:controllers:path`)."""
    out = {}
    for line in read(f"/proc/{pid}/cgroup").splitlines():
        _, controllers, path = line.split(":", 2)
        for c in controllers.split(","):
            out[c] = path
    return out


@pytest.fixture
def config_daemon(tmpdir_short):
    """A kvmd started with a config file: `config_daemon(text)`."""
    started = []

    def start(text: str) -> Daemon:
        path = os.path.join(tmpdir_short, "kvmd.yaml")
        with open(path, "w") as f:
            f.write(text)
        d = Daemon(tmpdir_short, config=path)
        started.append(d)
        return d.start()

    yield start
    for d in started:
        d.cleanup()


def test_qemu_runs_in_its_own_cgroup_with_cpu_and_memory_limits_from_the_spec(daemon):
    c = daemon.client()
    cg = c.call("host.info")["cgroups"]
    if not cg["writable"]:
        pytest.skip(f"cgroups not writable here: {cg['reason']}")
    assert cg["version"] == "v1"  # this machine mounts v1 cpu and memory
    info = c.call("vm.create", spec=firmware_spec("lim", cpu={"count": 2}, memory={"size": "128MiB"}))
    dirs = {p.split("/")[4]: os.path.join(p, "lim") for p in cg["paths"]}  # /sys/fs/cgroup/<controller>/...
    cpu, mem = dirs["cpu"], dirs["memory"]
    mine = cgroup_of(info["pid"])
    assert "/sys/fs/cgroup/cpu" + mine["cpu"] == cpu
    assert "/sys/fs/cgroup/memory" + mine["memory"] == mem
    assert str(info["pid"]) in read(f"{cpu}/cgroup.procs").split()
    assert read(f"{cpu}/cpu.cfs_period_us") == "100000"
    assert read(f"{cpu}/cpu.cfs_quota_us") == "200000"
    expected = limits_for(2, 128 * MiB).memory_bytes
    assert expected == 128 * MiB + 256 * MiB + 13 * MiB  # spec + 256 MiB + 10%, whole MiB
    assert int(read(f"{mem}/memory.limit_in_bytes")) == expected
    # survives a kvmd restart, and goes when the re-attached QEMU is destroyed
    daemon.restart()
    c = daemon.client()
    assert c.call("vm.info", name="lim")["state"] == "running"
    assert cgroup_of(info["pid"]) == mine
    c.call("vm.destroy", name="lim")
    assert not os.path.exists(cpu) and not os.path.exists(mem)
    # the instance cgroup went with its last VM
    assert not any(os.path.exists(p) for p in cg["paths"])


def test_cgroup_is_removed_when_qemu_dies_under_kvmd(daemon):
    c = daemon.client()
    cg = c.call("host.info")["cgroups"]
    if not cg["writable"]:
        pytest.skip(f"cgroups not writable here: {cg['reason']}")
    c.call("vm.define", spec=firmware_spec("die"))
    pid = c.call("vm.start", name="die")["pid"]
    watcher = daemon.client()
    watcher.call("events.subscribe")
    os.kill(pid, signal.SIGKILL)
    while watcher.next_event(timeout=10).get("state") != "crashed":
        pass
    assert not any(os.path.exists(os.path.join(p, "die")) for p in cg["paths"])


def test_disabled_cgroups_are_reported_and_qemu_stays_in_kvmds_cgroup(config_daemon):
    d = config_daemon("cgroups: {enabled: false}\n")
    c = d.client()
    cg = c.call("host.info")["cgroups"]
    assert cg["writable"] is False and "disabled" in cg["reason"]
    pid = c.call("vm.create", spec=firmware_spec("free"))["pid"]
    assert cgroup_of(pid)["cpu"] == cgroup_of(os.getpid())["cpu"]
    c.call("vm.destroy", name="free")


@pytest.mark.parametrize("quotas, specs, limit", [
    ("maxVms: 1", [{}, {}], "maxVms"),
    ("maxVcpus: 3", [{"cpu": {"count": 2}}, {"cpu": {"count": 2}}], "maxVcpus"),
    ("maxMemory: 200MiB", [{"memory": {"size": "128MiB"}}, {"memory": {"size": "128MiB"}}], "maxMemory"),
])
def test_start_over_quota_is_refused_with_an_error_naming_the_limit(config_daemon, quotas, specs, limit):
    c = config_daemon(f"quotas: {{{quotas}}}\n").client()
    first = {"memory": {"size": "128MiB"}, **specs[0]}
    c.call("vm.create", spec=firmware_spec("q0", **first))
    c.call("vm.define", spec=firmware_spec("q1", **specs[1]))
    with pytest.raises(ApiError) as exc:
        c.call("vm.start", name="q1")
    err = exc.value
    assert err.code == errors.QUOTA_EXCEEDED
    assert limit in err.message and err.data["limit"] == limit
    assert c.call("vm.info", name="q1")["state"] == "defined"
    assert c.call("host.info")["vms"]["active"] == 1
    # room again once the first VM is gone
    c.call("vm.destroy", name="q0")
    assert c.call("vm.start", name="q1")["state"] == "running"
    c.call("vm.destroy", name="q1")


def test_stale_vm_cgroups_left_by_an_unseen_exit_are_pruned_when_kvmd_starts(daemon):
    c = daemon.client()
    cg = c.call("host.info")["cgroups"]
    if not cg["writable"]:
        pytest.skip(f"cgroups not writable here: {cg['reason']}")
    keep = c.call("vm.create", spec=firmware_spec("keep"))
    lost = c.call("vm.create", spec=firmware_spec("lost"))
    daemon.kill(signal.SIGKILL)
    os.kill(lost["pid"], signal.SIGKILL)
    os.unlink(os.path.join(daemon.run_dir, "lost.json"))  # its record is gone too
    daemon.start()
    c = daemon.client()
    assert [vm["name"] for vm in c.call("vm.list")] == ["keep"]
    assert not any(os.path.exists(os.path.join(p, "lost")) for p in cg["paths"])
    assert all(os.path.isdir(os.path.join(p, "keep")) for p in cg["paths"])
    assert str(keep["pid"]) in read(os.path.join(cg["paths"][0], "keep", "cgroup.procs")).split()
    c.call("vm.destroy", name="keep")
