"""Daemon configuration: per-user defaults, the YAML file, KVMD_ACCEL, and bad keys."""

from __future__ import annotations

import os

import pytest

from kvmd import config
from kvmd.config import Config, Quotas, default_dirs, load
from kvmd.errors import SpecError


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for var in ("KVMD_ACCEL", "XDG_STATE_HOME", "XDG_RUNTIME_DIR"):
        monkeypatch.delenv(var, raising=False)


def write(tmp_path, text: str) -> str:
    path = tmp_path / "kvmd.yaml"
    path.write_text(text)
    return str(path)


def problems(path: str) -> list[tuple[str, str]]:
    with pytest.raises(SpecError) as exc:
        load(path)
    return exc.value.problems


# -- defaults -----------------------------------------------------------------------


def test_root_gets_the_system_instance():
    assert default_dirs(0) == ("/var/lib/kvmd", "/run/kvmd")


def test_a_user_gets_an_instance_under_the_xdg_directories(monkeypatch):
    monkeypatch.setenv("XDG_STATE_HOME", "/home/u/.state")
    monkeypatch.setenv("XDG_RUNTIME_DIR", "/run/user/1000")
    assert default_dirs(1000) == ("/home/u/.state/kvmd", "/run/user/1000/kvmd")


def test_a_user_without_xdg_variables_falls_back_to_home_and_tmp(monkeypatch):
    monkeypatch.setenv("HOME", "/home/u")
    assert default_dirs(1000) == ("/home/u/.local/state/kvmd", "/tmp/kvmd-1000/kvmd")


def test_empty_xdg_variables_count_as_unset(monkeypatch):
    monkeypatch.setenv("HOME", "/home/u")
    monkeypatch.setenv("XDG_STATE_HOME", "")
    monkeypatch.setenv("XDG_RUNTIME_DIR", "")
    assert default_dirs(1000) == ("/home/u/.local/state/kvmd", "/tmp/kvmd-1000/kvmd")


def test_config_defaults_as_root(monkeypatch):
    monkeypatch.setattr(config.os, "getuid", lambda: 0)
    cfg = load()
    assert (cfg.state_dir, cfg.run_dir) == ("/var/lib/kvmd", "/run/kvmd")
    assert cfg.socket_path == "/run/kvmd/kvmd.sock"
    assert cfg.qemu == "qemu-system-x86_64"
    assert cfg.accel == ["kvm", "tcg"]
    assert (cfg.shutdown_timeout, cfg.destroy_grace, cfg.qmp_connect_timeout) == (60.0, 5.0, 10.0)
    assert cfg.sandbox is True and cfg.run_as is None and cfg.socket_group is None
    assert cfg.quotas == Quotas()


def test_config_defaults_as_a_user(monkeypatch):
    monkeypatch.setattr(config.os, "getuid", lambda: 1000)
    monkeypatch.setenv("XDG_STATE_HOME", "/home/u/.local/state")
    monkeypatch.setenv("XDG_RUNTIME_DIR", "/run/user/1000")
    cfg = load()
    assert (cfg.state_dir, cfg.run_dir) == ("/home/u/.local/state/kvmd", "/run/user/1000/kvmd")
    assert cfg.socket_path == "/run/user/1000/kvmd/kvmd.sock"


def test_explicit_directories_win_over_defaults():
    cfg = Config(state_dir="/s", run_dir="/r")
    assert (cfg.state_dir, cfg.run_dir) == ("/s", "/r")


# -- YAML file ----------------------------------------------------------------------


def test_every_yaml_key_is_read(tmp_path):
    cfg = load(write(tmp_path, """
stateDir: /srv/kvmd
runDir: /run/k
qemu: /opt/qemu/bin/qemu-system-x86_64
accel: [tcg]
shutdownTimeout: 30
destroyGrace: 2
sandbox: false
runAs: kvmd-qemu
socketGroup: kvm
quotas:
  maxVms: 4
  maxVcpus: 16
  maxMemory: 8G
"""))
    assert cfg.state_dir == "/srv/kvmd" and cfg.run_dir == "/run/k"
    assert cfg.qemu == "/opt/qemu/bin/qemu-system-x86_64"
    assert cfg.accel == ["tcg"]
    assert (cfg.shutdown_timeout, cfg.destroy_grace) == (30, 2)
    assert cfg.sandbox is False and cfg.run_as == "kvmd-qemu" and cfg.socket_group == "kvm"
    assert cfg.quotas == Quotas(max_vms=4, max_vcpus=16, max_memory=8 << 30)


