"""kvmd spec -> libvirt domain XML.

The emitter generates each element from the spec fields and then lays the round-trip
template recorded by the parser (`metadata.libvirt`, see `common.py`) over it, so a
domain XML converted to a spec comes back with its aliases, kept elements and
`<metadata>` intact. A spec made for kvmd (no `metadata.libvirt`) gets libvirt's usual
spelling of what kvmd runs: a `<console>` beside the serial port, the video adapter kvmd
picks, `<controller type='usb' model='none'/>` (kvmd adds no USB), and so on.

kvmd's own free-form metadata (spec `metadata` other than the `libvirt` key) travels
as JSON in `<metadata><kvmd:metadata xmlns:kvmd="urn:kvmd:metadata:1">`.
"""

from __future__ import annotations

import json
from typing import Any

from lxml import etree

from compat.domxml.common import (
    BOOT_DEVS_BACK,
    DEV_PREFIX,
    DEV_RE,
    GA_CHANNEL,
    KVMD_META,
    KVMD_NS,
    LIBVIRT_KEY,
    MAC_FILTER,
    QEMU,
    QEMU_NS,
    SMBIOS_ENTRIES,
    dev_letters,
    full_topology,
    split_cpu_model,
    xml_bus,
)
from compat.errors import UnsupportedSpec
from compat.xmlutil import elements, from_string, merge
from kvmd.errors import SpecError
from kvmd.qemu.cmdline import OVMF_CODE
from kvmd.spec import VMSpec, from_dict
from kvmd.spec.model import Disk, Nic

DOMAIN_ORDER = ["name", "uuid", "genid", "title", "description", "metadata", "maxMemory", "memory",
                "currentMemory", "vcpu", "iothreads", "cputune", "sysinfo", "os", "features", "cpu", "clock",
                "on_poweroff", "on_reboot", "on_crash", "pm", "devices", "seclabel", QEMU + "commandline"]
DEVICE_ORDER = ["emulator", "disk", "controller", "interface", "serial", "console", "channel",
                "input", "graphics", "audio", "video", "memballoon", "rng"]


def spec_to_xml(spec: dict[str, Any]) -> str:
    """The libvirt domain XML of a kvmd spec document (raises UnsupportedSpec)."""
    try:
        s = from_dict(spec)
    except SpecError as e:
        path, reason = e.problems[0]
        raise UnsupportedSpec(path, reason) from None
    root = Emitter(s).domain()
    etree.indent(root, space="  ")
    return etree.tostring(root, encoding="unicode") + "\n"


def _sub(parent: etree._Element, tag: str, text: str | None = None, **attrs: Any) -> etree._Element:
    el = etree.SubElement(parent, tag)
    for k, v in attrs.items():
        if v is not None:
            el.set(k, str(v))
    if text is not None:
        el.text = text
    return el


def _tpl(text: str | None) -> etree._Element | None:
    return from_string(text) if text else None


def _has(tpl: etree._Element | None, path: str) -> bool:
    """Does the template have `path` (`tag`, `tag/sub`, `@attr`, `tag/@attr`)?"""
    if tpl is None:
        return False
    *tags, last = path.split("/")
    el = tpl
    for t in tags:
        el = el.find(t)
        if el is None:
            return False
    return el.get(last[1:]) is not None if last.startswith("@") else el.find(last) is not None


