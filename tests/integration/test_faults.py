"""kill -9 of kvmd in the middle of starts, hot-plugs and migrations, then a restart.

After the restart: no VM lost (every QEMU still alive is listed, with its pid), none
paused that was running (kvmd's state, and QEMU's own through a second QMP monitor),
none duplicated (one QEMU per uuid), and every operation either completed or cleanly
failed (a half-started VM is running and listed, or gone with no QEMU; a half-done
plug is in the spec and in QEMU, or in neither, and can be retried).

Two ways to stop kvmd: at a random moment while several operations run concurrently,
and at each named step of one operation (`KVMD_FAILPOINTS`, kvmd/failpoints.py), so
every window between two steps is covered on every run.
"""

from __future__ import annotations

import os
import signal
import threading

import pytest

from kvmd import errors
from kvmd.client import ApiError, Client
from tests.conftest import firmware_spec
from tests.support.daemon import Daemon
from tests.support.faults import assert_consistent, qemu_processes, qmp_status, wait_for
from tests.support.sideqmp import side_qmp_args


@pytest.fixture
def fresh(tmpdir_short):
    """A kvmd per test, made by the test (it may need failpoints in its environment)."""
    made: list[Daemon] = []

    def make(failpoints: str | None = None, base: str | None = None) -> Daemon:
        d = Daemon(base or tmpdir_short, env={"KVMD_FAILPOINTS": failpoints} if failpoints else None)
        made.append(d)
        return d.start()

    try:
        yield make
    finally:
        for d in made:
            d.cleanup()


def restart_clean(d: Daemon) -> Client:
    """Restart `d` (already dead or killed now) without failpoints; a client of the new one."""
    d.kill(signal.SIGKILL)
    d.env.pop("KVMD_FAILPOINTS", None)
    d.start()
    return d.client()


def side(d: Daemon, name: str) -> str:
    return os.path.join(d.base, f"{name}.side")


def assert_running_for_real(d: Daemon, vms: dict[str, dict], names) -> None:
    for name in names:
        assert vms[name]["state"] == "running", vms[name]
        st = qmp_status(side(d, name))
        assert st["running"] and st["status"] == "running", (name, st)


def call_until_dead(d: Daemon, method: str, **params):
    """A call that makes kvmd kill itself (a failpoint): the connection drops."""
    c = Client(d.socket).connect()
    try:
        with pytest.raises(ApiError):
            c.call(method, **params)
    finally:
        c.close()
    d.proc.wait(timeout=30)
    assert d.proc.returncode == -signal.SIGKILL, d.log()


# -- starts ----------------------------------------------------------------------------------


def test_kill_while_ten_vms_start_loses_pauses_and_duplicates_none(fresh):
    d = fresh()
    names = [f"c{i}" for i in range(10)]
    replies: dict[str, object] = {}
    cond = threading.Condition()

    def create(name: str) -> None:
        try:
            with Client(d.socket) as c:
                out: object = c.call("vm.create", spec=firmware_spec(name, qemuArgs=side_qmp_args(side(d, name))))
        except Exception as e:  # ConnectionLost once kvmd is killed
            out = e
        with cond:
            replies[name] = out
            cond.notify_all()

    threads = [threading.Thread(target=create, args=(n,)) for n in names]
    for t in threads:
        t.start()
    with cond:
        assert cond.wait_for(lambda: sum(isinstance(r, dict) for r in replies.values()) >= 3, 60), replies
    d.proc.send_signal(signal.SIGKILL)
    for t in threads:
        t.join(60)
    c = restart_clean(d)
    vms = assert_consistent(c, d.base)
    done = [n for n, r in replies.items() if isinstance(r, dict)]
    assert set(done) <= set(vms), "a VM whose create completed was lost"
    assert_running_for_real(d, vms, vms)  # nothing listed is paused, or half started
    # the others cleanly failed: gone, no QEMU, and a retry works
    for name in set(names) - set(vms):
        assert c.call("vm.create", spec=firmware_spec(name, qemuArgs=side_qmp_args(side(d, name))))["state"] == "running"
    assert len(assert_consistent(c, d.base)) == 10


START_STEPS = ["start.recorded", "start.spawned", "start.saved", "start.connected", "start.cont"]


