"""XML -> spec: what each supported element becomes (unit tests, no QEMU)."""

from __future__ import annotations

import pytest

from compat.domxml import spec_to_xml, xml_to_spec
from compat.errors import UnsupportedXML
from tests.unit.test_domxml_roundtrip import NETWORKS, corpus_text


def spec_of(name: str) -> dict:
    return xml_to_spec(corpus_text(name), networks=NETWORKS)


def test_minimal_domain_becomes_a_firmware_only_spec():
    s = spec_of("minimal.xml")
    assert s["name"] == "minimal"
    assert s["uuid"] == "6c1d7b4e-0d0b-4b53-9d7b-1f2a3b4c5d01"
    assert s["machine"] == "q35"
    assert s["memory"] == {"size": "128MiB", "balloon": False}
    assert s["cpu"] == {"count": 1}
    assert s["disks"] == [] and s["nics"] == []
    assert s["serial"] == {"type": "none"}
    assert s["boot"]["order"] == ["disk"]


def test_memory_units_are_converted_and_hotplug_room_kept():
    s = spec_of("memory.xml")
    assert s["memory"] == {"size": "256MiB", "max": "2GiB", "balloon": True, "slots": 16}
    assert s["cpu"] == {"count": 2, "sockets": 2, "cores": 1, "threads": 1}
    assert s["boot"]["order"] == ["disk", "network"]


@pytest.mark.parametrize("unit,value,size", [("b", "134217728", "128MiB"), ("bytes", "134217728", "128MiB"),
                                             ("k", "131072", "128MiB"), ("M", "128", "128MiB"),
                                             ("GiB", "1", "1GiB"), ("MB", "1000", "1000000000")])
def test_every_libvirt_memory_unit(unit, value, size):
    xml = corpus_text("minimal.xml").replace("<memory unit='KiB'>131072</memory>",
                                             f"<memory unit='{unit}'>{value}</memory>")
    xml = xml.replace("<currentMemory unit='KiB'>131072</currentMemory>", "")
    assert xml_to_spec(xml)["memory"]["size"] == size


def test_disks_are_named_after_target_dev_unless_user_aliased():
    s = spec_of("disks.xml")
    names = [d["name"] for d in s["disks"]]
    assert names == ["vda", "data", "sda", "sdb", "sdc"]
    vda, data, sda, cd, empty = s["disks"]
    assert vda == {"name": "vda", "path": "@IMAGES@/root.qcow2", "format": "qcow2", "bus": "virtio",
                   "media": "disk", "readonly": False, "cache": "none", "aio": "native",
                   "serial": "root-0001", "bootIndex": 1, "errorPolicy": "stop"}
    assert data["readonly"] is True and data["bus"] == "virtio"
    assert sda["bus"] == "scsi" and sda["errorPolicy"] == "report"
    assert cd["media"] == "cdrom" and cd["bus"] == "sata" and cd["bootIndex"] == 2
    assert empty["media"] == "cdrom" and "path" not in empty
    # the alias-named disk keeps its target dev for the way back
    assert "<target dev=\"vdb\"/>" in s["metadata"]["libvirt"]["devices"]["disk:data"]


def test_ide_disks_on_i440fx_use_kvmd_sata_bus():
    s = spec_of("disks-pc.xml")
    assert s["machine"] == "pc"
    assert [(d["name"], d["bus"], d["media"]) for d in s["disks"]] == [
        ("hda", "sata", "disk"), ("hdc", "sata", "cdrom"), ("vda", "virtio", "disk")]
    assert s["boot"]["order"] == ["cdrom", "disk"]
    assert 'bus="ide"' in spec_to_xml(s)


def test_block_disks_keep_their_device_path():
    s = spec_of("disks-block.xml")
    assert [d["path"] for d in s["disks"]] == ["/dev/vg0/root", "/dev/vg0/lv-data"]
    assert s["disks"][1]["name"] == "lvdata"


def test_interfaces_of_each_kind():
    s = spec_of("network.xml")
    br, net, tap, user = s["nics"]
    assert br == {"name": "net0", "mac": "52:54:00:6b:00:01", "model": "virtio", "backend": "tap",
                  "bridge": "br0"}
    assert net["backend"] == "tap" and net["bridge"] == "virbr0"  # mapped by the caller
    assert tap == {"name": "net2", "mac": "52:54:00:6b:00:03", "model": "e1000", "backend": "tap",
                   "tap": "tap-kvmd0"}
    assert user["name"] == "slirp" and user["backend"] == "user" and user["model"] == "rtl8139"


def test_user_nics_keep_boot_order_and_alias_names():
    s = spec_of("nics-user.xml")
    assert [n["name"] for n in s["nics"]] == ["net0", "mgmt", "net2"]
    assert s["nics"][0]["bootIndex"] == 1


def test_graphics_with_password_and_automatic_ports():
    s = spec_of("graphics.xml")
    assert s["graphics"] == [{"type": "vnc", "listen": "127.0.0.1", "password": "s3cret"},
                             {"type": "spice", "listen": "127.0.0.1"}]
    assert spec_of("graphics-fixed.xml")["graphics"] == [{"type": "vnc", "listen": "0.0.0.0", "port": 5907}]


def test_uefi_loader_and_nvram():
    boot = spec_of("uefi.xml")["boot"]
    assert boot["firmware"] == "uefi"
    assert boot["nvram"] == "@IMAGES@/uefi_VARS.fd"


