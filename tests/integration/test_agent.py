"""The guest agent client against the real qemu-ga in the test guest, and against a VM
whose agent channel nobody answers (firmware only: the calls must fail in time, with
AGENT_UNRESPONSIVE, and leave the VM alone).

Every process a test starts is killed in a finalizer, pass or fail.
"""

from __future__ import annotations

import time

import pytest

from kvmd.client import ApiError
from kvmd.errors import AGENT_UNRESPONSIVE, INVALID_PARAMS, NOT_SUPPORTED, WRONG_STATE
from tests.conftest import firmware_spec, guest_spec
from tests.support.console import Console
from tests.support.procs import alive


def _boot(client, guest, name: str) -> dict:
    info = client.call("vm.create", spec=guest_spec(guest, name, guestAgent=True, nics=[{"name": "n0"}]))
    console = Console(info["console"])
    try:
        console.expect("KVMD-GUEST-READY", timeout=90)
    finally:
        console.close()
    return info


@pytest.mark.slow
def test_real_agent_answers_ping_guest_info_and_fsfreeze(client, guest):
    _boot(client, guest, "ga")
    ping = client.call("vm.agent_ping", name="ga")
    assert ping["responsive"] is True and ping["ms"] < 5000
    info = client.call("vm.guest_info", name="ga")
    assert info["os"]["id"] == "kvmd-guest"
    assert info["os"]["kernel-release"]
    assert info["hostname"] == "kvmd-guest"
    names = {i["name"] for i in info["interfaces"]}
    assert {"lo", "eth0"} <= names
    assert "errors" not in info
    assert client.call("vm.fsfreeze_status", name="ga")["status"] == "thawed"
    frozen = client.call("vm.fsfreeze", name="ga")
    assert frozen["status"] == "frozen" and isinstance(frozen["filesystems"], int)
    thawed = client.call("vm.fsthaw", name="ga")
    assert thawed["status"] == "thawed" and thawed["filesystems"] == frozen["filesystems"]
    assert client.call("vm.fsfreeze_status", name="ga")["status"] == "thawed"
    # many calls in a row on one session, each answered (one command at a time)
    for _ in range(5):
        assert client.call("vm.agent_ping", name="ga", timeout=5)["responsive"]


@pytest.mark.slow
def test_agent_shutdown_mode_powers_the_guest_off(client, guest):
    info = _boot(client, guest, "gs")
    client.call("vm.agent_ping", name="gs")
    started = time.monotonic()
    result = client.call("vm.shutdown", name="gs", mode="agent", timeout=30)
    assert result["state"] == "stopped", result
    assert result["reason"] == "guest shut down"
    assert time.monotonic() - started < 15
    assert not alive(info["pid"])


def test_agent_calls_fail_in_time_with_agent_unresponsive_when_no_agent_answers(client):
    info = client.call("vm.create", spec=firmware_spec("noga", guestAgent=True))
    for method in ("vm.agent_ping", "vm.guest_info", "vm.fsfreeze_status"):
        started = time.monotonic()
        with pytest.raises(ApiError) as e:
            client.call(method, name="noga", timeout=0.5)
        assert e.value.code == AGENT_UNRESPONSIVE, (method, e.value.message)
        assert "did not answer" in e.value.message
        assert time.monotonic() - started < 2.0
    # the agent shutdown mode refuses the same way (within its timeout), and the VM runs on
    started = time.monotonic()
    with pytest.raises(ApiError) as e:
        client.call("vm.shutdown", name="noga", mode="agent", timeout=1)
    assert e.value.code == AGENT_UNRESPONSIVE
    assert time.monotonic() - started < 2.5
    assert client.call("vm.info", name="noga")["state"] == "running"
    assert alive(info["pid"])


def test_agent_calls_are_refused_without_an_agent_channel_or_a_running_guest(client):
    client.call("vm.create", spec=firmware_spec("plain"))
    with pytest.raises(ApiError) as e:
        client.call("vm.agent_ping", name="plain")
    assert e.value.code == NOT_SUPPORTED and "guestAgent" in e.value.message
    client.call("vm.create", spec=firmware_spec("napping", guestAgent=True), paused=True)
    with pytest.raises(ApiError) as e:
        client.call("vm.agent_ping", name="napping")
    assert e.value.code == WRONG_STATE
    with pytest.raises(ApiError) as e:
        client.call("vm.shutdown", name="plain", mode="reboot")
    assert e.value.code == INVALID_PARAMS
