"""The example hooks (hooks/examples/) run through the real runner on both backends, and
their effect is checked on the running QEMU over QMP — not just in the XML.

- libvirt backend: the hooked domain XML goes to a private libvirtd (`createXML`); QEMU is
  asked through `libvirt_qemu.qemuMonitorCommand`.
- kvmd backend: the domain XML becomes a kvmd spec (compat), the hooks see the XML compat
  makes of that spec, their result becomes the spec kvmd starts
  (`hooks.backends.run_domxml_hooks_on_spec`, what the vdsm endpoint calls); QEMU is asked
  through a second QMP monitor (tests/support/sideqmp.py) passed in the XML's
  <qemu:commandline>.

Firmware-only q35 guests under TCG: no guest OS is needed. Every domain/VM a test starts
is destroyed in a finalizer (and the fixtures kill whatever is left).
"""

from __future__ import annotations

import json
import os
import uuid

import pytest

from hooks.backends import HookConversionError, run_domxml_hooks_on_spec
from hooks.runner import HookConfig, HookError, run_hooks
from tests.support.libvirt_fixture import libvirtd  # noqa: F401  (the fixture)
from tests.support.sideqmp import SideQMP, side_qmp_args

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLES = os.path.join(ROOT, "hooks", "examples")
QEMU = "/usr/bin/qemu-system-x86_64"


def _domxml_missing() -> str | None:
    try:
        from compat.domxml import spec_to_xml, xml_to_spec  # noqa: F401
    except ImportError as e:
        return f"compat.domxml (issue 6) is not importable yet: {e}"
    return None


needs_domxml = pytest.mark.skipif(_domxml_missing() is not None, reason=str(_domxml_missing()))
libvirt_only = pytest.mark.libvirt


def domain_xml(name: str, vm_id: str, disks: list[str], qemu_args: list[str] = ()) -> str:
    disk_xml = "".join(
        f"<disk type='file' device='disk'><driver name='qemu' type='raw'/>"
        f"<source file='{path}'/><target dev='vd{chr(ord('a') + i)}' bus='virtio'/></disk>"
        for i, path in enumerate(disks))
    cmdline = ""
    if qemu_args:
        cmdline = ("<qemu:commandline>" + "".join(f"<qemu:arg value='{a}'/>" for a in qemu_args)
                   + "</qemu:commandline>")
    return f"""<domain type='qemu' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>
  <name>{name}</name>
  <uuid>{vm_id}</uuid>
  <memory unit='MiB'>128</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='q35'>hvm</type></os>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>{QEMU}</emulator>
    {disk_xml}
    <video><model type='none'/></video>
    <memballoon model='none'/>
  </devices>
  {cmdline}
</domain>
"""


def raw_image(folder: str, name: str) -> str:
    path = os.path.join(folder, f"{name}.raw")
    with open(path, "wb") as f:
        f.truncate(4 << 20)
    return path


def proc_cmdline(pid: int) -> list[str]:
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return [a.decode() for a in f.read().split(b"\0") if a]


def cache_of(blocks: list[dict], path: str) -> dict:
    """query-block's cache flags of the drive whose image is `path`."""
    for b in blocks:
        inserted = b.get("inserted") or {}
        if inserted.get("file") == path:
            return inserted["cache"]
    raise AssertionError(f"no drive for {path} in {blocks}")


# -- the two backends ------------------------------------------------------------------


class OnLibvirt:
    """Run before_vm_start over domain XML, then createXML it in the private libvirtd."""

    def __init__(self, lv):
        self.lv = lv
        self.conn = lv.connect()
        self.config = HookConfig(root=EXAMPLES, backend="libvirt", uri=lv.uri, timeout=30)
        self.doms: list = []

    def start(self, xml: str, vm_id: str, custom: dict) -> None:
        result = run_hooks("before_vm_start", xml, config=self.config, vm_id=vm_id, custom=custom)
        self.dom = self.conn.createXML(result.data, 0)
        self.doms.append(self.dom)

    def qmp(self, command: str, **arguments) -> object:
        import libvirt_qemu

        msg = {"execute": command, **({"arguments": arguments} if arguments else {})}
        return json.loads(libvirt_qemu.qemuMonitorCommand(self.dom, json.dumps(msg), 0))["return"]

    def pid(self) -> int:
        (pid,) = self.lv.qemu_pids()
        return pid

    def running_xml(self) -> str:
        return self.dom.XMLDesc(0)

    def close(self) -> None:
        for dom in self.doms:
            try:
                dom.destroy()
            except Exception:
                pass


