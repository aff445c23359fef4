"""Each runnable corpus domain XML, converted and started by a real kvmd (TCG), has the
devices it names — checked from QEMU's side through a second QMP monitor
(`tests.support.sideqmp`: query-block, query-pci, qom-list/qom-get, query-vnc...),
never by reading kvmd's own argv. Disk images are made with qemu-img in the test's
private directory; a bridge and a tap are created for the network samples and removed
after. Every VM is destroyed and the daemon stopped by the fixtures, pass or fail.
"""

from __future__ import annotations

import os
import subprocess

import pytest

from compat.domxml import xml_to_spec
from tests.support.sideqmp import SideQMP, side_qmp_args
from tests.unit.test_domxml_roundtrip import corpus_text

RUNNABLE = ["minimal.xml", "memory.xml", "disks.xml", "disks-pc.xml", "nics-user.xml", "network.xml",
            "graphics.xml", "uefi.xml", "serial-file.xml", "topology.xml", "cpu-custom.xml",
            "ovirt-engine.xml", "ovirt-engine-full.xml"]
# not runnable here: disks-block.xml (needs LVM volumes), cpu-host*.xml (need KVM),
# graphics-fixed.xml (a fixed port on 0.0.0.0); direct-kernel.xml boots the test guest below


def make_images(d: str) -> None:
    for name, fmt in (("root.qcow2", "qcow2"), ("data.raw", "raw"), ("scsi.raw", "raw"),
                      ("ide.raw", "raw"), ("cd.iso", "raw")):
        subprocess.run(["qemu-img", "create", "-q", "-f", fmt, os.path.join(d, name), "16M"], check=True)


@pytest.fixture
def netdevs():
    """A bridge and an existing tap for the samples that name br0/ovirtmgmt/tap-kvmd0."""
    tag = os.getpid() % 10000
    bridge, tap = f"kvxbr{tag}", f"kvxtap{tag}"
    subprocess.run(["ip", "link", "add", bridge, "type", "bridge"], check=True)
    try:
        subprocess.run(["ip", "tuntap", "add", "dev", tap, "mode", "tap"], check=True)
        yield bridge, tap
    finally:
        subprocess.run(["ip", "link", "del", tap], check=False, capture_output=True)
        subprocess.run(["ip", "link", "del", bridge], check=False, capture_output=True)


def runnable(name: str, images: str, bridge: str = "br0", tap: str = "tap-kvmd0", **extra: str) -> str:
    xml = corpus_text(name).replace("@IMAGES@", images)
    xml = xml.replace("'br0'", f"'{bridge}'").replace('"ovirtmgmt"', f'"{bridge}"')
    xml = xml.replace("'tap-kvmd0'", f"'{tap}'")
    for key, value in extra.items():
        xml = xml.replace(f"@{key}@", value)
    return xml


def start(client, xml: str, base: str, bridge: str = "br0") -> tuple[dict, SideQMP]:
    spec = xml_to_spec(xml, networks={"default": bridge})
    qmp_path = os.path.join(base, "side.qmp")
    spec["qemuArgs"] = spec["qemuArgs"] + side_qmp_args(qmp_path)
    info = client.call("vm.create", spec=spec)
    assert info["state"] == "running", info
    return spec, SideQMP(qmp_path)


def _qdev_id(qdev: str) -> str:
    """`/machine/peripheral/disk-vda/virtio-backend` -> `disk-vda` (ids come as they are)."""
    parts = qdev.split("/")
    return parts[3] if qdev.startswith("/machine/peripheral/") and len(parts) > 3 else qdev


