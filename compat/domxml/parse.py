"""libvirt domain XML -> kvmd spec: the domain-level elements (devices: `devices.py`).

Every element and attribute is handled one of four ways (see `compat.xmlutil.Node`):
turned into a spec field, kept verbatim for the round trip (things kvmd already does, or
that have no effect on a kvmd-run QEMU — docs/compat.md lists each), dropped (runtime
data libvirt adds to a running domain's XML), or refused with `UnsupportedXML` naming
it. The result is checked with `kvmd.spec.from_dict`; a spec-level problem is reported
against the XML element the value came from.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from typing import Any

from compat.domxml import devices
from compat.domxml.common import BOOT_DEVS, KVMD_META, LIBVIRT_KEY, QEMU, SMBIOS_ENTRIES, Ctx
from compat.errors import UnsupportedXML
from compat.xmlutil import UNITS, Node, is_number, memory_bytes, parse, to_string
from kvmd.errors import SpecError
from kvmd.spec import from_dict, to_dict

LIFECYCLE = (("on_poweroff", "onPoweroff", ("destroy",)),
             ("on_reboot", "onReboot", ("restart", "destroy")),
             ("on_crash", "onCrash", ("destroy",)))


def xml_to_spec(xml: str | bytes, networks: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Convert a libvirt domain XML document into a kvmd spec document.

    `networks` maps libvirt network names to host bridges, for `<interface
    type='network'>` (kvmd has no libvirt networks; without a mapping such an interface
    is refused). Raises `UnsupportedXML` (or its `MalformedXML`) naming the element.
    """
    dom = Node.root(parse(xml, root="domain"))
    ctx = Ctx(networks=dict(networks or {}))
    _domain(dom, ctx)
    tpl = dom.template()
    if tpl is not None:
        ctx.lv["domain"] = to_string(tpl)
    ctx.spec.setdefault("metadata", {})[LIBVIRT_KEY] = ctx.lv
    try:
        return to_dict(from_dict(ctx.spec))
    except SpecError as e:
        raise _located(e, ctx) from None


def _located(e: SpecError, ctx: Ctx) -> UnsupportedXML:
    """The first spec problem, reported at the XML element its value came from."""
    path, reason = e.problems[0]
    best = ""
    for key in ctx.origin:
        if (path == key or path.startswith(key + ".") or path.startswith(key + "[")) and len(key) > len(best):
            best = key
    element, attribute = ctx.origin.get(best, ("/domain", None))
    return UnsupportedXML(element, f"{reason} (kvmd spec field {path})", attribute)


def _domain(dom: Node, ctx: Ctx) -> None:
    dom.keep("type", choices=("kvm", "qemu"))
    dom.attr("id")  # a running domain's number: runtime, ignored
    spec = ctx.spec
    name = dom.child("name")
    if name is None:
        dom.fail("<name> is required")
    spec["name"] = name.text()
    ctx.came_from("name", name.path)
    uuid = dom.child("uuid")
    if uuid is not None:
        spec["uuid"] = uuid.text()
        ctx.came_from("uuid", uuid.path)
    dom.keep_children("title", check=_plain_text)
    dom.keep_children("description", check=_plain_text)
    meta = dom.child("metadata")
    if meta is not None:
        dom.take(meta)
        _metadata(meta, ctx)
    _os(dom, ctx)  # first: the machine type decides disk buses
    _memory(dom, ctx)
    _vcpus(dom, ctx)
    _iothreads(dom, ctx)
    _cputune(dom, ctx)
    _sysinfo(dom, ctx)
    _pm(dom, ctx)
    features = dom.child("features")
    if features is not None:
        _features(features)
    clock = dom.child("clock")
    if clock is not None:
        _clock(clock)
    lifecycle: dict[str, str] = {}
    for tag, key, choices in LIFECYCLE:
        node = dom.child(tag)
        if node is not None:
            value = node.text()
            if value not in choices:
                raise UnsupportedXML(node.path, f"{value!r}: must be one of " + ", ".join(choices))
            lifecycle[key] = value
    spec["lifecycle"] = lifecycle
    devs = dom.child("devices")
    if devs is not None:
        devices.parse_devices(devs, ctx)
    else:
        spec["serial"] = {"type": "none"}
        spec["memory"]["balloon"] = True
    args = []
    for cl in dom.children(QEMU + "commandline"):
        for arg in cl.children(QEMU + "arg"):
            args.append(arg.attr("value", ""))
    spec["qemuArgs"] = args
    for label in dom.children("seclabel"):
        _seclabel(label, dom)
    resource = dom.child("resource")
    if resource is not None:  # libvirt's cgroup placement of a running domain: runtime
        part = resource.child("partition")
        if part is None or part.text() != "/machine":
            resource.fail("only libvirt's default partition /machine (kvmd places its own cgroups)")
        dom.drop("resource")


