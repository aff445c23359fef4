"""The shim's use of the domain-XML converters (`compat.domxml`), and device lookups.

- `to_spec` / `to_xml`: whole domains, with converter errors turned into libvirt's codes
  (not well-formed XML: VIR_ERR_XML_DETAIL; a wrong document element or missing
  required element: VIR_ERR_XML_ERROR; anything kvmd cannot honour:
  VIR_ERR_CONFIG_UNSUPPORTED, the message naming the element).
- `device_doc`: one device XML (`<disk>`, `<interface>`) as a kvmd spec disk/NIC, by
  converting it inside a minimal domain — the same rules name and translate devices
  whether they come with a domain or alone (a disk is named by its `ua-` alias or its
  target dev; a NIC by its `ua-` alias, else the first free `netN`).
- `find_device`, `disk_by_path`, `nic_by_path`, `cdrom_change`: which kvmd device a
  libvirt caller means (target dev or source path for disks, MAC or tap for NICs).
- `merge_libvirt_metadata`: keeps the converter's round-trip record (the spec's
  `metadata.libvirt`) right after the shim changes metadata or plugs a device.

The converters are imported on first use, so the shim imports without them.
"""

from __future__ import annotations

import copy
from typing import Any

from compat.virt import constants as c
from compat.virt import errors

LIBVIRT_KEY = "libvirt"  # compat.domxml.common.LIBVIRT_KEY: the converter's round-trip record


def _conversion_error(e: Exception) -> errors.libvirtError:
    from compat.errors import MalformedXML, UnsupportedXML

    if isinstance(e, MalformedXML):
        return errors.make(c.VIR_ERR_XML_DETAIL, str(e), c.VIR_FROM_DOMAIN)
    if isinstance(e, UnsupportedXML):
        structural = e.attribute is None and (
            "document element" in e.reason or e.element in ("/domain", "/domain/os"))
        code = c.VIR_ERR_XML_ERROR if structural else c.VIR_ERR_CONFIG_UNSUPPORTED
        return errors.make(code, str(e), c.VIR_FROM_DOMAIN)
    return errors.make(c.VIR_ERR_CONFIG_UNSUPPORTED, str(e), c.VIR_FROM_DOMAIN)


def to_spec(xml: str) -> dict[str, Any]:
    from compat import domxml
    from compat.errors import ConversionError

    if not isinstance(xml, (str, bytes)) or not xml.strip():
        raise errors.make(c.VIR_ERR_INVALID_ARG, "xml must not be empty", c.VIR_FROM_NONE)
    try:
        return domxml.xml_to_spec(xml)
    except ConversionError as e:
        raise _conversion_error(e) from None


def to_xml(spec: dict[str, Any], dom_id: int | None = None, secure: bool = True,
           graphics: list[dict[str, Any]] | None = None) -> str:
    """The domain XML of a spec; `dom_id` for an active domain's `id`, passwords only if
    `secure`; `graphics` (vm.info's live displays) fills in the ports QEMU picked."""
    from lxml import etree

    from compat import domxml
    from compat.errors import ConversionError
    from compat.xmlutil import parse

    try:
        xml = domxml.spec_to_xml(spec)
    except ConversionError as e:
        raise errors.make(c.VIR_ERR_INTERNAL_ERROR, f"cannot express the VM as domain XML: {e}") from None
    if dom_id is None and secure and not graphics:
        return xml
    root = parse(xml, root="domain")
    if dom_id is not None:
        root.set("id", str(dom_id))
    for live in graphics or []:
        for gfx in root.iter("graphics"):
            if gfx.get("type") == live.get("type") and live.get("port"):
                gfx.set("port", str(live["port"]))
                break
    if not secure:
        for gfx in root.iter("graphics"):
            gfx.attrib.pop("passwd", None)
    return etree.tostring(root, encoding="unicode") + "\n"


