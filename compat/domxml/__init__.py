"""libvirt domain XML <-> kvmd VM spec.

    xml_to_spec(xml, networks=None) -> dict   # a kvmd spec document (kvmd.spec.from_dict-valid)
    spec_to_xml(spec) -> str                  # libvirt domain XML

`parse` and `devices` read XML (each element turned into a spec field, kept for the
round trip, dropped as runtime data, or refused with `compat.errors.UnsupportedXML`),
`emit` writes it, `common` holds what both share (the `metadata.libvirt` round-trip
record is described there). docs/compat.md lists every element and what becomes of it.
"""

from compat.domxml.emit import spec_to_xml
from compat.domxml.parse import xml_to_spec
from compat.errors import MalformedXML, UnsupportedSpec, UnsupportedXML

__all__ = ["xml_to_spec", "spec_to_xml", "UnsupportedXML", "MalformedXML", "UnsupportedSpec"]
