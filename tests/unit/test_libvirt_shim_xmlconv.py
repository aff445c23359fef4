"""The shim's glue to the domain-XML converters: error codes, device docs, the record."""

from __future__ import annotations

import pytest

import compat.libvirt as lv
from compat.virt import xmlconv

pytest.importorskip("compat.domxml")

FW = """<domain type='qemu'>
  <name>fw</name>
  <uuid>6f2c7d1e-6a1b-4b51-9a55-2d5e4f6d9c01</uuid>
  <memory unit='MiB'>256</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='q35'>hvm</type></os>
  <devices>
    <disk type='file' device='disk'>
      <driver name='qemu' type='raw'/><source file='/images/a.raw'/><target dev='vda' bus='virtio'/>
    </disk>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/><source file='/images/b.qcow2'/><target dev='vdb' bus='virtio'/>
      <alias name='ua-data'/>
    </disk>
    <interface type='user'><mac address='52:54:00:00:00:01'/><model type='virtio'/></interface>
  </devices>
</domain>
"""


@pytest.mark.parametrize("xml,code", [
    ("<domain", lv.VIR_ERR_XML_DETAIL),
    ("<notdomain/>", lv.VIR_ERR_XML_ERROR),
    ("<domain type='qemu'><name>x</name></domain>", lv.VIR_ERR_XML_ERROR),
    (FW.replace("<devices>", "<devices><hostdev mode='subsystem' type='pci'/>"), lv.VIR_ERR_CONFIG_UNSUPPORTED),
    ("", lv.VIR_ERR_INVALID_ARG),
])
def test_conversion_errors_carry_libvirts_codes(xml, code):
    with pytest.raises(lv.libvirtError) as exc:
        xmlconv.to_spec(xml)
    assert exc.value.get_error_code() == code


def test_disks_are_found_by_target_dev_source_path_or_alias():
    spec = xmlconv.to_spec(FW)
    assert [d["name"] for d in spec["disks"]] == ["vda", "data"]
    assert xmlconv.disk_by_path(spec, "vdb") == "data"
    assert xmlconv.disk_by_path(spec, "/images/a.raw") == "vda"
    with pytest.raises(lv.libvirtError) as exc:
        xmlconv.disk_by_path(spec, "vdz")
    assert exc.value.get_error_code() == lv.VIR_ERR_INVALID_ARG
    assert xmlconv.find_device("<disk><target dev='vdb'/></disk>", spec) == ("disks", "data")
    assert xmlconv.find_device("<interface type='user'><mac address='52:54:00:00:00:01'/></interface>",
                               spec) == ("nics", "net0")
    with pytest.raises(lv.libvirtError) as exc:
        xmlconv.find_device("<disk><target dev='vdz'/></disk>", spec)
    assert exc.value.get_error_code() == lv.VIR_ERR_DEVICE_MISSING


def test_device_xml_becomes_a_kvmd_device_named_like_the_converter_names_it():
    spec = xmlconv.to_spec(FW)
    kind, doc, record = xmlconv.device_doc(
        "<disk type='file' device='disk'><driver name='qemu' type='qcow2'/>"
        "<source file='/images/c.qcow2'/><target dev='vdc' bus='virtio'/><serial>S1</serial></disk>", spec)
    assert kind == "disks"
    assert doc["name"] == "vdc" and doc["path"] == "/images/c.qcow2" and doc["format"] == "qcow2"
    assert doc["serial"] == "S1"
    kind, doc, record = xmlconv.device_doc(
        "<interface type='user'><mac address='52:54:00:00:00:02'/><model type='virtio'/>"
        "<alias name='ua-0f0e0d0c-0b0a-0908-0706-050403020100'/></interface>", spec)
    assert kind == "nics" and doc["name"] == "net1" and doc["mac"] == "52:54:00:00:00:02"
    assert "ua-0f0e0d0c" in record["nic:net1"]
    with pytest.raises(lv.libvirtError) as exc:
        xmlconv.device_doc("<hostdev/>", spec)
    assert exc.value.get_error_code() == lv.VIR_ERR_NO_SUPPORT


def test_active_xml_has_the_id_and_hides_passwords_unless_secure():
    spec = xmlconv.to_spec(FW.replace("</devices>", "<graphics type='vnc' passwd='s3cret'/></devices>"))
    assert "s3cret" in xmlconv.to_xml(spec)
    public = xmlconv.to_xml(spec, dom_id=42, secure=False)
    assert "s3cret" not in public and 'id="42"' in public


def test_metadata_edits_replace_only_the_converters_domain_record():
    current = {"owner": "team", "libvirt": {"metadata": "<metadata/>", "devices": {"disk:vda": "<disk/>"}}}
    reparsed = {"libvirt": {"metadata": "<metadata><a/></metadata>", "devices": {"disk:other": ""}}}
    merged = xmlconv.merge_libvirt_metadata(current, reparsed=reparsed)
    assert merged == {"owner": "team", "libvirt": {"metadata": "<metadata><a/></metadata>",
                                                   "devices": {"disk:vda": "<disk/>"}}}
    native = xmlconv.merge_libvirt_metadata({"owner": "team"}, reparsed=reparsed)
    assert native["libvirt"] == reparsed["libvirt"] and native["owner"] == "team"
    added = xmlconv.merge_libvirt_metadata(current, devices={"nic:net1": "<interface/>", "disk:vda": None})
    assert added["libvirt"]["devices"] == {"nic:net1": "<interface/>"}
    assert current["libvirt"]["devices"] == {"disk:vda": "<disk/>"}  # not modified in place


def test_a_devices_recorded_user_alias_is_found_for_its_events():
    spec = xmlconv.to_spec(FW.replace("<model type='virtio'/></interface>",
                                      "<model type='virtio'/><alias name='ua-5a5a5a5a-0000-4000-8000-000000000001'/>"
                                      "</interface>"))
    assert xmlconv.recorded_alias(spec, "nic", "net0") == "ua-5a5a5a5a-0000-4000-8000-000000000001"
    assert xmlconv.recorded_alias(spec, "disk", "vda") is None
    assert xmlconv.recorded_alias({"metadata": {}}, "disk", "vda") is None
