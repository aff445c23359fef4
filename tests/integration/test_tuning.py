"""Runtime tuning against real QEMU: VNC tickets checked with a real RFB handshake and
VNC authentication, the balloon target reached by the real guest's driver, CD-ROM media
changes seen in QEMU's own query-block (through a second QMP monitor, not kvmd).

Every process a test starts is killed in a finalizer, pass or fail.
"""

from __future__ import annotations

import os
import time

import pytest

from kvmd.client import ApiError
from kvmd.errors import INVALID_PARAMS, NO_SUCH_DEVICE, NOT_SUPPORTED
from tests.conftest import firmware_spec, guest_spec
from tests.support.console import Console
from tests.support.rfb import security_types, vnc_auth
from tests.support.sideqmp import SideQMP, side_qmp_args

MiB = 1 << 20
VNC_AUTH, VNC_NONE = 2, 1


def test_vnc_ticket_sets_the_password_and_expires_it(client):
    info = client.call("vm.create", spec=firmware_spec("tk", graphics=[{"type": "vnc", "password": "initial"}]))
    host, port = info["graphics"][0]["host"], info["graphics"][0]["port"]
    assert VNC_AUTH in security_types(host, port)
    assert vnc_auth(host, port, "initial")

    result = client.call("vm.set_ticket", name="tk", password="t1cket", expires_s=120)
    assert result["protocol"] == "vnc" and result["expires"] == "+120"
    assert security_types(host, port) == [VNC_AUTH]
    assert vnc_auth(host, port, "t1cket")
    assert not vnc_auth(host, port, "initial")

    client.call("vm.set_ticket", name="tk", password="t1cket", expires_s=0, protocol="vnc")
    assert not vnc_auth(host, port, "t1cket"), "an expired ticket must not let anyone in"

    assert client.call("vm.set_ticket", name="tk", password="n3ver")["expires"] == "never"
    assert vnc_auth(host, port, "n3ver")


def test_tickets_are_refused_clearly_without_such_a_display(client):
    client.call("vm.create", spec=firmware_spec("nogfx"))
    with pytest.raises(ApiError) as e:
        client.call("vm.set_ticket", name="nogfx", password="x")
    assert e.value.code == NOT_SUPPORTED and "no graphics display" in e.value.message
    info = client.call("vm.create", spec=firmware_spec("open", graphics=[{"type": "vnc"}]))
    with pytest.raises(ApiError) as e:
        client.call("vm.set_ticket", name="open", password="x", protocol="spice")
    assert e.value.code == NOT_SUPPORTED and "no spice display" in e.value.message
    # a VNC display started without password authentication cannot take one later
    with pytest.raises(ApiError) as e:
        client.call("vm.set_ticket", name="open", password="x")
    assert e.value.code == NOT_SUPPORTED and "password" in e.value.message
    gfx = info["graphics"][0]
    assert security_types(gfx["host"], gfx["port"]) == [VNC_NONE]
    with pytest.raises(ApiError) as e:
        client.call("vm.set_ticket", name="open", password="x", protocol="rdp")
    assert e.value.code == INVALID_PARAMS


@pytest.mark.slow
def test_balloon_target_is_reached_by_the_real_guest(client, guest, tmpdir_short):
    side = os.path.join(tmpdir_short, "side.qmp")
    info = client.call("vm.create", spec=guest_spec(guest, "bal", qemuArgs=side_qmp_args(side)))
    console = Console(info["console"])
    qmp = SideQMP(side)
    try:
        console.expect("KVMD-GUEST-READY", timeout=90)
        assert client.call("vm.set_balloon", name="bal", size="200MiB") == {"name": "bal", "target": 200 * MiB}
        deadline = time.monotonic() + 30
        while qmp.cmd("query-balloon")["actual"] != 200 * MiB and time.monotonic() < deadline:
            time.sleep(0.2)
        assert qmp.cmd("query-balloon")["actual"] == 200 * MiB
        # vm.stats follows QEMU's BALLOON_CHANGE events (at most one a second)
        deadline = time.monotonic() + 5
        while (client.call("vm.stats", names=["bal"])["bal"]["memory"]["actual"] != 200 * MiB
               and time.monotonic() < deadline):
            time.sleep(0.2)
        assert client.call("vm.stats", names=["bal"])["bal"]["memory"]["actual"] == 200 * MiB
        client.call("vm.set_balloon", name="bal", size=256 * MiB)
        deadline = time.monotonic() + 30
        while qmp.cmd("query-balloon")["actual"] != 256 * MiB and time.monotonic() < deadline:
            time.sleep(0.2)
        assert qmp.cmd("query-balloon")["actual"] == 256 * MiB
    finally:
        qmp.close()
        console.close()


