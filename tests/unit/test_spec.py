"""VM spec parsing: defaults, sizes, every validation rule (field path + reason), and purity."""

from __future__ import annotations

import builtins
import os
import re
import uuid

import pytest

from kvmd.errors import INVALID_SPEC, SpecError
from kvmd.spec import from_dict, loads
from kvmd.spec.parse import DEVNAME_REASON, NAME_REASON
from kvmd.units import format_size, parse_size

MAC_RE = re.compile(r"^52:54:00(:[0-9a-f]{2}){3}$")


def problems(doc) -> list[tuple[str, str]]:
    """Every (path, reason) `doc` is rejected with; fails if it parses."""
    with pytest.raises(SpecError) as exc:
        loads(doc) if isinstance(doc, str) else from_dict(doc)
    return exc.value.problems


def spec(**extra):
    doc = {"name": "vm"}
    doc.update(extra)
    return doc


# -- defaults -----------------------------------------------------------------------


def test_minimal_spec_gets_every_default():
    s = from_dict({"name": "vm"})
    assert s.name == "vm"
    assert s.api_version == "kvmd/v1"
    assert s.machine == "q35"
    assert (s.cpu.count, s.cpu.model, s.cpu.sockets, s.cpu.cores, s.cpu.threads) == (1, None, None, None, None)
    assert (s.memory.size, s.memory.max, s.memory.balloon) == (256 << 20, None, True)
    assert s.boot.firmware == "bios"
    assert s.boot.order == ["disk", "cdrom", "network"]
    assert s.boot.kernel is s.boot.initrd is s.boot.cmdline is s.boot.nvram is None
    assert s.disks == [] and s.nics == [] and s.graphics == []
    assert (s.serial.type, s.serial.path) == ("socket", None)
    assert s.guest_agent is False and s.rng is False
    assert s.hotplug_slots == 4
    assert (s.lifecycle.on_poweroff, s.lifecycle.on_reboot, s.lifecycle.on_crash) == (
        "destroy", "restart", "destroy")
    assert s.metadata == {} and s.qemu_args == []


def test_missing_uuid_is_generated_fresh_for_each_parse():
    a, b = from_dict({"name": "vm"}), from_dict({"name": "vm"})
    assert str(uuid.UUID(a.uuid)) == a.uuid
    assert a.uuid != b.uuid


def test_given_uuid_is_kept_and_normalised_to_dashed_lowercase():
    s = from_dict(spec(uuid="0123456789ABCDEF0123456789ABCDEF"))
    assert s.uuid == "01234567-89ab-cdef-0123-456789abcdef"


def test_missing_mac_is_generated_unicast_locally_administered_in_qemu_range():
    s = from_dict(spec(nics=[{}, {}, {}]))
    for nic in s.nics:
        assert MAC_RE.match(nic.mac), nic.mac
        first = int(nic.mac[:2], 16)
        assert first & 1 == 0  # unicast
        assert first & 2 == 2  # locally administered
    assert len({n.mac for n in s.nics}) == 3


def test_given_mac_is_kept_in_lowercase():
    s = from_dict(spec(nics=[{"mac": "52:54:00:AB:CD:EF"}]))
    assert s.nics[0].mac == "52:54:00:ab:cd:ef"


def test_devices_without_names_are_named_by_position():
    s = from_dict(spec(disks=[{"path": "/a"}, {"name": "data", "path": "/b"}, {"path": "/c"}],
                       nics=[{}, {}]))
    assert [d.name for d in s.disks] == ["disk0", "data", "disk2"]
    assert [n.name for n in s.nics] == ["net0", "net1"]


def test_disk_defaults():
    d = from_dict(spec(disks=[{"path": "/a.img"}])).disks[0]
    assert (d.format, d.bus, d.media, d.readonly, d.cache, d.aio) == (
        "raw", "virtio", "disk", False, "writeback", "threads")
    assert d.serial is d.boot_index is d.slot is None


def test_cdrom_defaults_to_sata_readonly_and_may_be_empty():
    d = from_dict(spec(disks=[{"media": "cdrom"}])).disks[0]
    assert (d.bus, d.readonly, d.path) == ("sata", True, None)


def test_nic_defaults():
    n = from_dict(spec(nics=[{}])).nics[0]
    assert (n.model, n.backend, n.bridge, n.tap, n.boot_index, n.slot) == (
        "virtio", "user", None, None, None, None)


