"""Device verbs over the VDSM endpoint on both backends, with the real test guest."""

from __future__ import annotations

import os
import subprocess
import time
import uuid

import pytest

from tests.vdsm_parity.engine_xml import engine_xml
from tests.vdsm_parity.test_lifecycle_parity import wait_status
from tests.support.rfb import security_types, vnc_auth

# libvirt gives a q35 domain a single spare root port; ask for more, as the engine does
ROOT_PORTS = "<controller type='pci' index='0' model='pcie-root'/>" + "".join(
    f"<controller type='pci' index='{i}' model='pcie-root-port'/>" for i in range(1, 5))


def wait_xml(c, vm_id: str, present: str, absent: bool = False, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        xml = c.call("Host.dumpxmls", vmList=[vm_id])[vm_id]
        if (present in xml) != absent:
            return xml
        time.sleep(0.2)
    raise AssertionError(f"{present!r} {'still' if absent else 'never'} in the domain XML:\n{xml}")


@pytest.mark.slow
def test_hotplug_and_unplug_disk_and_nic_in_real_guest(endpoint, guest):
    c = endpoint.client()
    image = os.path.join(endpoint.base, f"hp-{endpoint.kind}.qcow2")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", image, "16M"], check=True)
    vm_id, xml = engine_xml("par-hp", kernel=guest, extra_devices=ROOT_PORTS)
    c.call("VM.create", vmID=vm_id, vmParams={"xml": xml})
    wait_status(c, vm_id, "Up")
    time.sleep(6)  # let the guest boot far enough to handle PCIe hotplug (pciehp)
    disk_id = str(uuid.uuid4())
    disk = (f"<hotplug><devices><disk type='file' device='disk'><driver name='qemu' type='qcow2' cache='none'/>"
            f"<source file='{image}'/><target dev='vdb' bus='virtio'/><serial>HOTDISK</serial>"
            f"<alias name='ua-{disk_id}'/></disk></devices></hotplug>")
    c.call("VM.hotplugDisk", vmID=vm_id, params={"vmId": vm_id, "xml": disk})
    wait_xml(c, vm_id, image)
    (stats,) = c.call("VM.getStats", vmID=vm_id)
    assert "vdb" in stats["disks"]
    nic = ("<hotplug><devices><interface type='user'><mac address='52:54:00:ab:cd:01'/>"
           "<model type='virtio'/></interface></devices></hotplug>")
    c.call("VM.hotplugNic", vmID=vm_id, params={"vmId": vm_id, "xml": nic})
    wait_xml(c, vm_id, "52:54:00:ab:cd:01")
    c.call("VM.hotunplugNic", vmID=vm_id, params={"vmId": vm_id, "xml": nic})
    wait_xml(c, vm_id, "52:54:00:ab:cd:01", absent=True)
    c.call("VM.hotunplugDisk", vmID=vm_id, params={"vmId": vm_id, "xml": disk})
    wait_xml(c, vm_id, image, absent=True)
    c.call("VM.destroy", vmID=vm_id)


def test_set_ticket_opens_the_locked_vnc_display_for_that_password(endpoint):
    c = endpoint.client()
    vm_id, xml = engine_xml("par-tick", vnc=True)
    c.call("VM.create", vmID=vm_id, vmParams={"xml": xml})
    wait_status(c, vm_id, "Up")
    (stats,) = c.call("VM.getStats", vmID=vm_id)
    port = int(stats["displayInfo"][0]["port"])
    assert port >= 5900
    assert security_types("127.0.0.1", port) == [2], "VNC asks for VNC authentication"
    assert not vnc_auth("127.0.0.1", port, "*****"), "the engine's placeholder password has expired"
    c.call("VM.setTicket", vmID=vm_id, password="s3cret", ttl=120, existingConnAction="disconnect", params={})
    assert vnc_auth("127.0.0.1", port, "s3cret")
    assert not vnc_auth("127.0.0.1", port, "wrong")
    c.call("VM.destroy", vmID=vm_id)
