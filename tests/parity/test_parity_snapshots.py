"""Parity: external snapshots with snapshotCreateXML on a running domain — overlays switched
in (named, default-named, reused), the snapshot's XML, listing, lookup, parents, delete,
memory state, and libvirt's refusals. libvirt 9.0 and the shim on kvmd agree on all of it."""

from __future__ import annotations

import os
import subprocess
import xml.etree.ElementTree as ET

import pytest


def domain_xml(name: str, root: str, data: str) -> str:
    disks = (f"<disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='{root}'/>"
             "<target dev='vda' bus='virtio'/></disk>"
             f"<disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='{data}'/>"
             "<target dev='vdb' bus='virtio'/></disk>")
    return f"""<domain type='qemu'>
  <name>{name}</name>
  <memory unit='MiB'>128</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='q35'>hvm</type></os>
  <devices>{disks}<video><model type='none'/></video><memballoon model='none'/></devices>
</domain>
"""


def sources(dom) -> dict[str, str]:
    root = ET.fromstring(dom.XMLDesc(0))
    return {d.find("target").get("dev"): d.find("source").get("file") for d in root.iterfind("devices/disk")}


def running_domain(virt, what: str):
    root, data = os.path.join(virt.workdir, "root.qcow2"), os.path.join(virt.workdir, "data.raw")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", root, "16M"], check=True)
    subprocess.run(["qemu-img", "create", "-q", "-f", "raw", data, "8M"], check=True)
    return virt.conn.createXML(domain_xml(virt.name(what), root, data), 0), root, data


def test_disk_only_snapshots_switch_disks_onto_overlays_and_are_listed_and_deleted(virt):
    lv = virt.lv
    flags = lv.VIR_DOMAIN_SNAPSHOT_CREATE_DISK_ONLY | lv.VIR_DOMAIN_SNAPSHOT_CREATE_ATOMIC
    dom, root, data = running_domain(virt, "snap")
    ov1 = os.path.join(virt.workdir, "root-ov1.qcow2")
    s1 = dom.snapshotCreateXML(f"<domainsnapshot><name>s1</name><disks><disk name='vda'><source file='{ov1}'/>"
                               "</disk><disk name='vdb' snapshot='no'/></disks></domainsnapshot>", flags)
    assert s1.getName() == "s1"
    assert sources(dom) == {"vda": ov1, "vdb": data}
    desc = ET.fromstring(s1.getXMLDesc(0))
    assert (desc.findtext("name"), desc.findtext("state")) == ("s1", "disk-snapshot")
    assert desc.find("memory").get("snapshot") == "no" and desc.find("parent") is None
    disks = {d.get("name"): d for d in desc.iterfind("disks/disk")}
    assert disks["vda"].get("snapshot") == "external" and disks["vda"].find("source").get("file") == ov1
    assert disks["vdb"].get("snapshot") == "no"
    assert (s1.isCurrent(), s1.hasMetadata()) == (1, 1)
    with_snapshots = virt.conn.listAllDomains(lv.VIR_CONNECT_LIST_DOMAINS_HAS_SNAPSHOT)
    assert dom.name() in [d.name() for d in with_snapshots]
    assert dom.name() not in [d.name() for d in virt.conn.listAllDomains(lv.VIR_CONNECT_LIST_DOMAINS_NO_SNAPSHOT)]
    assert virt.error(s1.getParent).get_error_code() == lv.VIR_ERR_NO_DOMAIN_SNAPSHOT

    # unnamed overlays get libvirt's names: the image's suffix replaced by the snapshot's name
    s2 = dom.snapshotCreateXML("<domainsnapshot><name>s2</name></domainsnapshot>", flags)
    assert sources(dom) == {"vda": os.path.join(virt.workdir, "root-ov1.s2"),
                            "vdb": os.path.join(virt.workdir, "data.s2")}
    assert s2.getParent().getName() == "s1" and dom.snapshotCurrent().getName() == "s2"
    assert sorted(dom.snapshotListNames()) == ["s1", "s2"] and dom.snapshotNum() == 2
    assert [s.getName() for s in dom.listAllSnapshots(lv.VIR_DOMAIN_SNAPSHOT_LIST_ROOTS)] == ["s1"]
    assert dom.snapshotListNames(lv.VIR_DOMAIN_SNAPSHOT_LIST_LEAVES) == ["s2"]
    assert dom.snapshotLookupByName("s1").getName() == "s1"
    assert virt.error(dom.snapshotLookupByName, "nope", 0).get_error_code() == lv.VIR_ERR_NO_DOMAIN_SNAPSHOT

    # an overlay made beforehand is taken as it is (REUSE_EXT)
    ov3 = os.path.join(virt.workdir, "root-ov3.qcow2")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", sources(dom)["vda"], "-F", "qcow2", ov3],
                   check=True)
    dom.snapshotCreateXML(f"<domainsnapshot><name>s3</name><disks><disk name='vda'><source file='{ov3}'/></disk>"
                          "<disk name='vdb' snapshot='no'/></disks></domainsnapshot>",
                          flags | lv.VIR_DOMAIN_SNAPSHOT_CREATE_REUSE_EXT)
    assert sources(dom)["vda"] == ov3

    # deleting the newest snapshot merges its layer back: the disks leave s3's overlay
    assert dom.snapshotLookupByName("s3").delete(0) == 0
    assert sorted(dom.snapshotListNames()) == ["s1", "s2"]
    assert sources(dom)["vda"] == os.path.join(virt.workdir, "root-ov1.s2")
    assert dom.state()[0] == lv.VIR_DOMAIN_RUNNING
    dom.destroy()


