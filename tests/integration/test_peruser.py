"""Per-user kvmd with two real Unix users, and the system instance's `runAs`.

Each user runs their own kvmd with its default XDG directories; QEMU then runs as that
user. Neither can see, reach or act on the other's VMs, sockets or processes, and
quotas from each instance's config file hold. The users (`kvt_a…`, `kvt_b…`) are created
here and removed with `userdel -r`, after every process they own is killed.
"""

from __future__ import annotations

import os
import stat
import subprocess

import pytest

from kvmd import errors
from tests.conftest import firmware_spec
from tests.support.daemon import Daemon
from tests.support.users import UserDaemon, call_as, create_user, remove_user, run_python

pytestmark = pytest.mark.skipif(os.getuid() != 0, reason="creates Unix users: needs root")


def status_uids(pid: int) -> list[int]:
    with open(f"/proc/{pid}/status") as f:
        line = next(ln for ln in f if ln.startswith("Uid:"))
    return [int(x) for x in line.split()[1:]]


@pytest.fixture(scope="module")
def users():
    made = []
    try:
        made.append(create_user("a"))
        made.append(create_user("b"))
        yield made
    finally:
        for user in made:
            remove_user(user)


@pytest.fixture(scope="module")
def instances(users):
    """A's kvmd allows one VM; B's allows 200 MiB of guest memory in all."""
    a = UserDaemon(users[0], "quotas: {maxVms: 1}\n")
    b = UserDaemon(users[1], "quotas: {maxMemory: 200MiB}\n")
    try:
        a.start()
        b.start()
        yield a, b
    finally:
        a.cleanup()
        b.cleanup()


@pytest.fixture(scope="module")
def vms(instances):
    """One running VM per user, created by that user through their own kvmd."""
    out = {}
    for d, name in zip(instances, ("vm-a", "vm-b"), strict=True):
        reply = d.call("vm.create", spec=firmware_spec(name))["reply"]
        assert "result" in reply, (reply, d.log())
        out[name] = reply["result"]
    return out


def result(reply: dict) -> object:
    assert "reply" in reply and "result" in reply["reply"], reply
    return reply["reply"]["result"]


def test_each_user_runs_a_kvmd_in_their_xdg_dirs_and_qemu_runs_as_that_user(users, instances, vms):
    for user, d, name in zip(users, instances, ("vm-a", "vm-b"), strict=True):
        host = result(d.call("host.info"))
        assert host["uid"] == user.uid
        assert host["runDir"] == d.run_dir and host["stateDir"] == d.state_dir
        assert status_uids(vms[name]["pid"]) == [user.uid] * 4
        st = os.stat(d.run_dir)
        assert st.st_uid == user.uid and stat.S_IMODE(st.st_mode) == 0o700
        sock = os.stat(d.socket)
        assert sock.st_uid == user.uid and stat.S_IMODE(sock.st_mode) == 0o600
        # no delegated cgroups for these users here: said so, limits enforced at admission
        assert host["cgroups"]["writable"] is False and host["cgroups"]["reason"]
        assert [vm["name"] for vm in result(d.call("vm.list"))] == [name]


def test_a_user_cannot_reach_the_other_users_socket_vms_or_qemu(users, instances, vms):
    (a, b), (da, db) = users, instances
    for me, other, vm in ((b, da, vms["vm-a"]), (a, db, vms["vm-b"])):
        denied = call_as(me, other.socket, "vm.list")
        assert denied.get("errno") == 13, denied  # EACCES: 0700 run dir, 0600 socket
        probe = run_python(me, f"""
import errno, json, os, signal, socket
out = {{}}
for key, fn in [("qmp", lambda: socket.socket(socket.AF_UNIX).connect({os.path.join(other.run_dir, vm["name"] + ".qmp")!r})),
                ("console", lambda: socket.socket(socket.AF_UNIX).connect({vm["console"]!r})),
                ("runDir", lambda: os.listdir({other.run_dir!r})),
                ("stateDir", lambda: os.listdir({other.state_dir!r})),
                ("log", lambda: open({vm["log"]!r}).read()),
                ("kill", lambda: os.kill({vm["pid"]}, signal.SIGKILL))]:
    try:
        fn()
        out[key] = "allowed"
    except OSError as e:
        out[key] = errno.errorcode[e.errno]
print(json.dumps(out))
""")
        assert probe == {"qmp": "EACCES", "console": "EACCES", "runDir": "EACCES",
                         "stateDir": "EACCES", "log": "EACCES", "kill": "EPERM"}, probe
    # both VMs are untouched
    for d, name in zip(instances, ("vm-a", "vm-b"), strict=True):
        assert result(d.call("vm.info", name=name))["state"] == "running"


