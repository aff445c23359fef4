"""Build a `VMSpec` from a YAML/JSON document, and dump it back.

`from_dict` reports every problem at once as a `SpecError` whose entries carry the field
path (`disks[1].format`) and the reason. Parsing is pure: it never looks at the host
(files, bridges); those checks run when a VM starts (`kvmd.hostcheck`). Values left out
are filled in — defaults, a fresh uuid, stable device names and locally administered
MAC addresses — so `to_dict` of a parsed spec parses back to an equal spec.
"""

from __future__ import annotations

import json
import random
import re
import uuid as uuidlib
from typing import Any

import yaml

from kvmd.errors import SpecError
from kvmd.spec import model as m
from kvmd.spec.reader import Problems, Section
from kvmd.units import format_size

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}$")
NAME_REASON = "must be 1-64 characters of letters, digits, '_', '.', '+', '-', starting with a letter or digit"
DEVNAME_RE = re.compile(r"^[a-z][a-z0-9_-]{0,19}$")
DEVNAME_REASON = "must be 1-20 characters of a-z, 0-9, '_', '-', starting with a letter"
UUID_RE = re.compile(r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$")
MAC_RE = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")
MACHINE_RE = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
VALID_TO_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}$")
IFNAME_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,15}$")


def generate_mac() -> str:
    """A random unicast, locally administered MAC in QEMU's 52:54:00 range."""
    return "52:54:00:%02x:%02x:%02x" % tuple(random.randrange(256) for _ in range(3))


def _qemu_arg_check(arg: str) -> str | None:
    return "must not contain NUL" if "\0" in arg else None


def _cpu(sec: Section) -> m.Cpu:
    cpu = m.Cpu(
        count=sec.int("count", 1, minimum=1, maximum=1024),
        model=sec.str("model"),
        sockets=sec.int("sockets", minimum=1),
        cores=sec.int("cores", minimum=1),
        threads=sec.int("threads", minimum=1),
    )
    topo = [cpu.sockets, cpu.cores, cpu.threads]
    if all(v is not None for v in topo):
        total = cpu.sockets * cpu.cores * cpu.threads
        if total < cpu.count:
            sec.fail("sockets", f"sockets*cores*threads = {total} is less than count {cpu.count}")
    sec.finish()
    return cpu


def _memory(sec: Section) -> m.Memory:
    mem = m.Memory(
        size=sec.size("size", 256 << 20, minimum=16 << 20),
        max=sec.size("max", minimum=16 << 20),
        balloon=sec.bool("balloon", True),
        slots=sec.int("slots", minimum=1, maximum=256),
    )
    if mem.max is not None and mem.max < mem.size:
        sec.fail("max", "must not be smaller than size")
    if mem.slots is not None and mem.max is None:
        sec.fail("slots", "is only used with max (memory hotplug)")
    sec.finish()
    return mem


def _boot(sec: Section) -> m.Boot:
    def order_check(item: str) -> str | None:
        return None if item in m.BOOT_DEVICES else "must be one of " + ", ".join(m.BOOT_DEVICES)

    boot = m.Boot(
        firmware=sec.str("firmware", "bios", choices=m.FIRMWARES),
        kernel=sec.str("kernel"),
        initrd=sec.str("initrd"),
        cmdline=sec.str("cmdline"),
        order=sec.str_list("order", ["disk", "cdrom", "network"], check=order_check),
        nvram=sec.str("nvram"),
    )
    if (boot.initrd or boot.cmdline) and not boot.kernel:
        sec.fail("kernel", "is required when initrd or cmdline is given")
    if boot.nvram and boot.firmware != "uefi":
        sec.fail("nvram", "is only used with firmware: uefi")
    if len(set(boot.order)) != len(boot.order):
        sec.fail("order", "must not repeat a device")
    sec.finish()
    return boot


def _disk(sec: Section, index: int) -> m.Disk:
    media = sec.str("media", "disk", choices=m.DISK_MEDIA)
    disk = m.Disk(
        name=sec.str("name", f"disk{index}", pattern=DEVNAME_RE, pattern_reason=DEVNAME_REASON),
        path=sec.str("path"),
        format=sec.str("format", "raw", choices=m.DISK_FORMATS),
        bus=sec.str("bus", "sata" if media == "cdrom" else "virtio", choices=m.DISK_BUSES),
        media=media,
        readonly=sec.bool("readonly", media == "cdrom"),
        cache=sec.str("cache", "writeback", choices=m.CACHE_MODES),
        aio=sec.str("aio", "threads", choices=m.AIO_MODES),
        serial=sec.str("serial", pattern=re.compile(r"^[A-Za-z0-9_.-]{1,20}$"),
                       pattern_reason="must be 1-20 characters of letters, digits, '_', '.', '-'"),
        boot_index=sec.int("bootIndex", minimum=0),
        slot=sec.int("slot", minimum=0, maximum=255),
        error_policy=sec.str("errorPolicy", choices=m.ERROR_POLICIES),
    )
    if disk.media == "disk" and not disk.path:
        sec.fail("path", "is required for media: disk")
    if disk.media == "cdrom":
        if disk.bus == "virtio":
            sec.fail("bus", "a cdrom must be on bus sata or scsi")
        if not disk.readonly:
            sec.fail("readonly", "a cdrom is always readonly")
    if disk.aio == "native" and disk.cache not in ("none", "directsync"):
        sec.fail("aio", "native needs cache: none or directsync")
    sec.finish()
    return disk