def test_graphics_defaults():
    g = from_dict(spec(graphics=[{}])).graphics[0]
    assert (g.type, g.listen, g.port, g.password) == ("vnc", "127.0.0.1", None, None)


def test_null_sections_and_lists_mean_defaults():
    s = loads("name: vm\ncpu:\nmemory:\ndisks:\nnics:\nmetadata:\nqemuArgs:\n")
    assert s.cpu.count == 1 and s.disks == [] and s.nics == [] and s.metadata == {}


def test_json_text_is_accepted():
    s = loads('{"name": "vm", "cpu": {"count": 2}, "memory": {"size": "1G"}}')
    assert (s.cpu.count, s.memory.size) == (2, 1 << 30)


# -- sizes --------------------------------------------------------------------------


@pytest.mark.parametrize("text,expected", [
    ("512MiB", 512 << 20),
    ("512M", 512 << 20),
    ("512mb", 512 << 20),
    ("2G", 2 << 30),
    ("2GiB", 2 << 30),
    ("1T", 1 << 40),
    ("65536K", 64 << 20),
    ("64 MiB", 64 << 20),
    (33554432, 32 << 20),
    ("33554432", 32 << 20),
])
def test_memory_size_accepts_units_and_bare_integers(text, expected):
    assert from_dict(spec(memory={"size": text})).memory.size == expected


@pytest.mark.parametrize("value,reason", [
    ("1.5G", "'1.5G' is not a size such as 512MiB or 2G"),
    ("lots", "'lots' is not a size such as 512MiB or 2G"),
    ("12PB", "'12PB' is not a size such as 512MiB or 2G"),
    (-1, "must not be negative"),
    (True, "must be a size such as 512MiB or 2G"),
    ([1], "must be a size such as 512MiB or 2G"),
    ("8MiB", "must be at least 16777216 bytes"),
])
def test_bad_memory_size_is_reported_with_its_reason(value, reason):
    assert problems(spec(memory={"size": value})) == [("memory.size", reason)]


@pytest.mark.parametrize("nbytes,text", [
    (256 << 20, "256MiB"), (2 << 30, "2GiB"), (3 << 40, "3TiB"), (1536 << 10, "1536KiB"),
    (1000, "1000"), (0, "0"),
])
def test_format_size_prints_the_shortest_exact_spelling(nbytes, text):
    assert format_size(nbytes) == text
    assert parse_size(text) == nbytes


# -- validation: every rule, with its path and reason ---------------------------------

