"""The oVirt engine's full domain XML (tests/data/domxml/ovirt-engine-full.xml) and the
spec fields it needed: what it converts to, what QEMU is told, how each new field is
spelled back as XML, and what is still refused. (Its round trip is the corpus test's;
it runs on a real kvmd in tests/integration/test_engine_full.py.)"""

from __future__ import annotations

import pytest

from compat.domxml import spec_to_xml, xml_to_spec
from compat.errors import UnsupportedXML
from kvmd.qemu import cmdline, pci
from kvmd.qemu.cmdline import LaunchOptions, build_argv
from kvmd.spec import from_dict
from tests.unit.test_cmdline import devices, needs_qemu, parse_opts, run_qemu, values
from tests.unit.test_domxml_roundtrip import corpus_text

SERIAL = "a6e1c3d2-5b4f-4e8a-9c7d-0e1f2a3b4c5d"


def full() -> dict:
    return xml_to_spec(corpus_text("ovirt-engine-full.xml"))


def argv_of(spec: dict, **launch) -> list[str]:
    s = from_dict(spec)
    pci.assign_slots(s)
    return build_argv(s, LaunchOptions(**launch))


def test_engine_xml_converts_to_the_new_spec_fields():
    s = full()
    assert s["cpu"] == {"count": 2, "maxCount": 16, "model": "qemu64", "sockets": 16, "cores": 1, "threads": 1,
                        "shares": 1020}
    assert s["memory"] == {"size": "1GiB", "max": "4GiB", "balloon": True, "slots": 16}
    assert s["iothreads"] == 1
    assert s["smbios"] == {"manufacturer": "oVirt", "product": "RHEL", "version": "8.6-1.el8",
                           "serial": "30393137-3436-584d-5136-303430313432",
                           "uuid": "8d4a2f6e-3b1c-4e5d-9a7f-0c2b4d6e8f10", "family": "oVirt"}
    assert s["pm"] == {"suspendToMem": False, "suspendToDisk": False}
    assert s["tablet"] is True and s["guestAgent"] is True and s["rng"] is True
    assert s["channels"] == [{"name": "ovirt-guest-agent.0", "type": "unix"},
                             {"name": "com.redhat.spice.0", "type": "spicevmc"}]
    cd, vda = s["disks"]
    assert (cd["name"], cd["bus"], cd["media"], cd["iothread"]) == ("sdc", "scsi", "cdrom", 1)  # the controller's
    assert "path" not in cd
    assert vda["serial"] == SERIAL and vda["iothread"] == 1
    assert (vda["cache"], vda["aio"], vda["errorPolicy"], vda["format"]) == ("none", "native", "stop", "qcow2")
    assert s["nics"][0]["noMacSpoofing"] is True and s["nics"][0]["bridge"] == "ovirtmgmt"
    assert [(g["type"], g["passwordValidTo"]) for g in s["graphics"]] == [("vnc", "1970-01-01T00:00:01"),
                                                                          ("spice", "1970-01-01T00:00:01")]
    meta = s["metadata"]["libvirt"]["metadata"]
    assert f"<ovirt-vm:imageID>{SERIAL}</ovirt-vm:imageID>" in meta


def test_engine_xml_reaches_qemus_command_line():
    argv = argv_of(full(), qga_socket="/run/kvmd/e.qga",
                   channel_sockets={"ovirt-guest-agent.0": "/run/kvmd/e.ovirt-guest-agent.0"}, spice_port=6100)
    assert values(argv, "-smp") == ["2,sockets=16,cores=1,threads=1,maxcpus=16"]
    assert values(argv, "-m") == ["size=1024M,slots=16,maxmem=4096M"]
    assert values(argv, "-smbios") == ["type=1,manufacturer=oVirt,product=RHEL,version=8.6-1.el8,"
                                       "serial=30393137-3436-584d-5136-303430313432,"
                                       "uuid=8d4a2f6e-3b1c-4e5d-9a7f-0c2b4d6e8f10,family=oVirt"]
    assert "iothread,id=iothread1" in values(argv, "-object")
    assert {"ICH9-LPC.disable_s3=1", "ICH9-LPC.disable_s4=1"} <= set(values(argv, "-global"))
    devs = devices(argv)
    assert devs["disk-vda"]["iothread"] == "iothread1" and devs["disk-vda"]["serial"] == SERIAL
    assert devs["scsi0"]["iothread"] == "iothread1" and devs["disk-sdc"]["driver"] == "scsi-cd"
    assert devs["channel0"] == {"driver": "virtserialport", "bus": "vserial0.0", "nr": "2", "chardev": "channel0",
                                "id": "channel0", "name": "ovirt-guest-agent.0"}
    assert devs["channel1"]["name"] == "com.redhat.spice.0"
    chardevs = {c["id"]: c for c in (parse_opts(v) for v in values(argv, "-chardev"))}
    assert chardevs["channel0"] == {"driver": "socket", "id": "channel0", "path": "/run/kvmd/e.ovirt-guest-agent.0",
                                    "server": "on", "wait": "off"}
    assert chardevs["channel1"] == {"driver": "spicevmc", "id": "channel1", "name": "vdagent"}
    assert devs["tablet0"]["driver"] == "usb-tablet" and devs["usb0"]["driver"] == "qemu-xhci"
    assert values(argv, "-spice") == ["port=6100,addr=127.0.0.1"]  # the port kvmd picked