def _parse_device(xml: str) -> Any:
    from compat.errors import ConversionError
    from compat.xmlutil import parse

    try:
        el = parse(xml)
    except ConversionError as e:
        raise _conversion_error(e) from None
    if el.tag not in ("disk", "interface"):
        raise errors.unsupported(f"device <{el.tag}>", "kvmd hot-plugs <disk> and <interface> only")
    return el


def _alias_name(el: Any) -> str | None:
    from compat.domxml.common import user_alias_name

    alias = el.find("alias")
    return user_alias_name(alias.get("name") if alias is not None else None)


def device_doc(xml: str, spec: dict[str, Any]) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """("disks" | "nics", kvmd device doc, {record key: the device's template or None})."""
    from lxml import etree

    el = _parse_device(xml)
    kind = "disks" if el.tag == "disk" else "nics"
    taken = {d.get("name") for d in spec.get(kind) or []}
    machine = spec.get("machine") or "q35"
    iothreads = int(spec.get("iothreads") or 0)  # a disk may name one (<driver iothread>)
    dom = etree.fromstring(
        "<domain type='kvm'><name>device</name><memory unit='MiB'>256</memory>"
        + (f"<iothreads>{iothreads}</iothreads>" if iothreads else "")
        + f"<os><type arch='x86_64' machine='{machine}'>hvm</type></os><devices/></domain>")
    dom.find("devices").append(el)
    converted = to_spec(etree.tostring(dom, encoding="unicode"))
    doc = converted[kind][0]
    record = (converted.get("metadata") or {}).get(LIBVIRT_KEY) or {}
    old_key = f"{kind[:-1] if kind == 'disks' else 'nic'}:{doc['name']}"
    template = (record.get("devices") or {}).get(old_key)
    if kind == "nics" and doc["name"] in taken and _alias_name(el) is None:
        doc["name"] = next(f"net{i}" for i in range(len(taken) + 1) if f"net{i}" not in taken)
    doc.pop("slot", None)
    key = f"{'disk' if kind == 'disks' else 'nic'}:{doc['name']}"
    return kind, doc, {key: template}  # None: no leftovers (replaces any stale record)


def _spec_disks(spec: dict[str, Any]) -> list[dict[str, Any]]:
    """Per disk of the spec, as its domain XML shows it: {name, dev, source, element}."""
    from compat.xmlutil import parse

    out = []
    root = parse(to_xml(spec), root="domain")
    for el in root.iter("disk"):
        target = el.find("target")
        dev = target.get("dev") if target is not None else None
        source = el.find("source")
        src = None
        if source is not None:
            src = source.get("file") or source.get("dev")
        out.append({"name": _alias_name(el) or dev, "dev": dev, "source": src, "element": el})
    return out


def find_device(xml: str, spec: dict[str, Any]) -> tuple[str, str]:
    """("disks" | "nics", kvmd name) of the device a detach XML means."""
    el = _parse_device(xml)
    if el.tag == "disk":
        target = el.find("target")
        dev = target.get("dev") if target is not None else None
        alias = _alias_name(el)
        for disk in _spec_disks(spec):
            if (alias and disk["name"] == alias) or (dev and disk["dev"] == dev):
                return "disks", disk["name"]
        raise errors.make(c.VIR_ERR_DEVICE_MISSING, f"disk {dev or alias} not found")
    mac_el = el.find("mac")
    mac = (mac_el.get("address") or "").lower() if mac_el is not None else ""
    alias = _alias_name(el)
    for nic in spec.get("nics") or []:
        if (mac and nic.get("mac", "").lower() == mac) or (alias and nic.get("name") == alias):
            return "nics", nic["name"]
    raise errors.make(c.VIR_ERR_DEVICE_MISSING, f"no device matching MAC address {mac or alias} found")


