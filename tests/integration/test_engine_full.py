"""The oVirt engine's full domain XML (tests/data/domxml/ovirt-engine-full.xml) on a real
kvmd: QEMU gets what the XML names, checked from QEMU's side (a second QMP monitor,
tests/support/sideqmp.py) and the host's (QEMU's command line for the SMBIOS strings,
which QMP cannot show; ebtables for the NIC filter; the VM cgroup for the CPU shares);
with the real test guest (slow), what the guest sees of it. And the no-MAC-spoofing
filter itself, with frames written into a tap the way QEMU writes them.
"""

from __future__ import annotations

import fcntl
import os
import select
import socket
import struct
import subprocess

import pytest

from kvmd import netdev
from tests.conftest import guest_spec
from tests.integration.test_domxml_kvmd import (
    check_devices,
    make_images,
    netdevs,  # noqa: F401  (the fixture)
    runnable,
    start,
)
from tests.support.console import Console

SERIAL = "a6e1c3d2-5b4f-4e8a-9c7d-0e1f2a3b4c5d"  # the disk's UUID, 36 characters
SMBIOS = ("type=1,manufacturer=oVirt,product=RHEL,version=8.6-1.el8,"
          "serial=30393137-3436-584d-5136-303430313432,uuid=8d4a2f6e-3b1c-4e5d-9a7f-0c2b4d6e8f10,family=oVirt")


def ebtables_nat() -> str:
    return subprocess.run(["ebtables", "-t", "nat", "-L"], capture_output=True, text=True, check=True).stdout


