"""Migration between two endpoints of the same backend (two kvmds / two libvirtds), over
STOMP, with the same assertions on both: statuses and events on both sides, exit reason 4
on the source, the VM's identity kept, progress reported, and a cancel that leaves the
source running and the destination clean."""

from __future__ import annotations

import os
import time

import pytest

from tests.vdsm_parity.engine_xml import engine_xml
from vdsm.client import RpcError

MAC = "52:54:00:5a:17:01"
NIC = f"<interface type='user'><mac address='{MAC}'/><model type='virtio'/></interface>"


class Events:
    """Every notification one client received. Waits for one method go forward: each
    finds the first matching event after the one the previous wait for it returned."""

    def __init__(self, client):
        self.client = client
        self.seen: list[dict] = []
        self.cursor: dict[str, int] = {}

    def wait(self, method: str, pred=lambda params: True, timeout: float = 60) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            for i in range(self.cursor.get(method, 0), len(self.seen)):
                ev = self.seen[i]
                if ev.get("method") == method and pred(ev["params"]):
                    self.cursor[method] = i + 1
                    return ev["params"]
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {method} event matching; saw {[e.get('method') for e in self.seen]}")
            try:
                self.seen.append(self.client.next_event(timeout=min(left, 1.0)))
            except Exception:
                pass

    def statuses(self, vm_id: str) -> list[str]:
        return [e["params"][vm_id]["status"] for e in self.seen if e.get("method") == f"|virt|VM_status|{vm_id}"]


def status_event(events: Events, vm_id: str, status: str, timeout: float = 60) -> dict:
    return events.wait(f"|virt|VM_status|{vm_id}", lambda p: p[vm_id]["status"] == status, timeout)[vm_id]


def wait_gone(c, vm_id: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while any(v["vmId"] == vm_id for v in c.call("Host.getVMList")):
        assert time.monotonic() < deadline, f"{vm_id} still listed: {c.call('Host.getVMList')}"
        time.sleep(0.1)


def hook(endpoint, point: str, log: str, rc: int = 0) -> str:
    """A hook script at `point` of `endpoint` (its hooks dir) that logs the point and vmId."""
    folder = os.path.join(endpoint.base, "no-hooks", point)
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "50_log")
    with open(path, "w") as f:
        f.write(f"#!/bin/sh\necho \"{point} $vmId\" >> {log}\necho 'vetoed by {point}' >&2\nexit {rc}\n")
    os.chmod(path, 0o755)
    return path


def hook_log(path: str) -> list[str]:
    with open(path) as f:
        return [line.split()[0] for line in f]


def test_migration_moves_the_vm_with_its_identity_and_reports_both_sides(endpoint_pair):
    src, dst = endpoint_pair
    cs, cd = src.client(), dst.client()
    es, ed = Events(cs), Events(cd)
    vm_id, xml = engine_xml("par-mig", extra_devices=NIC, custom={"mykey": "myvalue"})
    cs.call("VM.create", vmID=vm_id, vmParams={"xml": xml})
    status_event(es, vm_id, "Up")

    # a destination hook that fails refuses the migration; the VM stays Up here
    log = os.path.join(src.base, "hooks.log")
    veto = hook(dst, "before_vm_migrate_destination", log, rc=2)
    cs.call("VM.migrate", vmID=vm_id, params={"dst": f"127.0.0.1:{dst.port}"})
    status_event(es, vm_id, "Migration Source")
    status_event(es, vm_id, "Up")
    st = cs.call("VM.getMigrationStatus", vmID=vm_id)
    assert st["status"]["code"] == 12 and "vetoed by before_vm_migrate_destination" in st["status"]["message"]
    assert cd.call("Host.getVMList") == []
    os.unlink(veto)
    for side, point in ((src, "before_vm_migrate_source"), (src, "after_vm_migrate_source"),
                        (dst, "before_vm_migrate_destination"), (dst, "after_vm_migrate_destination")):
        hook(side, point, log)
    os.unlink(log)

    assert cs.call("VM.migrate", vmID=vm_id, params={"dst": f"127.0.0.1:{dst.port}", "method": "online",
                                                     "autoConverge": "false"}) is None
    assert status_event(es, vm_id, "Migration Source")
    down = status_event(es, vm_id, "Down")
    assert (down["exitCode"], down["exitReason"]) == (0, 4)
    done = es.wait(f"|virt|VM_migration_status|{vm_id}", lambda p: p[vm_id]["progress"] == 100)[vm_id]
    assert done["postcopy"] is False and isinstance(done.get("downtime"), int)
    st = cs.call("VM.getMigrationStatus", vmID=vm_id)
    assert st["status"] == {"code": 0, "message": "Migration done"} and st["progress"] == 100
    (stats,) = cs.call("VM.getStats", vmID=vm_id)
    assert stats["status"] == "Down" and stats["exitReason"] == 4

    # the destination: Migration Destination, then Up; same VM, same devices and metadata
    status_event(ed, vm_id, "Up")
    assert ed.statuses(vm_id)[0] == "Migration Destination"
    assert ed.statuses(vm_id)[-1] == "Up"
    dumped = cd.call("Host.dumpxmls", vmList=[vm_id])[vm_id]
    assert vm_id in dumped and MAC in dumped and "myvalue" in dumped
    assert cd.call("VM.getInfo", vmID=vm_id)["status"] == "Up"

    # the engine acknowledges the source's Down VM; the destination runs on
    cs.call("VM.destroy", vmID=vm_id)
    assert cs.call("Host.getVMList") == []
    with pytest.raises(RpcError) as exc:
        cs.call("VM.getMigrationStatus", vmID=vm_id)
    assert exc.value.code == 1
    cd.call("VM.destroy", vmID=vm_id)
    assert sorted(hook_log(log)) == ["after_vm_migrate_destination", "after_vm_migrate_source",
                                     "before_vm_migrate_destination", "before_vm_migrate_source"]
    assert hook_log(log).index("before_vm_migrate_source") < hook_log(log).index("before_vm_migrate_destination")