RULES = [
    # top level
    ({"name": "vm", "apiVersion": "kvmd/v2"}, "apiVersion", "must be one of kvmd/v1"),
    ({}, "name", "is required"),
    ({"name": None}, "name", "is required"),
    ({"name": 42}, "name", "must be a string"),
    ({"name": "bad name"}, "name", NAME_REASON),
    ({"name": "-vm"}, "name", NAME_REASON),
    ({"name": "v" * 65}, "name", NAME_REASON),
    (spec(uuid="not-a-uuid"), "uuid", "must be a UUID"),
    (spec(machine="Q35,accel=kvm"), "machine", "must be a QEMU machine type such as q35 or pc"),
    (spec(guestAgent="yes"), "guestAgent", "must be true or false"),
    (spec(rng=1), "rng", "must be true or false"),
    (spec(hotplugSlots=33), "hotplugSlots", "must be at most 32"),
    (spec(hotplugSlots=-1), "hotplugSlots", "must be at least 0"),
    (spec(hotplugSlots="4"), "hotplugSlots", "must be an integer"),
    (spec(qemuArgs="-snapshot"), "qemuArgs", "must be a list of strings"),
    (spec(qemuArgs=["-a", 5]), "qemuArgs[1]", "must be a string"),
    (spec(qemuArgs=["-a", "b\0c"]), "qemuArgs[1]", "must not contain NUL"),
    (spec(metadata=["a"]), "metadata", "must be a mapping"),
    (spec(metadata={"when": object()}), "metadata",
     "must hold only strings, numbers, booleans, lists and mappings"),
    (spec(disks={"path": "/a"}), "disks", "must be a list"),
    (spec(disks=["/a"]), "disks[0]", "must be a mapping"),  # one problem, not one per field
    (spec(cpu=4), "cpu", "must be a mapping"),
    (spec(graphics=[{"type": "vnc"}, {"type": "vnc"}]), "graphics", "at most one vnc display"),
    (spec(graphics=[{"type": "spice"}, {"type": "spice"}]), "graphics", "at most one spice display"),
    # cpu
    (spec(cpu={"count": 0}), "cpu.count", "must be at least 1"),
    (spec(cpu={"count": 1025}), "cpu.count", "must be at most 1024"),
    (spec(cpu={"count": "2"}), "cpu.count", "must be an integer"),
    (spec(cpu={"count": True}), "cpu.count", "must be an integer"),
    (spec(cpu={"count": 1.5}), "cpu.count", "must be an integer"),
    (spec(cpu={"model": 7}), "cpu.model", "must be a string"),
    (spec(cpu={"sockets": 0}), "cpu.sockets", "must be at least 1"),
    (spec(cpu={"cores": 0}), "cpu.cores", "must be at least 1"),
    (spec(cpu={"threads": 0}), "cpu.threads", "must be at least 1"),
    (spec(cpu={"count": 4, "sockets": 1, "cores": 2, "threads": 1}), "cpu.sockets",
     "sockets*cores*threads = 2 is less than count 4"),
    (spec(cpu={"count": 4, "maxCount": 2}), "cpu.maxCount", "must not be less than count 4"),
    (spec(cpu={"count": 2, "maxCount": 16, "sockets": 4, "cores": 2, "threads": 1}), "cpu.sockets",
     "sockets*cores*threads = 8 must equal maxCount 16"),
    (spec(cpu={"maxCount": 1025}), "cpu.maxCount", "must be at most 1024"),
    (spec(cpu={"shares": 1}), "cpu.shares", "must be at least 2"),
    (spec(cpu={"shares": 262145}), "cpu.shares", "must be at most 262144"),
    # smbios, channels
    (spec(smbios={"vendor": "x"}), "smbios.vendor", "unknown field"),
    (spec(smbios={"uuid": "nope"}), "smbios.uuid", "must be a UUID"),
    (spec(smbios={"product": "a\nb"}), "smbios.product", "must be 1-256 characters on one line"),
    (spec(smbios={"serial": ""}), "smbios.serial", "must be 1-256 characters on one line"),
    (spec(channels=[{}]), "channels[0].name", "is required"),
    (spec(channels=[{"name": "a b"}]), "channels[0].name",
     "must be 1-64 characters of letters, digits, '_', '.', '-'"),
    (spec(channels=[{"name": "org.qemu.guest_agent.0"}]), "channels[0].name",
     "the guest agent's channel is guestAgent: true"),
    (spec(channels=[{"name": "x.0"}, {"name": "x.0"}]), "channels[1].name",
     "duplicate channel name 'x.0' (also at channels[0])"),
    (spec(channels=[{"name": "com.redhat.spice.0", "type": "spicevmc"}]), "channels",
     "a spicevmc channel needs a spice display"),
    (spec(graphics=[{"type": "spice"}], channels=[{"name": "x.0", "type": "spicevmc"}]), "channels[0].name",
     "a spicevmc channel is the SPICE agent's: com.redhat.spice.0"),
    (spec(channels=[{"name": "x.0", "type": "pty"}]), "channels[0].type", "must be one of unix, spicevmc"),
    # memory
    (spec(memory={"size": "1G", "max": "512MiB"}), "memory.max", "must not be smaller than size"),
    (spec(memory={"max": "1MiB"}), "memory.max", "must be at least 16777216 bytes"),
    (spec(memory={"balloon": "off"}), "memory.balloon", "must be true or false"),
    # boot
    (spec(boot={"firmware": "coreboot"}), "boot.firmware", "must be one of bios, uefi"),
    (spec(boot={"initrd": "/boot/initrd"}), "boot.kernel", "is required when initrd or cmdline is given"),
    (spec(boot={"cmdline": "console=ttyS0"}), "boot.kernel", "is required when initrd or cmdline is given"),
    (spec(boot={"nvram": "/var/nvram.fd"}), "boot.nvram", "is only used with firmware: uefi"),
    (spec(boot={"order": ["disk", "disk"]}), "boot.order", "must not repeat a device"),
    (spec(boot={"order": ["disk", "floppy"]}), "boot.order[1]", "must be one of disk, cdrom, network"),
    (spec(boot={"order": "disk"}), "boot.order", "must be a list of strings"),
    (spec(boot={"kernel": ["/k"]}), "boot.kernel", "must be a string"),
    # disks
    (spec(disks=[{"path": "/a", "name": "Disk"}]), "disks[0].name", DEVNAME_REASON),
    (spec(disks=[{"path": "/a", "name": "d" * 21}]), "disks[0].name", DEVNAME_REASON),
    (spec(disks=[{"path": "/a"}, {"path": "/b", "format": "vmdk"}]), "disks[1].format",
     "must be one of qcow2, raw"),
    (spec(disks=[{"path": "/a", "bus": "ide"}]), "disks[0].bus", "must be one of virtio, scsi, sata"),
    (spec(disks=[{"path": "/a", "media": "floppy"}]), "disks[0].media", "must be one of disk, cdrom"),
    (spec(disks=[{"path": "/a", "cache": "default"}]), "disks[0].cache",
     "must be one of none, writeback, writethrough, directsync, unsafe"),
    (spec(disks=[{"path": "/a", "aio": "posix"}]), "disks[0].aio", "must be one of threads, native, io_uring"),
    (spec(disks=[{"path": "/a", "readonly": "yes"}]), "disks[0].readonly", "must be true or false"),
    (spec(disks=[{"path": "/a", "serial": "has space"}]), "disks[0].serial",
     "must be 1-36 characters of letters, digits, '_', '.', '-'"),
    (spec(disks=[{"path": "/a", "serial": "a6e1c3d2-5b4f-4e8a-9c7d-0e1f2a3b4c5d0"}]), "disks[0].serial",
     "must be 1-36 characters of letters, digits, '_', '.', '-'"),
    (spec(disks=[{"path": "/a", "iothread": 1}]), "disks[0].iothread",
     "there are 0 iothreads (iothreads: N makes 1..N)"),
    (spec(iothreads=1, disks=[{"path": "/a", "iothread": 2}]), "disks[0].iothread",
     "there are 1 iothreads (iothreads: N makes 1..N)"),
    (spec(iothreads=1, disks=[{"path": "/a", "bus": "sata", "iothread": 1}]), "disks[0].iothread",
     "only virtio and scsi disks run in an iothread"),
    (spec(iothreads=2, disks=[{"path": "/a", "bus": "scsi", "iothread": 1}, {"path": "/b", "bus": "scsi"}]),
     "disks[1].iothread", "SCSI disks share the virtio-scsi controller: its iothread must be the same "
     "for all (differs from disks[0])"),
    (spec(iothreads=65), "iothreads", "must be at most 64"),
    (spec(disks=[{"path": "/a", "bootIndex": -1}]), "disks[0].bootIndex", "must be at least 0"),
    (spec(disks=[{"path": "/a", "slot": 256}]), "disks[0].slot", "must be at most 255"),
    (spec(disks=[{"path": "/a", "slot": -1}]), "disks[0].slot", "must be at least 0"),
    (spec(disks=[{"path": 5}]), "disks[0].path", "must be a string",
     [("disks[0].path", "is required for media: disk")]),
    (spec(disks=[{"format": "raw"}]), "disks[0].path", "is required for media: disk"),
    (spec(disks=[{"media": "cdrom", "bus": "virtio"}]), "disks[0].bus", "a cdrom must be on bus sata or scsi"),
    (spec(disks=[{"media": "cdrom", "readonly": False}]), "disks[0].readonly", "a cdrom is always readonly"),
    (spec(disks=[{"path": "/a", "aio": "native"}]), "disks[0].aio", "native needs cache: none or directsync"),
    (spec(disks=[{"path": "/a", "name": "a"}, {"path": "/b", "name": "a"}]), "disks[1].name",
     "duplicate disk name 'a' (also at disks[0])"),
    (spec(disks=[{"path": "/a", "serial": "S1"}, {"path": "/b", "serial": "S1"}]), "disks[1].serial",
     "duplicate disk serial 'S1' (also at disks[0])"),
    (spec(disks=[{"path": "/a", "slot": 3}], nics=[{"slot": 3}]), "nics[0].slot",
     "duplicate slot 3 (also at disks[0])"),
    # nics
    (spec(nics=[{"mac": "52-54-00-12-34-56"}]), "nics[0].mac", "must be six hex octets like 52:54:00:12:34:56"),
    (spec(nics=[{"mac": "01:00:5e:00:00:01"}]), "nics[0].mac", "must be a unicast address (first octet even)"),
    (spec(nics=[{"model": "ne2k_pci"}]), "nics[0].model", "must be one of virtio, e1000, rtl8139"),
    (spec(nics=[{"backend": "bridge"}]), "nics[0].backend", "must be one of user, tap, none"),
    (spec(nics=[{"backend": "tap", "bridge": "br0;rm"}]), "nics[0].bridge", "must be a network interface name",
     [("nics[0].bridge", "backend tap needs a bridge (or an existing tap)")]),
    (spec(nics=[{"backend": "tap", "tap": "a-very-long-tap-name"}]), "nics[0].tap",
     "must be a network interface name", [("nics[0].bridge", "backend tap needs a bridge (or an existing tap)")]),
    (spec(nics=[{"backend": "tap"}]), "nics[0].bridge", "backend tap needs a bridge (or an existing tap)"),
    (spec(nics=[{"bridge": "br0"}]), "nics[0].backend", "bridge and tap are only used with backend: tap"),
    (spec(nics=[{"backend": "none", "tap": "tap0"}]), "nics[0].backend",
     "bridge and tap are only used with backend: tap"),
    (spec(nics=[{"bootIndex": "1"}]), "nics[0].bootIndex", "must be an integer"),
    (spec(nics=[{"noMacSpoofing": True}]), "nics[0].noMacSpoofing",
     "is enforced on the host side of a tap: needs backend: tap"),
    (spec(nics=[{"name": "lan"}, {"name": "lan"}]), "nics[1].name", "duplicate nic name 'lan' (also at nics[0])"),
    (spec(nics=[{"mac": "52:54:00:AA:BB:CC"}, {"mac": "52:54:00:aa:bb:cc"}]), "nics[1].mac",
     "duplicate MAC address '52:54:00:aa:bb:cc' (also at nics[0])"),
    # serial
    (spec(serial={"type": "pty"}), "serial.type", "must be one of socket, file, none"),
    (spec(serial={"type": "file"}), "serial.path", "is required for type: file"),
    # graphics
    (spec(graphics=[{"type": "sdl"}]), "graphics[0].type", "must be one of vnc, spice"),
    (spec(graphics=[{"port": 70000}]), "graphics[0].port", "must be at most 65535"),
    (spec(graphics=[{"port": 5800}]), "graphics[0].port",
     "a VNC port must be 5900 or above (0 or absent picks one)"),
    (spec(graphics=[{"password": 1234}]), "graphics[0].password", "must be a string"),
    # lifecycle
    (spec(lifecycle={"onPoweroff": "restart"}), "lifecycle.onPoweroff", "must be one of destroy"),
    (spec(lifecycle={"onReboot": "pause"}), "lifecycle.onReboot", "must be one of destroy, restart"),
    (spec(lifecycle={"onCrash": "restart"}), "lifecycle.onCrash", "must be one of destroy"),
]


