"""The oVirt engine's full domain XML (tests/data/domxml/ovirt-engine-full.xml) through
the VDSM endpoint, on both backends: the same XML is accepted by the real libvirt 9.0
(private libvirtd) and by kvmd, the VM reaches Up, and Host.dumpxmls still has what the
engine sent (its ovirt-vm metadata, and the devices and tuning it asked for).

Adapted for this host only where a host must differ: the emulator path, domain type
`qemu` (TCG), the image path, the bridge (made here), the agent channels' directory
(VDSM makes /var/lib/libvirt/qemu/channels; here, the test's own directory). For libvirt,
the `vdsm-no-mac-spoofing` nwfilter VDSM installs on a host is defined in the private
libvirtd, as libvirt's no-mac-spoofing + no-arp-mac-spoofing.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from tests.unit.test_domxml_roundtrip import corpus_text
from tests.vdsm_parity.test_lifecycle_parity import events_for, wait_status

VM_ID = "8d4a2f6e-3b1c-4e5d-9a7f-0c2b4d6e8f10"
SERIAL = "a6e1c3d2-5b4f-4e8a-9c7d-0e1f2a3b4c5d"

# libvirt's own filters (libvirt ships them in /etc/libvirt/nwfilter, which the private
# daemon does not have) and VDSM's, which is both
NWFILTERS = [
    """<filter name='no-mac-spoofing' chain='mac' priority='-800'>
         <rule action='return' direction='out' priority='500'><mac srcmacaddr='$MAC'/></rule>
         <rule action='drop' direction='out' priority='500'/>
       </filter>""",
    """<filter name='no-arp-mac-spoofing' chain='arp-mac' priority='-520'>
         <rule action='return' direction='out' priority='350'><arp match='yes' arpsrcmacaddr='$MAC'/></rule>
         <rule action='drop' direction='out' priority='1000'/>
       </filter>""",
    """<filter name='vdsm-no-mac-spoofing' chain='root'>
         <filterref filter='no-mac-spoofing'/>
         <filterref filter='no-arp-mac-spoofing'/>
       </filter>""",
]


@pytest.fixture
def bridge():
    name = f"kvebr{os.getpid() % 10000}"
    subprocess.run(["ip", "link", "add", name, "type", "bridge"], check=True)
    subprocess.run(["ip", "link", "set", name, "up"], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "link", "del", name], check=False, capture_output=True)


def full_engine_xml(base: str, bridge: str) -> str:
    emulator = shutil.which("qemu-system-x86_64") or "/usr/bin/qemu-system-x86_64"
    image = os.path.join(base, "engine-full.qcow2")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", image, "64M"], check=True)
    channels = os.path.join(base, "channels")
    os.makedirs(channels, exist_ok=True)
    xml = corpus_text("ovirt-engine-full.xml")
    xml = xml.replace('type="kvm">', 'type="qemu">', 1)
    xml = xml.replace("@IMAGES@/root.qcow2", image).replace('"ovirtmgmt"', f'"{bridge}"')
    xml = xml.replace("/var/lib/libvirt/qemu/channels/", channels + "/")
    return xml.replace("<devices>", f"<devices>\n    <emulator>{emulator}</emulator>", 1)


def test_full_engine_xml_is_created_on_both_backends_and_reaches_up(endpoint, bridge, request):
    if endpoint.kind == "libvirt":
        conn = request.getfixturevalue("libvirtd").connect()
        for text in NWFILTERS:
            conn.nwfilterDefineXML(text)
    c = endpoint.client()
    xml = full_engine_xml(endpoint.base, bridge)
    created = c.call("VM.create", vmID=VM_ID, vmParams={"xml": xml})
    assert created["status"] == "WaitForLaunch"
    assert events_for(c, VM_ID, "Up", timeout=90)[-1] == "Up", endpoint.log()
    wait_status(c, VM_ID, "Up")
    (stats,) = c.call("VM.getStats", vmID=VM_ID)
    assert stats["status"] == "Up" and stats["vcpuCount"] == "2"
    dumped = c.call("Host.dumpxmls", vmList=[VM_ID])[VM_ID]
    # the engine's metadata, untouched
    for text in ("http://ovirt.org/vm/1.0", "<ovirt-vm:clusterVersion>4.7</ovirt-vm:clusterVersion>",
                 f"<ovirt-vm:imageID>{SERIAL}</ovirt-vm:imageID>", "<ovirt-vm:resumeBehavior>auto_resume<",
                 "<ovirt-tune:qos/>"):
        assert text in dumped, text
    # what it asked for, as both libvirt and kvmd report it
    for text in ("<iothreads>1</iothreads>", ">oVirt</entry>", 'name="ovirt-guest-agent.0"',
                 'name="com.redhat.spice.0"', f"<serial>{SERIAL}</serial>", 'filter="vdsm-no-mac-spoofing"',
                 'iothread="1"', 'slots="16"', ">16</vcpu>", "<shares>1020</shares>", 'mode="sysinfo"'):
        assert text in dumped.replace("'", '"'), text
    c.call("VM.destroy", vmID=VM_ID)
    assert c.call("Host.getVMList") == []