@pytest.mark.slow
def test_migrate_cancel_mid_migration_keeps_the_source_running_and_cleans_the_destination(endpoint_pair, guest):
    src, dst = endpoint_pair
    cs, cd = src.client(), dst.client()
    es = Events(cs)
    vm_id, xml = engine_xml("par-migc", kernel=guest)
    cs.call("VM.create", vmID=vm_id, vmParams={"xml": xml})
    status_event(es, vm_id, "Up")
    time.sleep(5)  # the guest unpacks its initramfs: ~100 MiB to copy, ~100 s at 1 MiB/s

    cs.call("VM.migrate", vmID=vm_id, params={"dst": f"127.0.0.1:{dst.port}", "maxBandwidth": 1})
    with pytest.raises(RpcError) as exc:
        cs.call("VM.migrate", vmID=vm_id, params={"dst": f"127.0.0.1:{dst.port}"})
    assert exc.value.code == 51
    moving = es.wait(f"|virt|VM_migration_status|{vm_id}", lambda p: 0 < p[vm_id]["progress"] < 100, 90)[vm_id]
    assert moving["postcopy"] is False
    running = cs.call("VM.getMigrationStatus", vmID=vm_id)
    assert running["status"] == {"code": 0, "message": "Migration in progress"} and 0 < running["progress"] < 100
    assert cd.call("VM.getInfo", vmID=vm_id)["status"] == "Migration Destination"

    assert cs.call("VM.migrateCancel", vmID=vm_id) is None
    st = cs.call("VM.getMigrationStatus", vmID=vm_id)
    assert st["status"] == {"code": 47, "message": "Migration canceled"}
    assert cs.call("VM.getInfo", vmID=vm_id)["status"] == "Up"
    status_event(es, vm_id, "Migration Source")
    status_event(es, vm_id, "Up")
    assert es.statuses(vm_id)[-2:] == ["Migration Source", "Up"]
    wait_gone(cd, vm_id)
    assert cd.call("Host.dumpxmls") == {}
    with pytest.raises(RpcError) as exc:
        cs.call("VM.migrateCancel", vmID=vm_id)
    assert exc.value.code == 47
    (stats,) = cs.call("VM.getStats", vmID=vm_id)
    assert stats["status"] == "Up"
    cs.call("VM.destroy", vmID=vm_id)


def test_migration_to_an_unreachable_destination_fails_and_the_vm_stays_up(endpoint):
    c = endpoint.client()
    events = Events(c)
    vm_id, xml = engine_xml("par-migx")
    c.call("VM.create", vmID=vm_id, vmParams={"xml": xml})
    status_event(events, vm_id, "Up")
    with pytest.raises(RpcError) as exc:
        c.call("VM.migrateCancel", vmID=vm_id)
    assert exc.value.code == 47
    with pytest.raises(RpcError) as exc:
        c.call("VM.migrate", vmID=vm_id, params={"method": "online"})
    assert exc.value.code == 11
    c.call("VM.migrate", vmID=vm_id, params={"dst": "127.0.0.1:1"})
    status_event(events, vm_id, "Migration Source")
    status_event(events, vm_id, "Up")
    assert events.statuses(vm_id)[-2:] == ["Migration Source", "Up"]
    st = c.call("VM.getMigrationStatus", vmID=vm_id)
    assert st["status"]["code"] == 12 and "127.0.0.1:1" in st["status"]["message"]
    with pytest.raises(RpcError) as exc:
        c.call("VM.getMigrationStatus", vmID="00000000-0000-0000-0000-00000000beef")
    assert exc.value.code == 1
    c.call("VM.destroy", vmID=vm_id)