def check_devices(spec: dict, qmp: SideQMP) -> None:
    """Everything the spec (hence the XML) names is in QEMU."""
    peripherals = {p["name"] for p in qmp.cmd("qom-list", path="/machine/peripheral")}
    blocks = {_qdev_id(b.get("qdev", "")): b for b in qmp.cmd("query-block")}
    for disk in spec["disks"]:
        dev = f"disk-{disk['name']}"
        assert dev in blocks, (dev, sorted(blocks))
        inserted = blocks[dev].get("inserted")
        if disk.get("path"):
            assert inserted and inserted["file"] == disk["path"]
            assert inserted["ro"] == disk["readonly"]
            assert inserted["image"]["format"] == disk["format"]
        else:
            assert not inserted  # an empty cdrom tray
        if disk.get("errorPolicy"):
            want = {"stop": "stop", "report": "report", "ignore": "ignore", "enospace": "enospc"}
            assert qmp.cmd("qom-get", path=f"/machine/peripheral/{dev}",
                           property="werror") == want[disk["errorPolicy"]]
    # NICs: by qdev id under /machine/peripheral (query-pci lists devices behind the
    # root ports only once the firmware has numbered the buses, not right after start)
    for nic in spec["nics"]:
        dev = f"nic-{nic['name']}"
        assert dev in peripherals, (dev, sorted(peripherals))
        assert qmp.cmd("qom-get", path=f"/machine/peripheral/{dev}", property="mac") == nic["mac"]
        model = {"virtio": "virtio-net-pci", "e1000": "e1000", "rtl8139": "rtl8139"}[nic["model"]]
        assert qmp.cmd("qom-get", path=f"/machine/peripheral/{dev}", property="type") == model
    assert ("qga0" in peripherals) == spec["guestAgent"]
    assert ("rng0dev" in peripherals) == spec["rng"]
    assert ("balloon0" in peripherals) == spec["memory"]["balloon"]
    assert ("serial0" in peripherals) == (spec["serial"]["type"] != "none")
    kinds = {g["type"] for g in spec["graphics"]}
    if "vnc" in kinds:
        vnc = qmp.cmd("query-vnc")
        assert vnc["enabled"] and vnc["auth"] == ("vnc" if spec["graphics"][0].get("password") else "none")
    if "spice" in kinds:
        assert qmp.cmd("query-spice")["enabled"]
    cpus = qmp.cmd("query-cpus-fast")
    assert len(cpus) == spec["cpu"]["count"]
    cpu = spec["cpu"]
    if "sockets" in cpu:
        slots = qmp.cmd("query-hotpluggable-cpus")
        assert len(slots) == cpu["sockets"] * cpu["cores"] * cpu["threads"]
    mem = qmp.cmd("query-memory-size-summary")
    assert mem["base-memory"] == _bytes(spec["memory"]["size"])


def _bytes(size: str) -> int:
    for suffix, mult in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if size.endswith(suffix):
            return int(size[:-3]) * mult
    return int(size)


@pytest.mark.parametrize("name", RUNNABLE)
def test_corpus_domain_runs_on_kvmd_with_the_devices_it_names(client, tmpdir_short, netdevs, name):
    make_images(tmpdir_short)
    bridge, tap = netdevs
    xml = runnable(name, tmpdir_short, bridge, tap)
    spec, qmp = start(client, xml, tmpdir_short, bridge)
    try:
        check_devices(spec, qmp)
        root_bus = {d.get("qdev_id") for bus in qmp.cmd("query-pci") for d in bus["devices"]}
        if spec["graphics"]:
            assert "video0" in root_bus
        if name == "uefi.xml":
            assert os.path.getsize(spec["boot"]["nvram"]) > 0  # kvmd made the NVRAM file
            pflash = [b for b in qmp.cmd("query-block") if b["device"].startswith("pflash")]
            assert len(pflash) == 2
        if name == "memory.xml":  # maxMemory and its 16 slots
            mem = qmp.cmd("query-memory-size-summary")
            assert mem["base-memory"] == 256 << 20
        if name == "ovirt-engine.xml":  # the qemu:commandline arguments reached QEMU
            assert qmp.cmd("qom-get", path="/machine/unattached/device[0]", property="type")
    finally:
        qmp.close()
        client.call("vm.destroy", name=spec["name"])


@pytest.mark.slow
def test_direct_kernel_boot_domain_boots_the_test_guest(client, tmpdir_short, guest):
    xml = runnable("direct-kernel.xml", tmpdir_short, KERNEL=guest["kernel"], INITRD=guest["initrd"],
                   CMDLINE=guest["cmdline"])
    spec, qmp = start(client, xml, tmpdir_short)
    try:
        check_devices(spec, qmp)
        info = client.call("vm.info", name="direct-kernel")
        assert info["console"] and info["guestAgent"]
    finally:
        qmp.close()
        client.call("vm.destroy", name="direct-kernel")