def _nic(sec: Section, index: int) -> m.Nic:
    nic = m.Nic(
        name=sec.str("name", f"net{index}", pattern=DEVNAME_RE, pattern_reason=DEVNAME_REASON),
        mac=sec.str("mac", None, pattern=MAC_RE, pattern_reason="must be six hex octets like 52:54:00:12:34:56"),
        model=sec.str("model", "virtio", choices=m.NIC_MODELS),
        backend=sec.str("backend", "user", choices=m.NIC_BACKENDS),
        bridge=sec.str("bridge", pattern=IFNAME_RE, pattern_reason="must be a network interface name"),
        tap=sec.str("tap", pattern=IFNAME_RE, pattern_reason="must be a network interface name"),
        boot_index=sec.int("bootIndex", minimum=0),
        slot=sec.int("slot", minimum=0, maximum=255),
    )
    if nic.mac is None:
        nic.mac = generate_mac()
    else:
        nic.mac = nic.mac.lower()
        if int(nic.mac[:2], 16) & 1:
            sec.fail("mac", "must be a unicast address (first octet even)")
    if nic.backend == "tap" and not (nic.bridge or nic.tap):
        sec.fail("bridge", "backend tap needs a bridge (or an existing tap)")
    if nic.backend != "tap" and (nic.bridge or nic.tap):
        sec.fail("backend", "bridge and tap are only used with backend: tap")
    sec.finish()
    return nic


def _serial(sec: Section) -> m.Serial:
    serial = m.Serial(type=sec.str("type", "socket", choices=m.SERIAL_TYPES), path=sec.str("path"))
    if serial.type == "file" and not serial.path:
        sec.fail("path", "is required for type: file")
    sec.finish()
    return serial


def _graphics(sec: Section) -> m.Graphics:
    gfx = m.Graphics(
        type=sec.str("type", "vnc", choices=m.GRAPHICS_TYPES),
        listen=sec.str("listen", "127.0.0.1"),
        port=sec.int("port", minimum=0, maximum=65535),
        password=sec.str("password"),
        password_valid_to=sec.str("passwordValidTo", pattern=VALID_TO_RE,
                                  pattern_reason="must be a UTC time like 2026-01-31T23:59:00"),
    )
    if gfx.password_valid_to and gfx.password is None:
        sec.fail("passwordValidTo", "needs a password")
    if gfx.type == "vnc" and gfx.port is not None and gfx.port != 0 and gfx.port < 5900:
        sec.fail("port", "a VNC port must be 5900 or above (0 or absent picks one)")
    sec.finish()
    return gfx


def _lifecycle(sec: Section) -> m.Lifecycle:
    lc = m.Lifecycle(
        on_poweroff=sec.str("onPoweroff", "destroy", choices=("destroy",)),
        on_reboot=sec.str("onReboot", "restart", choices=m.LIFECYCLE_ACTIONS),
        on_crash=sec.str("onCrash", "destroy", choices=("destroy",)),
    )
    sec.finish()
    return lc


def _unique(problems: Problems, items: list[tuple[str, Any]], attr: str, what: str) -> None:
    seen: dict[Any, str] = {}
    for path, obj in items:
        value = getattr(obj, attr)
        if value is None:
            continue
        if value in seen:
            problems.add(f"{path}.{attr}", f"duplicate {what} {value!r} (also at {seen[value]})")
        else:
            seen[value] = path


