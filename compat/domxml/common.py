"""What the domain-XML parser and emitter share: the conversion context, names, buses.

The round-trip record. A kvmd spec has no field for many things a libvirt domain XML
says that kvmd accepts without acting on (a user alias, `<emulator>`, `<clock>`
timers, controllers kvmd creates itself...). So that XML -> spec -> XML loses nothing,
the parser stores, under the spec's `metadata.libvirt` (a kvmd-owned key):

    domain:   the `<domain>` element minus everything turned into spec fields (a
              "template" the emitter lays back over what it generates)
    metadata: the `<domain>`'s `<metadata>` element, serialized verbatim (oVirt's
              ovirt-vm / ovirt-tune namespaces and all)
    devices:  templates of the devices that are spec entries, by key: `disk:NAME`,
              `nic:NAME`, `graphics:vnc|spice`, `serial`, `console`, `channel:qga`,
              `channel:NAME` (the spec's `channels`), `input:tablet`, `memballoon`,
              `rng` ("" = present with nothing left over)
    implicit: things kvmd needed that the XML left implicit, not written back: `topology`
              (records made before `cpu.maxCount`), `disk:NAME/cache`, `disk:NAME/io` (a
              `<driver>` without them: QEMU's defaults writeback and threads)
    channelOrder: the target names of the `<channel>`s in document order, when the guest
              agent's is not the first

A spec that has `metadata.libvirt` came from XML: the emitter writes only what its
record says existed. A spec without it (made for kvmd) gets libvirt's usual spelling.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass, field
from typing import Any

from lxml import etree

QEMU_NS = "http://libvirt.org/schemas/domain/qemu/1.0"
QEMU = f"{{{QEMU_NS}}}"
LIBVIRT_KEY = "libvirt"
GA_CHANNEL = "org.qemu.guest_agent.0"
SPICE_CHANNEL = "com.redhat.spice.0"
# the one nwfilter kvmd enforces (kvmd.netdev, with ebtables): VDSM's, which is libvirt's
# no-mac-spoofing + no-arp-mac-spoofing (spec `nics[].noMacSpoofing`)
MAC_FILTER = "vdsm-no-mac-spoofing"
# <sysinfo><system><entry name>: SMBIOS type 1 strings, in the order dmidecode shows them
SMBIOS_ENTRIES = ("manufacturer", "product", "version", "serial", "uuid", "sku", "family")
KVMD_NS = "urn:kvmd:metadata:1"  # kvmd's own spec metadata, as JSON, inside <metadata>
KVMD_META = f"{{{KVMD_NS}}}metadata"

# libvirt <boot dev> <-> spec boot.order
BOOT_DEVS = {"hd": "disk", "cdrom": "cdrom", "network": "network"}
BOOT_DEVS_BACK = {v: k for k, v in BOOT_DEVS.items()}

DEV_RE = re.compile(r"^(vd|sd|hd)([a-z]{1,3})$")
DEVNAME_RE = re.compile(r"^[a-z][a-z0-9_-]{0,19}$")  # kvmd device names (kvmd.spec.parse)
DEV_PREFIX = {"virtio": "vd", "scsi": "sd", "sata": "sd", "ide": "hd"}


def is_q35(machine: str) -> bool:
    return "q35" in machine


def xml_bus(spec_bus: str, machine: str) -> str:
    """libvirt's target bus for a kvmd bus: kvmd `sata` is IDE on i440fx machines."""
    if spec_bus == "sata" and not is_q35(machine):
        return "ide"
    return spec_bus


def dev_letters(n: int) -> str:
    """0 -> a, 25 -> z, 26 -> aa (libvirt's disk naming)."""
    out = ""
    n += 1
    while n:
        n, r = divmod(n - 1, 26)
        out = string.ascii_lowercase[r] + out
    return out


def user_alias_name(alias: str | None) -> str | None:
    """`ua-root` -> `root` when that is a valid kvmd device name, else None."""
    if alias and alias.startswith("ua-") and DEVNAME_RE.match(alias[3:]):
        return alias[3:]
    return None


@dataclass
class Ctx:
    """State of one XML -> spec conversion."""

    networks: dict[str, str] = field(default_factory=dict)
    spec: dict[str, Any] = field(default_factory=dict)
    lv: dict[str, Any] = field(default_factory=dict)
    # spec path -> (xml element path, attribute): where a spec value came from
    origin: dict[str, tuple[str, str | None]] = field(default_factory=dict)
    machine: str = "pc"
    os_boot: bool = False  # <os><boot dev> given (per-device <boot order> then refused)
    smbios_mode: str | None = None  # <os><smbios mode>: 'sysinfo' applies <sysinfo>

    def came_from(self, spec_path: str, element: str, attribute: str | None = None) -> None:
        self.origin[spec_path] = (element, attribute)

    def device_template(self, key: str, tpl: etree._Element | None, always: bool = False) -> None:
        from compat.xmlutil import to_string

        if tpl is not None:
            self.lv.setdefault("devices", {})[key] = to_string(tpl)
        elif always:
            self.lv.setdefault("devices", {})[key] = ""


def split_cpu_model(model: str) -> tuple[str, list[tuple[str, str]]]:
    """`Skylake-Client,+vmx,-svm,pcid=on` -> ('Skylake-Client', [(require, vmx), ...]).

    Raises ValueError for option syntax that is not a feature switch.
    """
    name, *opts = model.split(",")
    feats = []
    for opt in opts:
        if opt[:1] in "+-" and len(opt) > 1:
            feats.append(("require" if opt[0] == "+" else "disable", opt[1:]))
        elif "=" in opt and opt.split("=", 1)[1] in ("on", "off"):
            key, val = opt.split("=", 1)
            feats.append(("require" if val == "on" else "disable", key))
        else:
            raise ValueError(f"option {opt!r} is not a CPU feature switch (+feat, -feat, feat=on|off)")
    return name, feats


def full_topology(count: int, sockets: int | None, cores: int | None,
                  threads: int | None) -> tuple[int, int, int] | None:
    """Complete a partial topology the way QEMU's -smp does (sockets preferred)."""
    if sockets is None and cores is None and threads is None:
        return None
    threads = threads or 1
    if sockets is None:
        cores = cores or 1
        sockets = -(-count // (cores * threads))
    elif cores is None:
        cores = -(-count // (sockets * threads))
    return sockets, cores, threads