@pytest.mark.parametrize("step", START_STEPS)
@pytest.mark.parametrize("verb", ["vm.create", "vm.start"])
def test_kill_at_each_step_of_a_start(fresh, step, verb):
    d = fresh(failpoints=step)
    c = d.client()
    spec = firmware_spec("vm", qemuArgs=side_qmp_args(side(d, "vm")))
    if verb == "vm.start":
        c.call("vm.define", spec=spec)
        call_until_dead(d, "vm.start", name="vm")
    else:
        call_until_dead(d, "vm.create", spec=spec)
    c = restart_clean(d)
    vms = assert_consistent(c, d.base)
    if step == "start.cont":  # QEMU already ran the guest: the start completes
        assert_running_for_real(d, vms, ["vm"])
        assert vms["vm"]["reason"] == "re-attached"
    elif verb == "vm.create":
        assert vms == {}, "a transient VM whose start did not complete is gone"
    else:
        assert vms["vm"]["state"] == "stopped" and vms["vm"]["reason"].startswith("start interrupted"), vms
    assert os.listdir(d.run_dir).count("vm.json") == (1 if "vm" in vms and vms["vm"]["pid"] else 0)
    # and the VM starts (again) normally
    if not vms.get("vm", {}).get("pid"):
        info = c.call(verb, **({"spec": spec} if verb == "vm.create" else {"name": "vm"}))
        assert info["state"] == "running"
    assert_running_for_real(d, assert_consistent(c, d.base), ["vm"])


# -- hot-plugs ---------------------------------------------------------------------------------


def qemu_devices(d: Daemon, name: str) -> tuple[set[str], set[str]]:
    """(disk and NIC device names, block node names) QEMU itself has, via the side monitor."""
    from tests.support.sideqmp import SideQMP

    q = SideQMP(side(d, name), timeout=10)
    try:
        devs = {p["name"] for p in q.cmd("qom-list", path="/machine/peripheral")
                if p["name"].startswith(("disk-", "nic-"))}
        nodes = {n["node-name"] for n in q.cmd("query-named-block-nodes") if n.get("node-name")}
    finally:
        q.close()
    return devs, nodes


def assert_devices_match(c: Client, d: Daemon, name: str) -> dict:
    """The running spec (and a persistent VM's definition) name exactly what QEMU has."""
    info = c.call("vm.info", name=name, spec=True)
    disks = {x["name"] for x in info["spec"]["disks"]}
    nics = {x["name"] for x in info["spec"]["nics"]}
    devs, nodes = qemu_devices(d, name)
    assert devs == {f"disk-{x}" for x in disks} | {f"nic-{x}" for x in nics}, (devs, disks, nics)
    assert nodes == {f"{p}-{x}" for x in disks for p in ("fmt", "file")}, (nodes, disks)
    if "definition" in info:
        assert {x["name"] for x in info["definition"]["disks"]} == disks
        assert {x["name"] for x in info["definition"]["nics"]} == nics
    return info


def images(d: Daemon, name: str, n: int) -> list[str]:
    paths = []
    for j in range(n):
        path = os.path.join(d.base, f"{name}-d{j}.raw")
        with open(path, "wb") as f:
            f.truncate(1 << 20)
        paths.append(path)
    return paths


def test_kill_while_hotplugs_run_leaves_each_plug_done_or_undone(fresh):
    d = fresh()
    c = d.client()
    names = ["h0", "h1", "h2"]
    for name in names:
        spec = firmware_spec(name, hotplugSlots=8, qemuArgs=side_qmp_args(side(d, name)))
        if name == "h0":  # a persistent one: its definition must follow too
            c.call("vm.define", spec=spec)
            c.call("vm.start", name=name)
        else:
            c.call("vm.create", spec=spec)
    paths = {name: images(d, name, 4) for name in names}
    done: list[tuple[str, str]] = []
    cond = threading.Condition()

    def plug(name: str) -> None:
        with Client(d.socket) as cl:
            for j in range(4):
                try:
                    cl.call("vm.hotplug_disk", name=name, disk={"name": f"d{j}", "path": paths[name][j]})
                    cl.call("vm.hotplug_nic", name=name, nic={"name": f"n{j}"})
                except Exception:
                    return
                with cond:
                    done.append((name, f"d{j}"))
                    cond.notify_all()

    threads = [threading.Thread(target=plug, args=(n,)) for n in names]
    for t in threads:
        t.start()
    with cond:
        cond.wait_for(lambda: len(done) >= 2, 60)
    d.proc.send_signal(signal.SIGKILL)
    for t in threads:
        t.join(60)
    c = restart_clean(d)
    vms = assert_consistent(c, d.base)
    assert_running_for_real(d, vms, names)
    for name in names:
        info = assert_devices_match(c, d, name)
        have = {x["name"] for x in info["spec"]["disks"]} | {x["name"] for x in info["spec"]["nics"]}
        assert {disk for n, disk in done if n == name} <= have, "a plug that completed was lost"
        # what did not complete can be done now: nothing half-made is in the way
        for j in range(4):
            if f"d{j}" not in have:
                c.call("vm.hotplug_disk", name=name, disk={"name": f"d{j}", "path": paths[name][j]})
            if f"n{j}" not in have:
                c.call("vm.hotplug_nic", name=name, nic={"name": f"n{j}"})
        info = assert_devices_match(c, d, name)
        assert len(info["spec"]["disks"]) == len(info["spec"]["nics"]) == 4


