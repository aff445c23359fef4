"""Parity: hot-plugging and unplugging a disk (and a NIC) with device XML."""

from __future__ import annotations

import os
import time
import xml.etree.ElementTree as ET

import pytest

from tests.support.console import Console


def disk_xml(path: str, dev: str = "vdb") -> str:
    return (f"<disk type='file' device='disk'><driver name='qemu' type='raw'/>"
            f"<source file='{path}'/><target dev='{dev}' bus='virtio'/></disk>")


def disk_devs(dom) -> list[str]:
    root = ET.fromstring(dom.XMLDesc(0))
    return [d.find("target").get("dev") for d in root.findall("devices/disk")]


def with_root_ports(xml: str, n: int = 3) -> str:
    """libvirt's q35 domain has one spare PCIe root port (xhci takes one); ask for more (kvmd keeps its own)."""
    ports = "".join(f"<controller type='pci' index='{i}' model='pcie-root-port'/>" for i in range(1, n + 1))
    return xml.replace("</devices>", ports + "</devices>")


def test_disk_is_hot_plugged_found_by_stats_and_refused_twice(virt):
    lv, conn = virt.lv, virt.conn
    dom = conn.createXML(with_root_ports(virt.firmware_xml(virt.name("hp"))), 0)
    xml = disk_xml(virt.image("data.raw"))
    live = lv.VIR_DOMAIN_AFFECT_LIVE
    assert dom.attachDeviceFlags(xml, live) == 0
    assert disk_devs(dom) == ["vdb"]
    rd_req, rd_bytes, wr_req, wr_bytes, errs = dom.blockStats("vdb")
    assert (wr_req, wr_bytes) == (0, 0)
    assert dom.blockStats(os.path.join(virt.workdir, "data.raw"))[3] == 0  # by source path too
    assert virt.error(dom.attachDeviceFlags, xml, live).get_error_code() == lv.VIR_ERR_XML_ERROR
    e = virt.error(dom.attachDeviceFlags, xml, lv.VIR_DOMAIN_AFFECT_CONFIG)
    assert e.get_error_code() == lv.VIR_ERR_OPERATION_INVALID  # transient: no config
    e = virt.error(dom.detachDeviceFlags, disk_xml("/nowhere", "vdz"), live)
    assert e.get_error_code() == lv.VIR_ERR_DEVICE_MISSING

    nic = "<interface type='user'><mac address='52:54:00:ab:cd:01'/><model type='virtio'/></interface>"
    assert dom.attachDeviceFlags(nic, live) == 0
    macs = [m.get("address") for m in ET.fromstring(dom.XMLDesc(0)).findall("devices/interface/mac")]
    assert macs == ["52:54:00:ab:cd:01"]


def test_disk_detach_from_a_firmware_guest_returns_after_the_wait_with_removal_pending(virt):
    """No OS answers the unplug request: both return after their wait (libvirt's 5 s)
    with the disk still attached; it goes once the guest acknowledges (never, here)."""
    lv, conn = virt.lv, virt.conn
    dom = conn.createXML(virt.firmware_xml(virt.name("dt")), 0)
    xml = disk_xml(virt.image("data.raw"))
    dom.attachDeviceFlags(xml, lv.VIR_DOMAIN_AFFECT_LIVE)
    started = time.monotonic()
    assert dom.detachDeviceFlags(xml, lv.VIR_DOMAIN_AFFECT_LIVE) == 0
    assert 4.5 <= time.monotonic() - started < 15
    assert disk_devs(dom) == ["vdb"]


def test_device_is_added_to_and_removed_from_a_defined_domains_config(virt):
    lv, conn = virt.lv, virt.conn
    dom = conn.defineXML(virt.firmware_xml(virt.name("cf")))
    xml = disk_xml(virt.image("data.raw"))
    assert dom.attachDeviceFlags(xml, lv.VIR_DOMAIN_AFFECT_CONFIG) == 0
    assert disk_devs(dom) == ["vdb"]
    e = virt.error(dom.attachDeviceFlags, xml, lv.VIR_DOMAIN_AFFECT_LIVE)
    assert e.get_error_code() == lv.VIR_ERR_OPERATION_INVALID  # not running
    assert dom.detachDeviceFlags(xml, lv.VIR_DOMAIN_AFFECT_CONFIG) == 0
    assert disk_devs(dom) == []