def _metadata(meta: Node, ctx: Ctx) -> None:
    """<metadata> is kept verbatim, but for kvmd's own (JSON in <kvmd:metadata>)."""
    el = copy.deepcopy(meta.el)
    el.tail = None
    for own in el.findall(KVMD_META):
        try:
            data = json.loads(own.text or "{}")
        except (ValueError, RecursionError):
            data = None
        if not isinstance(data, dict):
            raise UnsupportedXML(meta.path + "/kvmd:metadata", "must hold a JSON object")
        ctx.spec.setdefault("metadata", {}).update(data)
        el.remove(own)
    if len(el) or (el.text or "").strip():
        ctx.lv["metadata"] = to_string(el)


def _plain_text(node: Node) -> None:
    node.text()
    node.check()


def _seclabel(node: Node, dom: Node) -> None:
    """A domain <seclabel>: kvmd labels nothing. type='none' is kept; a 'dynamic' label
    is what libvirt picked for a running domain (runtime, dropped); 'static' is refused."""
    kind = node.attr("type", "dynamic", choices=("none", "dynamic"))
    if kind == "dynamic":
        dom.drop("seclabel")
        return
    node.keep("type")
    node.keep("model", choices=("none", "dac", "selinux", "apparmor"))
    node.check()


def _memory(dom: Node, ctx: Ctx) -> None:
    mem = dom.child("memory")
    if mem is None:
        dom.fail("<memory> is required")
    size = memory_bytes(mem)
    memory: dict[str, Any] = {"size": size}
    ctx.came_from("memory.size", mem.path)
    cur = dom.el.find("currentMemory")
    if cur is not None:
        if memory_bytes(Node(cur, "/domain/currentMemory")) == size:
            memory_bytes(dom.child("currentMemory"))  # regenerated from memory.size
        else:  # a boot balloon target: kept, not applied (docs/compat.md)
            dom.keep_children("currentMemory", check=lambda n: (memory_bytes(n), n.check()))
    mx = dom.child("maxMemory")
    if mx is not None:
        memory["max"] = memory_bytes(mx)
        slots = mx.int_attr("slots", minimum=1)
        if slots is not None:
            memory["slots"] = slots
        ctx.came_from("memory.max", mx.path)
        ctx.came_from("memory.slots", mx.path, "slots")
    ctx.spec["memory"] = memory


def _vcpus(dom: Node, ctx: Ctx) -> None:
    vcpu = dom.child("vcpu")
    maxv = 1
    current = None
    if vcpu is not None:
        vcpu.keep("placement", choices=("static",))
        text = vcpu.text()
        if not is_number(text) or int(text) < 1:
            vcpu.fail(f"{text[:40]!r} is not a vCPU count")
        maxv = int(text)
        current = vcpu.int_attr("current", minimum=1)
        ctx.came_from("cpu", vcpu.path)
    cpu: dict[str, Any] = {"count": current or maxv}
    if current is not None and current < maxv:
        cpu["maxCount"] = maxv  # vCPU hotplug room: QEMU maxcpus
    node = dom.child("cpu")
    topo = None
    if node is not None:
        topo = _cpu(node, cpu, ctx, maxv)
    if topo is not None:
        s, c, t = topo
        if s * c * t != maxv:
            raise UnsupportedXML(node.path + "/topology", f"sockets*cores*threads = {s * c * t} "
                                 f"must equal the maximum vCPU count {maxv} (<vcpu>)")
        cpu.update(sockets=s, cores=c, threads=t)
    if current is not None and current > maxv:
        vcpu.fail_attr("current", f"must not exceed the vCPU count {maxv}")
    ctx.spec["cpu"] = cpu


def _cpu(node: Node, cpu: dict[str, Any], ctx: Ctx, maxv: int) -> tuple[int, int, int] | None:
    model_node = node.child("model")
    mode = node.attr("mode", "custom", choices=("custom", "host-model", "host-passthrough", "maximum"))
    node.keep("match", choices=("exact", "minimum", "strict"))
    node.keep("check", choices=("none", "partial", "full"))
    node.keep("migratable", choices=("on", "off"))
    if mode == "host-model" or node.el.get("mode") == "custom":
        node.keep("mode")  # host-model is written back as such; kvmd runs it as -cpu host
    model = None
    if model_node is not None:
        if mode in ("host-passthrough", "maximum"):
            model_node.fail(f"a <model> is not used with mode='{mode}'")
        model_node.keep("fallback", choices=("allow", "forbid"))
        model = model_node.text()
        if not model:
            model_node.fail("the CPU model name is empty")
    if mode in ("host-passthrough", "host-model"):
        model = "host"
    elif mode == "maximum":
        model = "max"
    feats = []
    for f in node.children("feature"):
        policy = f.attr("policy", "require", choices=("require", "disable"))
        fname = f.attr("name")
        if not fname:
            f.fail("a <feature> needs a name")
        feats.append(("+" if policy == "require" else "-") + fname)
    if feats:
        if model is None:
            node.fail("CPU features need a CPU model (<model> or a host mode)")
        model = ",".join([model, *feats])
    if model is not None:
        cpu["model"] = model
        ctx.came_from("cpu.model", node.path)
    node.keep_children("numa", check=lambda n: _numa(n, maxv, ctx.spec["memory"]["size"]))
    topo = node.child("topology")
    if topo is None:
        return None
    ctx.came_from("cpu.sockets", topo.path)
    vals = []
    for key in ("sockets", "cores", "threads"):
        v = topo.int_attr(key, minimum=1)
        if v is None:
            topo.fail(f"needs sockets, cores and threads (missing {key})")
        vals.append(v)
    topo.keep("dies", "clusters", choices=("1",))
    return vals[0], vals[1], vals[2]