def test_peer_credentials_are_checked_even_when_the_socket_is_reachable(users, instances, vms):
    (_, b), (da, _) = users, instances
    modes = {p: stat.S_IMODE(os.stat(p).st_mode) for p in (da.base, da.xdg_run, da.run_dir, da.socket)}
    try:
        for p in (da.base, da.xdg_run, da.run_dir):
            os.chmod(p, 0o711)
        os.chmod(da.socket, 0o666)
        reply = call_as(b, da.socket, "vm.destroy", {"name": "vm-a"})
        assert "reply" in reply, reply  # connected, and the daemon answered
        err = reply["reply"]["error"]
        assert err["code"] == errors.PERMISSION_DENIED, reply
        assert str(b.uid) in err["message"]
    finally:
        for p, mode in modes.items():
            os.chmod(p, mode)
    assert result(da.call("vm.info", name="vm-a"))["state"] == "running"


def test_over_quota_requests_are_refused_with_code_7_naming_the_limit(instances, vms):
    da, db = instances
    for d, name, limit in ((da, "more-a", "maxVms"), (db, "more-b", "maxMemory")):
        reply = d.call("vm.create", spec=firmware_spec(name))["reply"]
        assert reply["error"]["code"] == errors.QUOTA_EXCEEDED, reply
        assert limit in reply["error"]["message"] and reply["error"]["data"]["limit"] == limit
        assert len(result(d.call("vm.list"))) == 1


def test_without_xdg_runtime_dir_the_run_dir_falls_back_to_a_private_tmp_dir(users):
    a, b = users
    code = """
import json, os
from kvmd import config
cfg = config.load()
try:
    config.private_dir(cfg.run_dir)
    print(json.dumps({"runDir": cfg.run_dir}))
except PermissionError as e:
    print(json.dumps({"refused": str(e)}))
"""
    got = run_python(a, code, {"HOME": a.home})
    assert got == {"runDir": f"/tmp/kvmd-{a.uid}/kvmd"}
    for d in (f"/tmp/kvmd-{a.uid}", f"/tmp/kvmd-{a.uid}/kvmd"):
        st = os.lstat(d)
        assert st.st_uid == a.uid and stat.S_IMODE(st.st_mode) == 0o700
    # a fallback dir that someone else made first is refused, not used
    squat = f"/tmp/kvmd-{b.uid}"
    run_python(a, f"import os, json; os.mkdir({squat!r}, 0o777); os.chmod({squat!r}, 0o777); print(1)")
    got = run_python(b, code, {"HOME": b.home})
    assert "refused" in got and f"belongs to uid {a.uid}" in got["refused"]


def test_system_instance_runs_qemu_as_the_configured_user_with_files_it_can_use(users, tmpdir_short):
    a = users[0]
    image = os.path.join(tmpdir_short, "disk.qcow2")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", image, "16M"], check=True)
    os.chmod(image, 0o600)  # root's: QEMU opens it before it drops to the user
    path = os.path.join(tmpdir_short, "kvmd.yaml")
    with open(path, "w") as f:
        f.write(f"runAs: {a.name}\n")
    d = Daemon(tmpdir_short, config=path)
    try:
        c = d.start().client()
        info = c.call("vm.create", spec=firmware_spec(
            "sys", boot={"firmware": "uefi"}, disks=[{"path": image, "format": "qcow2"}]))
        assert info["state"] == "running"
        assert status_uids(info["pid"]) == [a.uid] * 4
        nvram = os.path.join(d.state_dir, "nvram", "sys_VARS.fd")
        for p in (info["log"], info["consoleLog"], nvram):
            assert os.stat(p).st_uid == a.uid, p
        c.call("vm.destroy", name="sys")
    finally:
        d.cleanup()
