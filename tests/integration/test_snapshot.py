"""External snapshots: create, revert, delete — seen from inside the real guest and on disk.

The guest writes markers straight to its disk (`/dev/vda`) at fixed sectors with `dd`
and reads them back the same way; `qemu-img info` shows the backing chains.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time

import pytest

from kvmd import errors
from kvmd.client import ApiError
from tests.conftest import firmware_spec, guest_spec
from tests.support.console import Console


def make_image(path: str, fmt: str = "raw", size: str = "16M") -> str:
    subprocess.run(["qemu-img", "create", "-q", "-f", fmt, path, size], check=True)
    return path


def backing(path: str) -> str | None:
    out = subprocess.run(["qemu-img", "info", "-U", "--output=json", path], check=True, capture_output=True,
                         text=True).stdout
    return json.loads(out).get("backing-filename")


def write_marker(con: Console, sector: int, text: str) -> None:
    con.run(f"printf {text} | dd of=/dev/vda bs=512 seek={sector} conv=notrunc 2>/dev/null; sync")


def read_marker(con: Console, sector: int) -> str:
    out = con.run(f"echo \"@@$(dd if=/dev/vda bs=512 skip={sector} count=1 2>/dev/null | tr -d '\\000')@@\"")
    return re.findall(r"@@(.*)@@", out)[-1]


def last_counter(con: Console, timeout: float = 10) -> int:
    """The newest complete `KVMD-COUNTER n` line on the console: what is pending is read
    first, and reading goes on until there is one."""
    con.sock.setblocking(False)
    try:
        while chunk := con.sock.recv(65536):
            con.buf += chunk
    except BlockingIOError:
        pass
    finally:
        con.sock.setblocking(True)
    deadline = time.monotonic() + timeout
    while not (found := re.findall(rb"KVMD-COUNTER (\d+)\r\n", con.buf)):
        assert time.monotonic() < deadline, f"no counter on the console: {con.buf[-500:]!r}"
        con.sock.settimeout(max(0.1, deadline - time.monotonic()))
        con.buf += con.sock.recv(65536)
    return int(found[-1])


def disk_of(client, name: str, key: str = "spec") -> dict:
    return client.call("vm.info", name=name, spec=True)[key]["disks"][0]


def console_log_since(path: str, offset: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(offset)
        return f.read()


@pytest.mark.slow
def test_revert_discards_data_written_after_the_snapshot_and_delete_merges_the_chain(client, guest, tmpdir_short):
    base = make_image(os.path.join(tmpdir_short, "data.raw"))
    client.call("vm.define", spec=guest_spec(guest, "sn", guestAgent=True,
                                              disks=[{"name": "data", "path": base, "format": "raw"}]))
    con = Console(client.call("vm.start", name="sn")["console"])
    try:
        con.expect("KVMD-GUEST-READY", timeout=90)
        write_marker(con, 8, "MARK-A")
        snap = client.call("vm.snapshot_create", name="sn", snap="s1", quiesce=True)
        overlay = snap["disks"]["data"]["overlay"]
        assert snap["quiesced"] and not snap["memory"] and snap["disks"]["data"]["frozen"] == base
        assert disk_of(client, "sn")["path"] == overlay and disk_of(client, "sn", "definition")["path"] == overlay
        assert backing(overlay) == base
        write_marker(con, 8, "MARK-X")
        write_marker(con, 16, "MARK-B")
        assert read_marker(con, 8) == "MARK-X" and read_marker(con, 16) == "MARK-B"
    finally:
        con.close()

    info = client.call("vm.snapshot_revert", name="sn", snap="s1")
    assert info["state"] == "running"
    con = Console(info["console"])
    try:
        con.expect("KVMD-GUEST-READY", timeout=90)  # a disk-only snapshot reverts with a fresh boot
        assert read_marker(con, 8) == "MARK-A", "the data overwritten after the snapshot is back"
        assert read_marker(con, 16) == "", "the data written after the snapshot is gone"
        active = disk_of(client, "sn")["path"]
        assert active != overlay and backing(active) == base
        assert not os.path.exists(overlay), "the discarded layer was deleted"
        write_marker(con, 16, "MARK-C")
        assert client.call("vm.snapshot_list", name="sn")[0]["current"]

        assert client.call("vm.snapshot_delete", name="sn", snap="s1") == {"name": "sn", "deleted": "s1"}
        assert client.call("vm.snapshot_list", name="sn") == []
        disk = disk_of(client, "sn")
        assert disk["path"] == base and disk["format"] == "raw"
        assert disk_of(client, "sn", "definition")["path"] == base
        assert backing(base) is None and not os.path.exists(active), "the chain is one image again"
        with open(base, "rb") as f:
            f.seek(16 * 512)
            assert f.read(6) == b"MARK-C", "the active layer was merged into the base image"
        assert read_marker(con, 16) == "MARK-C", "the guest still reads its disk after the pivot"
    finally:
        con.close()
        client.call("vm.destroy", name="sn")


@pytest.mark.slow
def test_memory_snapshot_revert_resumes_the_guest_where_it_was(client, guest, tmpdir_short):
    base = make_image(os.path.join(tmpdir_short, "data.qcow2"), "qcow2")
    client.call("vm.define", spec=guest_spec(guest, "mem", disks=[{"name": "data", "path": base,
                                                                   "format": "qcow2"}]))
    info = client.call("vm.start", name="mem")
    con = Console(info["console"])
    try:
        con.expect("KVMD-COUNTER 2", timeout=90)
        write_marker(con, 8, "MARK-A")
        before = last_counter(con)
        snap = client.call("vm.snapshot_create", name="mem", snap="m1", memory=True)
        assert snap["memory"] and os.path.exists(snap["memoryFile"]) and snap["vmState"] == "running"
        assert client.call("vm.info", name="mem")["state"] == "running"
        con.expect(f"KVMD-COUNTER {before + 5}", timeout=20)
        write_marker(con, 8, "MARK-B")
    finally:
        con.close()
    log_size = os.path.getsize(info["consoleLog"])
    latest = max(int(n) for n in re.findall(rb"KVMD-COUNTER (\d+)", console_log_since(info["consoleLog"], 0)))

    info = client.call("vm.snapshot_revert", name="mem", snap="m1")
    assert info["state"] == "running" and info["reason"] == "reverted to snapshot m1"
    con = Console(info["console"])
    try:
        assert "still-here" in con.run("echo still-here")  # the same shell, no reboot
        deadline = time.monotonic() + 10
        while not (after := [int(n) for n in re.findall(rb"KVMD-COUNTER (\d+)\r\n",
                                                          console_log_since(info["consoleLog"], log_size))]):
            assert time.monotonic() < deadline, "no counter after the revert"
            time.sleep(0.1)
        assert before <= after[0] <= before + 3 and after[0] < latest, \
            f"counting resumed from the snapshot: {before} (at the snapshot), {latest} (before the revert) -> {after}"
        assert b"KVMD-GUEST-READY" not in console_log_since(info["consoleLog"], log_size)
        assert read_marker(con, 8) == "MARK-A"
    finally:
        con.close()
        client.call("vm.destroy", name="mem")


def test_snapshots_of_a_running_vm_cover_every_writable_disk_and_delete_commits_live(client, tmpdir_short):
    one = make_image(os.path.join(tmpdir_short, "one.qcow2"), "qcow2")
    two = make_image(os.path.join(tmpdir_short, "two.raw"))
    iso = make_image(os.path.join(tmpdir_short, "ro.raw"), size="1M")
    client.call("vm.define", spec=firmware_spec("fw", disks=[
        {"name": "one", "path": one, "format": "qcow2"}, {"name": "two", "path": two},
        {"name": "ro", "path": iso, "readonly": True}]))
    client.call("vm.start", name="fw")
    s1 = client.call("vm.snapshot_create", name="fw", snap="s1")
    s2 = client.call("vm.snapshot_create", name="fw", snap="s2")
    assert set(s1["disks"]) == {"one", "two"}, "read-only disks are not snapshotted"
    disks = {d["name"]: d["path"] for d in client.call("vm.info", name="fw", spec=True)["spec"]["disks"]}
    assert disks == {"one": s2["disks"]["one"]["overlay"], "two": s2["disks"]["two"]["overlay"], "ro": iso}
    assert backing(disks["two"]) == s1["disks"]["two"]["overlay"] and backing(s1["disks"]["two"]["overlay"]) == two
    # deleting the older snapshot merges the middle layer (intermediate commit)
    client.call("vm.snapshot_delete", name="fw", snap="s1")
    assert backing(disks["two"]) == two and not os.path.exists(s1["disks"]["two"]["overlay"])
    assert [s["disks"]["two"]["frozen"] for s in client.call("vm.snapshot_list", name="fw")] == [two]
    # deleting the last one merges the active layer (active commit + pivot)
    client.call("vm.snapshot_delete", name="fw", snap="s2")
    disks = {d["name"]: d["path"] for d in client.call("vm.info", name="fw", spec=True)["spec"]["disks"]}
    assert disks == {"one": one, "two": two, "ro": iso}
    assert [f for f in os.listdir(tmpdir_short) if ".s1" in f or ".s2" in f] == []
    client.call("vm.destroy", name="fw")


def test_snapshot_of_a_stopped_vm_uses_qemu_img_and_reports_mistakes(client, tmpdir_short):
    img = make_image(os.path.join(tmpdir_short, "d.qcow2"), "qcow2")
    client.call("vm.define", spec=firmware_spec("off", disks=[{"name": "d", "path": img, "format": "qcow2"}]))
    snap = client.call("vm.snapshot_create", name="off", snap="cold")
    assert snap["vmState"] == "defined" and backing(snap["disks"]["d"]["overlay"]) == img
    assert disk_of(client, "off", "spec")["path"] == snap["disks"]["d"]["overlay"]
    for params, code in ((dict(snap="cold"), errors.ALREADY_EXISTS), (dict(snap="m", memory=True), errors.INVALID_PARAMS),
                         (dict(snap="bad/name"), errors.INVALID_PARAMS)):
        with pytest.raises(ApiError) as exc:
            client.call("vm.snapshot_create", name="off", **params)
        assert exc.value.code == code, exc.value.message
    with pytest.raises(ApiError) as exc:
        client.call("vm.snapshot_revert", name="off", snap="nope")
    assert exc.value.code == errors.INVALID_PARAMS
    # revert of a snapshot taken while stopped leaves the VM stopped, on a fresh layer
    info = client.call("vm.snapshot_revert", name="off", snap="cold")
    assert info["state"] == "defined"
    client.call("vm.snapshot_delete", name="off", snap="cold")
    assert disk_of(client, "off", "spec")["path"] == img and backing(img) is None
    assert sorted(os.listdir(tmpdir_short)) == ["d.qcow2", "kvmd.log", "r", "s"]