def test_engine_full_xml_runs_on_kvmd_with_everything_it_names(client, tmpdir_short, netdevs):  # noqa: F811
    make_images(tmpdir_short)
    bridge, tap = netdevs
    spec, qmp = start(client, runnable("ovirt-engine-full.xml", tmpdir_short, bridge, tap), tmpdir_short, bridge)
    name = spec["name"]
    try:
        check_devices(spec, qmp)  # disks, NIC, agent, rng, balloon, displays, vCPUs, memory
        info = client.call("vm.info", name=name)
        # SMBIOS type 1 from <sysinfo> (+ <os><smbios mode='sysinfo'/>): QEMU's command line
        with open(f"/proc/{info['pid']}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
        assert argv[argv.index(b"-smbios") + 1].decode() == SMBIOS
        # <iothreads>1</iothreads>; the virtio disk's <driver iothread='1'/> and the
        # virtio-scsi controller's (its cdrom sdc runs on it)
        assert [t["id"] for t in qmp.cmd("query-iothreads")] == ["iothread1"]
        for dev in ("disk-vda", "scsi0"):
            assert qmp.cmd("qom-get", path=f"/machine/peripheral/{dev}", property="iothread") == "/objects/iothread1"
        assert qmp.cmd("qom-get", path="/machine/peripheral/disk-sdc", property="type") == "scsi-cd"
        # the 36-character serial reaches QEMU whole
        assert qmp.cmd("qom-get", path="/machine/peripheral/disk-vda", property="serial") == SERIAL
        # <vcpu current='2'>16</vcpu> + topology: 2 running, 16 slots; the NUMA cell of
        # every vCPU and all memory is QEMU's one node 0 (made by it for memory hotplug)
        assert len(qmp.cmd("query-cpus-fast")) == 2
        slots = qmp.cmd("query-hotpluggable-cpus")
        assert len(slots) == 16 and {s["props"]["node-id"] for s in slots} == {0}
        assert qmp.cmd("query-memory-size-summary")["base-memory"] == 1 << 30
        assert qmp.cmd("query-memory-devices") == []  # 16 empty DIMM slots of the 4 GiB maximum
        # the virtio-serial bus: the guest agent's port, ovirt-guest-agent.0 on a socket
        # in kvmd's run dir, and the SPICE agent's spicevmc port
        bus = "/machine/peripheral/vserial0/virtio-backend/vserial0.0"
        kids = [p["name"] for p in qmp.cmd("qom-list", path=bus) if p["name"].startswith("child[")]
        ports = {}
        for kid in kids:
            path = qmp.cmd("qom-get", path=bus, property=kid)
            ports[qmp.cmd("qom-get", path=path, property="name")] = path.rsplit("/", 1)[-1]
        assert set(ports) == {"org.qemu.guest_agent.0", "ovirt-guest-agent.0", "com.redhat.spice.0"}
        chardevs = {c["label"]: c["filename"] for c in qmp.cmd("query-chardev")}
        sock = info["channels"]["ovirt-guest-agent.0"]
        assert sock == os.path.join(os.path.dirname(info["guestAgent"]), f"{name}.ovirt-guest-agent.0")
        assert chardevs[ports["ovirt-guest-agent.0"]] == f"disconnected:unix:{sock},server=on"
        assert chardevs[ports["com.redhat.spice.0"]] == "spicevmc"
        with socket.socket(socket.AF_UNIX) as s:  # the host side is there to connect to
            s.connect(sock)
        # both displays listen, locked (passwdValidTo in 1970) until a ticket is set
        spice = qmp.cmd("query-spice")
        assert spice["port"] >= 6100 and spice["auth"] == "spice"
        assert {g["type"]: g["port"] for g in info["graphics"]}["spice"] == spice["port"]
        assert qmp.cmd("query-vnc")["auth"] == "vnc"
        # <pm>: S3 and S4 not offered (the ICH9 LPC's ACPI PM); <input type='tablet'>
        lpc = next(f"/machine/unattached/{p['name']}" for p in qmp.cmd("qom-list", path="/machine/unattached")
                   if p["type"] == "child<ICH9-LPC>")
        assert qmp.cmd("qom-get", path=lpc, property="disable_s3") == 1
        assert qmp.cmd("qom-get", path=lpc, property="disable_s4") == 1
        assert qmp.cmd("qom-get", path="/machine/peripheral/tablet0", property="type") == "usb-tablet"
        assert qmp.cmd("qom-get", path="/machine/peripheral/usb0", property="type") == "qemu-xhci"
        # <filterref filter='vdsm-no-mac-spoofing'/>: ebtables on the NIC's tap
        tap_name = netdev.tap_name(spec["uuid"], _Nic(1), 0)
        rules = ebtables_nat()
        assert f"-i {tap_name} -j KVMD-{tap_name}" in rules
        assert "-s ! 0:1a:4a:16:1:52 -j DROP" in rules or "-s ! 00:1a:4a:16:01:52 -j DROP" in rules
        # <cputune><shares>1020</shares>: the VM cgroup's weight (where kvmd has cgroups)
        cg = client.call("host.info")["cgroups"]
        if cg["writable"] and cg["version"] == "v1":
            with open(f"/proc/{info['pid']}/cgroup") as f:
                cpu = next(line.split(":", 2)[2].strip() for line in f if ":cpu:" in line)
            with open(f"/sys/fs/cgroup/cpu{cpu}/cpu.shares") as f:
                assert f.read().strip() == "1020"
    finally:
        qmp.close()
        client.call("vm.destroy", name=name)
    assert f"KVMD-{tap_name}" not in ebtables_nat()  # the filter went with the VM
    assert not os.path.exists(sock)


class _Nic:
    """Enough of a spec NIC for `netdev.tap_name` (the engine NIC sits in PCI slot 1)."""

    def __init__(self, slot: int):
        self.tap, self.slot = None, slot


def test_mac_filters_follow_hotplug_and_a_kvmd_restart(daemon, netdevs):  # noqa: F811
    """A hot-plugged noMacSpoofing NIC gets its filter too; a kvmd restarted under a
    running VM still removes the VM's filters when it stops."""
    from tests.conftest import firmware_spec

    bridge, _ = netdevs
    c = daemon.client()
    c.call("vm.create", spec=firmware_spec("flt", nics=[{"name": "lan", "backend": "tap", "bridge": bridge,
                                                         "noMacSpoofing": True}]))
    tap = c.call("vm.info", name="flt", spec=True)["spec"]["nics"][0]["tap"]
    hot = c.call("vm.hotplug_nic", name="flt", nic={"name": "lan2", "backend": "tap", "bridge": bridge,
                                                    "mac": MAC, "noMacSpoofing": True})
    assert hot["noMacSpoofing"] is True
    rules = ebtables_nat()
    assert f"-i {tap} -j KVMD-{tap}" in rules and f"-i {hot['tap']} -j KVMD-{hot['tap']}" in rules
    daemon.restart()
    c = daemon.client()
    assert c.call("vm.info", name="flt")["state"] == "running"
    c.call("vm.destroy", name="flt")
    rules = ebtables_nat()
    assert f"KVMD-{tap}" not in rules and f"KVMD-{hot['tap']}" not in rules


# -- the filter itself ----------------------------------------------------------------

MAC = "52:54:00:aa:00:01"
SPOOF = "52:54:00:aa:00:99"
VNET_HDR = bytes(10)  # kvmd opens taps with IFF_VNET_HDR, as QEMU expects: a header first


def _mac(text: str) -> bytes:
    return bytes(int(b, 16) for b in text.split(":"))


def _ethernet(src: str, ethertype: int = 0x88B5, payload: bytes = b"kvmd-test".ljust(46, b"\0")) -> bytes:
    return _mac("ff:ff:ff:ff:ff:ff") + _mac(src) + struct.pack("!H", ethertype) + payload


def _arp(src: str, sender_hw: str) -> bytes:
    body = struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1) + _mac(sender_hw) + bytes([10, 9, 9, 1]) \
        + bytes(6) + bytes([10, 9, 9, 2])
    return _ethernet(src, 0x0806, body.ljust(46, b"\0"))


