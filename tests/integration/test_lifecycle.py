"""Every lifecycle verb against a real kvmd and real QEMU (firmware-only VMs, TCG)."""

from __future__ import annotations

import json
import os
import signal
import socket

import pytest

from kvmd import errors
from kvmd.client import ApiError
from tests.conftest import firmware_spec
from tests.support.procs import alive


def api_error(fn, *args, **kwargs) -> ApiError:
    with pytest.raises(ApiError) as exc:
        fn(*args, **kwargs)
    return exc.value


def test_create_replies_once_running_and_transient_vm_vanishes_on_destroy(client):
    info = client.call("vm.create", spec=firmware_spec("t1"))
    assert info["state"] == "running"
    assert alive(info["pid"])
    assert [vm["name"] for vm in client.call("vm.list")] == ["t1"]
    client.call("vm.destroy", name="t1")
    assert client.call("vm.list") == []
    assert not alive(info["pid"])


def test_define_start_pause_resume_reset_destroy(client):
    client.call("vm.define", spec=firmware_spec("p1"))
    assert client.call("vm.info", name="p1")["state"] == "defined"
    info = client.call("vm.start", name="p1")
    assert info["state"] == "running"
    pid = info["pid"]
    assert client.call("vm.pause", name="p1")["state"] == "paused"
    assert client.call("vm.resume", name="p1")["state"] == "running"
    assert client.call("vm.reset", name="p1")["state"] == "running"
    info = client.call("vm.destroy", name="p1")
    assert info["state"] == "stopped"
    assert info["reason"] == "destroyed"
    assert info["pid"] is None and not alive(pid)
    # a persistent VM survives its stop and can start again
    assert client.call("vm.start", name="p1")["state"] == "running"
    client.call("vm.destroy", name="p1")
    client.call("vm.undefine", name="p1")
    assert client.call("vm.list") == []


def test_start_paused_then_resume(client):
    info = client.call("vm.create", spec=firmware_spec("sp"), paused=True)
    assert info["state"] == "paused"
    assert client.call("vm.resume", name="sp")["state"] == "running"
    client.call("vm.destroy", name="sp")


def test_events_stream_reports_every_state_change(daemon, client):
    watcher = daemon.client()
    watcher.call("events.subscribe")
    client.call("vm.create", spec=firmware_spec("ev"))
    client.call("vm.pause", name="ev")
    client.call("vm.destroy", name="ev")
    seen = []
    while len(seen) < 4:
        event = watcher.next_event(timeout=10)
        if event.get("type") == "state" and event["vm"] == "ev":
            seen.append(event["state"])
    assert seen == ["starting", "running", "paused", "stopped"]


def test_shutdown_of_guest_ignoring_acpi_falls_back_to_destroy_after_timeout(client):
    client.call("vm.define", spec=firmware_spec("deaf"))
    pid = client.call("vm.start", name="deaf")["pid"]
    info = client.call("vm.shutdown", name="deaf", timeout=1)
    assert info["state"] == "stopped"
    assert "did not shut down within 1s" in info["reason"]
    assert not alive(pid)


def test_kill_9_of_qemu_is_reported_as_crashed_with_reason(daemon, client):
    client.call("vm.define", spec=firmware_spec("k9"))
    watcher = daemon.client()
    watcher.call("events.subscribe")
    pid = client.call("vm.start", name="k9")["pid"]
    os.kill(pid, signal.SIGKILL)
    while True:
        event = watcher.next_event(timeout=10)
        if event.get("type") == "state" and event["state"] == "crashed":
            break
    info = client.call("vm.info", name="k9")
    assert info["state"] == "crashed"
    assert "SIGKILL" in info["reason"]
    # a crashed VM can be started again
    assert client.call("vm.start", name="k9")["state"] == "running"
    client.call("vm.destroy", name="k9")


def test_invalid_spec_lists_every_problem_with_its_field_path(client):
    bad = {"name": "bad vm", "memory": {"size": "lots"},
           "disks": [{"path": "/x", "format": "qcow2"}, {"path": "/y", "format": "vmdk"}]}
    err = api_error(client.call, "vm.define", spec=bad)
    assert err.code == errors.INVALID_SPEC
    paths = {p["path"]: p["reason"] for p in err.data["errors"]}
    assert paths["disks[1].format"] == "must be one of qcow2, raw"
    assert "name" in paths and "memory.size" in paths
    assert client.call("vm.list") == []