def test_snapshot_with_external_memory_keeps_the_domain_running(virt):
    lv = virt.lv
    dom, root, data = running_domain(virt, "snapm")
    mem, ov = os.path.join(virt.workdir, "state.mem"), os.path.join(virt.workdir, "root-m.qcow2")
    snap = dom.snapshotCreateXML(f"<domainsnapshot><name>m1</name><memory snapshot='external' file='{mem}'/>"
                                 f"<disks><disk name='vda'><source file='{ov}'/></disk>"
                                 "<disk name='vdb' snapshot='no'/></disks></domainsnapshot>", 0)
    assert os.path.getsize(mem) > 0 and sources(dom) == {"vda": ov, "vdb": data}
    desc = ET.fromstring(snap.getXMLDesc(0))
    assert desc.findtext("state") == "running"
    assert (desc.find("memory").get("snapshot"), desc.find("memory").get("file")) == ("external", mem)
    assert dom.state()[0] == lv.VIR_DOMAIN_RUNNING
    dom.destroy()


@pytest.mark.parametrize("case", ["root", "disk", "internal", "quiesce", "live"])
def test_snapshot_refusals_have_libvirt_codes(virt, case):
    lv = virt.lv
    dom, _root, _data = running_domain(virt, f"snapr{case[:3]}")
    disk_only = lv.VIR_DOMAIN_SNAPSHOT_CREATE_DISK_ONLY
    xml, flags, code = {
        "root": ("<snapshot/>", disk_only, lv.VIR_ERR_XML_ERROR),
        "disk": ("<domainsnapshot><disks><disk name='vdz'/></disks></domainsnapshot>", disk_only,
                 lv.VIR_ERR_CONFIG_UNSUPPORTED),
        "internal": ("<domainsnapshot><name>i1</name></domainsnapshot>", 0, lv.VIR_ERR_CONFIG_UNSUPPORTED),
        "quiesce": ("<domainsnapshot><name>q1</name></domainsnapshot>",
                    disk_only | lv.VIR_DOMAIN_SNAPSHOT_CREATE_QUIESCE, lv.VIR_ERR_ARGUMENT_UNSUPPORTED),
        "live": ("<domainsnapshot><name>l1</name></domainsnapshot>",
                 disk_only | lv.VIR_DOMAIN_SNAPSHOT_CREATE_LIVE, lv.VIR_ERR_OPERATION_UNSUPPORTED),
    }[case]
    before = sources(dom)
    assert virt.error(dom.snapshotCreateXML, xml, flags).get_error_code() == code
    assert sources(dom) == before and dom.snapshotListNames() == []
    dom.destroy()


def test_shim_reverts_to_a_snapshot_which_libvirt_9_cannot_do_for_external_ones(daemon, tmpdir_short):
    import compat.libvirt as lv

    conn = lv.open(f"kvmd:///?socket={daemon.socket}")
    try:
        root, data = os.path.join(tmpdir_short, "root.qcow2"), os.path.join(tmpdir_short, "data.raw")
        subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", root, "16M"], check=True)
        subprocess.run(["qemu-img", "create", "-q", "-f", "raw", data, "8M"], check=True)
        dom = conn.defineXML(domain_xml("rev", root, data))
        dom.create()
        s1 = dom.snapshotCreateXML("<domainsnapshot><name>s1</name></domainsnapshot>",
                                   lv.VIR_DOMAIN_SNAPSHOT_CREATE_DISK_ONLY)
        dom.snapshotCreateXML("<domainsnapshot><name>s2</name></domainsnapshot>", lv.VIR_DOMAIN_SNAPSHOT_CREATE_DISK_ONLY)
        assert sources(dom)["vda"] == os.path.join(tmpdir_short, "root.s2")  # root.s1's suffix replaced
        with pytest.raises(lv.libvirtError) as exc:
            dom.revertToSnapshot(s1, lv.VIR_DOMAIN_SNAPSHOT_REVERT_PAUSED)
        assert exc.value.get_error_code() == lv.VIR_ERR_NO_SUPPORT
        assert dom.revertToSnapshot(s1, 0) == 0
        assert dom.state()[0] == lv.VIR_DOMAIN_RUNNING and dom.snapshotCurrent().getName() == "s1"
        # a fresh overlay on the images s1 froze, not the layers written since
        vda = sources(dom)["vda"]
        assert vda not in (root, os.path.join(tmpdir_short, "root.s1"), os.path.join(tmpdir_short, "root.s2"))
        dom.destroy()
        dom.undefine()
    finally:
        conn.close()
