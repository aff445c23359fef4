"""Errors of the libvirt-XML / OVF <-> kvmd spec converters.

Every conversion failure names the place in the input it is about, so a caller (the
libvirt shim, `kvmctl import-xml`) can print one line a person can act on:

    unsupported: /domain/devices/disk[2]/driver/@io='foo': must be one of threads, native, io_uring

- `MalformedXML`: the text is not well-formed XML, or uses a DOCTYPE/entities (refused
  outright: untrusted XML never gets entity expansion). libvirt's VIR_ERR_XML_ERROR.
- `UnsupportedXML`: well-formed, but an element, attribute or value kvmd cannot honour
  (or the resulting spec is invalid). libvirt's VIR_ERR_CONFIG_UNSUPPORTED.
- `UnsupportedSpec`: a kvmd spec that has no libvirt XML (or OVF) spelling.

`element` is an XPath-like location (`/domain/devices/disk[2]/driver`, an index only
where siblings share the tag), `attribute` the attribute name or None.
"""

from __future__ import annotations


class ConversionError(Exception):
    """Base of every converter error; `str()` is one line."""


class UnsupportedXML(ConversionError):
    """An element/attribute/value that the converter does not support."""

    def __init__(self, element: str, reason: str, attribute: str | None = None,
                 value: str | None = None):
        self.element = element
        self.attribute = attribute
        self.value = value
        self.reason = reason
        super().__init__(self._line())

    def where(self) -> str:
        if self.attribute is None:
            return self.element
        at = f"{self.element}/@{self.attribute}"
        return at if self.value is None else f"{at}='{self.value}'"

    def _line(self) -> str:
        return f"unsupported: {self.where()}: {self.reason}"


class MalformedXML(UnsupportedXML):
    """Not well-formed XML, or XML with a DOCTYPE / entity references."""

    def __init__(self, reason: str, element: str = "/"):
        super().__init__(element, reason)

    def _line(self) -> str:
        return f"malformed XML: {self.reason}"


class UnsupportedSpec(ConversionError):
    """A spec field whose value has no spelling in the target format."""

    def __init__(self, path: str, reason: str):
        self.path = path
        self.reason = reason
        super().__init__(f"cannot convert spec: {path}: {reason}")