class Emitter:
    def __init__(self, spec: VMSpec):
        self.s = spec
        lv = spec.metadata.get(LIBVIRT_KEY)
        self.native = not isinstance(lv, dict)
        self.lv: dict[str, Any] = lv if isinstance(lv, dict) else {}
        self.tpls: dict[str, str] = self.lv.get("devices") or {}
        self.dom_tpl = _tpl(self.lv.get("domain"))

    def tpl(self, key: str) -> etree._Element | None:
        return _tpl(self.tpls.get(key))

    def domain(self) -> etree._Element:
        s = self.s
        nsmap = {"qemu": QEMU_NS} if s.qemu_args else None
        root = etree.Element("domain", nsmap=nsmap)
        if not _has(self.dom_tpl, "@type"):
            root.set("type", "kvm")
        _sub(root, "name", s.name)
        _sub(root, "uuid", s.uuid)
        self.metadata(root)
        self.memory(root)
        self.vcpus(root)
        if s.iothreads:
            _sub(root, "iothreads", str(s.iothreads))
        if s.cpu.shares is not None:
            _sub(_sub(root, "cputune"), "shares", str(s.cpu.shares))
        if s.smbios:
            system = _sub(_sub(root, "sysinfo", type="smbios"), "system")
            for key in SMBIOS_ENTRIES:
                if key in s.smbios:
                    _sub(system, "entry", s.smbios[key], name=key)
        self.os(root)
        if self.native:
            features = _sub(root, "features")
            _sub(features, "acpi")
            _sub(features, "apic")
        self.cpu(root)
        if self.native:
            _sub(root, "clock", offset="utc")
        lc = s.lifecycle
        _sub(root, "on_poweroff", lc.on_poweroff)
        _sub(root, "on_reboot", lc.on_reboot)
        _sub(root, "on_crash", lc.on_crash)
        if s.pm.suspend_to_mem is not None or s.pm.suspend_to_disk is not None:
            pm = _sub(root, "pm")
            for tag, value in (("suspend-to-mem", s.pm.suspend_to_mem), ("suspend-to-disk", s.pm.suspend_to_disk)):
                if value is not None:
                    _sub(pm, tag, enabled="yes" if value else "no")
        self.devices(_sub(root, "devices"))
        if s.qemu_args:
            cl = _sub(root, QEMU + "commandline")
            for arg in s.qemu_args:
                _sub(cl, QEMU + "arg", value=arg)
        merge(root, self.dom_tpl, append_only=("devices",))
        _order(root, DOMAIN_ORDER)
        devs = root.find("devices")
        if devs is not None:
            _order(devs, DEVICE_ORDER)
            _order_channels(devs, self.lv.get("channelOrder"))
        etree.cleanup_namespaces(root, top_nsmap=_used_nsmap(root))
        return root

    def metadata(self, root: etree._Element) -> None:
        text = self.lv.get("metadata")
        meta = from_string(text) if text else None
        own = {k: v for k, v in self.s.metadata.items() if k != LIBVIRT_KEY}
        if own:
            if meta is None:
                meta = etree.Element("metadata")
            kv = etree.SubElement(meta, KVMD_META, nsmap={"kvmd": KVMD_NS})
            kv.text = json.dumps(own, sort_keys=True)
        if meta is not None:
            root.append(meta)

    def memory(self, root: etree._Element) -> None:
        m = self.s.memory
        if m.max is not None:
            _kib(_sub(root, "maxMemory", slots=m.slots or 8), m.max)
        _kib(_sub(root, "memory"), m.size)
        if not _has(self.dom_tpl, "currentMemory"):
            _kib(_sub(root, "currentMemory"), m.size)

    def _topology(self) -> tuple[int, int, int] | None:
        c = self.s.cpu
        if "topology" in (self.lv.get("implicit") or []):  # records made before cpu.maxCount
            return None
        return full_topology(c.maximum, c.sockets, c.cores, c.threads)

    def vcpus(self, root: etree._Element) -> None:
        c = self.s.cpu
        if c.max_count is not None or (c.sockets and c.cores and c.threads):
            top = c.maximum
        else:
            topo = full_topology(c.count, c.sockets, c.cores, c.threads)
            top = topo[0] * topo[1] * topo[2] if topo else c.count
        vcpu = _sub(root, "vcpu", str(top))
        if self.native:
            vcpu.set("placement", "static")
        if c.count < top:
            vcpu.set("current", str(c.count))

    def cpu(self, root: etree._Element) -> None:
        c = self.s.cpu
        topo = self._topology()
        if c.model is None and topo is None:
            return
        cpu = _sub(root, "cpu")
        if c.model is not None:
            try:
                name, feats = split_cpu_model(c.model)
            except ValueError as e:
                raise UnsupportedSpec("cpu.model", str(e)) from None
            tpl_mode = _has(self.dom_tpl, "cpu/@mode")
            if name == "host":
                if not tpl_mode:
                    cpu.set("mode", "host-passthrough")
            elif name == "max":
                cpu.set("mode", "maximum")
            else:
                if self.native:
                    cpu.set("mode", "custom")
                    cpu.set("match", "exact")
                _sub(cpu, "model", name)
            for policy, feat in feats:
                _sub(cpu, "feature", policy=policy, name=feat)
        if topo is not None:
            _sub(cpu, "topology", sockets=topo[0], cores=topo[1], threads=topo[2])

    def os(self, root: etree._Element) -> None:
        b = self.s.boot
        os_ = _sub(root, "os")
        typ = _sub(os_, "type", "hvm", machine=self.s.machine)
        if self.native:
            typ.set("arch", "x86_64")
        if self.s.smbios:
            _sub(os_, "smbios", mode="sysinfo")
        if b.firmware == "uefi" and self.native:
            _sub(os_, "loader", OVMF_CODE, readonly="yes", type="pflash")
        if b.nvram:
            _sub(os_, "nvram", b.nvram)
        for tag in ("kernel", "initrd", "cmdline"):
            value = getattr(b, tag)
            if value is not None:
                _sub(os_, tag, value)
        if not any(d.boot_index is not None for d in [*self.s.disks, *self.s.nics]):
            for dev in b.order:
                _sub(os_, "boot", dev=BOOT_DEVS_BACK[dev])

    # -- devices -----------------------------------------------------------------------

    def devices(self, devs: etree._Element) -> None:
        s = self.s
        for disk, dev in zip(s.disks, self._disk_devs(), strict=True):
            devs.append(self.disk(disk, dev))
        for i, nic in enumerate(s.nics):
            devs.append(self.nic(nic, i))
        self.serial(devs)
        if s.guest_agent:
            ch = _sub(devs, "channel", type="unix")
            if self.native:
                _sub(ch, "source", mode="bind")
            _sub(ch, "target", type="virtio", name=GA_CHANNEL)
            merge(ch, self.tpl("channel:qga"))
        for c in s.channels:
            ch = _sub(devs, "channel", type=c.type)
            if self.native and c.type == "unix":
                _sub(ch, "source", mode="bind")
            _sub(ch, "target", type="virtio", name=c.name)
            merge(ch, self.tpl(f"channel:{c.name}"))
        for g in s.graphics:
            gfx = _sub(devs, "graphics", type=g.type)
            if g.port:
                gfx.set("port", str(g.port))
                gfx.set("autoport", "no")
            else:
                gfx.set("port", "-1")
                gfx.set("autoport", "yes")
            gfx.set("listen", g.listen)
            if g.password is not None:
                gfx.set("passwd", g.password)
            if g.password_valid_to:
                gfx.set("passwdValidTo", g.password_valid_to)
            _sub(gfx, "listen", type="address", address=g.listen)
            merge(gfx, self.tpl(f"graphics:{g.type}"))
        mb = _sub(devs, "memballoon", model="virtio" if s.memory.balloon else "none")
        merge(mb, self.tpl("memballoon"))
        if s.rng:
            rng = _sub(devs, "rng", model="virtio")
            _sub(rng, "backend", "/dev/urandom", model="random")
            merge(rng, self.tpl("rng"))
        if s.tablet:
            merge(_sub(devs, "input", type="tablet", bus="usb"), self.tpl("input:tablet"))
        if self.native:
            if any(d.bus == "scsi" for d in s.disks):
                ctl = _sub(devs, "controller", type="scsi", index="0", model="virtio-scsi")
                iothread = next((d.iothread for d in s.disks if d.bus == "scsi" and d.iothread), None)
                if iothread:
                    _sub(ctl, "driver", iothread=iothread)
            _sub(devs, "controller", type="usb", index="0", model="qemu-xhci" if s.tablet else "none")
            if s.graphics:
                video = _sub(devs, "video")
                spice = any(g.type == "spice" for g in s.graphics)
                _sub(video, "model", type="qxl" if spice else "vga")

    def _disk_devs(self) -> list[str]:
        """The target dev of each disk: recorded, else its name if it is one, else the next free."""
        devs: list[str | None] = []
        for d in self.s.disks:
            tpl = self.tpl(f"disk:{d.name}")
            tgt = tpl.find("target") if tpl is not None else None
            prefix = DEV_PREFIX[xml_bus(d.bus, self.s.machine)]
            if tgt is not None and tgt.get("dev"):
                devs.append(tgt.get("dev"))
            elif DEV_RE.match(d.name) and d.name.startswith(prefix):
                devs.append(d.name)
            else:
                devs.append(None)
        used = {d for d in devs if d}
        out = []
        for d, dev in zip(self.s.disks, devs, strict=True):
            if dev is None:
                prefix = DEV_PREFIX[xml_bus(d.bus, self.s.machine)]
                n = 0
                while prefix + dev_letters(n) in used:
                    n += 1
                dev = prefix + dev_letters(n)
                used.add(dev)
            out.append(dev)
        return out

    def disk(self, d: Disk, dev: str) -> etree._Element:
        tpl = self.tpl(f"disk:{d.name}")
        kind = tpl.get("type") if tpl is not None and tpl.get("type") else (
            "block" if (d.path or "").startswith("/dev/") else "file")
        el = etree.Element("disk", type=kind, device=d.media)
        implicit = self.lv.get("implicit") or []
        cache = None if d.cache == "writeback" and f"disk:{d.name}/cache" in implicit else d.cache
        aio = None if d.aio == "threads" and f"disk:{d.name}/io" in implicit else d.aio
        _sub(el, "driver", name="qemu", type=d.format, cache=cache, io=aio, error_policy=d.error_policy,
             iothread=d.iothread if d.bus == "virtio" else None)
        if d.path:
            _sub(el, "source", **{"dev" if kind == "block" else "file": d.path})
        tgt = _sub(el, "target", bus=xml_bus(d.bus, self.s.machine))
        if not _has(tpl, "target/@dev"):
            tgt.set("dev", dev)
        if d.serial is not None:
            _sub(el, "serial", d.serial)
        if d.readonly:
            _sub(el, "readonly")
        if d.boot_index is not None:
            _sub(el, "boot", order=d.boot_index)
        if d.name != dev and not _has(tpl, "alias"):
            _sub(el, "alias", name=f"ua-{d.name}")
        merge(el, tpl)
        return el

    def nic(self, n: Nic, index: int) -> etree._Element:
        tpl = self.tpl(f"nic:{n.name}")
        el = etree.Element("interface")
        if tpl is not None and tpl.get("type") == "network":
            pass  # type and <source network> come from the template
        elif n.backend == "tap" and n.bridge:
            el.set("type", "bridge")
            _sub(el, "source", bridge=n.bridge)
        elif n.backend == "tap":
            el.set("type", "ethernet")
            _sub(el, "target", dev=n.tap)
        elif n.backend == "user":
            el.set("type", "user")
        else:
            raise UnsupportedSpec(f"nics[{index}].backend", "a NIC without a backend has no libvirt spelling")
        _sub(el, "mac", address=n.mac)
        _sub(el, "model", type=n.model)
        if n.no_mac_spoofing:
            _sub(el, "filterref", filter=MAC_FILTER)
        if n.boot_index is not None:
            _sub(el, "boot", order=n.boot_index)
        if n.name != f"net{index}" and not _has(tpl, "alias"):
            _sub(el, "alias", name=f"ua-{n.name}")
        merge(el, tpl)
        return el

    def serial(self, devs: etree._Element) -> None:
        ser = self.s.serial
        if ser.type == "none":
            return
        tpl = self.tpl("serial")
        kind = "file" if ser.type == "file" else (tpl.get("type") if _has(tpl, "@type") else "pty")
        for tag in ("serial", "console"):
            if tag == "console" and not (self.native or "console" in self.tpls):
                continue
            el = _sub(devs, tag, type=kind)
            if ser.type == "file":
                _sub(el, "source", path=ser.path)
            if self.native:
                tgt = _sub(el, "target", type="isa-serial" if tag == "serial" else "serial", port="0")
                if tag == "serial":
                    _sub(tgt, "model", name="isa-serial")
            merge(el, self.tpl(tag))


