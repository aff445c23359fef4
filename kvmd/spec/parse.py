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
# up to 36: the oVirt engine's disk serial is the disk's UUID. QEMU takes it whole; the
# guest sees 20 bytes of it on virtio-blk and IDE/SATA (their serial fields), 36 on SCSI.
SERIAL_RE = re.compile(r"^[A-Za-z0-9_.-]{1,36}$")
CHANNEL_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
GA_CHANNEL = "org.qemu.guest_agent.0"
SPICE_CHANNEL = "com.redhat.spice.0"
MAX_IOTHREADS = 64


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
        max_count=sec.int("maxCount", minimum=1, maximum=1024),
        shares=sec.int("shares", minimum=2, maximum=262144),
    )
    topo = [cpu.sockets, cpu.cores, cpu.threads]
    if cpu.max_count is not None and cpu.max_count < cpu.count:
        sec.fail("maxCount", f"must not be less than count {cpu.count}")
    if all(v is not None for v in topo):
        total = cpu.sockets * cpu.cores * cpu.threads
        if total < cpu.count:
            sec.fail("sockets", f"sockets*cores*threads = {total} is less than count {cpu.count}")
        elif cpu.max_count is not None and total != cpu.max_count:
            sec.fail("sockets", f"sockets*cores*threads = {total} must equal maxCount {cpu.max_count}")
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
        serial=sec.str("serial", pattern=SERIAL_RE,
                       pattern_reason="must be 1-36 characters of letters, digits, '_', '.', '-'"),
        boot_index=sec.int("bootIndex", minimum=0),
        slot=sec.int("slot", minimum=0, maximum=255),
        error_policy=sec.str("errorPolicy", choices=m.ERROR_POLICIES),
        iothread=sec.int("iothread", minimum=1, maximum=MAX_IOTHREADS),
    )
    if disk.iothread is not None and disk.bus == "sata":
        sec.fail("iothread", "only virtio and scsi disks run in an iothread")
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
        no_mac_spoofing=sec.bool("noMacSpoofing", False),
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
    if nic.no_mac_spoofing and nic.backend != "tap":
        sec.fail("noMacSpoofing", "is enforced on the host side of a tap: needs backend: tap")
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


def _smbios(sec: Section) -> dict[str, str]:
    out: dict[str, str] = {}
    for key in m.SMBIOS_SYSTEM_FIELDS:
        value = sec.str(key)
        if value is None:
            continue
        if key == "uuid" and not UUID_RE.fullmatch(value):
            sec.fail(key, "must be a UUID")
        elif not value or len(value) > 256 or any(c in value for c in "\0\n\r"):
            sec.fail(key, "must be 1-256 characters on one line")
        else:
            out[key] = str(uuidlib.UUID(value)) if key == "uuid" else value
    sec.finish()
    return out


def _pm(sec: Section) -> m.Power:
    pm = m.Power(suspend_to_mem=sec.bool("suspendToMem", None), suspend_to_disk=sec.bool("suspendToDisk", None))
    sec.finish()
    return pm


def _channel(sec: Section) -> m.Channel:
    ch = m.Channel(
        name=sec.str("name", None, required=True, pattern=CHANNEL_NAME_RE,
                     pattern_reason="must be 1-64 characters of letters, digits, '_', '.', '-'") or "",
        type=sec.str("type", "unix", choices=m.CHANNEL_TYPES),
    )
    if ch.name == GA_CHANNEL:
        sec.fail("name", "the guest agent's channel is guestAgent: true")
    if ch.type == "spicevmc" and ch.name and ch.name != SPICE_CHANNEL:
        sec.fail("name", f"a spicevmc channel is the SPICE agent's: {SPICE_CHANNEL}")
    sec.finish()
    return ch


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


MAX_METADATA_DEPTH = 32
MAX_METADATA_VALUES = 10000
_SCALARS = (str, int, float, bool, type(None))