def test_direct_kernel_boot_serial_agent_rng_and_reboot_action():
    s = spec_of("direct-kernel.xml")
    assert s["boot"]["kernel"] == "@KERNEL@" and s["boot"]["initrd"] == "@INITRD@"
    assert s["boot"]["cmdline"] == "@CMDLINE@"
    assert s["serial"] == {"type": "socket"}
    assert s["guestAgent"] is True and s["rng"] is True
    assert s["lifecycle"] == {"onPoweroff": "destroy", "onReboot": "destroy", "onCrash": "destroy"}


def test_serial_to_file():
    s = spec_of("serial-file.xml")
    assert s["serial"] == {"type": "file", "path": "@IMAGES@/serial.log"}


def test_vcpu_current_and_topology():
    s = spec_of("topology.xml")
    assert s["cpu"] == {"count": 2, "maxCount": 8, "model": "max,-svm", "sockets": 2, "cores": 2, "threads": 2}


def test_vcpu_current_without_topology_is_max_count():
    xml = corpus_text("minimal.xml").replace("<vcpu placement='static'>1</vcpu>",
                                             "<vcpu placement='static' current='1'>4</vcpu>")
    s = xml_to_spec(xml)
    assert s["cpu"] == {"count": 1, "maxCount": 4}
    back = spec_to_xml(s)
    assert "<topology" not in back and 'current="1"' in back and ">4</vcpu>" in back


def test_record_with_the_old_implicit_topology_still_writes_no_topology():
    s = xml_to_spec(corpus_text("minimal.xml"))
    s["cpu"] = {"count": 1, "sockets": 4, "cores": 1, "threads": 1}
    s["metadata"]["libvirt"]["implicit"] = ["topology"]
    back = spec_to_xml(s)
    assert "<topology" not in back and 'current="1"' in back and ">4</vcpu>" in back


@pytest.mark.parametrize("name,model", [("cpu-host.xml", "host,+invtsc"), ("cpu-host-model.xml", "host"),
                                        ("cpu-custom.xml", "qemu64,+sse4.2,-svm")])
def test_cpu_modes_become_qemu_cpu_models(name, model):
    assert spec_of(name)["cpu"]["model"] == model


def test_ovirt_engine_domain_keeps_metadata_and_qemu_commandline():
    s = spec_of("ovirt-engine.xml")
    meta = s["metadata"]["libvirt"]["metadata"]
    assert 'xmlns:ovirt-vm="http://ovirt.org/vm/1.0"' in meta
    assert "<ovirt-vm:imageID>a6e1c3d2-5b4f-4e8a-9c7d-0e1f2a3b4c5d</ovirt-vm:imageID>" in meta
    assert s["qemuArgs"] == ["-global", "ICH9-LPC.noreboot=off"]
    assert s["cpu"] == {"count": 1, "maxCount": 4, "model": "qemu64,+sse4.2", "sockets": 4, "cores": 1, "threads": 1}
    assert s["memory"] == {"size": "256MiB", "max": "1GiB", "balloon": True, "slots": 16}
    assert s["guestAgent"] is True
    assert [d["name"] for d in s["disks"]] == ["sdc", "vda"]
    assert s["nics"][0]["mac"] == "00:1a:4a:16:01:51"


def test_libvirt_runtime_details_are_accepted_and_dropped():
    xml = corpus_text("disks.xml").replace(
        "<target dev='vda' bus='virtio'/>",
        "<target dev='vda' bus='virtio'/><alias name='virtio-disk0'/>"
        "<address type='pci' domain='0x0000' bus='0x04' slot='0x00' function='0x0'/><backingStore/>")
    s = xml_to_spec(xml)
    assert "virtio-disk0" not in str(s) and "address" not in str(s)


def test_xml_declaration_and_bytes_are_accepted():
    text = "<?xml version='1.0' encoding='UTF-8'?>\n" + corpus_text("minimal.xml")
    assert xml_to_spec(text)["name"] == "minimal"
    assert xml_to_spec(text.encode())["name"] == "minimal"


def test_libvirt_labels_and_cgroup_partition_of_a_running_domain_are_dropped():
    xml = corpus_text("minimal.xml").replace(
        "<devices>", "<resource><partition>/machine</partition></resource>"
        "<seclabel type='dynamic' model='dac' relabel='yes'><label>+0:+0</label></seclabel><devices>")
    s = xml_to_spec(xml)
    assert "seclabel" not in str(s) and "resource" not in str(s)
    with pytest.raises(UnsupportedXML):
        xml_to_spec(xml.replace("/machine</partition>", "/custom</partition>"))
    with pytest.raises(UnsupportedXML):
        xml_to_spec(xml.replace("type='dynamic'", "type='static'"))


def test_spec_fields_the_xml_needed_reach_qemu():
    from kvmd.qemu import cmdline, pci
    from kvmd.spec import from_dict

    spec = from_dict(spec_of("ovirt-engine.xml"))
    pci.assign_slots(spec)
    argv = " ".join(cmdline.build_argv(spec, cmdline.LaunchOptions()))
    assert "slots=16,maxmem=1024M" in argv  # memory.slots from <maxMemory slots>
    assert "werror=stop,rerror=stop" in argv  # disk errorPolicy from error_policy
    assert "-smp 1,sockets=4,cores=1,threads=1,maxcpus=4" in argv  # <vcpu current='1'>4
