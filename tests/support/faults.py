"""Checks for the fault tests: what really runs (QEMU processes, QMP's own view) against
what a kvmd reports, after it was killed and restarted."""

from __future__ import annotations

import time

from tests.support.procs import alive, pids_mentioning
from tests.support.sideqmp import SideQMP


def qemu_processes(marker: str) -> dict[int, str]:
    """pid -> uuid of every live QEMU whose command line mentions `marker`."""
    out = {}
    for pid in pids_mentioning(marker):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = [a.decode(errors="replace") for a in f.read().split(b"\0")]
        except OSError:
            continue
        if not argv or "qemu-system" not in argv[0] or not alive(pid):
            continue
        uuid = next((b for a, b in zip(argv, argv[1:], strict=False) if a == "-uuid"), "")
        out[pid] = uuid
    return out


def wait_for(predicate, timeout: float, what: str, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(interval)


def qmp_status(path: str) -> dict:
    """QEMU's own run state, through a second monitor (tests/support/sideqmp.py)."""
    q = SideQMP(path, timeout=10)
    try:
        return q.cmd("query-status")
    finally:
        q.close()


def assert_consistent(client, marker: str) -> dict[str, dict]:
    """No VM lost, none duplicated, every reported pid real: the QEMUs alive that mention
    `marker` are exactly the active VMs kvmd lists, one per uuid. Returns vm.list by name."""
    vms = {vm["name"]: vm for vm in client.call("vm.list")}
    qemus = qemu_processes(marker)
    uuids = list(qemus.values())
    assert len(uuids) == len(set(uuids)), f"two QEMUs run the same VM: {qemus}"
    listed = {vm["pid"]: vm for vm in vms.values() if vm["pid"]}
    assert set(qemus) == set(listed), (f"QEMUs {qemus} but kvmd lists "
                                      f"{ {n: (v['state'], v['pid']) for n, v in vms.items()} }")
    for pid, vm in listed.items():
        assert vm["uuid"] == qemus[pid], (vm, qemus[pid])
        assert vm["state"] in ("running", "paused", "shutting-down", "migrating-out", "migrating-in"), vm
    for vm in vms.values():
        if vm["state"] in ("stopped", "crashed", "defined"):
            assert vm["pid"] is None, vm
    return vms
