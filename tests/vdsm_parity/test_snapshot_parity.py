"""VM.snapshot over the endpoint on both backends: a running VM's disk moves onto the new
overlay (as Host.dumpxmls shows), the drives not listed keep their images, the job is
reported by Host.getJobs, and mistakes are error 48."""

from __future__ import annotations

import json
import os
import subprocess
import uuid

import pytest

from tests.vdsm_parity.engine_xml import engine_xml
from tests.vdsm_parity.test_lifecycle_parity import wait_status
from vdsm.client import RpcError


def disk(path: str, dev: str, fmt: str, serial: str) -> str:
    return (f"<disk type='file' device='disk'><driver name='qemu' type='{fmt}'/><source file='{path}'/>"
            f"<target dev='{dev}' bus='virtio'/><serial>{serial}</serial></disk>")


def sources(c, vm_id: str) -> dict[str, str]:
    import xml.etree.ElementTree as ET

    root = ET.fromstring(c.call("Host.dumpxmls", vmList=[vm_id])[vm_id])
    return {d.find("target").get("dev"): d.find("source").get("file") for d in root.iterfind("./devices/disk")}


def backing(path: str) -> str:
    out = subprocess.run(["qemu-img", "info", "-U", "--output=json", path], check=True, capture_output=True, text=True)
    return json.loads(out.stdout).get("backing-filename")


def test_snapshot_moves_the_listed_disks_onto_new_overlays_of_a_running_vm(endpoint):
    c = endpoint.client()
    base = endpoint.base
    root, data = os.path.join(base, "root.qcow2"), os.path.join(base, "data.raw")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", root, "32M"], check=True)
    subprocess.run(["qemu-img", "create", "-q", "-f", "raw", data, "8M"], check=True)
    image_id = str(uuid.uuid4())
    vm_id, xml = engine_xml("par-snap", extra_devices=disk(root, "vda", "qcow2", image_id) + disk(data, "vdb", "raw", "D"))
    c.call("VM.create", vmID=vm_id, vmParams={"xml": xml})
    wait_status(c, vm_id, "Up")

    # 1: the endpoint's backend makes the overlay at the path given (no agent: taken without quiesce)
    first = os.path.join(base, "root.s1.qcow2")
    job = str(uuid.uuid4())
    assert c.call("VM.snapshot", vmID=vm_id, snapDrives=[{"name": "vda", "newVolume": first}], jobUUID=job) is None
    assert sources(c, vm_id) == {"vda": first, "vdb": data}
    assert backing(first) == root
    assert c.call("Host.getJobs", job_ids=[job]) == {
        job: {"id": job, "status": "done", "job_type": "virt", "description": "snapshot_vm", "progress": 100}}

    # 2: a volume made beforehand (as VDSM's storage does) is taken as it is; by imageID, frozen
    second = os.path.join(base, "root.s2.qcow2")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", first, "-F", "qcow2", second], check=True)
    c.call("VM.snapshot", vmID=vm_id, snapDrives=[{"imageID": image_id, "newVolume": second}], frozen=True)
    assert sources(c, vm_id) == {"vda": second, "vdb": data}
    # a drive already on its new volume is skipped, as VDSM does
    c.call("VM.snapshot", vmID=vm_id, snapDrives=[{"name": "vda", "newVolume": second}])
    assert sources(c, vm_id)["vda"] == second

    # 3: without a path the backend names the overlay as libvirt does: /dir/STEM.SNAPNAME
    job3 = str(uuid.uuid4())
    c.call("VM.snapshot", vmID=vm_id, snapDrives=[{"name": "vdb"}], jobUUID=job3)
    assert sources(c, vm_id) == {"vda": second, "vdb": os.path.join(base, f"data.{job3}")}
    assert backing(os.path.join(base, f"data.{job3}")) == data

    # mistakes: error 48, nothing changes
    for drives in ([{"name": "vdz", "newVolume": os.path.join(base, "x.qcow2")}],
                   [{"name": "vda", "newVolume": "relative.qcow2"}],
                   [{"name": "vda", "domainID": str(uuid.uuid4()), "volumeID": str(uuid.uuid4())}]):
        with pytest.raises(RpcError) as exc:
            c.call("VM.snapshot", vmID=vm_id, snapDrives=drives)
        assert exc.value.code == 48, drives
    bad_job = str(uuid.uuid4())
    with pytest.raises(RpcError) as exc:  # an existing file that is not an overlay of the disk
        c.call("VM.snapshot", vmID=vm_id, snapDrives=[{"name": "vda", "newVolume": data}], jobUUID=bad_job)
    assert exc.value.code == 48
    assert c.call("Host.getJobs", job_ids=[bad_job])[bad_job]["status"] == "failed"
    assert sources(c, vm_id) == {"vda": second, "vdb": os.path.join(base, f"data.{job3}")}
    with pytest.raises(RpcError) as exc:
        c.call("VM.snapshot", vmID="00000000-0000-0000-0000-00000000beef", snapDrives=[])
    assert exc.value.code == 1
    (stats,) = c.call("VM.getStats", vmID=vm_id)
    assert stats["status"] == "Up"
    c.call("VM.destroy", vmID=vm_id)


def test_snapshot_with_memory_saves_the_guest_state_next_to_the_overlays(endpoint):
    c = endpoint.client()
    base = endpoint.base
    root = os.path.join(base, "mem-root.qcow2")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", root, "16M"], check=True)
    vm_id, xml = engine_xml("par-snapm", extra_devices=disk(root, "vda", "qcow2", "M"))
    c.call("VM.create", vmID=vm_id, vmParams={"xml": xml})
    wait_status(c, vm_id, "Up")
    overlay, memory = os.path.join(base, "mem-root.s1.qcow2"), os.path.join(base, "mem.state")
    c.call("VM.snapshot", vmID=vm_id, snapDrives=[{"name": "vda", "newVolume": overlay}], snapMemory=memory)
    assert sources(c, vm_id)["vda"] == overlay
    assert os.path.getsize(memory) > 0
    wait_status(c, vm_id, "Up")
    with pytest.raises(RpcError) as exc:
        c.call("VM.snapshot", vmID=vm_id, snapDrives=[], snapMemory="sd-uuid,pool-uuid,img,vol")
    assert exc.value.code == 48
    c.call("VM.destroy", vmID=vm_id)
