"""metadata()/setMetadata() edit domain XML as libvirt does (pure XML, no daemon)."""

from __future__ import annotations

import pytest

import compat.libvirt as lv
from compat.virt.metadata import get_metadata, set_metadata

DOM = """<domain type="kvm">
  <name>web</name>
  <uuid>6f2c7d1e-6a1b-4b51-9a55-2d5e4f6d9c01</uuid>
  <metadata>
    <ovirt-vm:vm xmlns:ovirt-vm="http://ovirt.org/vm/1.0"><ovirt-vm:clusterVersion>4.7</ovirt-vm:clusterVersion></ovirt-vm:vm>
  </metadata>
  <memory unit="KiB">262144</memory>
</domain>
"""
URI = "http://example.org/app/1"


def test_element_is_stored_in_its_namespace_and_read_back_without_it():
    xml = set_metadata(DOM, lv.VIR_DOMAIN_METADATA_ELEMENT, "<foo a='1'><bar>x</bar></foo>", "app", URI)
    assert '<app:foo xmlns:app="http://example.org/app/1" a="1">' in xml
    assert "<app:bar>x</app:bar>" in xml
    assert get_metadata(xml, lv.VIR_DOMAIN_METADATA_ELEMENT, URI) == '<foo a="1">\n  <bar>x</bar>\n</foo>'


def test_other_namespaces_survive_untouched():
    xml = set_metadata(DOM, lv.VIR_DOMAIN_METADATA_ELEMENT, "<foo/>", "app", URI)
    assert '<ovirt-vm:vm xmlns:ovirt-vm="http://ovirt.org/vm/1.0"><ovirt-vm:clusterVersion>4.7' in xml
    got = get_metadata(xml, lv.VIR_DOMAIN_METADATA_ELEMENT, "http://ovirt.org/vm/1.0")
    assert got == "<vm>\n  <clusterVersion>4.7</clusterVersion>\n</vm>"


def test_setting_again_replaces_and_none_removes():
    xml = set_metadata(DOM, lv.VIR_DOMAIN_METADATA_ELEMENT, "<foo/>", "app", URI)
    xml = set_metadata(xml, lv.VIR_DOMAIN_METADATA_ELEMENT, "<baz/>", "app", URI)
    assert get_metadata(xml, lv.VIR_DOMAIN_METADATA_ELEMENT, URI) == "<baz/>"
    xml = set_metadata(xml, lv.VIR_DOMAIN_METADATA_ELEMENT, None, None, URI)
    with pytest.raises(lv.libvirtError) as exc:
        get_metadata(xml, lv.VIR_DOMAIN_METADATA_ELEMENT, URI)
    assert exc.value.get_error_code() == lv.VIR_ERR_NO_DOMAIN_METADATA


def test_metadata_element_is_created_after_the_name_and_uuid():
    bare = '<domain type="kvm"><name>a</name><uuid>6f2c7d1e-6a1b-4b51-9a55-2d5e4f6d9c01</uuid><memory>1</memory></domain>'
    xml = set_metadata(bare, lv.VIR_DOMAIN_METADATA_ELEMENT, "<foo/>", "app", URI)
    assert xml.index("</uuid>") < xml.index("<metadata>") < xml.index("<memory>")


def test_title_and_description_are_plain_text():
    xml = set_metadata(DOM, lv.VIR_DOMAIN_METADATA_TITLE, "Web server", None, None)
    xml = set_metadata(xml, lv.VIR_DOMAIN_METADATA_DESCRIPTION, "serves\nthe web", None, None)
    assert get_metadata(xml, lv.VIR_DOMAIN_METADATA_TITLE, None) == "Web server"
    assert get_metadata(xml, lv.VIR_DOMAIN_METADATA_DESCRIPTION, None) == "serves\nthe web"
    with pytest.raises(lv.libvirtError) as exc:
        set_metadata(xml, lv.VIR_DOMAIN_METADATA_TITLE, "two\nlines", None, None)
    assert exc.value.get_error_code() == lv.VIR_ERR_INVALID_ARG
    xml = set_metadata(xml, lv.VIR_DOMAIN_METADATA_TITLE, "", None, None)
    with pytest.raises(lv.libvirtError):
        get_metadata(xml, lv.VIR_DOMAIN_METADATA_TITLE, None)


def test_bad_arguments_are_libvirts_errors():
    with pytest.raises(lv.libvirtError) as exc:
        get_metadata(DOM, lv.VIR_DOMAIN_METADATA_ELEMENT, None)
    assert exc.value.get_error_code() == lv.VIR_ERR_INVALID_ARG
    with pytest.raises(lv.libvirtError) as exc:
        set_metadata(DOM, lv.VIR_DOMAIN_METADATA_ELEMENT, "<foo/>", None, URI)
    assert exc.value.get_error_code() == lv.VIR_ERR_INVALID_ARG
    with pytest.raises(lv.libvirtError) as exc:
        get_metadata(DOM, 7, URI)
    assert exc.value.get_error_code() == lv.VIR_ERR_INVALID_ARG
    with pytest.raises(lv.libvirtError) as exc:
        set_metadata(DOM, lv.VIR_DOMAIN_METADATA_ELEMENT, "<foo", "app", URI)
    assert exc.value.get_error_code() == lv.VIR_ERR_XML_DETAIL


def test_entities_in_a_metadata_fragment_are_refused():
    evil = '<!DOCTYPE x [<!ENTITY a "aaaa">]><foo>&a;</foo>'
    with pytest.raises(lv.libvirtError):
        set_metadata(DOM, lv.VIR_DOMAIN_METADATA_ELEMENT, evil, "app", URI)