def _received(sniffer: socket.socket, timeout: float = 0.5) -> list[bytes]:
    out = []
    while select.select([sniffer], [], [], timeout)[0]:
        out.append(sniffer.recv(2048))
        timeout = 0.1
    return out


def test_no_mac_spoofing_filter_drops_what_the_guest_sends_from_another_mac(tmpdir_short):
    tag = os.getpid() % 10000
    bridge, tap = f"kvfbr{tag}", f"kvftap{tag}"
    subprocess.run(["ip", "link", "add", bridge, "type", "bridge"], check=True)
    fd = None
    try:
        subprocess.run(["ip", "link", "set", bridge, "up"], check=True)
        fd = netdev.open_tap(tap, bridge, MAC)  # as kvmd opens a noMacSpoofing NIC's tap
        sniffer = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0003))
        sniffer.bind((bridge, 0))  # frames the bridge passed on (to its own port here)
        fl = fcntl.fcntl(fd, fcntl.F_GETFL)
        fcntl.fcntl(fd, fcntl.F_SETFL, fl | os.O_NONBLOCK)
        _received(sniffer, 0.2)  # whatever the bridge said while coming up
        frames = {"own MAC": _ethernet(MAC), "spoofed source": _ethernet(SPOOF),
                  "own ARP": _arp(MAC, MAC), "ARP with a spoofed sender": _arp(MAC, SPOOF)}
        seen = {}
        for what, frame in frames.items():
            os.write(fd, VNET_HDR + frame)
            got = [f for f in _received(sniffer) if f[6:12] in (_mac(MAC), _mac(SPOOF))]
            seen[what] = bool(got)
        assert seen == {"own MAC": True, "spoofed source": False, "own ARP": True,
                        "ARP with a spoofed sender": False}
        sniffer.close()
    finally:
        if fd is not None:
            os.close(fd)
        netdev.remove_mac_filter(tap)
        subprocess.run(["ip", "link", "del", bridge], check=False, capture_output=True)
    assert f"KVMD-{tap}" not in ebtables_nat()