def test_converted_spec_is_what_kvmd_stores(client, tmpdir_short):
    make_images(tmpdir_short)
    spec = xml_to_spec(runnable("disks.xml", tmpdir_short))
    client.call("vm.define", spec=spec)
    try:
        stored = client.call("vm.info", name="disks", spec=True)["spec"]
        assert stored["metadata"] == spec["metadata"]
        assert [d["name"] for d in stored["disks"]] == ["vda", "data", "sda", "sdb", "sdc"]
    finally:
        client.call("vm.undefine", name="disks")


# -- kvmctl's compat subcommands (the real executable, found through its entry point) ---

def _kvmctl(daemon, *args: str, input: str | None = None) -> subprocess.CompletedProcess:
    from tests.integration.test_cli import KVMCTL

    return subprocess.run([*KVMCTL, "--socket", daemon.socket, *args], input=input, capture_output=True,
                          text=True, timeout=60)


def test_kvmctl_import_xml_prints_the_spec_and_defines_it(daemon, tmpdir_short):
    import yaml

    from tests.integration.test_cli import ok

    path = os.path.join(tmpdir_short, "d.xml")
    with open(path, "w") as f:
        f.write(corpus_text("nics-user.xml"))
    spec = yaml.safe_load(ok(daemon, "import-xml", path))
    assert spec["name"] == "nics-user" and [n["name"] for n in spec["nics"]] == ["net0", "mgmt", "net2"]
    out = ok(daemon, "import-xml", path, "--define")
    assert "'nics-user' defined" in out
    xml = ok(daemon, "dumpxml", "nics-user")
    assert "<mac address=\"52:54:00:6a:00:02\"/>" in xml and "<alias name=\"ua-mgmt\"/>" in xml


def test_kvmctl_import_xml_of_unsupported_input_is_one_line(daemon):
    from tests.integration.test_cli import fails

    bad = os.path.join(os.path.dirname(__file__), "..", "data", "domxml", "unsupported", "disk-io.xml")
    line = fails(_kvmctl(daemon, "import-xml", bad), 1)
    assert line.endswith("unsupported: /domain/devices/disk[2]/driver/@io='foo': "
                         "must be one of threads, native, io_uring")
    line = fails(_kvmctl(daemon, "import-xml", "-", input="<domain><oops></domain>"), 1)
    assert "malformed XML" in line
    line = fails(_kvmctl(daemon, "import-xml", "/nonexistent.xml"), 2)
    assert "cannot read /nonexistent.xml" in line
    line = fails(_kvmctl(daemon, "import-xml", "-", "--network", "nobridge",
                         input=corpus_text("minimal.xml")), 2)
    assert "NAME=BRIDGE" in line


def test_kvmctl_network_mapping_for_libvirt_networks(daemon):
    import yaml

    from tests.integration.test_cli import ok

    out = ok(daemon, "import-xml", "-", "--network", "default=virbr9", input=corpus_text("network.xml"))
    assert yaml.safe_load(out)["nics"][1]["bridge"] == "virbr9"


def test_kvmctl_import_and_export_ovf(daemon):
    import yaml

    from tests.integration.test_cli import ok

    ovf = os.path.join(os.path.dirname(__file__), "..", "data", "ovf", "engine-vm.ovf")
    spec = yaml.safe_load(ok(daemon, "import-ovf", ovf))
    assert spec["name"] == "web" and spec["disks"][0]["format"] == "qcow2"
    assert "'web' defined" in ok(daemon, "import-ovf", ovf, "--define")
    out = ok(daemon, "export-ovf", "web")
    assert "<TimeZone>Etc/GMT</TimeZone>" in out and "ovf:Envelope" in out
    line = _kvmctl(daemon, "export-ovf", "nosuch")
    assert line.returncode == 1 and "nosuch" in line.stderr and "Traceback" not in line.stderr