def test_max_count_without_topology_and_topology_without_max_count():
    assert values(argv_of({"name": "a", "cpu": {"count": 2, "maxCount": 8}}), "-smp") == ["2,maxcpus=8"]
    old = argv_of({"name": "a", "cpu": {"count": 1, "sockets": 4, "cores": 1, "threads": 1}})
    assert values(old, "-smp") == ["1,sockets=4,cores=1,threads=1,maxcpus=4"]  # as before maxCount


def test_pm_on_pc_is_the_piix4_and_absent_pm_sets_nothing():
    argv = argv_of({"name": "a", "machine": "pc", "pm": {"suspendToMem": True, "suspendToDisk": False}})
    assert values(argv, "-global") == ["PIIX4_PM.disable_s3=0", "PIIX4_PM.disable_s4=1"]
    assert values(argv_of({"name": "a"}), "-global") == []


def test_channels_without_guest_agent_still_get_the_virtio_serial_controller():
    argv = argv_of({"name": "a", "channels": [{"name": "org.example.0"}]},
                   channel_sockets={"org.example.0": "/run/a.org.example.0"})
    devs = devices(argv)
    assert "vserial0" in devs and "qga0" not in devs and devs["channel0"]["nr"] == "2"


def test_native_specs_are_spelled_as_libvirt_does():
    xml = spec_to_xml({"name": "n", "uuid": "8d4a2f6e-3b1c-4e5d-9a7f-0c2b4d6e8f10",
                       "cpu": {"count": 2, "maxCount": 4, "shares": 512}, "iothreads": 2,
                       "smbios": {"manufacturer": "kvmd", "family": "test"},
                       "pm": {"suspendToMem": False}, "tablet": True,
                       "graphics": [{"type": "spice"}],
                       "channels": [{"name": "ovirt-guest-agent.0"}, {"name": "com.redhat.spice.0", "type": "spicevmc"}],
                       "disks": [{"name": "vda", "path": "/a", "iothread": 2, "serial": SERIAL},
                                 {"name": "sda", "path": "/b", "bus": "scsi", "iothread": 1}],
                       "nics": [{"name": "net0", "backend": "tap", "bridge": "br0", "noMacSpoofing": True}]})
    for text in ('<vcpu placement="static" current="2">4</vcpu>', "<iothreads>2</iothreads>",
                 "<cputune>", "<shares>512</shares>", '<sysinfo type="smbios">', '<entry name="manufacturer">kvmd</entry>',
                 '<smbios mode="sysinfo"/>', '<suspend-to-mem enabled="no"/>', '<input type="tablet" bus="usb"/>',
                 'model="qemu-xhci"', 'iothread="2"', '<driver iothread="1"/>', f"<serial>{SERIAL}</serial>",
                 '<filterref filter="vdsm-no-mac-spoofing"/>', '<channel type="spicevmc">',
                 'name="ovirt-guest-agent.0"'):
        assert text in xml, text
    assert "suspend-to-disk" not in xml
    again = xml_to_spec(xml)
    assert again["cpu"] == {"count": 2, "maxCount": 4, "shares": 512}
    assert [d.get("iothread") for d in again["disks"]] == [2, 1]
    assert again["tablet"] and again["nics"][0]["noMacSpoofing"] and again["pm"] == {"suspendToMem": False}


def test_sysinfo_without_smbios_mode_sysinfo_is_kept_not_applied():
    xml = corpus_text("ovirt-engine-full.xml").replace('<smbios mode="sysinfo"/>', "")
    s = xml_to_spec(xml)
    assert "smbios" not in s  # libvirt too applies <sysinfo> only with mode='sysinfo'
    assert "oVirt</entry>" in s["metadata"]["libvirt"]["domain"]
    assert '<entry name="family">oVirt</entry>' in spec_to_xml(s)


