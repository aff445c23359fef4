"""The `hooking` module hook scripts import: VDSM's helpers, names and behaviour, importable
both ways VDSM's is, with nothing but the standard library."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

import pytest

from hooks import hooking
from hooks.runner import BACKEND_PYLIB, PYLIB, HookConfig, run_hooks

SYSTEM_PY = "/usr/bin/python3"
needs_system_python = pytest.mark.skipif(not os.path.exists(SYSTEM_PY), reason="no /usr/bin/python3")


@pytest.fixture
def domxml_file(tmp_path, monkeypatch):
    path = tmp_path / "dom.xml"
    path.write_text("<domain type='kvm'><name>vm1</name><description>é</description></domain>")
    monkeypatch.setenv("_hook_domxml", str(path))
    return path


def test_read_domxml_gives_a_minidom_document_and_write_domxml_writes_it_back(domxml_file):
    doc = hooking.read_domxml()
    assert doc.documentElement.tagName == "domain"
    assert doc.getElementsByTagName("description")[0].firstChild.data == "é"
    doc.getElementsByTagName("name")[0].firstChild.data = "vm2"
    hooking.write_domxml(doc)
    raw = domxml_file.read_bytes()
    assert raw.startswith(b'<?xml version="1.0" encoding="utf-8"?>')
    assert b"<name>vm2</name>" in raw and "é".encode() in raw


def test_read_json_and_write_json_use_the_hook_json_file(tmp_path, monkeypatch):
    path = tmp_path / "data.json"
    path.write_text('{"a": [1, 2]}')
    monkeypatch.setenv("_hook_json", str(path))
    data = hooking.read_json()
    data["b"] = True
    hooking.write_json(data)
    assert json.loads(path.read_text()) == {"a": [1, 2], "b": True}


def test_log_writes_a_line_to_stderr(capsys):
    hooking.log("a message")
    assert capsys.readouterr().err == "a message\n"


def test_exit_hook_prints_to_stderr_and_exits_2_by_default(capsys):
    with pytest.raises(SystemExit) as e:
        hooking.exit_hook("cannot do it")
    assert e.value.code == 2 and capsys.readouterr().err == "cannot do it\n"
    with pytest.raises(SystemExit) as e:
        hooking.exit_hook("soft failure", return_code=1)
    assert e.value.code == 1


@pytest.mark.parametrize("value, expected", [
    (True, True), (False, False), (None, False), ("true", True), ("True", True), ("TRUE", True),
    ("1", True), ("42", True), ("0", False), ("false", False), ("no", False), ("yes", False),
    ("", False), ("garbage", False), (1, False),  # VDSM: int has no .lower() -> False
])
def test_tobool_is_vdsms_lenient_boolean(value, expected):
    assert hooking.tobool(value) is expected


def test_execcmd_returns_the_exit_code_and_output_lines_as_bytes():
    rc, out, err = hooking.execCmd(["sh", "-c", "echo one; echo two; echo oops >&2; exit 3"])
    assert (rc, out, err) == (3, [b"one", b"two"], [b"oops"])


def test_execcmd_feeds_data_to_stdin_and_can_return_raw_output(tmp_path):
    rc, out, err = hooking.execCmd(["cat"], data=b"a\nb\n", raw=True)
    assert (rc, out, err) == (0, b"a\nb\n", b"")
    rc, out, _ = hooking.execCmd(["pwd"], cwd=str(tmp_path), env={"PATH": os.environ["PATH"]})
    assert out == [str(tmp_path).encode()]


def test_execcmd_wraps_nice_and_setsid(caplog):
    caplog.set_level(logging.DEBUG)
    rc, out, _ = hooking.execCmd(["sh", "-c", "nice; ps -o sid= -p $$; echo $$"], nice=5, setsid=True)
    assert rc == 0
    niceness, sid, pid = (line.strip() for line in out)
    assert int(niceness) >= 5 and sid == pid  # its own session


def test_execcmd_raises_oserror_when_the_command_cannot_start():
    with pytest.raises(OSError):
        hooking.execCmd(["/nonexistent/binary"])


def test_launch_flags_round_trip_through_a_per_vm_file(tmp_path, monkeypatch):
    monkeypatch.setenv("KVMD_HOOKS_RUN_DIR", str(tmp_path))
    vm = "c1f4b2d0-0000-4000-8000-000000000001"
    assert hooking.load_vm_launch_flags_from_file(vm) == 0  # VIR_DOMAIN_NONE
    hooking.dump_vm_launch_flags_to_file(vm, 1)  # VIR_DOMAIN_START_PAUSED
    assert (tmp_path / vm / "launchflags").read_text() == "1"
    assert hooking.load_vm_launch_flags_from_file(vm) == 1
    hooking.remove_vm_launch_flags_file(vm)
    assert hooking.load_vm_launch_flags_from_file(vm) == 0
    with pytest.raises(ValueError):
        hooking.dump_vm_launch_flags_to_file("../escape", 1)


def test_vdsm_hook_hooking_is_the_same_module_in_process():
    from vdsm.hook import hooking as vdsm_hooking

    for name in hooking.__all__:
        assert getattr(vdsm_hooking, name) is getattr(hooking, name)


@needs_system_python
def test_both_imports_work_under_a_bare_system_python_with_only_the_stdlib():
    # -S: no site-packages at all; PYTHONPATH is all the runner gives a script
    code = ("import hooking, sys; from vdsm.hook import hooking as h; "
            "assert h.read_domxml.__code__.co_code == hooking.read_domxml.__code__.co_code; "
            "print(sorted(hooking.__all__) == sorted(h.__all__))")
    proc = subprocess.run([SYSTEM_PY, "-S", "-c", code], env={"PYTHONPATH": PYLIB},
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "True"


@needs_system_python
def test_a_system_python_hook_that_imports_libvirt_gets_libvirt_python_on_the_libvirt_backend(tmp_path):
    pytest.importorskip("libvirt")
    out = tmp_path / "seen"
    folder = tmp_path / "before_vm_start"
    folder.mkdir()
    hook = folder / "10_uses_libvirt"
    hook.write_text(f"#!{SYSTEM_PY}\nimport libvirt, libvirt_qemu\n"
                    f"open({str(out)!r}, 'w').write(libvirt.__file__ + ' ' + str(libvirt.getVersion()) "
                    "+ ' ' + str(libvirt.VIR_DOMAIN_START_PAUSED))\n")
    hook.chmod(0o755)
    run_hooks("before_vm_start", "<domain/>", config=HookConfig(root=str(tmp_path), backend="libvirt"))
    path, version, paused = out.read_text().split()
    import libvirt

    assert path == libvirt.__file__ and int(version) > 0 and paused == "1"


def test_the_kvmd_backend_libvirt_module_is_the_compat_shim(tmp_path):
    shim = pytest.importorskip("compat.libvirt", reason="compat.libvirt is not written yet")
    out = tmp_path / "seen"
    folder = tmp_path / "before_vm_start"
    folder.mkdir()
    hook = folder / "10_uses_libvirt"
    hook.write_text(f"#!{sys.executable}\nimport libvirt\n"
                    f"open({str(out)!r}, 'w').write(libvirt.__name__ + ' ' + libvirt.__file__)\n")
    hook.chmod(0o755)
    run_hooks("before_vm_start", "<domain/>", config=HookConfig(root=str(tmp_path), backend="kvmd"))
    name, path = out.read_text().split()
    assert name == "compat.libvirt" and path == shim.__file__
    assert os.path.dirname(BACKEND_PYLIB["kvmd"]) == os.path.dirname(os.path.abspath(hooking.__file__))