CDROM = ("<disk type='file' device='cdrom'><driver name='qemu' type='raw'/>{source}"
         "<target dev='sda' bus='sata'/><readonly/></disk>")


def cdrom_source(dom) -> str | None:
    root = ET.fromstring(dom.XMLDesc(0))
    (cd,) = [d for d in root.findall("devices/disk") if d.get("device") == "cdrom"]
    src = cd.find("source")
    return None if src is None else src.get("file")


def test_cdrom_medium_is_changed_and_ejected_on_a_running_domain(virt):
    lv, conn = virt.lv, virt.conn
    xml = virt.firmware_xml(virt.name("cd")).replace("<devices>", "<devices>" + CDROM.format(source=""))
    dom = conn.createXML(xml, 0)
    assert cdrom_source(dom) is None
    iso = virt.image("media.iso", "4M")
    assert dom.updateDeviceFlags(CDROM.format(source=f"<source file='{iso}'/>"), lv.VIR_DOMAIN_AFFECT_LIVE) == 0
    assert cdrom_source(dom) == iso
    assert dom.updateDeviceFlags(CDROM.format(source=""), lv.VIR_DOMAIN_AFFECT_LIVE) == 0
    assert cdrom_source(dom) is None


def guest_xml(name: str, guest: dict, console: str) -> str:
    return f"""<domain type='qemu'>
  <name>{name}</name>
  <memory unit='MiB'>256</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='q35'>hvm</type>
    <kernel>{guest['kernel']}</kernel>
    <initrd>{guest['initrd']}</initrd>
    <cmdline>{guest['cmdline']}</cmdline>
  </os>
  <features><acpi/><apic/></features>
  <devices>
    <serial type='unix'><source mode='bind' path='{console}'/></serial>
    <video><model type='none'/></video>
    <memballoon model='none'/>
  </devices>
</domain>
"""


@pytest.mark.slow
def test_real_guest_acknowledges_disk_detach_the_disk_is_gone_and_its_alias_reported(virt, guest, request):
    lv, conn = virt.lv, virt.conn
    log = []
    conn.domainEventRegisterAny(None, lv.VIR_DOMAIN_EVENT_ID_DEVICE_REMOVED,
                                lambda _c, dom, alias, _o: log.append((dom.name(), alias)), None)
    name = virt.name("guest")
    console = os.path.join(virt.workdir, "console.sock")
    dom = conn.createXML(guest_xml(name, guest, console), 0)
    if virt.is_kvmd:  # kvmd binds its own console socket: ask kvmd where it is
        console = request.getfixturevalue("daemon").client().call("vm.info", name=name)["console"]
    con = Console(console)
    try:
        con.expect("KVMD-GUEST-READY", timeout=90)
        alias = "ua-0b5e7c3a-1d2f-4e6a-8b9c-0d1e2f3a4b5c"  # a VDSM-style user alias
        xml = disk_xml(virt.image("data.raw")).replace("</disk>", f"<alias name='{alias}'/></disk>")
        assert dom.attachDeviceFlags(xml, lv.VIR_DOMAIN_AFFECT_LIVE) == 0
        (hot,) = ET.fromstring(dom.XMLDesc(0)).findall("devices/disk")
        assert hot.find("alias").get("name") == alias
        for _ in range(50):
            if "vda" in con.run("ls /sys/block"):
                break
        assert "vda" in con.run("ls /sys/block"), "the guest sees the hot-plugged disk"
        assert dom.detachDeviceFlags(xml, lv.VIR_DOMAIN_AFFECT_LIVE) == 0
        deadline = time.monotonic() + 20
        while "vdb" in disk_devs(dom) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert disk_devs(dom) == []
        assert "vda" not in con.run("ls /sys/block")
        deadline = time.monotonic() + 5
        while not log and time.monotonic() < deadline:
            time.sleep(0.05)
        assert log == [(name, alias)]
    finally:
        con.close()
        dom.destroy()
