"""The corpus against a real libvirtd: libvirt accepts our XML (both the corpus and what
`spec_to_xml` writes), and what libvirt prints back — with its defaults, addresses,
controllers and, for a running domain, aliases and runtime details — converts to a spec
that a real kvmd starts. The private libvirtd (tests/support/libvirtd.py) destroys and
undefines every domain, and the `daemon` fixture kills every QEMU, pass or fail.
"""

from __future__ import annotations

import pytest

from compat.domxml import spec_to_xml, xml_to_spec
from tests.integration.test_domxml_kvmd import (
    RUNNABLE,
    check_devices,
    make_images,
    netdevs,  # noqa: F401  (the fixture)
    runnable,
    start,
)
from tests.support.libvirt_fixture import libvirtd  # noqa: F401  (the fixture)

pytestmark = pytest.mark.libvirt


def for_libvirt(xml: str) -> str:
    """TCG for libvirt too (nested KVM hangs guests here): domain type qemu."""
    return xml.replace("<domain type='kvm'>", "<domain type='qemu'>").replace(
        'type="kvm">', 'type="qemu">', 1)


def undefine(dom) -> None:
    try:
        if dom.isActive():
            dom.destroy()
    finally:
        flags = 4 if "uefi" in dom.name() else 0  # VIR_DOMAIN_UNDEFINE_NVRAM
        dom.undefineFlags(flags)


@pytest.mark.parametrize("name", RUNNABLE)
def test_libvirts_dumpxml_of_a_corpus_domain_converts_and_runs_on_kvmd(
        libvirtd, client, tmpdir_short, netdevs, name):  # noqa: F811
    make_images(tmpdir_short)
    bridge, tap = netdevs
    xml = runnable(name, tmpdir_short, bridge, tap)
    conn = libvirtd.connect()
    dom = conn.defineXML(for_libvirt(xml))
    try:
        dumped = dom.XMLDesc(1)  # VIR_DOMAIN_XML_SECURE: with display passwords (passwdValidTo needs one)
    finally:
        undefine(dom)
    spec, qmp = start(client, dumped, tmpdir_short, bridge)
    try:
        check_devices(spec, qmp)
        want = xml_to_spec(xml, networks={"default": bridge})
        assert [d["name"] for d in spec["disks"]] == [d["name"] for d in want["disks"]]
        assert [n["mac"] for n in spec["nics"]] == [n["mac"] for n in want["nics"]]
    finally:
        qmp.close()
        client.call("vm.destroy", name=spec["name"])


@pytest.mark.parametrize("name", ["minimal.xml", "disks.xml", "nics-user.xml", "ovirt-engine.xml"])
def test_running_domains_xml_from_libvirt_converts_and_runs_on_kvmd(
        libvirtd, client, tmpdir_short, netdevs, name):  # noqa: F811
    make_images(tmpdir_short)
    bridge, tap = netdevs
    xml = runnable(name, tmpdir_short, bridge, tap)
    xml = xml.replace("/var/lib/libvirt/qemu/channels/", tmpdir_short + "/")  # the engine's channel dir
    conn = libvirtd.connect()
    dom = conn.createXML(for_libvirt(xml), 0)
    try:
        live = dom.XMLDesc(1)  # aliases, tty paths, backingStore, libvirt's own controllers... (SECURE)
    finally:
        dom.destroy()
    spec, qmp = start(client, live, tmpdir_short, bridge)
    try:
        check_devices(spec, qmp)
    finally:
        qmp.close()
        client.call("vm.destroy", name=spec["name"])


@pytest.mark.parametrize("name", RUNNABLE)
def test_libvirt_accepts_what_spec_to_xml_writes(libvirtd, tmpdir_short, netdevs, name):  # noqa: F811
    make_images(tmpdir_short)
    bridge, tap = netdevs
    spec = xml_to_spec(runnable(name, tmpdir_short, bridge, tap), networks={"default": bridge})
    conn = libvirtd.connect()
    xml = for_libvirt(spec_to_xml(spec))
    dom = conn.defineXML(xml.replace("<domain type=\"kvm\">", "<domain type=\"qemu\">"))
    undefine(dom)


def test_libvirt_accepts_the_xml_of_a_spec_written_for_kvmd(libvirtd, tmpdir_short):  # noqa: F811
    make_images(tmpdir_short)
    spec = {"name": "native", "memory": {"size": "128MiB"}, "cpu": {"count": 2, "model": "max"},
            "disks": [{"name": "root", "path": f"{tmpdir_short}/root.qcow2", "format": "qcow2"},
                      {"name": "cd", "media": "cdrom", "path": f"{tmpdir_short}/cd.iso"},
                      {"name": "scratch", "bus": "scsi", "path": f"{tmpdir_short}/scsi.raw"}],
            "nics": [{"name": "lan", "backend": "user"}], "graphics": [{"type": "vnc"}],
            "guestAgent": True, "rng": True, "metadata": {"owner": "web-team"}}
    conn = libvirtd.connect()
    dom = conn.createXML(spec_to_xml(spec).replace('type="kvm"', 'type="qemu"', 1), 0)
    try:
        live = dom.XMLDesc(0)
    finally:
        dom.destroy()
    back = xml_to_spec(live)
    assert [d["name"] for d in back["disks"]] == ["root", "cd", "scratch"]
    assert back["metadata"]["owner"] == "web-team"