def _kib(el: etree._Element, nbytes: int) -> None:
    if nbytes % 1024:
        el.set("unit", "b")
        el.text = str(nbytes)
    else:
        el.set("unit", "KiB")
        el.text = str(nbytes // 1024)


def _order(parent: etree._Element, order: list[str]) -> None:
    rank = {tag: i for i, tag in enumerate(order)}
    kids = elements(parent)
    kids.sort(key=lambda el: rank.get(el.tag, len(order)))
    for el in kids:
        parent.remove(el)
        parent.append(el)


def _order_channels(devs: etree._Element, names: Any) -> None:
    """Put the <channel>s in the recorded document order (by target name), in place."""
    if not isinstance(names, list):
        return
    chans = elements(devs, "channel")
    if not chans:
        return
    rank = {n: i for i, n in enumerate(names)}

    def key(el: etree._Element) -> int:
        tgt = el.find("target")
        return rank.get(tgt.get("name") if tgt is not None else None, len(names))

    anchor = chans[0].getprevious()
    parent = devs
    for el in chans:
        parent.remove(el)
    for el in reversed(sorted(chans, key=key)):
        if anchor is None:
            parent.insert(0, el)
        else:
            anchor.addnext(el)


def _used_nsmap(root: etree._Element) -> dict[str, str]:
    """Namespaces used anywhere below `root`, to declare them once on it."""
    out: dict[str, str] = {}
    for el in root.iter():
        if isinstance(el.tag, str) and el.prefix and el.prefix not in out:
            out[el.prefix] = etree.QName(el).namespace
    return out