@pytest.mark.parametrize("kind, step", [("disk", "hotplug.nodes-added"), ("disk", "hotplug.device-added"),
                                        ("nic", "hotplug.device-added")])
def test_kill_at_each_step_of_a_hotplug(fresh, kind, step):
    d = fresh(failpoints=step)
    c = d.client()
    c.call("vm.define", spec=firmware_spec("vm", qemuArgs=side_qmp_args(side(d, "vm"))))
    c.call("vm.start", name="vm")
    (path,) = images(d, "vm", 1)
    dev = {"name": "x", "path": path} if kind == "disk" else {"name": "x"}
    call_until_dead(d, f"vm.hotplug_{kind}", name="vm", **{kind: dev})
    c = restart_clean(d)
    assert_running_for_real(d, assert_consistent(c, d.base), ["vm"])
    info = assert_devices_match(c, d, "vm")
    have = {x["name"] for x in info["spec"][f"{kind}s"]}
    # QEMU had the device: the plug completes; it had only the backend: it is undone
    assert have == ({"x"} if step == "hotplug.device-added" else set())
    if not have:
        c.call(f"vm.hotplug_{kind}", name="vm", **{kind: dev})
    with pytest.raises(ApiError) as exc:  # it is there now, once
        c.call(f"vm.hotplug_{kind}", name="vm", **{kind: dev})
    assert exc.value.code == errors.INVALID_SPEC and "duplicate" in exc.value.message
    assert {x["name"] for x in assert_devices_match(c, d, "vm")["spec"][f"{kind}s"]} == {"x"}
    # and after one more restart, all of it is still true
    c = restart_clean(d)
    assert {x["name"] for x in assert_devices_match(c, d, "vm")["spec"][f"{kind}s"]} == {"x"}


# -- migrations --------------------------------------------------------------------------------


def two(fresh, base: str, src_failpoints: str | None = None) -> tuple[Daemon, Daemon]:
    for sub in "ab":
        os.mkdir(os.path.join(base, sub))
    return fresh(src_failpoints, os.path.join(base, "a")), fresh(None, os.path.join(base, "b"))


def settled(client, name: str, timeout: float = 30) -> dict:
    return wait_for(lambda: (i := client.call("vm.info", name=name))["state"] not in ("migrating-out", "migrating-in")
                    and i, timeout, f"{name} to leave the migration states")


def gone(client, daemon: Daemon, timeout: float = 15) -> None:
    wait_for(lambda: client.call("vm.list") == [] and not qemu_processes(daemon.base), timeout,
             f"{daemon.base} to have no VM and no QEMU")


def start_slow_migration(a: Client, dst: Daemon) -> None:
    a.call("vm.define", spec=firmware_spec("mig"))
    a.call("vm.start", name="mig")
    a.call("vm.migrate", name="mig", dest=dst.socket, bandwidth="64KiB", wait=False)
    wait_for(lambda: (s := a.call("vm.migrate_status", name="mig"))["state"] == "active" and s["transferred"] > 0,
             20, "the migration to be under way")


