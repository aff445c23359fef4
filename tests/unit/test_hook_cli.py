"""`python -m hooks`: a hook author's offline run of one hook point, on both backends (the
kvmd backend converts with compat's pure converters: no daemon needed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def hooks_cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hooks", *args], cwd=ROOT, input=stdin,
                          capture_output=True, text=True, timeout=60)


def script(root, point, name, body):
    folder = root / point
    folder.mkdir(exist_ok=True)
    path = folder / name
    path.write_text(body)
    path.chmod(0o755)


def test_run_prints_the_resulting_xml_and_reports_each_script_on_stderr(tmp_path):
    script(tmp_path, "before_vm_start", "10_add", "#!/bin/sh\n"
           'sed -i "s|</domain>|<title>$title</title></domain>|" "$_hook_domxml"\necho edited >&2\n')
    dom = tmp_path / "dom.xml"
    dom.write_text("<domain><name>a</name></domain>")
    proc = hooks_cli("run", "before_vm_start", "--hooks-dir", str(tmp_path), "--domxml", str(dom),
                     "-e", "title=hello", "--backend", "libvirt")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "<domain><name>a</name><title>hello</title></domain>"
    assert "before_vm_start/10_add: exit code 0" in proc.stderr
    assert "changed the data" in proc.stderr and "    | edited" in proc.stderr


def test_run_exits_1_with_the_reason_when_the_point_fails(tmp_path):
    script(tmp_path, "before_vm_start", "10_no", "#!/bin/sh\necho 'no way' >&2\nexit 2\n")
    proc = hooks_cli("run", "before_vm_start", "--hooks-dir", str(tmp_path), "--domxml", "-",
                     "--backend", "libvirt", stdin="<domain/>")
    assert proc.returncode == 1 and proc.stdout == ""
    assert "10_no: exit code 2" in proc.stderr
    assert "FAILED, the operation would fail with: no way" in proc.stderr


def test_run_reports_ignored_failures_without_failing(tmp_path):
    script(tmp_path, "after_vm_start", "10_no", "#!/bin/sh\nexit 1\n")
    proc = hooks_cli("run", "after_vm_start", "--hooks-dir", str(tmp_path), "--domxml", "-",
                     "--backend", "libvirt", stdin="<domain/>")
    assert proc.returncode == 0 and proc.stdout.strip() == "<domain/>"
    assert "VDSM ignores failures at this point" in proc.stderr


def test_run_handles_json_points_and_timeouts(tmp_path):
    script(tmp_path, "after_get_caps", "10", "#!/bin/sh\necho '{\"x\": 1}' > \"$_hook_json\"\n")
    proc = hooks_cli("run", "after_get_caps", "--hooks-dir", str(tmp_path))
    assert proc.returncode == 0 and json.loads(proc.stdout) == {"x": 1}
    script(tmp_path, "before_get_caps", "10_hangs", "#!/bin/sh\nsleep 60\n")
    proc = hooks_cli("run", "before_get_caps", "--hooks-dir", str(tmp_path), "--timeout", "0.3")
    assert proc.returncode == 1 and "timed out after" in proc.stderr


def test_bad_input_exits_2_with_one_line(tmp_path):
    proc = hooks_cli("run", "before_vm_strat", "--hooks-dir", str(tmp_path))
    assert proc.returncode == 2 and "did you mean before_vm_start" in proc.stderr
    proc = hooks_cli("run", "before_disk_hotplug", "--hooks-dir", str(tmp_path), "--backend", "libvirt")
    assert proc.returncode == 2 and "--domxml" in proc.stderr
    proc = hooks_cli("run", "before_vm_start", "--hooks-dir", str(tmp_path), "-e", "novalue",
                     "--domxml", "-", stdin="<domain/>", )
    assert proc.returncode != 0 and "KEY=VALUE" in proc.stderr


def test_points_and_list(tmp_path):
    proc = hooks_cli("points")
    assert proc.returncode == 0 and len(proc.stdout.splitlines()) == 59
    assert any(line.split()[:2] == ["after_vm_start", "domain"] and "ignored" in line
               for line in proc.stdout.splitlines())
    script(tmp_path, "before_vm_start", "50_a", "#!/bin/sh\n")
    script(tmp_path, "before_vm_strat", "50_typo", "#!/bin/sh\n")
    proc = hooks_cli("list", "--hooks-dir", str(tmp_path))
    assert "before_vm_start:\n    50_a" in proc.stdout
    assert "before_vm_strat:   (not a VDSM hook point: never runs)" in proc.stdout


EXAMPLES = os.path.join(ROOT, "hooks", "examples")
DOMAIN = """<domain type='qemu'>
  <name>cli</name><uuid>3a7f9a52-5b61-4f0e-9f55-2d6f1c1c0a11</uuid>
  <memory unit='MiB'>128</memory><vcpu>1</vcpu>
  <os><type arch='x86_64' machine='q35'>hvm</type></os>
  <devices><emulator>/usr/bin/qemu-system-x86_64</emulator>
    <disk type='file' device='disk'><driver name='qemu' type='raw'/>
      <source file='/images/cli.raw'/><target dev='vda' bus='virtio'/></disk>
  </devices>
</domain>"""


def test_kvmd_backend_runs_the_examples_over_the_xml_made_from_the_spec(tmp_path):
    dom = tmp_path / "dom.xml"
    dom.write_text(DOMAIN)
    args = ["run", "before_vm_start", "--hooks-dir", EXAMPLES, "--domxml", str(dom),
            "-e", 'qemu_cmdline=["-smbios", "type=1,serial=CLI"]', "-e", "diskcache=none"]
    proc = hooks_cli(*args)
    assert proc.returncode == 0, proc.stderr
    assert '<qemu:arg value="type=1,serial=CLI"/>' in proc.stdout
    assert 'cache="none"' in proc.stdout
    assert "50_diskcache: exit code 0" in proc.stderr and "| diskcache: vda: cache=none" in proc.stderr
    spec = json.loads(hooks_cli(*args, "--print-spec").stdout)
    assert spec["qemuArgs"] == ["-smbios", "type=1,serial=CLI"]
    assert spec["disks"][0]["cache"] == "none"


def test_kvmd_backend_reports_an_edit_kvmd_cannot_run(tmp_path):
    script(tmp_path, "before_vm_start", "60_hugepages", "#!/bin/sh\n"
           'sed -i "s|</domain>|<memoryBacking><hugepages/></memoryBacking></domain>|" "$_hook_domxml"\n')
    proc = hooks_cli("run", "before_vm_start", "--hooks-dir", str(tmp_path), "--domxml", "-",
                     stdin=DOMAIN)
    assert proc.returncode == 1 and proc.stdout == ""
    assert "written by 60_hugepages cannot be run by kvmd" in proc.stderr
    assert "/domain/memoryBacking" in proc.stderr


def test_kvmd_backend_refuses_input_kvmd_cannot_run_before_any_hook(tmp_path):
    proc = hooks_cli("run", "before_vm_start", "--hooks-dir", str(tmp_path), "--domxml", "-",
                     stdin=DOMAIN.replace("</domain>", "<memoryBacking><hugepages/></memoryBacking></domain>"))
    assert proc.returncode == 2 and "kvmd cannot run this domain XML" in proc.stderr
