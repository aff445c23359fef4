"""Parity: defining, looking up, listing, XML, metadata and errors — no guest started."""

from __future__ import annotations

import uuid as uuidlib
import xml.etree.ElementTree as ET

URI = "http://kvmd.example/parity/1"


def test_defined_domain_is_found_listed_and_shut_off_until_undefined(virt):
    lv, conn = virt.lv, virt.conn
    name = virt.name("def")
    dom = conn.defineXML(virt.firmware_xml(name, 160))
    uuid = dom.UUIDString()
    assert dom.name() == name
    assert dom.UUID() == uuidlib.UUID(uuid).bytes
    assert conn.lookupByName(name).UUIDString() == uuid
    assert conn.lookupByUUIDString(uuid).name() == name
    assert dom.ID() == -1
    assert (dom.isActive(), dom.isPersistent()) == (0, 1)
    assert dom.state() == [lv.VIR_DOMAIN_SHUTOFF, lv.VIR_DOMAIN_SHUTOFF_UNKNOWN]
    assert dom.info() == [lv.VIR_DOMAIN_SHUTOFF, 160 * 1024, 160 * 1024, 1, 0]
    names = lambda flags: [d.name() for d in conn.listAllDomains(flags)]  # noqa: E731
    assert name in names(0)
    assert name in names(lv.VIR_CONNECT_LIST_DOMAINS_INACTIVE | lv.VIR_CONNECT_LIST_DOMAINS_PERSISTENT)
    assert name not in names(lv.VIR_CONNECT_LIST_DOMAINS_ACTIVE)
    assert name not in names(lv.VIR_CONNECT_LIST_DOMAINS_TRANSIENT)
    assert name in conn.listDefinedDomains()
    assert conn.listDomainsID() == []

    # redefining with the same uuid updates; with another uuid it is refused
    conn.defineXML(virt.firmware_xml(name, 192).replace("</name>", f"</name><uuid>{uuid}</uuid>"))
    assert conn.lookupByName(name).info()[1] == 192 * 1024
    other = virt.firmware_xml(name).replace("</name>", f"</name><uuid>{uuidlib.uuid4()}</uuid>")
    assert virt.error(conn.defineXML, other).get_error_code() == lv.VIR_ERR_OPERATION_FAILED

    assert dom.undefine() == 0
    assert virt.error(conn.lookupByName, name).get_error_code() == lv.VIR_ERR_NO_DOMAIN
    assert virt.error(dom.state).get_error_code() == lv.VIR_ERR_NO_DOMAIN
    assert name not in names(0)


def test_unknown_domains_are_no_domain_errors(virt):
    lv, conn = virt.lv, virt.conn
    e = virt.error(conn.lookupByName, "no-such-domain")
    assert e.get_error_code() == lv.VIR_ERR_NO_DOMAIN
    assert e.get_error_message() == "Domain not found: no domain with matching name 'no-such-domain'"
    e = virt.error(conn.lookupByUUIDString, "5b1e8c2a-3f3a-4c7e-9d2b-000000000001")
    assert e.get_error_code() == lv.VIR_ERR_NO_DOMAIN


def test_bad_xml_gets_libvirts_error_codes(virt):
    lv, conn = virt.lv, virt.conn
    assert virt.error(conn.defineXML, "<domain").get_error_code() == lv.VIR_ERR_XML_DETAIL
    assert virt.error(conn.createXML, "<notdomain/>", 0).get_error_code() == lv.VIR_ERR_XML_ERROR
    no_os = "<domain type='qemu'><name>x</name><memory>131072</memory></domain>"
    assert virt.error(conn.defineXML, no_os).get_error_code() == lv.VIR_ERR_XML_ERROR


def _xml(dom, flags=0) -> ET.Element:
    return ET.fromstring(dom.XMLDesc(flags))