@pytest.mark.parametrize("old,new,where", [
    ('<cell id="0" cpus="0-15" memory="1048576"/>', '<cell id="0" cpus="0-15" memory="524288"/>',
     "/domain/cpu/numa/cell/@memory='524288'"),
    ('<cell id="0" cpus="0-15" memory="1048576"/>', '<cell id="0" cpus="0-1" memory="1048576"/>',
     "/domain/cpu/numa/cell/@cpus='0-1'"),
    ('<cell id="0" cpus="0-15" memory="1048576"/>', '<cell id="0" cpus="0-15,x" memory="1048576"/>',
     "/domain/cpu/numa/cell/@cpus='0-15,x'"),
    ('<filterref filter="vdsm-no-mac-spoofing"/>', '<filterref filter="clean-traffic"/>',
     "/domain/devices/interface/filterref/@filter='clean-traffic'"),
    ('<filterref filter="vdsm-no-mac-spoofing"/>',
     '<filterref filter="vdsm-no-mac-spoofing"><parameter name="IP" value="10.0.0.1"/></filterref>',
     "/domain/devices/interface/filterref/parameter"),
    ('<mtu size="1500"/>', '<mtu size="9000"/>', "/domain/devices/interface/mtu/@size='9000'"),
    ('keymap="en-us"', 'keymap="de"', "/domain/devices/graphics[1]/@keymap='de'"),
    ('tlsPort="-1"', 'tlsPort="5901"', "/domain/devices/graphics[2]/@tlsPort='5901'"),
    ('<shares>1020</shares>', '<shares>1020</shares><period>1000</period>', "/domain/cputune/period"),
    ('<suspend-to-mem enabled="no"/>', '<suspend-to-mem/>', "/domain/pm/suspend-to-mem"),
    ('<entry name="family">oVirt</entry>', '<entry name="family">oVirt</entry><entry name="asset">1</entry>',
     "/domain/sysinfo/system/entry[7]/@name='asset'"),
    ('<smbios mode="sysinfo"/>', '<smbios mode="host"/>', "/domain/os/smbios/@mode='host'"),
    ('<controller type="usb" model="qemu-xhci" index="0" ports="8"/>',
     '<controller type="usb" model="none" index="0"/>', "/domain/devices/input"),
    ('<driver iothread="1"/>', '<driver iothread="1" queues="4"/>',
     "/domain/devices/controller[3]/driver/@queues='4'"),
    ('<source file="" startupPolicy="optional"/>', '<source file="/iso/a.iso" startupPolicy="optional"/>',
     "/domain/devices/disk[1]/source/@startupPolicy='optional'"),
    ('<serial>a6e1c3d2-5b4f-4e8a-9c7d-0e1f2a3b4c5d</serial>', '<serial>a6e1c3d2-5b4f-4e8a-9c7d-0e1f2a3b4c5d0</serial>',
     "/domain/devices/disk[2]/serial"),
    ('<iothreads>1</iothreads>', '<iothreads>0</iothreads>', "/domain/devices/controller[3]/driver/@iothread"),
])
def test_what_kvmd_cannot_honour_is_still_refused_by_name(old, new, where):
    xml = corpus_text("ovirt-engine-full.xml")
    assert old in xml
    with pytest.raises(UnsupportedXML) as err:
        xml_to_spec(xml.replace(old, new))
    assert err.value.where() == where, str(err.value)


@needs_qemu
def test_real_qemu_accepts_the_engine_specs_command_line(tmpdir_short):
    s = full()
    s["disks"][1]["path"] = _qcow(tmpdir_short)
    s["nics"] = []  # a tap needs a bridge: tests/integration/test_engine_full.py
    spec = from_dict(s)
    pci.assign_slots(spec)
    r = run_qemu(spec, tmpdir_short, {"disk-vda": ("iothread", "serial"), "scsi0": ("iothread",),
                                      "channel0": ("name",), "channel1": ("name",), "tablet0": ("type",)},
                 channel_sockets={"ovirt-guest-agent.0": f"{tmpdir_short}/oga"}, spice_port=_free_port())
    assert r["placement"]["disk-vda"] == ("/objects/iothread1", SERIAL)
    assert r["placement"]["scsi0"] == ("/objects/iothread1",)
    assert r["placement"]["channel0"] == ("ovirt-guest-agent.0",)
    assert r["placement"]["channel1"] == ("com.redhat.spice.0",)
    assert r["placement"]["tablet0"] == ("usb-tablet",)


def _qcow(d: str) -> str:
    import os
    import subprocess

    path = os.path.join(d, "root.qcow2")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", path, "16M"], check=True)
    return path


def _free_port() -> int:
    from kvmd import ports

    return ports.free_port("127.0.0.1")


def test_cmdline_helpers_are_pure():
    s = from_dict(full())
    assert cmdline.smbios_arg(s) == cmdline.smbios_arg(s) and cmdline.scsi_iothread(s) == 1


def test_cpu_shares_go_to_the_vm_cgroup_as_libvirt_writes_them():
    from kvmd import cgroups

    cg = cgroups.Cgroups("x", enabled=False)
    limits = cgroups.limits_for(2, 128 << 20, shares=1020)
    cg.version = "v1"
    assert ("cpu.shares", "1020") in cg._limit_files("cpu", limits)
    cg.version = "v2"
    assert ("cpu.weight", "39") in cg._limit_files("unified", limits)  # 1 + (1020-2)*9999/262142
    assert cgroups.shares_to_weight(2) == 1 and cgroups.shares_to_weight(262144) == 10000
    assert cgroups.shares_to_weight(1024) == 39  # libvirt's default-looking 1024 is weight 39, not 100
    assert not any(f in ("cpu.shares", "cpu.weight") for f, _ in cg._limit_files("unified", cgroups.limits_for(2, 1)))


def test_spice_ports_are_free_and_not_handed_out_twice():
    from kvmd import ports

    a, b = ports.free_port("127.0.0.1"), ports.free_port("127.0.0.1")
    assert a != b and a in ports.SPICE_RANGE and b in ports.SPICE_RANGE