@pytest.mark.parametrize("rule", RULES, ids=[f"{r[1]}: {r[2]}"[:70] for r in RULES])
def test_each_rule_is_reported_with_its_field_path_and_reason(rule):
    """The problem comes first; a few rules also produce a follow-on problem (listed)."""
    doc, path, reason, *follow_on = rule
    assert problems(doc) == [(path, reason), *(follow_on[0] if follow_on else [])]


def test_all_problems_are_reported_at_once():
    doc = {"name": "bad name", "cpu": {"count": 0},
           "disks": [{"path": "/a"}, {"path": "/b", "format": "vmdk"}]}
    found = problems(doc)
    assert found == [("name", NAME_REASON), ("cpu.count", "must be at least 1"),
                     ("disks[1].format", "must be one of qcow2, raw")]


def test_spec_error_lists_every_problem_in_its_message_and_data():
    with pytest.raises(SpecError) as exc:
        from_dict({"cpu": {"count": 0}, "disks": [{"path": "/a", "format": "vmdk"}]})
    err = exc.value
    assert err.code == INVALID_SPEC
    assert err.message == ("invalid spec: name: is required; cpu.count: must be at least 1; "
                           "disks[0].format: must be one of qcow2, raw")
    assert err.to_json()["data"] == {"errors": [
        {"path": "name", "reason": "is required"},
        {"path": "cpu.count", "reason": "must be at least 1"},
        {"path": "disks[0].format", "reason": "must be one of qcow2, raw"},
    ]}


