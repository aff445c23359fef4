"""Fuzzing libvirt domain XML -> kvmd spec (`compat.domxml.xml_to_spec`).

Documents are built around the valid samples in tests/data/domxml: elements and
attributes added, changed, dropped or nested deep, values made huge or odd (non-ASCII
digits, RTL marks), DOCTYPEs and entities prepended, bytes flipped. The converter must
return a spec document that kvmd accepts, or raise `UnsupportedXML`/`MalformedXML` with
a one-line message that names an element — never another exception. Entity bombs are
refused quickly, without expanding anything.
"""

from __future__ import annotations

import glob
import os
import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree

from compat.domxml import xml_to_spec
from compat.errors import MalformedXML, UnsupportedXML
from kvmd.spec import from_dict
from tests.conftest import ROOT

SAMPLES = {os.path.basename(p): open(p, "rb").read()
           for p in sorted(glob.glob(os.path.join(ROOT, "tests", "data", "domxml", "*.xml")))}
QEMU_NS = "http://libvirt.org/schemas/domain/qemu/1.0"

FUZZ = settings(max_examples=150, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# libvirt's vocabulary, so that mutations land on elements the converter knows
TAGS = ["domain", "name", "uuid", "memory", "currentMemory", "maxMemory", "vcpu", "cpu", "model", "topology",
        "feature", "numa", "cell", "os", "type", "boot", "loader", "nvram", "kernel", "initrd", "cmdline",
        "features", "acpi", "apic", "clock", "timer", "on_poweroff", "on_reboot", "on_crash", "devices",
        "disk", "driver", "source", "target", "serial", "readonly", "address", "interface", "mac", "alias",
        "controller", "graphics", "listen", "console", "channel", "memballoon", "rng", "backend", "video",
        "input", "metadata", "seclabel", "resource", "partition", "emulator", "title", "description", "x"]
ATTRS = ["type", "dev", "bus", "file", "name", "unit", "model", "mode", "port", "autoport", "listen",
         "passwd", "passwdValidTo", "cache", "io", "error_policy", "placement", "current", "slots",
         "sockets", "cores", "threads", "machine", "arch", "address", "index", "value", "policy", "x"]
xml_char = st.characters(blacklist_categories=("Cs", "Cc")) | st.sampled_from(
    ["\t", "\n", " ", "\u00b2", "\u0663", "\u202e", "\ufeff", "&", "<", ">", "]", "'", '"'])
xml_text = st.text(xml_char, max_size=20)
odd_values = st.one_of(
    xml_text,
    st.integers(-(2**70), 2**70).map(str),
    st.sampled_from(["0", "-1", "1" * 5000, "0x" + "f" * 500, "\u00b2", "\u0663\u0664", "1.5", "1e9", " 7 ",
                     "virtio", "q35", "pc", "hvm", "kvm", "x86_64", "KiB", "GiB", "yes", "no", "on", "off",
                     "6c1d7b4e-0d0b-4b53-9d7b-1f2a3b4c5d01", "52:54:00:12:34:56", "/dev/null", "x" * 70000]),
)


def _walk(root: etree._Element) -> list[etree._Element]:
    return [el for el in root.iter() if isinstance(el.tag, str)]


@st.composite
def domain_xml(draw) -> bytes:
    root = etree.fromstring(SAMPLES[draw(st.sampled_from(sorted(SAMPLES)))])
    for _ in range(draw(st.integers(1, 5))):
        els = _walk(root)
        el = els[draw(st.integers(0, len(els) - 1))]
        action = draw(st.sampled_from(["attr", "attr", "text", "text", "add", "drop", "nest", "ns", "comment"]))
        if action == "attr":
            el.set(draw(st.sampled_from(ATTRS)), draw(odd_values))
        elif action == "text":
            el.text = draw(odd_values)
        elif action == "add":
            child = etree.SubElement(el, draw(st.sampled_from(TAGS)))
            for _ in range(draw(st.integers(0, 2))):
                child.set(draw(st.sampled_from(ATTRS)), draw(odd_values))
            if draw(st.booleans()):
                child.text = draw(odd_values)
        elif action == "drop" and el is not root:
            el.getparent().remove(el)
        elif action == "nest":
            depth = draw(st.sampled_from([5, 50, 300]))
            node = el
            for _ in range(depth):
                node = etree.SubElement(node, draw(st.sampled_from(TAGS)))
        elif action == "ns":
            cl = etree.SubElement(root, f"{{{QEMU_NS}}}commandline", nsmap={"qemu": QEMU_NS})
            etree.SubElement(cl, f"{{{QEMU_NS}}}arg", value=draw(odd_values))
        else:
            el.append(etree.Comment(draw(xml_text).replace("--", "-").rstrip("-")))
    data = etree.tostring(root, encoding="utf-8")
    how = draw(st.sampled_from(["plain"] * 8 + ["decl", "doctype", "entity", "flip", "cut", "str", "str"]))
    if how == "decl":
        data = b'<?xml version="1.0" encoding="UTF-8"?>\n' + data
    elif how == "doctype":
        data = b'<!DOCTYPE domain SYSTEM "file:///etc/passwd">\n' + data
    elif how == "entity":
        data = b'<!DOCTYPE domain [<!ENTITY e "evil">]>\n' + data.replace(b"</name>", b"&e;</name>", 1)
    elif how == "flip":
        i = draw(st.integers(0, len(data) - 1))
        data = data[:i] + bytes([draw(st.integers(0, 255))]) + data[i + 1:]
    elif how == "cut":
        data = data[:draw(st.integers(0, len(data)))]
    elif how == "str":
        return data.decode("utf-8", errors="replace")  # type: ignore[return-value]
    return data


def check_convert(xml: bytes | str) -> None:
    try:
        doc = xml_to_spec(xml)
    except (UnsupportedXML, MalformedXML) as e:
        line = str(e)
        assert line and "\n" not in line, f"not one line: {line!r}"
        assert line.startswith(("unsupported: /", "malformed XML: ")), line
        if not isinstance(e, MalformedXML):
            assert e.element.startswith("/"), e.element
        return
    assert isinstance(doc, dict)
    from_dict(doc)  # what the converter returns is a valid kvmd spec


@FUZZ
@given(domain_xml())
def test_xml_to_spec_returns_a_valid_spec_or_a_one_line_conversion_error(xml):
    check_convert(xml)


@FUZZ
@given(st.binary(max_size=400) | st.text(max_size=200))
def test_xml_to_spec_of_arbitrary_input_never_fails_otherwise(data):
    check_convert(data)


def _laughs(levels: int, fanout: int, external: bool = False) -> str:
    ents = ['<!ENTITY l0 "lol">']
    for i in range(1, levels):
        ents.append(f'<!ENTITY l{i} "{f"&l{i - 1};" * fanout}">')
    if external:
        ents.append('<!ENTITY ext SYSTEM "file:///etc/shadow">')
    body = f"&l{levels - 1};" + ("&ext;" if external else "")
    return f'<?xml version="1.0"?>\n<!DOCTYPE domain [{"".join(ents)}]>\n<domain type="kvm"><name>{body}</name></domain>'


def test_entity_bombs_and_external_entities_are_refused_quickly_without_expansion():
    for xml in (_laughs(10, 10), _laughs(30, 2), _laughs(4, 10, external=True), _laughs(1, 1)):
        started = time.monotonic()
        try:
            xml_to_spec(xml)
            raise AssertionError("a DOCTYPE with entities was accepted")
        except MalformedXML as e:
            assert "\n" not in str(e)
            assert "lollol" not in str(e) and "root:" not in str(e)
        assert time.monotonic() - started < 1.0


def test_deep_nesting_huge_attributes_and_non_ascii_digits_are_conversion_errors():
    base = SAMPLES["minimal.xml"].decode()
    cases = [
        base.replace("<devices>", "<devices>" + "<x>" * 10000 + "</x>" * 10000),
        base.replace("<name>minimal</name>", "<name>" + "a" * (1 << 20) + "</name>"),
        base.replace("type='kvm'", "type='" + "k" * (1 << 20) + "'"),
        base.replace(">131072</memory>", ">\u00b2</memory>"),
        base.replace(">131072</memory>", ">\u0661\u0663\u0661\u0660\u0667\u0662</memory>"),
        base.replace(">131072</memory>", ">" + "9" * 5000 + "</memory>"),
        base.replace(">1</vcpu>", ">\u00b2</vcpu>"),
        base.replace(">1</vcpu>", ">" + "9" * 5000 + "</vcpu>"),
        base.replace("<vcpu placement='static'>", "<vcpu placement='static' current='0x" + "f" * 300 + "'>"),
        base.replace("</domain>", "<metadata><kvmd:metadata xmlns:kvmd='urn:kvmd:metadata:1'>"
                     + "[" * 100000 + "</kvmd:metadata></metadata></domain>"),
    ]
    for xml in cases:
        started = time.monotonic()
        check_convert(xml)
        assert time.monotonic() - started < 5