def test_mac_filter_of_a_tap_is_replaced_not_doubled(tmpdir_short):
    tap = f"kvdup{os.getpid() % 10000}"
    try:
        netdev.install_mac_filter(tap, MAC)
        netdev.install_mac_filter(tap, MAC)  # a chain left by a kvmd that was not running
        assert ebtables_nat().count(f"-i {tap} -j KVMD-{tap}") == 1
    finally:
        netdev.remove_mac_filter(tap)
    assert f"KVMD-{tap}" not in ebtables_nat()


# -- what the guest sees (the real Linux test guest) --------------------------------

@pytest.mark.slow
def test_guest_sees_smbios_serials_ports_and_vcpus_of_the_engine_spec(client, tmpdir_short, guest):
    """The engine's VM shape on the test guest: SMBIOS type 1, disk serials (20 bytes on
    virtio-blk, 36 on SCSI), the ovirt-guest-agent.0 port, 2 of 16 vCPUs, iothreads, no
    ACPI sleep states."""
    for disk in ("a.qcow2", "b.qcow2"):
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", os.path.join(tmpdir_short, disk), "16M"],
                       check=True)
    smbios = {"manufacturer": "oVirt", "product": "RHEL", "version": "8.6-1.el8",
              "serial": "30393137-3436-584d-5136-303430313432",
              "uuid": "8d4a2f6e-3b1c-4e5d-9a7f-0c2b4d6e8f10", "family": "oVirt"}
    spec = guest_spec(guest, "engine-guest", uuid=smbios["uuid"], smbios=smbios, iothreads=1,
                      cpu={"count": 2, "maxCount": 16, "sockets": 16, "cores": 1, "threads": 1},
                      memory={"size": "256MiB", "max": "1GiB", "slots": 16},
                      disks=[{"name": "vda", "path": f"{tmpdir_short}/a.qcow2", "format": "qcow2",
                              "serial": SERIAL, "iothread": 1, "cache": "none", "aio": "native"},
                             {"name": "sda", "path": f"{tmpdir_short}/b.qcow2", "format": "qcow2", "bus": "scsi",
                              "serial": SERIAL.replace("a6", "b7", 1), "iothread": 1}],
                      guestAgent=True, channels=[{"name": "ovirt-guest-agent.0"}],
                      pm={"suspendToMem": False, "suspendToDisk": False})
    client.call("vm.create", spec=spec)
    con = Console(client.call("vm.info", name="engine-guest")["console"])
    try:
        con.expect("KVMD-GUEST-READY", timeout=120)

        def value(command: str) -> str:  # the output of `command`, without the shell's prompt
            out = con.run(f'echo "<""<$({command})>"">"')  # the echoed command line has no << >>
            return out[out.index("<<") + 2:out.rindex(">>")]

        dmi = value("cd /sys/class/dmi/id && cat sys_vendor product_name product_version product_serial "
                    "product_uuid product_family")
        assert dmi.split() == [smbios[k] for k in ("manufacturer", "product", "version", "serial", "uuid", "family")]
        assert value("cat /sys/block/vda/serial") == SERIAL[:20]  # virtio-blk: 20 bytes of it
        # the SCSI unit serial number page (0x80): a 4-byte header, then all 36
        assert value("dd if=/sys/block/sda/device/vpd_pg80 bs=1 skip=4 2>/dev/null") == SERIAL.replace("a6", "b7", 1)
        assert sorted(value("cat /sys/class/virtio-ports/*/name").split()) == [
            "org.qemu.guest_agent.0", "ovirt-guest-agent.0"]
        assert value("cat /sys/devices/system/cpu/possible") == "0-15"
        assert value("cat /sys/devices/system/cpu/online") == "0-1"
        # <pm> with both off: ACPI offers no S3/S4 (the default guest says S0 S3 S4 S5)
        assert "(supports S0 S5)" in value("dmesg | grep 'ACPI: PM: (supports'")
    finally:
        con.close()
        client.call("vm.destroy", name="engine-guest")