def test_a_document_that_is_not_a_mapping_is_rejected():
    assert problems("- a\n- b\n") == [("(document)", "must be a mapping")]


# -- unknown fields -----------------------------------------------------------------


@pytest.mark.parametrize("doc,path", [
    (spec(colour="blue"), "colour"),
    (spec(cpu={"count": 2, "cout": 2}), "cpu.cout"),
    (spec(memory={"sise": "1G"}), "memory.sise"),
    (spec(boot={"kernal": "/k"}), "boot.kernal"),
    (spec(disks=[{"path": "/a"}, {"path": "/b", "size": "10G"}]), "disks[1].size"),
    (spec(nics=[{"network": "default"}]), "nics[0].network"),
    (spec(serial={"type": "socket", "baud": 9600}), "serial.baud"),
    (spec(graphics=[{"type": "vnc", "keymap": "de"}]), "graphics[0].keymap"),
    (spec(lifecycle={"onSuspend": "destroy"}), "lifecycle.onSuspend"),
    (spec(qemu_args=["-snapshot"]), "qemu_args"),
])
def test_unknown_field_is_reported_with_its_path(doc, path):
    assert problems(doc) == [(path, "unknown field")]


def test_unknown_fields_are_reported_alongside_other_problems():
    found = problems(spec(bogus=1, disks=[{"path": "/a", "format": "vmdk", "extra": True}]))
    assert sorted(found) == sorted([("bogus", "unknown field"), ("disks[0].extra", "unknown field"),
                                    ("disks[0].format", "must be one of qcow2, raw")])