def cdrom_change(xml: str, spec: dict[str, Any]) -> tuple[str, str | None, str | None]:
    """(kvmd disk name, new image path or None to eject, format) for an updateDevice XML."""
    el = _parse_device(xml)
    if el.tag != "disk" or el.get("device") != "cdrom":
        raise errors.unsupported(f"virDomain.updateDeviceFlags(<{el.tag}>)",
                                 "kvmd changes the medium of a cdrom only")
    kind, name = find_device(xml, spec)
    source = el.find("source")
    path = (source.get("file") or source.get("dev")) if source is not None else None
    driver = el.find("driver")
    fmt = driver.get("type") if driver is not None and driver.get("type") else None
    return name, path or None, fmt


def disk_by_path(spec: dict[str, Any], path: str) -> str:
    for disk in _spec_disks(spec):
        if path and path in (disk["dev"], disk["source"], disk["name"]):
            return disk["name"]
    raise errors.make(c.VIR_ERR_INVALID_ARG, f"invalid path: {path}")


def nic_by_path(spec: dict[str, Any], path: str) -> str:
    for nic in spec.get("nics") or []:
        if path and (path == nic.get("tap") or path.lower() == nic.get("mac", "").lower()
                     or path == nic.get("name")):
            return nic["name"]
    raise errors.make(c.VIR_ERR_INVALID_ARG, f"'{path}' is not a known interface", c.VIR_FROM_DOMAIN)


def merge_libvirt_metadata(current: dict[str, Any], reparsed: dict[str, Any] | None = None,
                           devices: dict[str, Any] | None = None) -> dict[str, Any]:
    """`current` spec metadata with the converter record updated.

    `reparsed`: the metadata of a spec converted from edited XML — its `<metadata>` and
    domain-level record replace ours (device records stay: names could differ). A spec
    that had no record (made for kvmd, not from XML) takes the whole new record.
    `devices`: device records to set (a hot-plugged device's alias and leftovers; None
    removes a record, so a stale one never decorates a new device of the same name).
    """
    out = copy.deepcopy(current or {})
    new = (reparsed or {}).get(LIBVIRT_KEY)
    record = out.get(LIBVIRT_KEY)
    if reparsed is not None:
        if record is None:
            out[LIBVIRT_KEY] = copy.deepcopy(new) if new is not None else None
            if out[LIBVIRT_KEY] is None:
                del out[LIBVIRT_KEY]
        elif new is not None:
            for key in ("metadata", "domain"):
                if key in new:
                    record[key] = new[key]
                else:
                    record.pop(key, None)
    if devices and LIBVIRT_KEY in out:
        records = out[LIBVIRT_KEY].setdefault("devices", {})
        for key, template in devices.items():
            if template is None:
                records.pop(key, None)
            else:
                records[key] = template
    return out


def recorded_alias(spec: dict[str, Any], kind: str, name: str) -> str | None:
    """The `<alias name>` the XML record of device `kind:name` keeps (a VDSM `ua-UUID`)."""
    from compat.xmlutil import parse

    record = ((spec.get("metadata") or {}).get(LIBVIRT_KEY) or {}).get("devices") or {}
    template = record.get(f"{kind}:{name}")
    if template:
        alias = parse(template).find("alias")
        if alias is not None and alias.get("name"):
            return alias.get("name")
    return None


def graphics_ticket(xml: str) -> tuple[str, str, float | None] | None:
    """(protocol, password, seconds until it expires) of a `<graphics>` update, else None."""
    import calendar
    import time

    from compat.xmlutil import parse

    try:
        root = parse(xml)
    except Exception:
        return None
    if root.tag != "graphics":
        return None
    valid_to = root.get("passwdValidTo")
    expires = None
    if valid_to:
        try:
            when = calendar.timegm(time.strptime(valid_to[:19], "%Y-%m-%dT%H:%M:%S"))
        except ValueError:
            raise errors.make(c.VIR_ERR_XML_DETAIL, f"passwdValidTo {valid_to!r} is not YYYY-MM-DDTHH:MM:SS") from None
        expires = max(0.0, when - time.time())
    return root.get("type", "vnc"), root.get("passwd", ""), expires