def _numa(node: Node, maxv: int, memory: int) -> None:
    """One NUMA cell holding every vCPU and all memory is what kvmd's QEMU has anyway
    (one node; QEMU makes it explicit itself when memory hotplug is on): kept. A cell
    that leaves vCPUs or memory out, or several cells, would need -numa: refused."""
    cells = node.keep_children("cell")
    if len(cells) != 1:
        node.fail("kvmd runs one NUMA node: exactly one <cell> is supported")
    cell = cells[0]
    cell.keep("id", choices=("0",))
    cell.keep("memAccess", choices=("shared", "private"))
    cpus = cell.attr("cpus", keep=True)
    try:
        ids = cpu_list(cpus or "")
    except ValueError as e:
        cell.fail_attr("cpus", str(e))
    if ids != set(range(maxv)):
        cell.fail_attr("cpus", f"the one NUMA cell must hold every vCPU: 0-{maxv - 1}")
    unit = cell.attr("unit", "KiB", keep=True)
    size = cell.attr("memory", keep=True)
    if unit not in UNITS or size is None or not is_number(size) or int(size) * UNITS[unit] != memory:
        cell.fail_attr("memory", f"the one NUMA cell must hold all memory: {memory // 1024} KiB")
    cell.check()
    node.check()


def cpu_list(text: str) -> set[int]:
    """libvirt's CPU list syntax: `0-3,6,^2` -> {0, 1, 3, 6}."""
    out: set[int] = set()
    minus: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        neg = part.startswith("^")
        part = part[1:] if neg else part
        lo, _, hi = part.partition("-")
        if not is_number(lo, 5) or (hi and not is_number(hi, 5)) or (hi and int(hi) < int(lo)):
            raise ValueError(f"{text[:40]!r} is not a CPU list like 0-3,6")
        ids = set(range(int(lo), int(hi or lo) + 1))
        (minus if neg else out).update(ids)
    return out - minus


PM_STATES = (("suspend-to-mem", "suspendToMem"), ("suspend-to-disk", "suspendToDisk"))


def _pm(dom: Node, ctx: Ctx) -> None:
    """<pm>: which ACPI sleep states (S3, S4) the guest is offered (spec `pm`)."""
    node = dom.child("pm")
    if node is None:
        return
    pm = {}
    for tag, key in PM_STATES:
        state = node.child(tag)
        if state is not None:
            enabled = state.attr("enabled", choices=("yes", "no"))
            if enabled is None:
                state.fail("needs enabled='yes' or enabled='no'")
            pm[key] = enabled == "yes"
    ctx.spec["pm"] = pm
    node.check()


def _iothreads(dom: Node, ctx: Ctx) -> None:
    node = dom.child("iothreads")
    if node is None:
        return
    text = node.text()
    if not is_number(text, 3):
        node.fail(f"{text[:40]!r} is not a number of iothreads")
    ctx.spec["iothreads"] = int(text)
    ctx.came_from("iothreads", node.path)


def _cputune(dom: Node, ctx: Ctx) -> None:
    """<cputune><shares>: the VM cgroup's CPU weight (cpu.shares). Pinning, periods and
    quotas are refused (kvmd's CPU limit is its own quota of cpu.count CPUs)."""
    node = dom.child("cputune")
    if node is None:
        return
    shares = node.child("shares")
    if shares is not None:
        text = shares.text()
        if not is_number(text, 7):
            shares.fail(f"{text[:40]!r} is not a number of CPU shares")
        ctx.spec["cpu"]["shares"] = int(text)
        ctx.came_from("cpu.shares", shares.path)
    node.check()