def _metadata_problem(metadata: dict[str, Any]) -> str | None:
    """Why free-form metadata cannot be stored, or None. Bounded: YAML aliases can make a
    small document stand for a huge tree (a "billion laughs"), so it is walked, not dumped."""
    stack: list[tuple[Any, int]] = [(metadata, 0)]
    count = 0
    while stack:
        value, depth = stack.pop()
        count += 1
        if count > MAX_METADATA_VALUES:
            return f"too large (more than {MAX_METADATA_VALUES} values)"
        if depth > MAX_METADATA_DEPTH:
            return f"nested too deeply (more than {MAX_METADATA_DEPTH} levels)"
        if isinstance(value, dict):
            if not all(isinstance(k, _SCALARS) for k in value):
                return "keys must be strings"
            stack.extend((v, depth + 1) for v in value.values())
        elif isinstance(value, list):
            stack.extend((v, depth + 1) for v in value)
        elif not isinstance(value, _SCALARS):
            return "must hold only strings, numbers, booleans, lists and mappings"
    try:
        json.dumps(metadata)
    except (TypeError, ValueError):
        return "must hold only strings, numbers, booleans, lists and mappings"
    return None


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
        iothreads=top.int("iothreads", 0, minimum=0, maximum=MAX_IOTHREADS),
        smbios=_smbios(top.section("smbios")),
        pm=_pm(top.section("pm")),
        tablet=top.bool("tablet", False),
    )
    disk_docs, nic_docs = top.list("disks"), top.list("nics")
    disks = [(p, _disk(Section(d, p, problems), i)) for i, (p, d) in enumerate(disk_docs)]
    nics = [(p, _nic(Section(n, p, problems), i)) for i, (p, n) in enumerate(nic_docs)]
    gfx = [_graphics(Section(g, p, problems)) for p, g in top.list("graphics")]
    # uniqueness among the devices that are mappings (the others are reported already)
    udisks = [dev for dev, (_, d) in zip(disks, disk_docs, strict=True) if isinstance(d, dict)]
    unics = [dev for dev, (_, n) in zip(nics, nic_docs, strict=True) if isinstance(n, dict)]
    _unique(problems, udisks, "name", "disk name")
    _unique(problems, udisks, "serial", "disk serial")
    _unique(problems, unics, "name", "nic name")
    _unique(problems, unics, "mac", "MAC address")
    _unique(problems, udisks + unics, "slot", "slot")
    spec.disks = [d for _, d in disks]
    spec.nics = [n for _, n in nics]
    spec.graphics = gfx
    chans = [(p, _channel(Section(c, p, problems))) for p, c in top.list("channels")]
    spec.channels = [c for _, c in chans]
    _unique(problems, chans, "name", "channel name")
    if any(c.type == "spicevmc" for c in spec.channels) and not any(g.type == "spice" for g in gfx):
        problems.add("channels", "a spicevmc channel needs a spice display")
    _iothread_problems(problems, spec, disks)
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
        reason = _metadata_problem(metadata)
        if reason:
            problems.add("metadata", reason)
            metadata = {}
    spec.metadata = metadata
    top.finish()
    if problems:
        raise SpecError(problems)
    return spec


def _iothread_problems(problems: Problems, spec: m.VMSpec, disks: list[tuple[str, m.Disk]]) -> None:
    """Disk iothreads exist; SCSI disks share the one virtio-scsi controller, hence its iothread."""
    scsi: dict[int | None, str] = {}
    for path, disk in disks:
        if disk.iothread is not None and disk.iothread > spec.iothreads:
            problems.add(f"{path}.iothread", f"there are {spec.iothreads} iothreads (iothreads: N makes 1..N)")
        if disk.bus == "scsi":
            scsi.setdefault(disk.iothread, path)
    if len(scsi) > 1:
        paths = sorted(scsi.values())
        problems.add(f"{paths[-1]}.iothread", "SCSI disks share the virtio-scsi controller: "
                     f"its iothread must be the same for all (differs from {paths[0]})")


def _drop_none(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}


def to_dict(spec: m.VMSpec) -> dict[str, Any]:
    """The document for `spec`: every field spelled out, so it parses back equal."""
    return {
        "apiVersion": spec.api_version,
        "name": spec.name,
        "uuid": spec.uuid,
        "machine": spec.machine,
        "cpu": _drop_none({"count": spec.cpu.count, "maxCount": spec.cpu.max_count, "model": spec.cpu.model,
                           "sockets": spec.cpu.sockets, "cores": spec.cpu.cores,
                           "threads": spec.cpu.threads, "shares": spec.cpu.shares}),
        "memory": _drop_none({"size": format_size(spec.memory.size),
                              "max": None if spec.memory.max is None else format_size(spec.memory.max),
                              "balloon": spec.memory.balloon, "slots": spec.memory.slots}),
        "boot": _drop_none({"firmware": spec.boot.firmware, "kernel": spec.boot.kernel,
                            "initrd": spec.boot.initrd, "cmdline": spec.boot.cmdline,
                            "order": list(spec.boot.order), "nvram": spec.boot.nvram}),
        "disks": [_drop_none({"name": d.name, "path": d.path, "format": d.format, "bus": d.bus,
                              "media": d.media, "readonly": d.readonly, "cache": d.cache,
                              "aio": d.aio, "serial": d.serial, "bootIndex": d.boot_index,
                              "slot": d.slot, "errorPolicy": d.error_policy,
                              "iothread": d.iothread}) for d in spec.disks],
        "nics": [_drop_none({"name": n.name, "mac": n.mac, "model": n.model, "backend": n.backend,
                             "bridge": n.bridge, "tap": n.tap, "bootIndex": n.boot_index,
                             "slot": n.slot, "noMacSpoofing": n.no_mac_spoofing or None})
                 for n in spec.nics],
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
        # left out at their defaults, so specs without them read as before
        **({"iothreads": spec.iothreads} if spec.iothreads else {}),
        **({"smbios": dict(spec.smbios)} if spec.smbios else {}),
        **({"channels": [{"name": c.name, "type": c.type} for c in spec.channels]} if spec.channels else {}),
        **({"tablet": True} if spec.tablet else {}),
        **({"pm": pm} if (pm := _drop_none({"suspendToMem": spec.pm.suspend_to_mem,
                                             "suspendToDisk": spec.pm.suspend_to_disk})) else {}),
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
    except RecursionError:
        raise SpecError([("(document)", "not valid YAML/JSON: nested too deeply")]) from None
    except ValueError as e:  # a value YAML's constructors refuse, e.g. an integer of 5000 digits
        raise SpecError([("(document)", f"not valid YAML/JSON: {str(e)[:100]}")]) from None
    return from_dict(doc)


def dumps(spec: m.VMSpec) -> str:
    """The spec as a YAML document."""
    return yaml.safe_dump(to_dict(spec), sort_keys=False, default_flow_style=False)
