"""Hot-plug and unplug of disks and NICs, seen from inside the real guest."""

from __future__ import annotations

import os
import subprocess

import pytest

from kvmd import errors
from kvmd.client import ApiError
from tests.conftest import firmware_spec, guest_spec
from tests.support.console import Console


def make_image(path: str, fmt: str = "qcow2", size: str = "16M") -> str:
    subprocess.run(["qemu-img", "create", "-q", "-f", fmt, path, size], check=True)
    return path


def qmp_block_nodes(client, name: str) -> list[str]:
    spec = client.call("vm.info", name=name, spec=True)["spec"]
    return [d["name"] for d in spec["disks"]]


@pytest.mark.slow
def test_disk_and_nic_hotplug_appear_in_guest_and_unplug_removes_them(client, guest, tmpdir_short):
    img = make_image(os.path.join(tmpdir_short, "hp.qcow2"))
    client.call("vm.define", spec=guest_spec(guest, "hp"))
    info = client.call("vm.start", name="hp")
    con = Console(info["console"])
    try:
        con.expect("KVMD-GUEST-READY", timeout=90)
        assert "vd" not in con.run("ls /sys/block")
        disk = client.call("vm.hotplug_disk", name="hp", disk={"name": "data", "path": img, "format": "qcow2",
                                                               "serial": "HP-DATA"})
        assert disk["device"] == "disk-data" and disk["slot"] == 0
        out = ""
        for _ in range(50):
            out = con.run("cat /sys/block/vda/serial 2>/dev/null")
            if "HP-DATA" in out:
                break
        assert "HP-DATA" in out, "the guest should see the hot-plugged disk with its serial"
        # the stored definition follows what is attached
        assert [d["name"] for d in client.call("vm.info", name="hp", spec=True)["definition"]["disks"]] == ["data"]

        nic = client.call("vm.hotplug_nic", name="hp", nic={"name": "extra", "mac": "52:54:00:aa:bb:cc"})
        assert nic["slot"] == 1
        out = ""
        for _ in range(50):
            out = con.run("cat /sys/class/net/*/address")
            if "52:54:00:aa:bb:cc" in out:
                break
        assert "52:54:00:aa:bb:cc" in out

        client.call("vm.hotunplug_disk", name="hp", disk="data", timeout=20)
        assert "vda" not in con.run("ls /sys/block")
        client.call("vm.hotunplug_nic", name="hp", nic="extra", timeout=20)
        assert "52:54:00:aa:bb:cc" not in con.run("cat /sys/class/net/*/address")
        info = client.call("vm.info", name="hp", spec=True)
        assert info["spec"]["disks"] == [] and info["spec"]["nics"] == []
        assert info["definition"]["disks"] == [] and info["definition"]["nics"] == []
    finally:
        con.close()
        client.call("vm.destroy", name="hp")


def test_unplug_that_guest_never_acknowledges_times_out_and_device_stays(client, tmpdir_short):
    img = make_image(os.path.join(tmpdir_short, "d.raw"), "raw")
    client.call("vm.create", spec=firmware_spec("fw"))
    client.call("vm.hotplug_disk", name="fw", disk={"name": "d1", "path": img})
    with pytest.raises(ApiError) as exc:
        client.call("vm.hotunplug_disk", name="fw", disk="d1", timeout=1)
    assert exc.value.code == errors.TIMEOUT
    assert "did not acknowledge" in exc.value.message
    assert qmp_block_nodes(client, "fw") == ["d1"]
    client.call("vm.destroy", name="fw")


def test_hotplug_errors_name_the_field_and_leave_nothing_behind(client, tmpdir_short):
    client.call("vm.create", spec=firmware_spec("he", hotplugSlots=1))
    with pytest.raises(ApiError) as exc:
        client.call("vm.hotplug_disk", name="he", disk={"path": "/nope.img", "format": "vmdk"})
    assert exc.value.code == errors.INVALID_SPEC
    assert {"path": "disk.format", "reason": "must be one of qcow2, raw"} in exc.value.data["errors"]
    with pytest.raises(ApiError) as exc:
        client.call("vm.hotplug_disk", name="he", disk={"path": os.path.join(tmpdir_short, "missing.img")})
    assert exc.value.data["errors"][0]["path"] == "disk.path"
    # an image QEMU cannot open as qcow2 fails in QEMU and leaves no node behind
    bad = os.path.join(tmpdir_short, "bad.qcow2")
    with open(bad, "wb") as f:
        f.write(b"not a qcow2 image" * 100)
    with pytest.raises(ApiError) as exc:
        client.call("vm.hotplug_disk", name="he", disk={"name": "bad", "path": bad, "format": "qcow2"})
    assert exc.value.code == errors.QEMU_FAILURE
    assert qmp_block_nodes(client, "he") == []
    # one spare slot: the second NIC has nowhere to go
    client.call("vm.hotplug_nic", name="he", nic={"name": "n1"})
    with pytest.raises(ApiError) as exc:
        client.call("vm.hotplug_nic", name="he", nic={"name": "n2"})
    assert exc.value.code == errors.NOT_SUPPORTED and "no free hotplug slot" in exc.value.message
    with pytest.raises(ApiError) as exc:
        client.call("vm.hotunplug_nic", name="he", nic="nosuch")
    assert exc.value.code == errors.NO_SUCH_DEVICE
    client.call("vm.destroy", name="he")


@pytest.fixture
def bridge():
    name = f"kvtbr{os.getpid() % 10000}"
    subprocess.run(["ip", "link", "add", name, "type", "bridge"], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "link", "del", name], check=False)


def test_tap_nic_is_created_on_the_bridge_and_goes_away_with_qemu(client, bridge):
    info = client.call("vm.create", spec=firmware_spec("tp", nics=[{"name": "lan", "backend": "tap", "bridge": bridge}]))
    tap = client.call("vm.info", name="tp", spec=True)["spec"]["nics"][0]["tap"]
    assert os.path.realpath(f"/sys/class/net/{tap}/master").endswith("/" + bridge)
    with open(f"/sys/class/net/{tap}/flags") as f:
        assert int(f.read(), 16) & 1, "the tap is up"
    hot = client.call("vm.hotplug_nic", name="tp", nic={"name": "lan2", "backend": "tap", "bridge": bridge})
    assert os.path.realpath(f"/sys/class/net/{hot['tap']}/master").endswith("/" + bridge)
    client.call("vm.destroy", name="tp")
    assert not os.path.exists(f"/sys/class/net/{tap}")
    assert not os.path.exists(f"/sys/class/net/{hot['tap']}")
    assert info["pid"]


def test_missing_bridge_is_a_field_error(client):
    with pytest.raises(ApiError) as exc:
        client.call("vm.create", spec=firmware_spec("nb", nics=[{"backend": "tap", "bridge": "nosuchbr0"}]))
    assert exc.value.data["errors"] == [{"path": "nics[0].bridge", "reason": "no bridge named 'nosuchbr0' on this host"}]