def test_balloon_requests_are_checked_before_reaching_qemu(client):
    client.call("vm.create", spec=firmware_spec("bb"))
    client.call("vm.create", spec=firmware_spec("noballoon", memory={"size": "128MiB", "balloon": False}))
    for size in ("1GiB", "129MiB", "0", "lots"):
        with pytest.raises(ApiError) as e:
            client.call("vm.set_balloon", name="bb", size=size)
        assert e.value.code == INVALID_PARAMS, size
    with pytest.raises(ApiError) as e:
        client.call("vm.set_balloon", name="noballoon", size="64MiB")
    assert e.value.code == NOT_SUPPORTED and "balloon" in e.value.message
    assert client.call("vm.set_balloon", name="bb", size="128MiB")["target"] == 128 * MiB


def test_cdrom_insert_and_eject_show_in_query_block_and_the_live_spec(client, tmpdir_short):
    iso1, iso2 = os.path.join(tmpdir_short, "one.iso"), os.path.join(tmpdir_short, "two.iso")
    for path, size in ((iso1, MiB), (iso2, 2 * MiB)):
        with open(path, "wb") as f:
            f.truncate(size)
    side = os.path.join(tmpdir_short, "side.qmp")
    spec = firmware_spec("cd", disks=[{"name": "cd0", "media": "cdrom"}], qemuArgs=side_qmp_args(side))
    client.call("vm.create", spec=spec)
    qmp = SideQMP(side)

    def medium() -> tuple[str | None, bool | None]:
        [dev] = [b for b in qmp.cmd("query-block") if b.get("qdev") == "disk-cd0"]
        return (dev.get("inserted") or {}).get("file"), dev.get("tray_open")

    def live_path() -> str | None:
        [disk] = client.call("vm.info", name="cd", spec=True)["spec"]["disks"]
        return disk.get("path")

    try:
        assert medium() == (None, False)
        r = client.call("vm.change_media", name="cd", disk="cd0", path=iso1)
        assert r["file"] == iso1 and r["tray_open"] is False
        assert medium() == (iso1, False) and live_path() == iso1
        client.call("vm.change_media", name="cd", disk="cd0", path=iso2)  # swap: eject + insert
        assert medium() == (iso2, False) and live_path() == iso2
        [dev] = [b for b in qmp.cmd("query-block") if b.get("qdev") == "disk-cd0"]
        assert dev["inserted"]["image"]["virtual-size"] == 2 * MiB and dev["inserted"]["ro"]
        client.call("vm.change_media", name="cd", disk="cd0")  # eject
        assert medium() == (None, False) and live_path() is None
        with pytest.raises(ApiError) as e:
            client.call("vm.change_media", name="cd", disk="cd0", path=os.path.join(tmpdir_short, "missing.iso"))
        assert "missing.iso" in e.value.message
        assert medium() == (None, False) and live_path() is None
        assert client.call("vm.change_media", name="cd", disk="cd0", path=iso1)["file"] == iso1
    finally:
        qmp.close()
    with pytest.raises(ApiError) as e:
        client.call("vm.change_media", name="cd", disk="nope", path=iso1)
    assert e.value.code == NO_SUCH_DEVICE


def test_media_of_a_hard_disk_cannot_change(client, tmpdir_short):
    path = os.path.join(tmpdir_short, "hd.raw")
    with open(path, "wb") as f:
        f.truncate(MiB)
    client.call("vm.create", spec=firmware_spec("hd", disks=[{"name": "hd0", "path": path}]))
    with pytest.raises(ApiError) as e:
        client.call("vm.change_media", name="hd", disk="hd0")
    assert e.value.code == INVALID_PARAMS and "not a cdrom" in e.value.message
