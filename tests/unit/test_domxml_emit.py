"""spec -> XML for specs written for kvmd (no libvirt round-trip record)."""

from __future__ import annotations

import os

import yaml
from lxml import etree

from compat.domxml import spec_to_xml, xml_to_spec
from kvmd.spec import from_dict, to_dict

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def xml_of(spec: dict) -> etree._Element:
    return etree.fromstring(spec_to_xml(spec).encode())


def without_record(spec: dict) -> dict:
    spec = dict(spec)
    spec["metadata"] = {k: v for k, v in spec["metadata"].items() if k != "libvirt"}
    return spec


def test_native_spec_gets_libvirts_usual_spelling():
    dom = xml_of({"name": "tiny", "memory": {"size": "128MiB"}})
    assert dom.get("type") == "kvm"
    assert dom.findtext("memory") == "131072" and dom.find("memory").get("unit") == "KiB"
    assert dom.findtext("currentMemory") == "131072"
    assert dom.find("vcpu").get("placement") == "static"
    assert dom.find("os/type").get("arch") == "x86_64" and dom.find("os/type").get("machine") == "q35"
    assert [b.get("dev") for b in dom.findall("os/boot")] == ["hd", "cdrom", "network"]
    assert dom.find("features/acpi") is not None and dom.find("features/apic") is not None
    assert dom.find("clock").get("offset") == "utc"
    assert dom.find("devices/serial").get("type") == "pty"
    assert dom.find("devices/console/target").get("type") == "serial"
    assert dom.find("devices/controller[@type='usb']").get("model") == "none"
    assert dom.find("devices/memballoon").get("model") == "virtio"


def test_example_spec_round_trips_through_xml():
    with open(os.path.join(ROOT, "examples", "web.yaml")) as f:
        spec = to_dict(from_dict(yaml.safe_load(f)))
    back = xml_to_spec(spec_to_xml(spec))
    assert without_record(back) == spec


def test_kvmd_disk_names_survive_as_user_aliases():
    spec = to_dict(from_dict({"name": "n", "disks": [
        {"name": "root", "path": "/i/r.qcow2", "format": "qcow2"},
        {"name": "vdb", "path": "/i/b.raw"},
        {"name": "cd", "media": "cdrom", "path": "/i/cd.iso"},
        {"name": "scratch", "bus": "scsi", "path": "/dev/sdz"},
    ]}))
    dom = xml_of(spec)
    disks = dom.findall("devices/disk")
    assert [d.find("target").get("dev") for d in disks] == ["vda", "vdb", "sda", "sdb"]
    assert [d.find("alias").get("name") if d.find("alias") is not None else None for d in disks] == [
        "ua-root", None, "ua-cd", "ua-scratch"]
    assert disks[3].get("type") == "block" and disks[3].find("source").get("dev") == "/dev/sdz"
    assert dom.find("devices/controller[@type='scsi']").get("model") == "virtio-scsi"
    assert without_record(xml_to_spec(spec_to_xml(spec))) == spec


def test_kvmd_metadata_travels_as_json_in_its_own_namespace():
    spec = to_dict(from_dict({"name": "m", "metadata": {"owner": "web-team", "tier": [1, 2]}}))
    xml = spec_to_xml(spec)
    assert 'xmlns:kvmd="urn:kvmd:metadata:1"' in xml
    assert without_record(xml_to_spec(xml))["metadata"] == {"owner": "web-team", "tier": [1, 2]}


def test_partial_topology_is_completed_like_qemu():
    dom = xml_of({"name": "t", "cpu": {"count": 4, "cores": 2}})
    topo = dom.find("cpu/topology")
    assert (topo.get("sockets"), topo.get("cores"), topo.get("threads")) == ("2", "2", "1")
    assert dom.findtext("vcpu") == "4" and dom.find("vcpu").get("current") is None


def test_vcpus_below_topology_are_current():
    dom = xml_of({"name": "t", "cpu": {"count": 2, "sockets": 4, "cores": 1, "threads": 1}})
    assert dom.findtext("vcpu") == "4" and dom.find("vcpu").get("current") == "2"


def test_cpu_models_become_modes():
    assert xml_of({"name": "c", "cpu": {"model": "host"}}).find("cpu").get("mode") == "host-passthrough"
    assert xml_of({"name": "c", "cpu": {"model": "max"}}).find("cpu").get("mode") == "maximum"
    cpu = xml_of({"name": "c", "cpu": {"model": "Skylake-Client,+vmx,pcid=off"}}).find("cpu")
    assert cpu.get("mode") == "custom" and cpu.findtext("model") == "Skylake-Client"
    assert [(f.get("policy"), f.get("name")) for f in cpu.findall("feature")] == [
        ("require", "vmx"), ("disable", "pcid")]


def test_uefi_spec_points_at_kvmds_ovmf():
    dom = xml_of({"name": "u", "boot": {"firmware": "uefi", "nvram": "/var/lib/x_VARS.fd"}})
    loader = dom.find("os/loader")
    assert loader.get("type") == "pflash" and loader.text.endswith("OVMF_CODE_4M.fd")
    assert dom.findtext("os/nvram") == "/var/lib/x_VARS.fd"


def test_per_device_boot_order_replaces_os_boot():
    dom = xml_of({"name": "b", "disks": [{"name": "vda", "path": "/x", "bootIndex": 1}]})
    assert dom.findall("os/boot") == []
    assert dom.find("devices/disk/boot").get("order") == "1"


def test_graphics_video_follows_kvmd_choice():
    dom = xml_of({"name": "g", "graphics": [{"type": "spice"}]})
    assert dom.find("devices/video/model").get("type") == "qxl"
    assert dom.find("devices/graphics").get("autoport") == "yes"


def test_qemu_args_become_qemu_commandline():
    xml = spec_to_xml({"name": "q", "qemuArgs": ["-device", "pvpanic"]})
    dom = etree.fromstring(xml.encode())
    ns = {"qemu": "http://libvirt.org/schemas/domain/qemu/1.0"}
    assert [a.get("value") for a in dom.findall("qemu:commandline/qemu:arg", ns)] == ["-device", "pvpanic"]
