"""A full disk under the state dir: new definitions are refused with a clear error
(STORAGE_FAILURE, naming the file and "no space left on device"), none of the existing
ones is lost or torn, and the daemon keeps serving — also across a restart.

The state dir is a 1 MiB tmpfs mounted for the test (and unmounted after it).
"""

from __future__ import annotations

import errno
import os
import subprocess

import pytest
import yaml

from kvmd import errors
from kvmd.client import ApiError
from tests.conftest import firmware_spec
from tests.support.daemon import Daemon
from tests.support.faults import assert_consistent


@pytest.fixture
def small_state_dir(tmpdir_short):
    """A kvmd whose state dir is a 1 MiB tmpfs."""
    d = Daemon(tmpdir_short)
    os.makedirs(d.state_dir)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", d.state_dir], check=True)
    try:
        d.start()
        yield d
    finally:
        d.cleanup()
        if subprocess.run(["umount", d.state_dir], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", d.state_dir], check=True)


def fill(path: str) -> str:
    """Fill the file system holding `path`; the filler's name."""
    filler = os.path.join(path, "filler")
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(b"\xa5" * 65536)
                f.flush()
        except OSError as e:
            assert e.errno == errno.ENOSPC
    # what a partial block still takes
    try:
        with open(filler, "ab") as f:
            while True:
                f.write(b"x")
                f.flush()
    except OSError:
        pass
    return filler


def definitions(d: Daemon) -> dict[str, bytes]:
    vms = os.path.join(d.state_dir, "vms")
    return {e: open(os.path.join(vms, e), "rb").read() for e in sorted(os.listdir(vms)) if not e.startswith(".")}


def test_full_state_dir_refuses_new_definitions_and_loses_none(small_state_dir):
    d = small_state_dir
    c = d.client()
    for name in ("a", "b", "c"):
        c.call("vm.define", spec=firmware_spec(name, metadata={"owner": name}))
    c.call("vm.start", name="a")
    before = definitions(d)
    filler = fill(d.state_dir)

    with pytest.raises(ApiError) as exc:
        c.call("vm.define", spec=firmware_spec("new"))
    e = exc.value
    path = os.path.join(d.state_dir, "vms", "new.yaml")
    assert e.code == errors.STORAGE_FAILURE, (e.code, e.message)
    assert e.message == f"cannot write {path}: no space left on device"
    assert e.data == {"path": path, "errno": errno.ENOSPC}
    # a redefinition is refused the same way, and the stored one stays whole
    spec = c.call("vm.info", name="b", spec=True)["spec"]  # b is not running: its definition
    spec["memory"]["size"] = "256MiB"
    with pytest.raises(ApiError) as exc:
        c.call("vm.define", spec=spec)
    assert exc.value.code == errors.STORAGE_FAILURE
    assert definitions(d) == before, "a definition was lost or torn"
    assert not [e for e in os.listdir(os.path.join(d.state_dir, "vms")) if e.startswith(".tmp")]

    # the daemon serves on: lists, runs verbs, starts nothing it cannot log, loses no VM
    assert [vm["name"] for vm in c.call("vm.list")] == ["a", "b", "c"]
    assert c.call("vm.pause", name="a")["state"] == "paused"
    assert c.call("vm.resume", name="a")["state"] == "running"
    with pytest.raises(ApiError) as exc:
        c.call("vm.create", spec=firmware_spec("t"))
    assert exc.value.code == errors.STORAGE_FAILURE
    log = os.path.join(d.state_dir, "logs", "t.log")
    assert exc.value.message == f"cannot write {log}: no space left on device"
    assert_consistent(c, d.base)
    assert c.call("host.info")["vms"] == {"defined": 3, "active": 1}

    # a restart on the full disk loads every definition, the running VM included
    d.restart()
    c = d.client()
    vms = assert_consistent(c, d.base)
    assert {n: v["state"] for n, v in vms.items()} == {"a": "running", "b": "defined", "c": "defined"}
    assert c.call("host.info")["loadProblems"] == []
    assert definitions(d) == before
    for name in ("a", "b", "c"):
        assert yaml.safe_load(before[f"{name}.yaml"])["metadata"] == {"owner": name}

    # with room again, definitions are taken
    os.unlink(filler)
    assert c.call("vm.define", spec=firmware_spec("new"))["name"] == "new"
    c.call("vm.define", spec=spec)
    assert c.call("vm.info", name="b", spec=True)["spec"]["memory"]["size"] == "256MiB"
