"""OVF (oVirt's stored VM envelope) <-> kvmd spec, both ways."""

from __future__ import annotations

import copy
import os

import pytest
from lxml import etree

from compat.errors import UnsupportedXML
from compat.ovf import ovf_to_spec, spec_to_ovf
from kvmd.spec import from_dict, to_dict

DATA = os.path.join(os.path.dirname(os.path.dirname(__file__)), "data", "ovf")
OVF_NS = "http://schemas.dmtf.org/ovf/envelope/1/"
RASD = "{http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData}"


def sample() -> str:
    with open(os.path.join(DATA, "engine-vm.ovf")) as f:
        return f.read()


def canon(xml: str) -> bytes:
    parser = etree.XMLParser(remove_blank_text=True, remove_comments=True, resolve_entities=False)
    root = etree.fromstring(xml.encode() if not xml.startswith("<?xml") else xml.split("?>", 1)[1].encode(),
                            parser)
    hw = [s for s in root.iter("Section") if "VirtualHardware" in (s.get(f"{{{etree.QName(s).namespace or ''}}}type") or
                                                                      s.get("{http://www.w3.org/2001/XMLSchema-instance}type") or "")][0]
    items = sorted(hw.findall("Item"), key=lambda i: i.findtext(RASD + "InstanceId") or "")
    for i in items:
        hw.remove(i)
        hw.append(i)
    return etree.tostring(root, method="c14n", exclusive=True)


def without(spec: dict, key: str = "ovf") -> dict:
    spec = copy.deepcopy(spec)
    spec["metadata"].pop(key, None)
    return spec


def test_engine_ovf_becomes_a_spec():
    s = ovf_to_spec(sample())
    assert s["name"] == "web" and s["uuid"] == "3f2b9c1e-7a55-4c1d-9e0f-2b8a6d4c1e77"
    assert s["machine"] == "q35" and s["boot"]["firmware"] == "bios"
    assert s["cpu"] == {"count": 2, "sockets": 2, "cores": 1, "threads": 1}
    assert s["memory"] == {"size": "512MiB", "max": "2GiB", "balloon": True}
    disk, cd = s["disks"]
    assert disk["path"] == ("/rhev/data-center/0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0/4b3e2f19-8c1a-4f44-"
                            "a1b2-9f3e6d7c8b01/images/a6e1c3d2-5b4f-4e8a-9c7d-0e1f2a3b4c5d/"
                            "f1e2d3c4-b5a6-4978-8695-a4b3c2d1e0f9")
    assert (disk["name"], disk["format"], disk["bus"], disk["bootIndex"]) == ("web_disk1", "qcow2", "virtio", 1)
    assert (cd["media"], cd["path"], cd["bootIndex"]) == ("cdrom", "/images/debian-12.iso", 2)
    assert s["nics"] == [{"name": "nic1", "mac": "00:1a:4a:16:01:51", "model": "virtio", "backend": "tap",
                          "bridge": "ovirtmgmt"}]
    assert s["graphics"] == [{"type": "vnc", "listen": "127.0.0.1"}]
    assert s["rng"] is True and s["serial"] == {"type": "socket"} and s["guestAgent"] is True
    from_dict(s)


def test_engine_ovf_survives_spec_round_trip():
    xml = sample()
    assert canon(spec_to_ovf(ovf_to_spec(xml))) == canon(xml)


def test_disk_paths_can_be_mapped_by_the_caller():
    s = ovf_to_spec(sample(), disk_path=lambda pool, sd, img, vol: f"/images/{img}/{vol}.qcow2")
    assert s["disks"][0]["path"].startswith("/images/a6e1c3d2-")


def test_changed_spec_rewrites_only_what_it_owns():
    s = ovf_to_spec(sample())
    s["memory"]["size"] = "1GiB"
    s["cpu"] = {"count": 4, "sockets": 2, "cores": 2, "threads": 1}
    s["nics"][0]["model"] = "e1000"
    out = etree.fromstring(spec_to_ovf(s).encode())
    items = out.findall(".//Item")
    mem = [i for i in items if i.findtext(RASD + "ResourceType") == "4"][0]
    assert mem.findtext(RASD + "VirtualQuantity") == "1024"
    cpu = [i for i in items if i.findtext(RASD + "ResourceType") == "3"][0]
    assert cpu.findtext(RASD + "cpu_per_socket") == "2" and cpu.findtext(RASD + "VirtualQuantity") == "4"
    nic = [i for i in items if i.findtext(RASD + "ResourceType") == "10"][0]
    assert nic.findtext(RASD + "ResourceSubType") == "2"
    assert nic.findtext(RASD + "VnicProfileName") == "ovirtmgmt"  # engine fields kept
    assert out.findtext(".//TimeZone") == "Etc/GMT"


def test_kvmd_spec_survives_ovf_round_trip():
    spec = to_dict(from_dict({
        "name": "native", "machine": "q35", "boot": {"firmware": "uefi"},
        "cpu": {"count": 2, "model": "host"}, "memory": {"size": "1GiB", "max": "4GiB"},
        "disks": [{"name": "root", "path": "/var/lib/kvmd/images/root.qcow2", "format": "qcow2",
                   "bus": "virtio", "cache": "none", "bootIndex": 1},
                  {"name": "install", "media": "cdrom", "path": "/iso/d.iso"}],
        "nics": [{"name": "lan", "mac": "52:54:00:12:34:56", "backend": "tap", "bridge": "br0"},
                 {"name": "nat", "mac": "52:54:00:12:34:57", "backend": "user", "model": "e1000"}],
        "graphics": [{"type": "spice"}], "rng": True, "guestAgent": True}))
    back = ovf_to_spec(spec_to_ovf(spec))
    back = without(back)
    # OVF spells CPUs as a full topology and has no aio setting: compare what it carries
    assert back["cpu"]["count"] == 2 and back["cpu"]["model"] == "host"
    spec["cpu"] = back["cpu"]
    back["disks"][0]["aio"] = spec["disks"][0]["aio"]
    assert back == spec


def test_unknown_hardware_is_refused_naming_the_item():
    xml = sample().replace("<Type>rng</Type>", "<Type>watchdog</Type>")
    with pytest.raises(UnsupportedXML) as err:
        ovf_to_spec(xml)
    assert err.value.element.startswith("/ovf:Envelope/Content/Section/Item[")
    assert "watchdog" in str(err.value)


def test_secure_boot_bios_type_is_refused():
    with pytest.raises(UnsupportedXML) as err:
        ovf_to_spec(sample().replace("<BiosType>2</BiosType>", "<BiosType>4</BiosType>"))
    assert err.value.element == "/ovf:Envelope/Content/BiosType"


def test_usb_enabled_is_refused():
    with pytest.raises(UnsupportedXML):
        ovf_to_spec(sample().replace("<rasd:UsbPolicy>DISABLED", "<rasd:UsbPolicy>ENABLED_NATIVE"))


def test_not_an_envelope_is_refused():
    with pytest.raises(UnsupportedXML):
        ovf_to_spec("<domain/>")
