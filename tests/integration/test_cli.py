"""kvmctl end to end: the real executable as a subprocess against a real kvmd.

Firmware-only VMs wherever no guest OS is needed; the console test boots the real test
guest (slow). Every process started here is killed in a finalizer, pass or fail.
"""

from __future__ import annotations

import json
import os
import pty
import signal
import subprocess
import sys
import termios
import threading
import time

import pytest
import yaml

from tests.conftest import firmware_spec, guest_spec

_BIN = os.path.join(os.path.dirname(sys.executable), "kvmctl")
KVMCTL = [_BIN] if os.access(_BIN, os.X_OK) else [sys.executable, "-m", "kvmd.cli.main"]


def kvmctl(daemon, *args: str, input: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([*KVMCTL, "--socket", daemon.socket, *args], input=input,
                          capture_output=True, text=True, timeout=timeout)


def ok(daemon, *args: str, input: str | None = None) -> str:
    r = kvmctl(daemon, *args, input=input)
    assert r.returncode == 0, f"kvmctl {' '.join(args)} failed ({r.returncode}): {r.stderr}"
    assert r.stderr == ""
    return r.stdout


def ok_json(daemon, *args: str, input: str | None = None):
    return json.loads(ok(daemon, *args, "--json", input=input))


def fails(r: subprocess.CompletedProcess, status: int) -> str:
    """Assert one `kvmctl: error:` line on stderr, nothing on stdout; return it."""
    assert r.returncode == status, (r.returncode, r.stdout, r.stderr)
    assert r.stdout == ""
    assert "Traceback" not in r.stderr
    lines = r.stderr.splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("kvmctl: error: ")
    return lines[0]


@pytest.fixture
def write_spec(tmp_path):
    def write(spec: dict, name: str = "vm.yaml") -> str:
        path = tmp_path / name
        path.write_text(yaml.safe_dump(spec))
        return str(path)
    return write


class Output:
    """Collect a pipe's bytes in a thread; wait for a marker without blocking on reads."""

    def __init__(self, stream_or_fd):
        self.data = b""
        self._cond = threading.Condition()
        self._read = (lambda: os.read(stream_or_fd, 65536)) if isinstance(stream_or_fd, int) \
            else (lambda: stream_or_fd.read1(65536))
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        while True:
            try:
                chunk = self._read()
            except (OSError, ValueError):
                chunk = b""
            with self._cond:
                if not chunk:
                    self._cond.notify_all()
                    return
                self.data += chunk
                self._cond.notify_all()

    def expect(self, marker: str, timeout: float = 30, after: int = 0) -> int:
        """Wait for `marker` at or after offset `after`; return the offset just past it."""
        m = marker.encode()
        deadline = time.monotonic() + timeout
        with self._cond:
            while (i := self.data.find(m, after)) < 0:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{marker!r} not seen; got: {self.data[-2000:]!r}")
                self._cond.wait(left)
            return i + len(m)

    def text(self) -> str:
        with self._cond:
            return self.data.decode(errors="replace")


@pytest.fixture
def spawn():
    """Start kvmctl in the background; every process is killed at the end of the test."""
    procs: list[subprocess.Popen] = []

    def start(daemon, *args: str, **kw) -> subprocess.Popen:
        kw.setdefault("stdout", subprocess.PIPE)
        kw.setdefault("stderr", subprocess.PIPE)
        p = subprocess.Popen([*KVMCTL, "--socket", daemon.socket, *args], **kw)
        procs.append(p)
        return p

    yield start
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait(timeout=10)
        for f in (p.stdin, p.stdout, p.stderr):
            if f is not None:
                f.close()


# -- lifecycle -----------------------------------------------------------------------

def test_round_trip_define_list_start_pause_resume_info_destroy_undefine(daemon, write_spec):
    path = write_spec(firmware_spec("cli1"))
    info = ok_json(daemon, "define", path)
    assert (info["name"], info["state"], info["persistent"]) == ("cli1", "defined", True)
    uuid = info["uuid"]

    [listed] = ok_json(daemon, "list")
    assert (listed["name"], listed["uuid"], listed["state"], listed["memory"]) == ("cli1", uuid, "defined", 128 << 20)

    info = ok_json(daemon, "start", "cli1")
    assert info["state"] == "running" and info["pid"] > 0
    assert ok_json(daemon, "pause", "cli1")["state"] == "paused"
    assert ok_json(daemon, "info", "cli1")["state"] == "paused"
    assert ok_json(daemon, "resume", "cli1")["state"] == "running"
    assert ok_json(daemon, "reset", "cli1")["state"] == "running"

    info = ok_json(daemon, "info", "cli1")
    assert (info["uuid"], info["vcpus"], info["memory"]) == (uuid, 1, 128 << 20)
    assert info["console"].endswith("cli1.console")

    info = ok_json(daemon, "destroy", "cli1")
    assert info["state"] == "stopped" and info["pid"] is None
    assert ok(daemon, "undefine", "cli1") == "VM 'cli1' undefined\n"
    assert ok_json(daemon, "list") == []


def test_human_output_of_verbs_list_and_info(daemon, write_spec):
    assert ok(daemon, "define", write_spec(firmware_spec("cli2", memory={"size": "256MiB"}))).startswith(
        "VM 'cli2' defined with uuid ")
    assert ok(daemon, "start", "cli2", "--paused").startswith("VM 'cli2' started (state: paused")

    header, row = ok(daemon, "list").splitlines()
    assert header.split() == ["NAME", "STATE", "UUID", "VCPUS", "MEMORY", "PID", "UPTIME"]
    cols = row.split()
    assert cols[:2] == ["cli2", "paused"] and cols[3:5] == ["1", "256MiB"] and cols[5].isdigit()

    pairs = dict(line.split(None, 1) for line in ok(daemon, "info", "cli2").splitlines())
    assert pairs["name:"] == "cli2" and pairs["state:"] == "paused" and pairs["memory:"] == "256MiB"

    spec = yaml.safe_load(ok(daemon, "info", "cli2", "--spec"))
    assert spec["name"] == "cli2" and spec["memory"]["size"] == "256MiB"
    assert "spec" in ok_json(daemon, "info", "cli2", "--spec")

    assert ok(daemon, "destroy", "cli2").startswith("VM 'cli2' destroyed (state: stopped")


def test_create_from_stdin_is_transient_and_vanishes_when_destroyed(daemon):
    info = ok_json(daemon, "create", "-", "--paused", input=json.dumps(firmware_spec("cli3")))
    assert (info["state"], info["persistent"]) == ("paused", False)
    ok(daemon, "destroy", "cli3")
    assert ok_json(daemon, "list") == []


def test_shutdown_destroys_a_guest_that_ignores_acpi_after_the_timeout(daemon, write_spec):
    ok(daemon, "create", write_spec(firmware_spec("cli4")))  # SeaBIOS ignores the power button
    info = ok_json(daemon, "shutdown", "cli4", "--timeout", "0.3")
    assert info["state"] == "stopped"
    assert "did not shut down within 0.3s" in info["reason"]


def test_shutdown_no_wait_returns_while_shutting_down(daemon, write_spec):
    ok(daemon, "define", write_spec(firmware_spec("cli5")))
    ok(daemon, "start", "cli5")
    info = ok_json(daemon, "shutdown", "cli5", "--timeout", "30", "--no-wait")
    assert info["state"] == "shutting-down"
    ok(daemon, "destroy", "cli5")


def test_host_info(daemon):
    info = ok_json(daemon, "host-info")
    assert info["socket"] == daemon.socket and "version" in info["qemu"]
    text = ok(daemon, "host-info")
    pairs = dict(line.split(None, 1) for line in text.splitlines())
    assert pairs["socket:"] == daemon.socket and "qemu.version:" in pairs


# -- errors --------------------------------------------------------------------------

def test_unknown_vm_fails_with_one_line_and_status_1(daemon):
    line = fails(kvmctl(daemon, "start", "nope"), 1)
    assert line == "kvmctl: error: no VM named 'nope'"


def test_verb_in_the_wrong_state_fails_with_one_line(daemon, write_spec):
    ok(daemon, "define", write_spec(firmware_spec("cli6")))
    line = fails(kvmctl(daemon, "pause", "cli6"), 1)
    assert "cli6" in line and "defined" in line


def test_invalid_spec_lists_every_field_path(daemon, write_spec):
    path = write_spec(firmware_spec("cli7", disks=[{"path": "/x.img", "format": "vmdk"}], bogus=1))
    r = kvmctl(daemon, "define", path)
    assert r.returncode == 1 and r.stdout == "" and "Traceback" not in r.stderr
    first, *problems = r.stderr.splitlines()
    assert first == f"kvmctl: error: cannot define a VM from {path}: invalid spec (2 problems):"
    problems = sorted(p.strip() for p in problems)
    assert problems[0].startswith("bogus: ")
    assert problems[1].startswith("disks[0].format: ")
    assert ok_json(daemon, "list") == []


def test_missing_spec_file_is_one_line(daemon, tmp_path):
    line = fails(kvmctl(daemon, "define", str(tmp_path / "absent.yaml")), 2)
    assert line == f"kvmctl: error: cannot read spec file {tmp_path / 'absent.yaml'}: No such file or directory"


def test_spec_file_that_is_not_yaml_is_one_line(daemon, tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: [unclosed\nmemory: {\n")
    line = fails(kvmctl(daemon, "create", str(path)), 2)
    assert f"spec file {path} is not valid YAML/JSON (line " in line


def test_spec_file_that_is_not_a_mapping_is_one_line(daemon):
    line = fails(kvmctl(daemon, "define", "-", input="- a\n- b\n"), 2)
    assert "must hold a mapping" in line


def test_daemon_not_running_is_one_clear_line(tmpdir_short):
    sock = os.path.join(tmpdir_short, "kvmd.sock")
    r = subprocess.run([*KVMCTL, "list"], env=dict(os.environ, KVMD_SOCKET=sock),
                       capture_output=True, text=True, timeout=30)
    line = fails(r, 1)
    assert line.startswith(f"kvmctl: error: cannot connect to kvmd at {sock}: ")


def test_daemon_killed_is_one_clear_line(daemon):
    daemon.kill()
    line = fails(kvmctl(daemon, "list"), 1)
    assert f"cannot connect to kvmd at {daemon.socket}" in line


@pytest.mark.parametrize("args", [[], ["start"], ["frobnicate"], ["shutdown", "x", "--timeout", "soon"]])
def test_usage_errors_exit_2_with_one_line(daemon, args):
    fails(kvmctl(daemon, *args), 2)


# -- events --------------------------------------------------------------------------

def test_events_prints_state_changes_until_terminated(daemon, write_spec, spawn):
    ok(daemon, "define", write_spec(firmware_spec("cli8")))
    p = spawn(daemon, "events")
    err = Output(p.stderr)
    err.expect("watching events")  # subscribed: nothing can be missed from here on
    out = Output(p.stdout)
    ok(daemon, "start", "cli8")
    ok(daemon, "pause", "cli8")
    out.expect("cli8  running -> paused")
    lines = out.text().splitlines()
    assert any("cli8  defined -> starting" in ln for ln in lines)
    assert any("cli8  starting -> running" in ln for ln in lines)
    p.send_signal(signal.SIGTERM)
    assert p.wait(timeout=10) == 0
    assert "Traceback" not in err.text()


def test_events_json_with_count_exits_by_itself(daemon, write_spec, spawn):
    p = spawn(daemon, "events", "--json", "--count", "2")
    Output(p.stderr).expect("watching events")
    out = Output(p.stdout)
    ok(daemon, "create", write_spec(firmware_spec("cli9")))
    assert p.wait(timeout=30) == 0
    events = [json.loads(ln) for ln in out.text().splitlines()]
    assert [(e["vm"], e["previous"], e["state"]) for e in events] == [
        ("cli9", "defined", "starting"), ("cli9", "starting", "running")]


def test_events_reports_a_daemon_that_goes_away(daemon, spawn):
    p = spawn(daemon, "events")
    err = Output(p.stderr)
    err.expect("watching events")
    daemon.kill()
    assert p.wait(timeout=10) == 1
    err.expect("kvmctl: error: connection to kvmd lost")


# -- console -------------------------------------------------------------------------

def test_console_of_a_stopped_vm_is_one_line(daemon, write_spec):
    ok(daemon, "define", write_spec(firmware_spec("cli10")))
    line = fails(kvmctl(daemon, "console", "cli10"), 1)
    assert "no console" in line


def test_console_on_a_terminal_is_raw_and_ctrl_bracket_detaches(daemon, write_spec, spawn):
    ok(daemon, "create", write_spec(firmware_spec("cli11")))
    master, slave = pty.openpty()
    try:
        before = termios.tcgetattr(slave)
        p = spawn(daemon, "console", "cli11", stdin=slave, stdout=slave, stderr=slave)
        out = Output(master)
        out.expect("Connected to VM 'cli11' (escape character is ^])")
        deadline = time.monotonic() + 10
        while termios.tcgetattr(slave)[3] & termios.ICANON:  # wait for raw mode
            assert time.monotonic() < deadline, "terminal never went raw"
            time.sleep(0.01)
        os.write(master, b"\x1d")
        assert p.wait(timeout=10) == 0
        out.expect("Disconnected")
        assert termios.tcgetattr(slave) == before
    finally:
        os.close(slave)
        os.close(master)


@pytest.mark.slow
def test_console_pipe_mode_runs_a_command_in_the_real_guest(daemon, guest, write_spec, spawn):
    ok(daemon, "create", write_spec(guest_spec(guest, "cliguest")))
    p = spawn(daemon, "console", "cliguest", stdin=subprocess.PIPE, stderr=subprocess.STDOUT)
    out = Output(p.stdout)
    ready = out.expect("KVMD-GUEST-READY", timeout=90)
    out.expect("kvmd-guest# ", after=ready, timeout=30)
    assert p.stdin is not None
    p.stdin.write(b"echo hi-$((6*7))\n")
    p.stdin.flush()
    out.expect("hi-42", timeout=30)
    p.stdin.close()  # EOF: kvmctl exits once the guest has been quiet for --linger
    assert p.wait(timeout=30) == 0
    assert "Traceback" not in out.text()
