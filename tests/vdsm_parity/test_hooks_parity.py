"""Hooks around the endpoint's verbs, on both backends: scripts run at VDSM's points,
see VDSM's environment, and a before_vm_start edit reaches the running QEMU."""

from __future__ import annotations

import os
import stat
import tempfile

import pytest

from tests.support.vdsm_endpoint import Endpoint
from tests.vdsm_parity.engine_xml import engine_xml
from tests.vdsm_parity.test_lifecycle_parity import wait_status
from vdsm.client import RpcError

RECORDER = """#!/bin/sh
echo "$0 vmId=$vmId custom=$mykey" >> {log}
"""
ADD_ARG = """#!/usr/bin/env python3
import hooking
doc = hooking.read_domxml()
dom = doc.getElementsByTagName('domain')[0]
dom.setAttribute('xmlns:qemu', 'http://libvirt.org/schemas/domain/qemu/1.0')
cl = doc.createElement('qemu:commandline')
arg = doc.createElement('qemu:arg')
arg.setAttribute('value', '-device')
cl.appendChild(arg)
arg = doc.createElement('qemu:arg')
arg.setAttribute('value', 'pvpanic,id=hooked0')
cl.appendChild(arg)
dom.appendChild(cl)
hooking.write_domxml(doc)
"""
REFUSE = """#!/bin/sh
echo "refused by policy" >&2
exit 2
"""


def install(root: str, point: str, name: str, text: str) -> None:
    os.makedirs(os.path.join(root, point), exist_ok=True)
    path = os.path.join(root, point, name)
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, stat.S_IRWXU)


@pytest.fixture
def hooked(endpoint):
    """A second endpoint on the same backend, with hooks installed."""
    root = tempfile.mkdtemp(prefix="hk", dir=endpoint.base)
    log = os.path.join(root, "calls.log")
    for point in ("before_vm_start", "after_vm_start", "before_vm_pause", "after_vm_pause",
                  "before_vm_destroy", "after_vm_destroy", "before_vdsm_start"):
        install(root, point, "10_record", RECORDER.format(log=log))
    install(root, "before_vm_start", "20_add_device", ADD_ARG)
    kw = {"kvmd_socket": endpoint.daemon.socket} if endpoint.kind == "kvmd" else {"libvirt_uri": endpoint.argv[endpoint.argv.index("--libvirt-uri") + 1]}
    ep = Endpoint(endpoint.base, endpoint.kind, hooks_dir=root, **kw).start()
    ep.kind, ep.hooks_root, ep.hook_log = endpoint.kind, root, log
    try:
        yield ep
    finally:
        ep.stop()


def calls(ep) -> list[str]:
    with open(ep.hook_log) as f:
        return [line.split()[0].split("/")[-2] + " " + " ".join(line.split()[1:]) for line in f]


def test_hooks_run_at_vdsm_points_with_its_environment_and_edit_the_vm(hooked):
    c = hooked.client()
    vm_id, xml = engine_xml("par-hook", custom={"mykey": "v1"})
    c.call("VM.create", vmID=vm_id, vmParams={"xml": xml})
    wait_status(c, vm_id, "Up")
    c.call("VM.pause", vmID=vm_id)
    dumped = c.call("Host.dumpxmls", vmList=[vm_id])[vm_id]
    assert "pvpanic" in dumped, "the before_vm_start edit is part of the running VM"
    c.call("VM.destroy", vmID=vm_id)
    seen = calls(hooked)
    assert seen[0].startswith("before_vdsm_start")
    mine = [s for s in seen if vm_id in s]
    assert [s.split()[0] for s in mine] == ["before_vm_start", "after_vm_start", "before_vm_pause",
                                           "after_vm_pause", "before_vm_destroy", "after_vm_destroy"]
    assert all("custom=v1" in s for s in mine)


def test_a_failing_before_vm_start_hook_fails_the_start_with_its_stderr(hooked):
    install(hooked.hooks_root, "before_vm_start", "30_refuse", REFUSE)
    c = hooked.client()
    vm_id, xml = engine_xml("par-hook-no")
    c.call("VM.create", vmID=vm_id, vmParams={"xml": xml})
    down = wait_status(c, vm_id, "Down")
    assert down["vmId"] == vm_id
    (stats,) = c.call("VM.getStats", vmID=vm_id)
    assert "refused by policy" in stats["exitMessage"] and stats["exitCode"] == 1
    c.call("VM.destroy", vmID=vm_id)
    with pytest.raises(RpcError):
        c.call("VM.getStats", vmID=vm_id)