def test_host_checks_at_start_name_the_field(client, tmpdir_short):
    missing = os.path.join(tmpdir_short, "nope.qcow2")
    client.call("vm.define", spec=firmware_spec("hc", disks=[{"path": missing, "format": "qcow2"}]))
    err = api_error(client.call, "vm.start", name="hc")
    assert err.code == errors.INVALID_SPEC
    assert err.data["errors"] == [{"path": "disks[0].path", "reason": f"no such file: {missing}"}]
    assert client.call("vm.info", name="hc")["state"] == "defined"


def test_qemu_failure_is_reported_and_daemon_keeps_serving(client):
    err = api_error(client.call, "vm.create", spec=firmware_spec("qf", qemuArgs=["-no-such-option"]))
    assert err.code == errors.QEMU_FAILURE
    assert "no-such-option" in err.message
    assert client.call("vm.list") == []
    assert client.call("vm.create", spec=firmware_spec("ok"))["state"] == "running"
    client.call("vm.destroy", name="ok")


def test_wrong_state_unknown_vm_and_duplicates_have_stable_codes(client):
    client.call("vm.define", spec=firmware_spec("ws"))
    assert api_error(client.call, "vm.pause", name="ws").code == errors.WRONG_STATE
    assert api_error(client.call, "vm.destroy", name="ws").code == errors.WRONG_STATE
    assert api_error(client.call, "vm.info", name="nosuch").code == errors.NO_SUCH_VM
    assert api_error(client.call, "vm.create", spec=firmware_spec("ws")).code == errors.ALREADY_EXISTS
    assert api_error(client.call, "vm.frobnicate").code == errors.METHOD_NOT_FOUND
    assert api_error(client.call, "vm.info").code == errors.INVALID_PARAMS
    assert api_error(client.call, "vm.info", name=3).code == errors.INVALID_PARAMS


def test_malformed_input_gets_errors_and_daemon_keeps_serving(daemon, client):
    s = socket.socket(socket.AF_UNIX)
    s.connect(daemon.socket)
    f = s.makefile("rwb")
    for raw, code in [(b"not json\n", errors.PARSE_ERROR), (b'{"jsonrpc":"1.0","id":1,"method":"vm.list"}\n', errors.INVALID_REQUEST),
                      (b"[]\n", errors.INVALID_REQUEST), (b'{"jsonrpc":"2.0","id":2,"method":"vm.list","params":7}\n', errors.INVALID_REQUEST)]:
        f.write(raw)
        f.flush()
        assert json.loads(f.readline())["error"]["code"] == code
    f.write(b'[{"jsonrpc":"2.0","id":1,"method":"vm.list"},{"jsonrpc":"2.0","method":"vm.list"},5]\n')
    f.flush()
    batch = json.loads(f.readline())
    assert [r.get("id") for r in batch] == [1, None]
    assert batch[0]["result"] == [] and batch[1]["error"]["code"] == errors.INVALID_REQUEST
    s.close()
    assert client.call("vm.list") == []


def test_definitions_survive_a_daemon_crash(daemon):
    c = daemon.client()
    c.call("vm.define", spec=firmware_spec("keep", cpu={"count": 2}))
    daemon.restart()
    c = daemon.client()
    info = c.call("vm.info", name="keep", spec=True)
    assert info["state"] == "defined"
    assert info["spec"]["cpu"]["count"] == 2


def test_running_and_paused_vms_survive_daemon_kill_and_are_reattached(daemon):
    c = daemon.client()
    run = c.call("vm.create", spec=firmware_spec("r1"))
    c.call("vm.define", spec=firmware_spec("r2"))
    paused = c.call("vm.start", name="r2", paused=True)
    daemon.restart()
    assert alive(run["pid"]) and alive(paused["pid"])
    c = daemon.client()
    states = {vm["name"]: (vm["state"], vm["pid"]) for vm in c.call("vm.list")}
    assert states == {"r1": ("running", run["pid"]), "r2": ("paused", paused["pid"])}
    # verbs work again on re-attached VMs, and exits are still noticed
    assert c.call("vm.resume", name="r2")["state"] == "running"
    c.call("vm.destroy", name="r1")
    assert [vm["name"] for vm in c.call("vm.list")] == ["r2"]
    c.call("vm.destroy", name="r2")


def test_stopping_kvmd_normally_leaves_vms_running(daemon):
    c = daemon.client()
    info = c.call("vm.create", spec=firmware_spec("stay"))
    daemon.kill(signal.SIGTERM)
    assert alive(info["pid"])
    daemon.start()
    c = daemon.client()
    assert c.call("vm.info", name="stay")["state"] == "running"
    c.call("vm.destroy", name="stay")