# -- YAML/JSON syntax ---------------------------------------------------------------


def test_yaml_syntax_error_is_reported_with_its_line_number():
    text = "name: vm\ndisks:\n  - path: /a\n    format: [raw\n"
    [(path, reason)] = problems(text)
    assert path == "(document)"
    assert reason.startswith("not valid YAML/JSON at line 5, column 1:")


def test_yaml_tab_indent_error_points_at_the_offending_line():
    [(path, reason)] = problems("name: vm\nmemory:\n\tsize: 1G\n")
    assert path == "(document)"
    assert "at line 3" in reason


def test_json_syntax_error_is_reported_with_its_line_number():
    [(path, reason)] = problems('{\n  "name": "vm",\n  "cpu": {"count": 1\n}\n')
    assert path == "(document)"
    assert re.search(r"at line \d+, column \d+", reason)


def test_yaml_date_in_metadata_is_rejected_as_not_json():
    assert problems("name: vm\nmetadata:\n  created: 2024-01-01\n") == [
        ("metadata", "must hold only strings, numbers, booleans, lists and mappings")]


def test_metadata_keeps_nested_json_values():
    meta = {"owner": "ops", "tags": ["a", "b"], "ovirt": {"vmId": "x", "n": 3, "ok": True, "f": 1.5,
                                                         "none": None}}
    assert from_dict(spec(metadata=meta)).metadata == meta


# -- purity -------------------------------------------------------------------------


def test_parsing_accepts_disk_paths_that_do_not_exist(tmp_path):
    missing = str(tmp_path / "no" / "such" / "disk.qcow2")
    s = from_dict(spec(disks=[{"path": missing, "format": "qcow2"}],
                       boot={"kernel": str(tmp_path / "vmlinuz"), "initrd": "/nope/initrd"},
                       nics=[{"backend": "tap", "bridge": "nosuchbr0"}]))
    assert s.disks[0].path == missing
    assert not os.path.exists(missing)


def test_parsing_never_touches_the_host(monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError(f"spec parsing touched the host: {args!r}")

    text = ("name: vm\nboot: {firmware: uefi, nvram: /var/lib/nvram.fd, kernel: /k}\n"
            "disks: [{path: /dev/sdz}, {path: /srv/a.qcow2, format: qcow2}, {media: cdrom, path: /i.iso}]\n"
            "nics: [{backend: tap, bridge: br9}]\nserial: {type: file, path: /var/log/x}\n")
    for name in ("stat", "lstat", "access", "listdir", "scandir", "open", "readlink"):
        monkeypatch.setattr(os, name, forbidden)
    monkeypatch.setattr(os.path, "exists", forbidden)
    monkeypatch.setattr(builtins, "open", forbidden)
    s = loads(text)
    monkeypatch.undo()
    assert [d.path for d in s.disks] == ["/dev/sdz", "/srv/a.qcow2", "/i.iso"]


def test_unquoted_mac_in_yaml_is_read_as_a_mac():
    assert loads("name: vm\nnics:\n  - mac: 52:54:00:12:34:56\n").nics[0].mac == "52:54:00:12:34:56"
