"""Hardening: garbage on the API socket, QEMU failing to start, `kvmd --check-config`."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kvmd import errors
from kvmd.api.protocol import MAX_LINE
from kvmd.client import ApiError
from tests.conftest import ROOT, firmware_spec
from tests.support.procs import pids_mentioning

HELD = ("held-run", "held-paused")
CORE_METHODS = ["vm.define", "vm.undefine", "vm.create", "vm.start", "vm.pause", "vm.resume",
                "vm.reset", "vm.shutdown", "vm.destroy", "vm.list", "vm.info", "host.info",
                "events.subscribe", "events.unsubscribe", "api.methods"]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12)
params = st.dictionaries(st.sampled_from(["name", "spec", "paused", "timeout", "wait"]) | st.text(max_size=6),
                         json_values, max_size=4) | st.lists(json_values, max_size=4) | json_values
rpc_objects = st.fixed_dictionaries(
    {"method": st.sampled_from(CORE_METHODS) | st.text(max_size=12).map(lambda t: "zz." + t)},
    optional={"jsonrpc": st.sampled_from(["2.0", "2.0", "1.0", 2, None]), "params": params,
              "id": st.integers() | st.text(max_size=5) | st.none() | st.floats() | st.lists(st.integers())})
garbage = st.one_of(
    st.binary(max_size=300),
    json_values.map(lambda v: json.dumps(v).encode()),
    rpc_objects.map(lambda v: json.dumps(v).encode()),
    st.lists(rpc_objects, max_size=4).map(lambda v: json.dumps(v).encode()),
    st.integers(1, 3000).map(lambda n: b"[" * n + b"]" * (n % 7)),
)


def send_and_sync(path: str, payload: bytes, disconnect: bool) -> None:
    """Send garbage; then either hang up mid-request, or check the connection still answers."""
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(20)
    try:
        s.connect(path)
        if disconnect:
            s.sendall(payload)
            return
        s.sendall(payload + b"\n" + b'{"jsonrpc":"2.0","id":"sync","method":"vm.list"}\n')
        f = s.makefile("rb")
        while True:
            line = f.readline()
            assert line, f"connection closed after {payload[:200]!r}"
            for msg in (lambda m: m if isinstance(m, list) else [m])(json.loads(line)):
                assert isinstance(msg, dict) and msg.get("jsonrpc") == "2.0"
                if msg.get("id") == "sync":
                    assert isinstance(msg["result"], list)
                    return
    finally:
        s.close()


def held_vms(client) -> dict[str, tuple[str, int]]:
    return {vm["name"]: (vm["state"], vm["pid"]) for vm in client.call("vm.list") if vm["name"] in HELD}


def test_garbage_on_the_socket_never_takes_the_daemon_or_its_vms_down(daemon):
    c = daemon.client()
    c.call("vm.create", spec=firmware_spec(HELD[0]))
    c.call("vm.define", spec=firmware_spec(HELD[1]))
    c.call("vm.start", name=HELD[1], paused=True)
    before = held_vms(c)

    @settings(max_examples=150, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(payload=garbage, disconnect=st.booleans())
    def throw(payload: bytes, disconnect: bool) -> None:
        if b"held" in payload:  # never aim a verb at the VMs we check afterwards
            return
        send_and_sync(daemon.socket, payload, disconnect)

    throw()
    assert daemon.proc.poll() is None, daemon.log()
    c = daemon.client()
    assert held_vms(c) == before == {HELD[0]: ("running", before[HELD[0]][1]),
                                     HELD[1]: ("paused", before[HELD[1]][1])}
    assert c.call("vm.pause", name=HELD[0])["state"] == "paused"
    assert "Traceback" not in daemon.log()


def test_line_over_the_16_mib_limit_is_refused_and_the_daemon_serves_on(daemon, client):
    client.call("vm.create", spec=firmware_spec("big"))
    s = socket.socket(socket.AF_UNIX)
    s.connect(daemon.socket)
    reply = b""
    try:
        chunk = b"x" * (1 << 20)
        for _ in range(MAX_LINE // len(chunk) + 2):
            s.sendall(chunk)
        s.sendall(b"\n")
        s.settimeout(10)
        reply = s.makefile("rb").readline()
    except (BrokenPipeError, ConnectionResetError):
        pass  # the daemon may hang up before we finish sending: also fine
    finally:
        s.close()
    if reply:
        assert json.loads(reply)["error"]["code"] == errors.INVALID_REQUEST
    assert client.call("vm.info", name="big")["state"] == "running"


def test_client_hanging_up_mid_request_leaves_daemon_and_vm_consistent(daemon, client):
    s = socket.socket(socket.AF_UNIX)
    s.connect(daemon.socket)
    s.sendall(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "vm.create",
                          "params": {"spec": firmware_spec("orphan")}}).encode() + b"\n")
    s.sendall(b'{"jsonrpc":"2.0","id":2,"method":"vm.li')  # and half of another one
    s.close()
    watcher = daemon.client()
    watcher.call("events.subscribe")
    if client.call("vm.list") == [] or client.call("vm.info", name="orphan")["state"] != "running":
        while watcher.next_event(timeout=10).get("state") != "running":
            pass
    assert client.call("vm.info", name="orphan")["state"] == "running"
    client.call("vm.destroy", name="orphan")


def assert_no_half_state(daemon, vm_uuid: str) -> None:
    assert not [p for p in pids_mentioning(vm_uuid)], "a QEMU process was left behind"
    assert sorted(os.listdir(daemon.run_dir)) == ["kvmd.pid", "kvmd.sock"], "stale sockets or records"


def api_error(fn, *args, **kwargs) -> ApiError:
    with pytest.raises(ApiError) as exc:
        fn(*args, **kwargs)
    return exc.value


def test_image_that_is_not_qcow2_fails_with_qemus_message_and_leaves_nothing_behind(daemon, client, tmpdir_short):
    image = os.path.join(tmpdir_short, "fake.qcow2")
    with open(image, "wb") as f:
        f.write(b"this is not a qcow2 image\n" * 1000)
    info = client.call("vm.define", spec=firmware_spec("badimg", disks=[{"path": image, "format": "qcow2"}]))
    err = api_error(client.call, "vm.start", name="badimg")
    assert err.code == errors.QEMU_FAILURE
    assert "Image is not in qcow2 format" in err.message  # QEMU's own words
    after = client.call("vm.info", name="badimg")
    assert after["state"] == "stopped" and "Image is not in qcow2 format" in after["reason"]
    assert_no_half_state(daemon, info["uuid"])
    # the same through vm.create: the transient VM does not linger either
    err = api_error(client.call, "vm.create",
                    spec=firmware_spec("badimg2", disks=[{"path": image, "format": "qcow2"}]))
    assert err.code == errors.QEMU_FAILURE and "not in qcow2 format" in err.message
    assert [vm["name"] for vm in client.call("vm.list")] == ["badimg"]


@pytest.mark.parametrize("args, words", [
    (["-no-such-option"], "invalid option"),
    (["-device", "no-such-device"], "'no-such-device' is not a valid device model name"),
])
def test_bad_qemu_argument_fails_with_qemus_message_and_leaves_nothing_behind(daemon, client, args, words):
    spec = firmware_spec("badarg", qemuArgs=args)
    err = api_error(client.call, "vm.create", spec=spec)
    assert err.code == errors.QEMU_FAILURE
    assert words in err.message, err.message
    assert client.call("vm.list") == []
    assert_no_half_state(daemon, client.call("vm.define", spec=spec)["uuid"])


def check_config(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kvmd.daemon", "--check-config", *args],
                          capture_output=True, text=True, timeout=60, cwd=ROOT)


def test_check_config_prints_effective_settings_when_valid(tmpdir_short):
    path = os.path.join(tmpdir_short, "ok.yaml")
    with open(path, "w") as f:
        f.write(f"runDir: {tmpdir_short}/r\nquotas: {{maxVms: 3, maxMemory: 4GiB}}\n")
    out = check_config("--config", path)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.startswith("config OK")
    assert f"runDir: {tmpdir_short}/r" in out.stdout
    assert "maxVms: 3" in out.stdout and f"maxMemory: {4 << 30}" in out.stdout
    assert "shutdownTimeout: 60" in out.stdout  # defaults are shown too
    assert not os.path.exists(f"{tmpdir_short}/r"), "checking creates nothing"


def test_check_config_lists_every_problem_by_field_path(tmpdir_short):
    path = os.path.join(tmpdir_short, "bad.yaml")
    with open(path, "w") as f:
        f.write("accel: [kvm, xen]\nquotas: {maxVms: -1, maxMemory: lots}\ncolour: blue\n")
    out = check_config("--config", path)
    assert out.returncode == 2
    for field in ("accel[1]:", "quotas.maxVms:", "quotas.maxMemory:", "colour: unknown field"):
        assert field in out.stdout, out.stdout
    with open(path, "w") as f:
        f.write("qemu: /nonexistent/qemu\nrunAs: no-such-user-kvt\n")
    out = check_config("--config", path)
    assert out.returncode == 2
    assert "qemu: QEMU binary '/nonexistent/qemu' not found" in out.stdout
    assert "runAs: no such user: no-such-user-kvt" in out.stdout