def test_domain_xml_has_the_elements_that_matter(virt):
    conn = virt.conn
    name = virt.name("xml")
    img = virt.image("root.raw")
    xml = virt.firmware_xml(name, 192).replace("<vcpu>1</vcpu>", "<vcpu>2</vcpu>").replace(
        "<devices>",
        "<devices><disk type='file' device='disk'><driver name='qemu' type='raw'/>"
        f"<source file='{img}'/><target dev='vda' bus='virtio'/><serial>PARITY1</serial></disk>"
        "<interface type='user'><mac address='52:54:00:12:34:56'/><model type='virtio'/></interface>")
    dom = conn.defineXML(xml)
    root = _xml(dom)
    assert root.tag == "domain" and root.get("type") == "qemu" and root.get("id") is None
    assert root.findtext("name") == name
    assert root.findtext("uuid") == dom.UUIDString()
    mem = root.find("memory")
    assert int(mem.text) * {"KiB": 1, "MiB": 1024}[mem.get("unit", "KiB")] == 192 * 1024
    assert root.findtext("vcpu").strip() == "2"
    assert root.find("os/type").text == "hvm"
    disk = root.find("devices/disk")
    assert disk.get("device") == "disk"
    assert disk.find("source").get("file") == img
    assert disk.find("target").get("dev") == "vda" and disk.find("target").get("bus") == "virtio"
    assert disk.findtext("serial") == "PARITY1"
    nic = root.find("devices/interface")
    assert nic.get("type") == "user" and nic.find("mac").get("address") == "52:54:00:12:34:56"
    assert nic.find("model").get("type") == "virtio"
    assert root.find("devices/emulator") is not None
    assert _xml(dom, virt.lv.VIR_DOMAIN_XML_INACTIVE).findtext("name") == name


def test_metadata_is_set_read_and_removed_like_libvirt(virt):
    lv, conn = virt.lv, virt.conn
    dom = conn.defineXML(virt.firmware_xml(virt.name("meta")))
    elem = lv.VIR_DOMAIN_METADATA_ELEMENT
    e = virt.error(dom.metadata, elem, URI, 0)
    assert e.get_error_code() == lv.VIR_ERR_NO_DOMAIN_METADATA

    assert dom.setMetadata(elem, "<app a='1'><item>x</item></app>", "par", URI, lv.VIR_DOMAIN_AFFECT_CONFIG) == 0
    assert dom.metadata(elem, URI, 0) == '<app a="1">\n  <item>x</item>\n</app>'
    assert dom.metadata(elem, URI, lv.VIR_DOMAIN_AFFECT_CONFIG) == '<app a="1">\n  <item>x</item>\n</app>'
    meta = _xml(dom).find("metadata")
    assert meta is not None and meta.find(f"{{{URI}}}app") is not None
    assert meta.find(f"{{{URI}}}app/{{{URI}}}item").text == "x"

    dom.setMetadata(elem, "<other/>", "par", URI, 0)
    assert dom.metadata(elem, URI, 0) == "<other/>"
    dom.setMetadata(lv.VIR_DOMAIN_METADATA_TITLE, "Parity domain", None, None, 0)
    assert dom.metadata(lv.VIR_DOMAIN_METADATA_TITLE, None, 0) == "Parity domain"
    assert _xml(dom).findtext("title") == "Parity domain"

    dom.setMetadata(elem, None, None, URI, 0)
    assert virt.error(dom.metadata, elem, URI, 0).get_error_code() == lv.VIR_ERR_NO_DOMAIN_METADATA
    e = virt.error(dom.setMetadata, elem, "<x/>", "par", URI, lv.VIR_DOMAIN_AFFECT_LIVE)
    assert e.get_error_code() == lv.VIR_ERR_OPERATION_INVALID  # not running


def test_host_calls_answer_as_libvirt_does(virt):
    import socket

    conn = virt.conn
    assert conn.isAlive() == 1
    assert conn.getHostname() == socket.gethostname()
    assert conn.getVersion() >= 7_000_000  # QEMU 7.x
    assert conn.getLibVersion() >= 9_000_000
    caps = ET.fromstring(conn.getCapabilities())
    assert caps.findtext("host/cpu/arch") == "x86_64"
    assert caps.findtext("host/uuid")
    guest = next(g for g in caps.findall("guest") if g.find("arch").get("name") == "x86_64")
    assert guest.findtext("os_type") == "hvm"
    assert guest.findtext("arch/emulator").endswith("qemu-system-x86_64")
    assert "qemu" in [d.get("type") for d in guest.findall("arch/domain")]
    assert int(caps.find("host/topology/cells").get("num")) >= 1