class OnKvmd:
    """Convert the domain XML to a kvmd spec, run before_vm_start over it as the vdsm
    endpoint does, then vm.create the result; a side QMP monitor sees QEMU's view."""

    def __init__(self, client, folder: str):
        self.client = client
        self.qmp_path = os.path.join(folder, "side.qmp")
        self.config = HookConfig(root=EXAMPLES, backend="kvmd", timeout=30)
        self.names: list[str] = []
        self.side: SideQMP | None = None

    def start(self, xml: str, vm_id: str, custom: dict) -> None:
        from compat.domxml import xml_to_spec

        spec = xml_to_spec(xml)
        hooked = run_domxml_hooks_on_spec("before_vm_start", spec, config=self.config,
                                          vm_id=vm_id, custom=custom)
        self.info = self.client.call("vm.create", spec=hooked)
        self.names.append(self.info["name"])
        self.side = SideQMP(self.qmp_path)

    def qmp(self, command: str, **arguments) -> object:
        assert self.side
        return self.side.cmd(command, **arguments)

    def pid(self) -> int:
        return self.info["pid"]

    def running_xml(self) -> str:
        from compat.domxml import spec_to_xml

        return spec_to_xml(self.client.call("vm.info", name=self.names[-1], spec=True)["spec"])

    def close(self) -> None:
        if self.side:
            self.side.close()
        for name in self.names:
            try:
                self.client.call("vm.destroy", name=name)
            except Exception:
                pass


@pytest.fixture
def on_libvirt(libvirtd):  # noqa: F811
    backend = OnLibvirt(libvirtd)
    yield backend
    backend.close()


@pytest.fixture
def on_kvmd(client, tmpdir_short):
    backend = OnKvmd(client, tmpdir_short)
    yield backend
    backend.close()


def xml_for(backend, name: str, vm_id: str, disks: list[str]) -> str:
    args = side_qmp_args(backend.qmp_path) if isinstance(backend, OnKvmd) else []
    return domain_xml(name, vm_id, disks, args)


# -- qemucmdline -----------------------------------------------------------------------


def check_qemucmdline(backend, folder: str) -> None:
    vm_id = str(uuid.uuid4())
    extra = ["-object", "memory-backend-ram,id=hookmem,size=4M"]
    backend.start(xml_for(backend, "hk-cmdline", vm_id, []), vm_id,
                  {"qemu_cmdline": json.dumps(extra)})
    objects = [o["name"] for o in backend.qmp("qom-list", path="/objects")]
    assert "hookmem" in objects  # QEMU has the object the hook asked for
    size = backend.qmp("qom-get", path="/objects/hookmem", property="size")
    assert size == 4 << 20
    argv = proc_cmdline(backend.pid())
    assert "memory-backend-ram,id=hookmem,size=4M" in argv


@libvirt_only
def test_qemucmdline_example_adds_qemu_arguments_on_libvirt(on_libvirt, tmp_path):
    check_qemucmdline(on_libvirt, str(tmp_path))


@needs_domxml
def test_qemucmdline_example_adds_qemu_arguments_on_kvmd(on_kvmd, tmpdir_short):
    check_qemucmdline(on_kvmd, tmpdir_short)


# -- diskcache -------------------------------------------------------------------------


def check_diskcache(backend, folder: str) -> None:
    vm_id = str(uuid.uuid4())
    vda, vdb, vdc = (raw_image(folder, n) for n in ("a", "b", "c"))
    backend.start(xml_for(backend, "hk-cache", vm_id, [vda, vdb, vdc]), vm_id,
                  {"diskcache": "vda:none,vdb:unsafe"})
    blocks = backend.qmp("query-block")
    assert cache_of(blocks, vda) == {"writeback": True, "direct": True, "no-flush": False}
    assert cache_of(blocks, vdb) == {"writeback": True, "direct": False, "no-flush": True}
    assert cache_of(blocks, vdc)["direct"] is False and cache_of(blocks, vdc)["no-flush"] is False


@libvirt_only
def test_diskcache_example_sets_the_cache_mode_qemu_uses_on_libvirt(on_libvirt, tmp_path):
    check_diskcache(on_libvirt, str(tmp_path))


@needs_domxml
def test_diskcache_example_sets_the_cache_mode_qemu_uses_on_kvmd(on_kvmd, tmpdir_short):
    check_diskcache(on_kvmd, tmpdir_short)


