"""What the converter refuses, and how: one error naming the element (and attribute).

Each file in tests/data/domxml/unsupported/ starts with `<!-- expect: WHERE -->`, the
location the error must name (`UnsupportedXML.where()`), or "malformed XML".
"""

from __future__ import annotations

import glob
import os
import re
import time

import pytest

from compat.domxml import spec_to_xml, xml_to_spec
from compat.errors import MalformedXML, UnsupportedSpec, UnsupportedXML
from tests.unit.test_domxml_roundtrip import DATA

BAD = sorted(glob.glob(os.path.join(DATA, "unsupported", "*.xml")))


def _expected(text: str) -> str:
    m = re.search(r"<!-- expect: (.*?) -->", text)
    assert m, "an unsupported sample must say what it expects"
    return m.group(1)


@pytest.mark.parametrize("path", BAD, ids=os.path.basename)
def test_unsupported_sample_is_refused_naming_the_element(path):
    with open(path) as f:
        text = f.read()
    want = _expected(text)
    with pytest.raises(UnsupportedXML) as err:
        xml_to_spec(text)
    e = err.value
    line = str(e)
    assert "\n" not in line
    if want == "malformed XML":
        assert isinstance(e, MalformedXML)
        assert line.startswith("malformed XML: ")
    else:
        assert e.where() == want, line
        assert line.startswith(f"unsupported: {want}: ")


def test_error_has_element_attribute_and_reason():
    xml = open(os.path.join(DATA, "unsupported", "disk-io.xml")).read()
    with pytest.raises(UnsupportedXML) as err:
        xml_to_spec(xml)
    e = err.value
    assert e.element == "/domain/devices/disk[2]/driver"
    assert e.attribute == "io"
    assert e.reason == "must be one of threads, native, io_uring"
    assert str(e) == ("unsupported: /domain/devices/disk[2]/driver/@io='foo': "
                      "must be one of threads, native, io_uring")


def test_spec_level_problem_is_reported_at_its_element():
    xml = open(os.path.join(DATA, "unsupported", "disk-serial-too-long.xml")).read()
    with pytest.raises(UnsupportedXML) as err:
        xml_to_spec(xml)
    assert "disks[0].serial" in err.value.reason
    assert "1-36 characters" in err.value.reason


def test_entity_bomb_is_refused_quickly_without_expansion():
    xml = open(os.path.join(DATA, "unsupported", "doctype-entities.xml")).read()
    t0 = time.monotonic()
    with pytest.raises(MalformedXML):
        xml_to_spec(xml)
    assert time.monotonic() - t0 < 1


def test_external_entity_is_never_read():
    xml = open(os.path.join(DATA, "unsupported", "external-entity.xml")).read()
    with pytest.raises(MalformedXML) as err:
        xml_to_spec(xml)
    assert "root:" not in str(err.value)


def test_not_well_formed_xml_is_one_line():
    with pytest.raises(MalformedXML) as err:
        xml_to_spec("<domain><name>x</domain>")
    assert str(err.value).startswith("malformed XML: ")
    assert "\n" not in str(err.value)


def test_unknown_element_anywhere_is_refused_not_dropped():
    xml = open(os.path.join(DATA, "minimal.xml")).read()
    xml = xml.replace("<memballoon model='none'/>", "<memballoon model='none'><mystery/></memballoon>")
    with pytest.raises(UnsupportedXML) as err:
        xml_to_spec(xml)
    assert err.value.where() == "/domain/devices/memballoon/mystery"


def test_unknown_attribute_is_refused_not_dropped():
    xml = open(os.path.join(DATA, "minimal.xml")).read().replace("<vcpu placement='static'>",
                                                                 "<vcpu placement='static' foo='1'>")
    with pytest.raises(UnsupportedXML) as err:
        xml_to_spec(xml)
    assert err.value.where() == "/domain/vcpu/@foo='1'"


def test_spec_without_libvirt_spelling_is_refused():
    spec = {"name": "x", "nics": [{"name": "n", "backend": "none"}]}
    with pytest.raises(UnsupportedSpec) as err:
        spec_to_xml(spec)
    assert err.value.path == "nics[0].backend"


def test_invalid_spec_is_refused_with_its_path():
    with pytest.raises(UnsupportedSpec) as err:
        spec_to_xml({"name": "x", "memory": {"size": "lots"}})
    assert err.value.path == "memory.size"


def test_cpu_model_options_that_are_not_features_are_refused():
    with pytest.raises(UnsupportedSpec) as err:
        spec_to_xml({"name": "x", "cpu": {"model": "Skylake,l3-cache=8"}})
    assert err.value.path == "cpu.model"
