"""kvmctl's output formatting: sizes, durations, tables, key/value lines, events, errors."""

from __future__ import annotations

import datetime
import json

import pytest
import yaml

from kvmd.cli import output

INFO = {
    "name": "web1", "uuid": "1e2ef40f-e34e-440a-9b67-1e2e71f08a69", "state": "running",
    "reason": "booted", "persistent": True, "vcpus": 2, "memory": 256 << 20, "pid": 4242,
    "startedAt": 1_700_000_000.5, "uptime": 427.2, "console": "/run/kvmd/web1.console",
    "consoleLog": "/var/lib/kvmd/logs/web1.console.log", "guestAgent": None,
    "graphics": [{"type": "vnc", "host": "127.0.0.1", "port": 5900}],
    "log": "/var/lib/kvmd/logs/web1.log",
}


@pytest.mark.parametrize("nbytes, text", [
    (None, "-"), (0, "0B"), (512, "512B"), (1024, "1KiB"), (256 << 20, "256MiB"),
    (128 << 20, "128MiB"), (3 << 30, "3GiB"), (1536 << 20, "1.5GiB"), (2 << 40, "2TiB"),
    (1536, "1.5KiB"),
])
def test_human_size_uses_binary_units(nbytes, text):
    assert output.human_size(nbytes) == text


@pytest.mark.parametrize("seconds, text", [
    (None, "-"), (0, "0s"), (7.9, "7s"), (59, "59s"), (60, "1m00s"), (427, "7m07s"),
    (3600, "1h00m"), (11040, "3h04m"), (86400, "1d00h"), (183600, "2d03h"), (-3, "0s"),
])
def test_human_duration_is_short(seconds, text):
    assert output.human_duration(seconds) == text


def test_human_time_is_local_time_with_optional_millis():
    ts = datetime.datetime(2025, 6, 1, 12, 0, 0, 123000).timestamp()
    assert output.human_time(ts) == "2025-06-01 12:00:00"
    assert output.human_time(ts, millis=True) == "2025-06-01 12:00:00.123"
    assert output.human_time(None) == "-"


@pytest.mark.parametrize("value, text", [
    (None, "-"), ("", "-"), (True, "yes"), (False, "no"), ([], "-"), (["kvm", "tcg"], "kvm, tcg"),
    ({"a": 1}, '{"a":1}'), (3, "3"),
])
def test_scalar_renders_missing_and_compound_values(value, text):
    assert output.scalar(value) == text


def test_table_pads_columns_and_strips_trailing_blanks():
    text = output.table(["NAME", "PID"], [["a", 1], ["longer-name", None]])
    assert text.splitlines() == [
        "NAME         PID",
        "a            1",
        "longer-name  -",
    ]


def test_table_without_rows_is_just_the_header():
    assert output.table(["NAME", "STATE"], []) == "NAME  STATE"


def test_table_rejects_rows_of_the_wrong_width():
    with pytest.raises(ValueError):
        output.table(["A", "B"], [["only-one"]])


def test_vm_table_shows_human_memory_pid_and_uptime():
    stopped = dict(INFO, name="db", state="stopped", pid=None, uptime=None, memory=1 << 30)
    lines = output.vm_table([INFO, stopped]).splitlines()
    assert lines[0].split() == list(output.VM_COLUMNS)
    assert lines[1].split() == ["web1", "running", INFO["uuid"], "2", "256MiB", "4242", "7m07s"]
    assert lines[2].split() == ["db", "stopped", INFO["uuid"], "2", "1GiB", "-", "-"]
    # columns line up: every row has the STATE column at the same offset
    assert {line.index(word) for line, word in zip(lines, ["STATE", "running", "stopped"], strict=True)} \
        == {lines[0].index("STATE")}


def test_vm_info_is_aligned_key_value_lines_in_human_units():
    lines = output.vm_info(dict(INFO, spec={"name": "web1"})).splitlines()
    pairs = dict(line.split(None, 1) for line in lines)
    assert pairs["name:"] == "web1"
    assert pairs["memory:"] == "256MiB"
    assert pairs["uptime:"] == "7m07s"
    assert pairs["persistent:"] == "yes"
    assert pairs["guestAgent:"] == "-"
    assert pairs["graphics:"] == "vnc 127.0.0.1:5900"
    assert pairs["startedAt:"] == output.human_time(INFO["startedAt"])
    assert "spec:" not in pairs
    assert len({line.index(line.split(None, 1)[1]) for line in lines}) == 1


def test_host_info_flattens_nested_mappings():
    info = {"hostname": "h", "accel": ["kvm", "tcg"], "memory": 8 << 30,
            "qemu": {"version": "7.2.0", "sandbox": True},
            "quotas": {"maxVms": None, "maxMemory": 4 << 30},
            "loadProblems": [{"path": "/x.yaml", "reason": "bad"}], "uptime": 65}
    lines = output.host_info(info).splitlines()
    pairs = {k.rstrip(":"): v for k, v in (line.split(None, 1) for line in lines)}
    assert pairs == {
        "hostname": "h", "accel": "kvm, tcg", "memory": "8GiB", "qemu.version": "7.2.0",
        "qemu.sandbox": "yes", "quotas.maxVms": "-", "quotas.maxMemory": "4GiB",
        "loadProblems[0].path": "/x.yaml", "loadProblems[0].reason": "bad", "uptime": "1m05s",
    }


def test_event_line_shows_time_vm_transition_and_reason():
    ts = datetime.datetime(2025, 6, 1, 12, 0, 0, 5000).timestamp()
    ev = {"type": "state", "vm": "web1", "uuid": "u", "state": "paused", "previous": "running",
          "reason": "paused by user", "time": ts}
    assert output.event_line(ev) == "2025-06-01 12:00:00.005  web1  running -> paused  (paused by user)"


def test_event_line_omits_a_reason_that_only_repeats_the_state():
    ev = {"type": "state", "vm": "a", "state": "starting", "previous": "defined",
          "reason": "starting", "time": None}
    assert output.event_line(ev) == "-  a  defined -> starting"


def test_event_line_shows_other_event_types_as_json():
    line = output.event_line({"type": "device", "vm": "a", "time": None, "id": "disk1"})
    assert line == '-  a  device  {"id":"disk1"}'


def test_spec_problems_lists_path_and_reason():
    data = {"errors": [{"path": "disks[0].format", "reason": "must be one of qcow2, raw"},
                       {"path": "", "reason": "document problem"}]}
    assert output.spec_problems(data) == ["disks[0].format: must be one of qcow2, raw", "document problem"]
    assert output.spec_problems(None) == []
    assert output.spec_problems({"errors": "weird"}) == []


def test_json_and_yaml_round_trip():
    assert json.loads(output.to_json(INFO)) == INFO
    spec = {"name": "a", "memory": {"size": "256MiB"}, "disks": []}
    text = output.to_yaml(spec)
    assert yaml.safe_load(text) == spec
    assert text.splitlines()[0] == "name: a"  # key order kept