def test_an_empty_file_means_defaults(tmp_path):
    assert load(write(tmp_path, "")) == load()


def test_keys_left_out_keep_their_defaults(tmp_path):
    cfg = load(write(tmp_path, "qemu: /q\n"))
    assert cfg.qemu == "/q" and cfg.accel == ["kvm", "tcg"] and cfg.sandbox is True


def test_overrides_beat_the_file_and_none_overrides_are_ignored(tmp_path):
    cfg = load(write(tmp_path, "stateDir: /from-file\nrunDir: /run-file\n"), state_dir="/from-arg", run_dir=None)
    assert (cfg.state_dir, cfg.run_dir) == ("/from-arg", "/run-file")


@pytest.mark.parametrize("text,expected", [
    ("bogus: 1\n", [("bogus", "unknown field")]),
    ("quotas:\n  maxVMs: 3\n", [("quotas.maxVMs", "unknown field")]),
    ("shutdownTimeout: soon\n", [("shutdownTimeout", "must be a number")]),
    ("destroyGrace: -1\n", [("destroyGrace", "must be at least 0")]),
    ("sandbox: maybe\n", [("sandbox", "must be true or false")]),
    ("qemu: [a]\n", [("qemu", "must be a string")]),
    ("accel: tcg\n", [("accel", "must be a list of strings")]),
    ("quotas:\n  maxVms: -1\n  maxMemory: lots\n",
     [("quotas.maxVms", "must be at least 0"), ("quotas.maxMemory", "'lots' is not a size such as 512MiB or 2G")]),
    ("quotas: 5\n", [("quotas", "must be a mapping")]),
    ("- a\n", [("(document)", "must be a mapping")]),
])
def test_bad_keys_are_reported_by_path(tmp_path, text, expected):
    assert problems(write(tmp_path, text)) == expected


def test_all_bad_keys_are_reported_at_once(tmp_path):
    found = problems(write(tmp_path, "bogus: 1\nsandbox: 2\nquotas: {maxVcpus: x, extra: 1}\n"))
    assert sorted(found) == sorted([("bogus", "unknown field"), ("sandbox", "must be true or false"),
                                    ("quotas.maxVcpus", "must be an integer"), ("quotas.extra", "unknown field")])


def test_unknown_accelerator_in_the_file_is_refused(tmp_path):
    assert problems(write(tmp_path, "accel: [kvm, xen]\n")) == [("accel[1]", "must be one of kvm, tcg")]


def test_empty_accelerator_list_is_refused(tmp_path):
    assert problems(write(tmp_path, "accel: []\n")) == [("accel", "must be a list drawn from kvm, tcg")]


def test_yaml_syntax_error_names_the_file(tmp_path):
    path = write(tmp_path, "qemu: [\n")
    [(where, reason)] = problems(path)
    assert where == path and reason.startswith("not valid YAML")


def test_missing_config_file_is_an_os_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        load(str(tmp_path / "nope.yaml"))


# -- KVMD_ACCEL -----------------------------------------------------------------------


def test_kvmd_accel_overrides_the_defaults(monkeypatch):
    monkeypatch.setenv("KVMD_ACCEL", "tcg")
    assert load().accel == ["tcg"]


def test_kvmd_accel_overrides_the_file_and_keeps_its_order(tmp_path, monkeypatch):
    monkeypatch.setenv("KVMD_ACCEL", "tcg,kvm")
    assert load(write(tmp_path, "accel: [kvm]\n")).accel == ["tcg", "kvm"]


def test_empty_kvmd_accel_is_ignored(monkeypatch):
    monkeypatch.setenv("KVMD_ACCEL", "")
    assert load().accel == ["kvm", "tcg"]


def test_bad_kvmd_accel_is_refused(monkeypatch):
    monkeypatch.setenv("KVMD_ACCEL", "hvf")
    with pytest.raises(SpecError) as exc:
        load()
    assert exc.value.problems == [("accel", "must be a list drawn from kvm, tcg")]


def test_kvmd_accel_does_not_leak_between_tests():
    assert "KVMD_ACCEL" not in os.environ


def test_fractional_timeouts_are_accepted(tmp_path):
    cfg = load(write(tmp_path, "shutdownTimeout: 2.5\ndestroyGrace: 0.5\n"))
    assert (cfg.shutdown_timeout, cfg.destroy_grace) == (2.5, 0.5)