def _sysinfo(dom: Node, ctx: Ctx) -> None:
    """<sysinfo type='smbios'><system>: SMBIOS type 1, applied (`smbios`) when
    `<os><smbios mode='sysinfo'/>` asks for it, as libvirt does; kept otherwise."""
    node = dom.child("sysinfo")
    if node is None:
        if ctx.smbios_mode == "sysinfo":
            dom.fail("<os><smbios mode='sysinfo'/> needs a <sysinfo type='smbios'>")
        return
    applied = ctx.smbios_mode == "sysinfo"
    node.attr("type", choices=("smbios",), keep=not applied)
    if node.el.get("type") is None:
        node.fail("a <sysinfo> needs type='smbios'")
    system = node.child("system")
    if system is None:
        node.fail("kvmd sets the SMBIOS system strings (type 1) only: a <system> is needed")
    smbios: dict[str, str] = {}
    for entry in system.children("entry"):
        name = entry.attr("name", choices=SMBIOS_ENTRIES, keep=not applied)
        if name is None:
            entry.fail("an <entry> needs a name")
        if name in smbios:
            entry.fail_attr("name", "given twice")
        smbios[name] = entry.text(keep=not applied)
    if applied:
        ctx.spec["smbios"] = smbios
        ctx.came_from("smbios", system.path)
    node.check()


def _os(dom: Node, ctx: Ctx) -> None:
    os_ = dom.child("os")
    if os_ is None:
        dom.fail("<os> is required")
    boot: dict[str, Any] = {}
    typ = os_.child("type")
    if typ is None or typ.text() != "hvm":
        os_.fail("needs <type>hvm</type> (kvmd runs full virtualization only)")
    typ.keep("arch", choices=("x86_64",))
    ctx.machine = typ.attr("machine", "pc")
    ctx.spec["machine"] = ctx.machine
    ctx.came_from("machine", typ.path, "machine")
    firmware = os_.attr("firmware", None, choices=("efi", "bios"), keep=True)
    loader = os_.child("loader")
    if loader is not None:
        ltype = loader.attr("type", None, keep=True)
        if ltype != "pflash":
            if ltype is None:
                loader.fail("a ROM <loader> is not supported: kvmd boots UEFI from pflash (type='pflash')")
            loader.fail_attr("type", "kvmd boots UEFI from pflash only: must be pflash")
        loader.keep("readonly", choices=("yes",))
        loader.keep("secure", choices=("no",))
        loader.keep("format", choices=("raw",))
        loader.text(keep=True)  # kvmd uses its own OVMF build (docs/compat.md)
    if firmware == "efi" or loader is not None:
        boot["firmware"] = "uefi"
    fw = os_.child("firmware")
    if fw is not None:
        for feat in fw.children("feature"):
            feat.keep("enabled", choices=("no",))
            feat.keep("name", choices=("enrolled-keys", "secure-boot"))
    nvram = os_.child("nvram")
    if nvram is not None:
        nvram.keep("template", "format")
        path = nvram.text()
        if path:
            boot["nvram"] = path
            ctx.came_from("boot.nvram", nvram.path)
    for tag in ("kernel", "initrd", "cmdline"):
        node = os_.child(tag)
        if node is not None:
            boot[tag] = node.text()
            ctx.came_from(f"boot.{tag}", node.path)
    order = []
    for b in os_.children("boot"):
        dev = b.attr("dev", choices=tuple(BOOT_DEVS))
        order.append(BOOT_DEVS[dev])
    ctx.os_boot = bool(order)
    boot["order"] = order or ["disk"]
    smbios = os_.child("smbios")
    if smbios is not None:
        # sysinfo: the <sysinfo> strings (kvmd's `smbios`); emulate: QEMU's own (the default)
        ctx.smbios_mode = smbios.attr("mode", choices=("sysinfo", "emulate"), keep=True)
        if ctx.smbios_mode is None:
            smbios.fail("an <smbios> needs a mode")
    ctx.spec["boot"] = boot


def _features(node: Node) -> None:
    """acpi/apic/pae: a kvmd guest always has them; kept so the XML reads the same."""
    for tag in ("acpi", "apic", "pae"):
        node.keep_children(tag, check=Node.check)
    node.keep_children("smm", check=lambda n: (n.keep("state", choices=("on",)), n.check()))


def _clock(node: Node) -> None:
    """<clock>: the guest RTC is UTC in kvmd; timers are kept, QEMU's defaults apply."""
    offset = node.attr("offset", "utc", choices=("utc", "variable"), keep=True)
    if offset == "variable":
        node.keep("basis", choices=("utc",))
        node.keep("adjustment", choices=("0", "+0", "-0"))
    for timer in node.keep_children("timer"):
        timer.keep("name", choices=("rtc", "pit", "hpet", "kvmclock"))
        timer.keep("tickpolicy", choices=("catchup", "delay", "merge", "discard"))
        timer.keep("present", choices=("yes", "no"))
        timer.keep("track", choices=("guest", "wall"))
        timer.check()