def check_diskcache_refuses(backend, folder: str) -> None:
    vm_id = str(uuid.uuid4())
    with pytest.raises(HookError) as e:
        backend.start(xml_for(backend, "hk-bad", vm_id, [raw_image(folder, "a")]), vm_id,
                      {"diskcache": "vdz:none"})
    assert e.value.script == "50_diskcache" and e.value.returncode == 2
    assert e.value.reason == "diskcache: no disk with target vdz"


@libvirt_only
def test_a_failing_example_fails_the_start_with_its_message_on_libvirt(on_libvirt, tmp_path):
    check_diskcache_refuses(on_libvirt, str(tmp_path))
    assert on_libvirt.conn.listAllDomains(0) == []


@needs_domxml
def test_a_failing_example_fails_the_start_with_its_message_on_kvmd(on_kvmd, tmpdir_short, client):
    check_diskcache_refuses(on_kvmd, tmpdir_short)
    assert client.call("vm.list") == []


# -- libvirt_state: `import libvirt` in a hook -----------------------------------------


@libvirt_only
def test_libvirt_state_example_talks_to_libvirtd_through_libvirt_python(on_libvirt):
    vm_id = str(uuid.uuid4())
    on_libvirt.start(domain_xml("hk-state", vm_id, []), vm_id, {})
    result = run_hooks("after_vm_start", on_libvirt.running_xml(), config=on_libvirt.config,
                       vm_id=vm_id)
    (script,) = [s for s in result.scripts if s.script == "50_libvirt_state"]
    assert script.returncode == 0, script.stderr
    assert script.stderr == "libvirt_state: hk-state is running with 1 vCPU(s)\n"


@needs_domxml
def test_libvirt_state_example_talks_to_kvmd_through_the_compat_shim(on_kvmd, daemon):
    from compat.domxml import spec_to_xml

    vm_id = str(uuid.uuid4())
    on_kvmd.start(xml_for(on_kvmd, "hk-state", vm_id, []), vm_id, {})
    running = on_kvmd.client.call("vm.info", name="hk-state", spec=True)["spec"]
    config = HookConfig(root=EXAMPLES, backend="kvmd", kvmd_socket=daemon.socket, timeout=30)
    result = run_hooks("after_vm_start", spec_to_xml(running), config=config, vm_id=vm_id)
    (script,) = [s for s in result.scripts if s.script == "50_libvirt_state"]
    assert script.returncode == 0, script.stderr
    assert script.stderr == "libvirt_state: hk-state is running with 1 vCPU(s)\n"


# -- the kvmd backend's conversion contract --------------------------------------------


@needs_domxml
def test_an_edit_kvmd_cannot_express_fails_naming_the_element_and_the_hook(tmp_path):
    from compat.domxml import xml_to_spec

    folder = tmp_path / "before_vm_start"
    folder.mkdir()
    hook = folder / "60_hugepages"
    hook.write_text("#!/usr/bin/env python3\nimport hooking\n"
                    "d = hooking.read_domxml()\n"
                    "mb = d.createElement('memoryBacking'); mb.appendChild(d.createElement('hugepages'))\n"
                    "d.documentElement.appendChild(mb)\nhooking.write_domxml(d)\n")
    hook.chmod(0o755)
    spec = xml_to_spec(domain_xml("hk-conv", str(uuid.uuid4()), []))
    with pytest.raises(HookConversionError) as e:
        run_domxml_hooks_on_spec("before_vm_start", spec,
                                 config=HookConfig(root=str(tmp_path), backend="kvmd"))
    assert e.value.writers == ["60_hugepages"]
    assert "memoryBacking" in e.value.reason and "60_hugepages" in e.value.reason


@needs_domxml
def test_without_edits_the_spec_is_handed_back_unchanged(tmp_path):
    from compat.domxml import xml_to_spec

    folder = tmp_path / "before_vm_start"
    folder.mkdir()
    hook = folder / "10_reads_only"
    hook.write_text("#!/bin/sh\ngrep -q '<domain' \"$_hook_domxml\"\n")
    hook.chmod(0o755)
    spec = xml_to_spec(domain_xml("hk-same", str(uuid.uuid4()), []))
    seen = []
    out = run_domxml_hooks_on_spec("before_vm_start", spec, on_result=seen.append,
                                   config=HookConfig(root=str(tmp_path), backend="kvmd"))
    assert out is spec and [s.returncode for s in seen[0].scripts] == [0]