def test_kill_source_kvmd_mid_migration_cancels_it_and_the_guest_runs_on_at_the_source(fresh, tmpdir_short):
    src, dst = two(fresh, tmpdir_short)
    a, b = src.client(), dst.client()
    start_slow_migration(a, dst)
    pid = a.call("vm.info", name="mig")["pid"]
    src.proc.send_signal(signal.SIGKILL)
    a = restart_clean(src)
    info = settled(a, "mig")
    assert info["state"] == "running" and info["pid"] == pid and "interrupted by a kvmd restart" in info["reason"]
    status = a.call("vm.migrate_status", name="mig")
    assert status["state"] == "failed" and "interrupted by a kvmd restart" in status["error"]
    gone(b, dst)  # the destination's copy is destroyed
    assert_consistent(a, src.base)
    assert os.path.exists(os.path.join(src.state_dir, "vms", "mig.yaml"))
    # nothing is left in the way of migrating it again
    assert a.call("vm.migrate", name="mig", dest=dst.socket)["state"] == "completed"
    assert b.call("vm.info", name="mig")["state"] == "running" and a.call("vm.list") == []


@pytest.mark.parametrize("step, outcome", [("migrate.started", "source"), ("migrate.completed", "source"),
                                           ("migrate.handed-over", "destination")])
def test_kill_source_kvmd_at_each_step_of_a_migration(fresh, tmpdir_short, step, outcome):
    src, dst = two(fresh, tmpdir_short, src_failpoints=step)
    a, b = src.client(), dst.client()
    a.call("vm.define", spec=firmware_spec("mig"))
    pid = a.call("vm.start", name="mig")["pid"]
    call_until_dead(src, "vm.migrate", name="mig", dest=dst.socket)
    a = restart_clean(src)
    if outcome == "source":  # the guest never ran there: it runs on here
        info = settled(a, "mig")
        assert info["state"] == "running" and info["pid"] == pid, info
        assert a.call("vm.migrate_status", name="mig")["state"] == "failed"
        gone(b, dst)
        assert_consistent(a, src.base)
    else:  # it was resumed there: the source QEMU ends and the VM is forgotten here
        wait_for(lambda: a.call("vm.list") == [], 30, "the source to forget the VM")
        assert a.call("vm.migrate_status", name="mig")["state"] == "completed"
        assert not qemu_processes(src.base)
        assert not os.path.exists(os.path.join(src.state_dir, "vms", "mig.yaml"))
        there = b.call("vm.info", name="mig")
        assert there["state"] == "running" and there["persistent"], there
        assert_consistent(b, dst.base)


def test_kill_destination_kvmd_mid_migration_the_source_runs_on(fresh, tmpdir_short):
    src, dst = two(fresh, tmpdir_short)
    a, b = src.client(), dst.client()
    start_slow_migration(a, dst)
    pid = a.call("vm.info", name="mig")["pid"]
    dst.proc.send_signal(signal.SIGKILL)
    b = restart_clean(dst)
    gone(b, dst)  # a restarted destination ends an incoming QEMU that never ran the guest
    info = settled(a, "mig")
    assert info["state"] == "running" and info["pid"] == pid, info
    assert a.call("vm.migrate_status", name="mig")["state"] == "failed"
    assert_consistent(a, src.base)


@pytest.mark.parametrize("step, outcome", [("incoming.finishing", "source"), ("incoming.resumed", "destination")])
def test_kill_destination_kvmd_during_the_hand_over(fresh, tmpdir_short, step, outcome):
    """The destination kvmd dies while the source asks it to take over: the source asks
    again once it is back, and the guest runs where the destination says, never twice."""
    for sub in "ab":
        os.mkdir(os.path.join(tmpdir_short, sub))
    src = fresh(None, os.path.join(tmpdir_short, "a"))
    dst = fresh(step, os.path.join(tmpdir_short, "b"))
    a = src.client()
    a.call("vm.define", spec=firmware_spec("mig"))
    pid = a.call("vm.start", name="mig")["pid"]
    result: dict = {}

    def migrate() -> None:
        try:
            with Client(src.socket) as cl:
                result["status"] = cl.call("vm.migrate", name="mig", dest=dst.socket)
        except ApiError as e:
            result["error"] = e

    t = threading.Thread(target=migrate)
    t.start()
    dst.proc.wait(timeout=60)
    b = restart_clean(dst)
    t.join(60)
    if outcome == "source":
        assert result["error"].code == errors.MIGRATION_FAILED, result
        info = settled(a, "mig")
        assert info["state"] == "running" and info["pid"] == pid, info
        gone(b, dst)
        assert_consistent(a, src.base)
    else:
        assert result.get("status", {}).get("state") == "completed", result
        assert a.call("vm.list") == [] and not qemu_processes(src.base)
        there = settled(b, "mig")
        assert there["state"] == "running" and there["persistent"], there
        assert_consistent(b, dst.base)