def from_dict(doc: Any) -> m.VMSpec:
    """Validate `doc` and return the spec, or raise SpecError listing every problem."""
    problems = Problems()
    top = Section(doc, "", problems)
    top.str("apiVersion", m.API_VERSION, choices=(m.API_VERSION,))
    name = top.str("name", None, required=True, pattern=NAME_RE, pattern_reason=NAME_REASON)
    uuid = top.str("uuid", None, pattern=UUID_RE, pattern_reason="must be a UUID")
    uuid = str(uuidlib.UUID(uuid)) if uuid else str(uuidlib.uuid4())
    spec = m.VMSpec(
        name=name or "",
        uuid=uuid,
        machine=top.str("machine", "q35", pattern=MACHINE_RE, pattern_reason="must be a QEMU machine type such as q35 or pc"),
        cpu=_cpu(top.section("cpu")),
        memory=_memory(top.section("memory")),
        boot=_boot(top.section("boot")),
        serial=_serial(top.section("serial")),
        guest_agent=top.bool("guestAgent", False),
        rng=top.bool("rng", False),
        hotplug_slots=top.int("hotplugSlots", 4, minimum=0, maximum=32),
        lifecycle=_lifecycle(top.section("lifecycle")),
        qemu_args=top.str_list("qemuArgs", [], check=_qemu_arg_check),
    )
    disks = [(p, _disk(Section(d, p, problems), i)) for i, (p, d) in enumerate(top.list("disks"))]
    nics = [(p, _nic(Section(n, p, problems), i)) for i, (p, n) in enumerate(top.list("nics"))]
    gfx = [_graphics(Section(g, p, problems)) for p, g in top.list("graphics")]
    _unique(problems, disks, "name", "disk name")
    _unique(problems, disks, "serial", "disk serial")
    _unique(problems, nics, "name", "nic name")
    _unique(problems, nics, "mac", "MAC address")
    _unique(problems, disks + nics, "slot", "slot")
    spec.disks = [d for _, d in disks]
    spec.nics = [n for _, n in nics]
    spec.graphics = gfx
    if len([g for g in gfx if g.type == "spice"]) > 1:
        problems.add("graphics", "at most one spice display")
    if len([g for g in gfx if g.type == "vnc"]) > 1:
        problems.add("graphics", "at most one vnc display")
    metadata = top.raw("metadata", {})
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict):
        problems.add("metadata", "must be a mapping")
        metadata = {}
    else:
        try:
            json.dumps(metadata)
        except (TypeError, ValueError):
            problems.add("metadata", "must hold only strings, numbers, booleans, lists and mappings")
    spec.metadata = metadata
    top.finish()
    if problems:
        raise SpecError(problems)
    return spec


def _drop_none(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}


def to_dict(spec: m.VMSpec) -> dict[str, Any]:
    """The document for `spec`: every field spelled out, so it parses back equal."""
    return {
        "apiVersion": spec.api_version,
        "name": spec.name,
        "uuid": spec.uuid,
        "machine": spec.machine,
        "cpu": _drop_none({"count": spec.cpu.count, "model": spec.cpu.model,
                           "sockets": spec.cpu.sockets, "cores": spec.cpu.cores,
                           "threads": spec.cpu.threads}),
        "memory": _drop_none({"size": format_size(spec.memory.size),
                              "max": None if spec.memory.max is None else format_size(spec.memory.max),
                              "balloon": spec.memory.balloon, "slots": spec.memory.slots}),
        "boot": _drop_none({"firmware": spec.boot.firmware, "kernel": spec.boot.kernel,
                            "initrd": spec.boot.initrd, "cmdline": spec.boot.cmdline,
                            "order": list(spec.boot.order), "nvram": spec.boot.nvram}),
        "disks": [_drop_none({"name": d.name, "path": d.path, "format": d.format, "bus": d.bus,
                              "media": d.media, "readonly": d.readonly, "cache": d.cache,
                              "aio": d.aio, "serial": d.serial, "bootIndex": d.boot_index,
                              "slot": d.slot, "errorPolicy": d.error_policy}) for d in spec.disks],
        "nics": [_drop_none({"name": n.name, "mac": n.mac, "model": n.model, "backend": n.backend,
                             "bridge": n.bridge, "tap": n.tap, "bootIndex": n.boot_index,
                             "slot": n.slot}) for n in spec.nics],
        "serial": _drop_none({"type": spec.serial.type, "path": spec.serial.path}),
        "graphics": [_drop_none({"type": g.type, "listen": g.listen, "port": g.port,
                                 "password": g.password, "passwordValidTo": g.password_valid_to})
                     for g in spec.graphics],
        "guestAgent": spec.guest_agent,
        "rng": spec.rng,
        "hotplugSlots": spec.hotplug_slots,
        "lifecycle": {"onPoweroff": spec.lifecycle.on_poweroff,
                      "onReboot": spec.lifecycle.on_reboot,
                      "onCrash": spec.lifecycle.on_crash},
        "metadata": spec.metadata,
        "qemuArgs": list(spec.qemu_args),
    }


class SpecLoader(yaml.SafeLoader):
    """YAML's safe loader without YAML 1.1's base-60 numbers, so an unquoted MAC such as
    52:54:00:12:34:56 (or a time like 12:30) stays a string."""


SpecLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers
            if not (tag in ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float") and ":" in rx.pattern)]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_INT_RE = re.compile(r"""^(?:[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+)$""", re.X)
_FLOAT_RE = re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+][0-9]+)?|\.[0-9][0-9_]*(?:[eE][-+][0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$""", re.X)
SpecLoader.add_implicit_resolver("tag:yaml.org,2002:int", _INT_RE, list("-+0123456789"))
SpecLoader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT_RE, list("-+0123456789."))


def load_yaml(text: str) -> object:
    return yaml.load(text, Loader=SpecLoader)  # noqa: S506 - SpecLoader is a SafeLoader


def loads(text: str) -> m.VMSpec:
    """Parse a YAML or JSON document (JSON is YAML) into a spec."""
    try:
        doc = load_yaml(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise SpecError([("(document)", f"not valid YAML/JSON{where}: {getattr(e, 'problem', e)}")]) from None
    return from_dict(doc)


def dumps(spec: m.VMSpec) -> str:
    """The spec as a YAML document."""
    return yaml.safe_dump(to_dict(spec), sort_keys=False, default_flow_style=False)
