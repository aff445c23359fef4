"""VM lifecycle over the VDSM endpoint: the same assertions on the kvmd and libvirt backends."""

from __future__ import annotations

import time

import pytest

from tests.vdsm_parity.engine_xml import engine_xml
from vdsm.client import RpcError


def wait_status(c, vm_id: str, status: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for vm in c.call("Host.getVMList"):
            if vm["vmId"] == vm_id and vm["status"] == status:
                return vm
        time.sleep(0.05)
    raise AssertionError(f"{vm_id} never reached {status}: {c.call('VM.getStats', vmID=vm_id)}")


def events_for(c, vm_id: str, until: str, timeout: float = 60) -> list[str]:
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ev = c.next_event(timeout=max(0.1, deadline - time.monotonic()))
        if ev.get("method") == f"|virt|VM_status|{vm_id}":
            seen.append(ev["params"][vm_id]["status"])
            if seen[-1] == until:
                return seen
    raise AssertionError(f"no {until} event for {vm_id}; saw {seen}")


def test_create_pause_cont_destroy_with_status_events(endpoint):
    c = endpoint.client()
    vm_id, xml = engine_xml("par-life", custom={"sap_agent": "false"})
    created = c.call("VM.create", vmID=vm_id, vmParams={"xml": xml})
    assert created["vmId"] == vm_id and created["status"] == "WaitForLaunch"
    assert events_for(c, vm_id, "Up")[-1] == "Up"
    assert c.call("VM.getInfo", vmID=vm_id)["status"] == "Up"
    assert c.call("VM.pause", vmID=vm_id)["status"] == "Paused"
    assert events_for(c, vm_id, "Paused")[-1] == "Paused"
    assert c.call("VM.cont", vmID=vm_id)["status"] == "Up"
    assert events_for(c, vm_id, "Up")[-1] == "Up"
    c.call("VM.destroy", vmID=vm_id)
    down = None
    deadline = time.monotonic() + 30
    while down is None and time.monotonic() < deadline:
        ev = c.next_event(timeout=30)
        if ev.get("method") == f"|virt|VM_status|{vm_id}" and ev["params"][vm_id]["status"] == "Down":
            down = ev["params"][vm_id]
    assert down is not None and down["exitCode"] == 0
    assert c.call("Host.getVMList") == []


def test_stats_and_dumpxmls_have_vdsm_shapes_and_keep_ovirt_metadata(endpoint):
    c = endpoint.client()
    vm_id, xml = engine_xml("par-stats", custom={"mykey": "myvalue"})
    c.call("VM.create", vmID=vm_id, vmParams={"xml": xml})
    wait_status(c, vm_id, "Up")
    (stats,) = c.call("VM.getStats", vmID=vm_id)
    for key in ("vmId", "status", "elapsedTime", "cpuUser", "cpuSys", "memUsage", "balloonInfo", "disks",
                "network", "vcpuCount", "monitorResponse", "hash", "displayInfo"):
        assert key in stats, key
    assert stats["status"] == "Up" and stats["vcpuCount"] == "1"
    all_stats = c.call("Host.getAllVmStats")
    assert [s["vmId"] for s in all_stats] == [vm_id]
    assert set(all_stats[0]) >= {"vmId", "status", "cpuUser", "disks", "network"}
    dumped = c.call("Host.dumpxmls", vmList=[vm_id])[vm_id]
    assert "http://ovirt.org/vm/1.0" in dumped and "myvalue" in dumped and "4.7" in dumped
    assert c.call("Host.getVMFullList")[0]["vmId"] == vm_id
    assert c.call("Host.getVMList", onlyUUID=True) == [vm_id]
    caps = c.call("Host.getCapabilities")
    assert endpoint.kind in caps["backends"]["active"]
    c.call("VM.destroy", vmID=vm_id)


def test_shutdown_of_guest_ignoring_acpi_is_forced_after_timeout(endpoint):
    c = endpoint.client()
    vm_id, xml = engine_xml("par-shut")
    c.call("VM.create", vmID=vm_id, vmParams={"xml": xml})
    wait_status(c, vm_id, "Up")
    c.call("VM.shutdown", vmID=vm_id, timeout=1, force=True)
    assert "Powering down" in events_for(c, vm_id, "Down", timeout=30)
    (stats,) = c.call("VM.getStats", vmID=vm_id)
    assert stats["status"] == "Down" and stats["exitCode"] == 0 and stats["exitReason"] == 6
    c.call("VM.destroy", vmID=vm_id)  # the engine acknowledges the Down VM
    assert c.call("Host.getVMList") == []


def test_errors_have_vdsm_codes(endpoint):
    c = endpoint.client()
    with pytest.raises(RpcError) as exc:
        c.call("VM.getStats", vmID="00000000-0000-0000-0000-00000000beef")
    assert exc.value.code == 1
    vm_id, xml = engine_xml("par-dup")
    c.call("VM.create", vmID=vm_id, vmParams={"xml": xml})
    with pytest.raises(RpcError) as exc:
        c.call("VM.create", vmID=vm_id, vmParams={"xml": xml})
    assert exc.value.code == 4
    with pytest.raises(RpcError) as exc:
        c.call("VM.destroy")
    assert exc.value.code == 11
    wait_status(c, vm_id, "Up")
    c.call("VM.destroy", vmID=vm_id)
    bad_id, bad_xml = engine_xml("par-bad")
    c.call("VM.create", vmID=bad_id, vmParams={"xml": bad_xml.replace("<vcpu placement='static'>1</vcpu>", "<vcpu>0</vcpu>")})
    down = wait_status(c, bad_id, "Down")
    assert down["vmId"] == bad_id
    (stats,) = c.call("VM.getStats", vmID=bad_id)
    assert stats["exitCode"] == 1 and stats["exitMessage"]
    c.call("VM.destroy", vmID=bad_id)
