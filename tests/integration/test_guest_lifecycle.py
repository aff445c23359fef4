"""Lifecycle verbs that need a real guest OS: ACPI shutdown, reset, pause freezing time."""

from __future__ import annotations

import time

import pytest

from tests.conftest import guest_spec
from tests.support.console import Console
from tests.support.procs import alive

pytestmark = pytest.mark.slow


def test_acpi_shutdown_of_real_guest_reaches_stopped(client, guest):
    client.call("vm.define", spec=guest_spec(guest, "lin"))
    info = client.call("vm.start", name="lin")
    console = Console(info["console"])
    try:
        console.expect("KVMD-GUEST-READY", timeout=90)
        assert "hello-42" in console.run("echo hello-$((6*7))")
        started = time.monotonic()
        result = client.call("vm.shutdown", name="lin", timeout=60)
        assert result["state"] == "stopped"
        assert result["reason"] == "guest shut down"
        assert time.monotonic() - started < 30, "the guest should power off on its own, long before the timeout"
        assert not alive(info["pid"])
    finally:
        console.close()


def test_reset_reboots_the_guest_and_pause_stops_its_clock(client, guest):
    info = client.call("vm.create", spec=guest_spec(guest, "rb"))
    console = Console(info["console"])
    try:
        console.expect("KVMD-GUEST-READY", timeout=90)
        client.call("vm.pause", name="rb")
        before = console.buf.count(b"KVMD-COUNTER")
        time.sleep(2.5)
        console.sock.settimeout(0.2)
        try:
            while console.sock.recv(65536):
                pass
        except OSError:
            pass
        assert console.buf.count(b"KVMD-COUNTER") == before, "a paused guest must not tick"
        client.call("vm.resume", name="rb")
        console.buf = b""
        console.expect("KVMD-COUNTER", timeout=30)
        client.call("vm.reset", name="rb")
        console.buf = b""
        console.expect("KVMD-GUEST-READY", timeout=90)  # booted again
        assert client.call("vm.info", name="rb")["state"] == "running"
        assert client.call("vm.info", name="rb")["pid"] == info["pid"]
    finally:
        console.close()
        client.call("vm.destroy", name="rb")
