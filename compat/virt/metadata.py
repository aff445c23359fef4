"""`virDomain.metadata()` / `setMetadata()` on a domain XML document, the way libvirt does.

libvirt keeps three kinds of metadata in the domain XML: `<title>`, `<description>`
(plain text) and, under `<metadata>`, at most one element per namespace URI
(VIR_DOMAIN_METADATA_ELEMENT). `setMetadata(ELEMENT, "<foo/>", "k", uri)` puts every
element of the fragment into `uri` with prefix `k`, replacing the element that namespace
had; `metadata(ELEMENT, uri)` gives it back without the namespace, indented. The functions
here only edit XML text: the shim reads the XML from kvmd (the converter keeps
`<metadata>` verbatim in the spec) and writes the result back through `vm.set_metadata`.
Fragments are parsed safely (compat.xmlutil: no DTDs, no entities).
"""

from __future__ import annotations

from lxml import etree

from compat.errors import ConversionError
from compat.virt import constants as c
from compat.virt import errors
from compat.xmlutil import elements, parse

_BEFORE_METADATA = ("name", "uuid", "genid", "title", "description")


def _missing() -> errors.libvirtError:
    return errors.make(c.VIR_ERR_NO_DOMAIN_METADATA, "Requested metadata element is not present",
                       c.VIR_FROM_DOMAIN)


def _text_tag(kind: int) -> str | None:
    return {c.VIR_DOMAIN_METADATA_DESCRIPTION: "description", c.VIR_DOMAIN_METADATA_TITLE: "title"}.get(kind)


def _check_kind(kind: int) -> None:
    if kind not in (c.VIR_DOMAIN_METADATA_DESCRIPTION, c.VIR_DOMAIN_METADATA_TITLE, c.VIR_DOMAIN_METADATA_ELEMENT):
        raise errors.make(c.VIR_ERR_INVALID_ARG, f"unknown metadata type '{kind}'", c.VIR_FROM_DOMAIN)


def _strip_ns(el: etree._Element, uri: str) -> etree._Element:
    """A copy of `el` with the tags in namespace `uri` made plain (libvirt's output form)."""
    q = etree.QName(el)
    out = etree.Element(q.localname if q.namespace == uri else el.tag)
    for name, value in el.attrib.items():
        out.set(name, value)
    out.text = el.text
    for child in el:
        if isinstance(child.tag, str):
            new = _strip_ns(child, uri)
            new.tail = child.tail
            out.append(new)
    return out


def _into_ns(el: etree._Element, uri: str, key: str, root: bool = True) -> etree._Element:
    """A copy of `el` with every un-namespaced tag put into `uri` (prefix `key` on the root)."""
    q = etree.QName(el)
    tag = f"{{{uri}}}{q.localname}" if q.namespace is None else el.tag
    out = etree.Element(tag, nsmap={key: uri}) if root else etree.Element(tag)
    for name, value in el.attrib.items():
        out.set(name, value)
    out.text = el.text
    for child in el:
        if isinstance(child.tag, str):
            new = _into_ns(child, uri, key, root=False)
            new.tail = child.tail
            out.append(new)
    return out


def get_metadata(xml: str, kind: int, uri: str | None) -> str:
    _check_kind(kind)
    dom = parse(xml, root="domain")
    tag = _text_tag(kind)
    if tag is not None:
        el = dom.find(tag)
        if el is None:
            raise _missing()
        return el.text or ""
    if not uri:
        raise errors.make(c.VIR_ERR_INVALID_ARG, "uri must not be NULL in virDomainGetMetadata", c.VIR_FROM_NONE)
    meta = dom.find("metadata")
    for el in elements(meta) if meta is not None else []:
        if etree.QName(el).namespace == uri:
            plain = _strip_ns(el, uri)
            etree.indent(plain, space="  ")
            return etree.tostring(plain, encoding="unicode")
    raise _missing()


def _insert_position(dom: etree._Element) -> int:
    pos = 0
    for i, el in enumerate(elements(dom)):
        if el.tag in _BEFORE_METADATA:
            pos = dom.index(el) + 1
        elif i > pos:
            break
    return pos


def set_metadata(xml: str, kind: int, metadata: str | None, key: str | None, uri: str | None) -> str:
    """The domain XML with the metadata replaced (None or "" removes it)."""
    _check_kind(kind)
    dom = parse(xml, root="domain")
    tag = _text_tag(kind)
    if tag is not None:
        el = dom.find(tag)
        if not metadata:
            if el is not None:
                dom.remove(el)
        else:
            if tag == "title" and "\n" in metadata:
                raise errors.make(c.VIR_ERR_INVALID_ARG, "title can't contain newlines", c.VIR_FROM_DOMAIN)
            if el is None:
                el = etree.Element(tag)
                dom.insert(_insert_position(dom), el)
            el.text = metadata
        return etree.tostring(dom, encoding="unicode")
    if not uri:
        raise errors.make(c.VIR_ERR_INVALID_ARG, "uri must not be NULL in virDomainSetMetadata", c.VIR_FROM_NONE)
    if metadata and not key:
        raise errors.make(c.VIR_ERR_INVALID_ARG, "key must not be NULL in virDomainSetMetadata", c.VIR_FROM_NONE)
    new = None
    if metadata:
        try:
            new = _into_ns(parse(metadata), uri, key or "")
        except ConversionError as e:
            raise errors.make(c.VIR_ERR_XML_DETAIL, str(e), c.VIR_FROM_DOMAIN) from None
    meta = dom.find("metadata")
    if meta is None:
        if new is None:
            return etree.tostring(dom, encoding="unicode")
        meta = etree.Element("metadata")
        dom.insert(_insert_position(dom), meta)
    for el in elements(meta):
        if etree.QName(el).namespace == uri:
            meta.remove(el)
    if new is not None:
        meta.append(new)
    return etree.tostring(dom, encoding="unicode")
