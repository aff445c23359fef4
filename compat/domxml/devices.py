"""libvirt domain XML -> kvmd spec: the `<devices>` element.

Disks and interfaces become spec entries named deterministically: a disk is named
after its target dev (`vda`, `sdb`, `hdc`), an interface `net0`, `net1`... in document
order — unless the device has a libvirt user alias `ua-NAME` whose NAME is a valid
kvmd device name, which then wins (so a kvmd disk `root` survives spec -> XML -> spec).
Each device's leftovers (alias, `<source><seclabel>`, kept attributes) are stored as a
template under `metadata.libvirt.devices`. `<address>` elements are dropped everywhere:
kvmd places devices itself (docs/compat.md).
"""

from __future__ import annotations

from typing import Any

from compat.domxml.common import (
    DEV_RE,
    GA_CHANNEL,
    MAC_FILTER,
    SPICE_CHANNEL,
    Ctx,
    is_q35,
    user_alias_name,
)
from compat.errors import UnsupportedXML
from compat.xmlutil import Node

CACHE = ("none", "writeback", "writethrough", "directsync", "unsafe", "default")
IO = ("threads", "native", "io_uring")
ERROR_POLICY = ("stop", "report", "ignore", "enospace")
NIC_MODELS = ("virtio", "e1000", "rtl8139")


def parse_devices(devs: Node, ctx: Ctx) -> None:
    spec = ctx.spec
    devs.keep_children("emulator", check=lambda n: (n.text(keep=True), n.check()))
    spec["disks"] = [_disk(devs, d, i, ctx) for i, d in enumerate(devs.children("disk"))]
    spec["nics"] = [_nic(devs, n, i, ctx) for i, n in enumerate(devs.children("interface"))]
    spec["serial"] = _serial(devs, ctx)
    spec["graphics"] = [_graphics(devs, g, i, ctx) for i, g in enumerate(devs.children("graphics"))]
    spec["guestAgent"], channels = _channels(devs, ctx)
    if channels:
        spec["channels"] = channels
    spec["memory"]["balloon"] = _memballoon(devs, ctx)
    spec["rng"] = _rng(devs, ctx)
    for ctl in devs.keep_children("controller", check=_controller):
        _scsi_iothread(ctl, ctx)
    spec["tablet"] = _inputs(devs, ctx)
    devs.keep_children("video", check=_video)
    devs.keep_children("audio", check=_audio)


def _alias(node: Node) -> str | None:
    """Read a device's <alias>: user aliases (`ua-`) are kept, libvirt's own dropped."""
    alias = node.child("alias")
    if alias is None:
        return None
    name = alias.attr("name", None)
    if name and name.startswith("ua-"):
        alias.keep("name")
    return name


def _boot_order(node: Node, ctx: Ctx, spec_path: str) -> int | None:
    boot = node.child("boot")
    if boot is None:
        return None
    if ctx.os_boot:
        boot.fail("per-device <boot order> cannot be mixed with <os><boot dev>")
    ctx.came_from(spec_path + ".bootIndex", boot.path, "order")
    return boot.int_attr("order", minimum=1)


def _disk(devs: Node, d: Node, index: int, ctx: Ctx) -> dict[str, Any]:
    devs.take(d)
    sp = f"disks[{index}]"
    ctx.came_from(sp, d.path)
    kind = d.attr("type", "file", choices=("file", "block"), keep=True)
    media = d.attr("device", "disk", choices=("disk", "cdrom"))
    d.keep("snapshot", choices=("no", "internal", "external"))
    d.drop("address", "backingStore")
    alias = _alias(d)
    target = d.child("target")
    if target is None:
        d.fail("a disk needs a <target dev=...>")
    dev = target.el.get("dev", "")
    if not DEV_RE.match(dev):
        target.fail_attr("dev", "must be a libvirt disk name like vda, sdb or hdc")
    name = user_alias_name(alias) or dev
    target.attr("dev", keep=name != dev)
    default_bus = {"vd": "virtio", "sd": "scsi", "hd": "ide"}[dev[:2]]
    bus = target.attr("bus", default_bus, choices=("virtio", "scsi", "sata", "ide"))
    q35 = is_q35(ctx.machine)
    if bus == "ide" and q35:
        target.fail_attr("bus", f"machine {ctx.machine} has no IDE bus: use sata")
    if bus == "sata" and not q35:
        target.fail_attr("bus", f"kvmd attaches disks on {ctx.machine} to its IDE bus: use ide")
    disk: dict[str, Any] = {"name": name, "media": media, "bus": "sata" if bus == "ide" else bus}
    driver = d.child("driver")
    if driver is not None:
        driver.attr("name", choices=("qemu",))
        disk["format"] = driver.attr("type", "raw", choices=("raw", "qcow2"))
        cache = driver.attr("cache", None, choices=CACHE)
        if cache is not None:
            disk["cache"] = "writeback" if cache == "default" else cache
            ctx.came_from(sp + ".cache", driver.path, "cache")
        else:  # QEMU's default, writeback: not written back either
            ctx.lv.setdefault("implicit", []).append(f"disk:{name}/cache")
        io = driver.attr("io", None, choices=IO)
        if io is not None:
            disk["aio"] = io
            ctx.came_from(sp + ".aio", driver.path, "io")
        else:  # threads
            ctx.lv.setdefault("implicit", []).append(f"disk:{name}/io")
        policy = driver.attr("error_policy", None, choices=ERROR_POLICY)
        if policy is not None:
            disk["errorPolicy"] = policy
        iothread = driver.int_attr("iothread", minimum=1)
        if iothread is not None:
            if bus != "virtio":
                driver.fail_attr("iothread", "only a virtio disk has its own iothread "
                                 "(SCSI disks run in their controller's: <controller><driver iothread>)")
            disk["iothread"] = iothread
            ctx.came_from(sp + ".iothread", driver.path, "iothread")
        driver.keep("discard", choices=("unmap",))  # kvmd always passes discards down
    source = d.child("source")
    if source is not None:
        source.attr("index")  # runtime: libvirt's node index in a running domain
        attr = "file" if kind == "file" else "dev"
        path = source.attr(attr, "", keep=source.el.get(attr) == "")  # file='': an empty cdrom, kept
        if path:
            disk["path"] = path
            ctx.came_from(sp + ".path", source.path)
        source.keep_children("seclabel", check=_dac_no_relabel)
        if source.el.get("startupPolicy") is not None:
            # optional: start without a medium that is missing. An empty cdrom has none to
            # miss (the engine's empty cdrom); kvmd fails a start whose image is missing.
            source.keep("startupPolicy", choices=("optional",))
            if path or media != "cdrom":
                source.fail_attr("startupPolicy", "kvmd fails a start whose image is missing: "
                                 "only an empty cdrom may say optional")
    if source is None or not disk.get("path"):
        if media == "disk":
            d.fail("a disk needs a <source> (only a cdrom may be empty)")
    ro = d.child("readonly")
    disk["readonly"] = ro is not None or media == "cdrom"
    ser = d.child("serial")
    if ser is not None:
        disk["serial"] = ser.text()
        ctx.came_from(sp + ".serial", ser.path)
    order = _boot_order(d, ctx, sp)
    if order is not None:
        disk["bootIndex"] = order
    ctx.device_template(f"disk:{name}", d.template())
    return disk


def _dac_no_relabel(node: Node) -> None:
    """<seclabel model='dac' relabel='no'/>: what kvmd does anyway (it relabels nothing)."""
    node.keep("model", choices=("dac", "selinux"))
    node.keep("type", choices=("none", "spice"))  # a backend only: kvmd has no sound devices
    node.keep("relabel", choices=("no",))
    node.check()


def _nic(devs: Node, n: Node, index: int, ctx: Ctx) -> dict[str, Any]:
    devs.take(n)
    sp = f"nics[{index}]"
    ctx.came_from(sp, n.path)
    kind = n.attr("type", choices=("bridge", "network", "user", "ethernet"))
    if kind is None:
        n.fail("an <interface> needs a type")
    n.drop("address")
    alias = _alias(n)
    name = user_alias_name(alias) or f"net{index}"
    nic: dict[str, Any] = {"name": name}
    mac = n.child("mac")
    if mac is not None:
        nic["mac"] = mac.attr("address")
        ctx.came_from(sp + ".mac", mac.path, "address")
    model = n.child("model")
    nic["model"] = model.attr("type", "rtl8139", choices=NIC_MODELS) if model is not None else "rtl8139"
    source = n.child("source")
    target = n.child("target")
    if kind == "user":
        nic["backend"] = "user"
        if target is not None:
            target.attr("dev")  # runtime
    elif kind in ("bridge", "network"):
        nic["backend"] = "tap"
        if source is None:
            n.fail(f"type='{kind}' needs a <source {kind}=...>")
        if kind == "bridge":
            nic["bridge"] = source.attr("bridge")
            ctx.came_from(sp + ".bridge", source.path, "bridge")
        else:
            net = source.attr("network", keep=True)
            n.keep("type")
            if net not in ctx.networks:
                source.fail_attr("network", "kvmd has no libvirt networks: map it to a bridge "
                                 "(kvmctl import-xml --network NAME=BRIDGE) or use type='bridge'")
            nic["bridge"] = ctx.networks[net]
            source.attr("bridge")  # a running domain's XML names the network's bridge too
            source.attr("portid")
        if target is not None:
            target.attr("dev")  # the tap libvirt made for a running domain: runtime
    else:  # ethernet: an existing tap
        nic["backend"] = "tap"
        if target is None or not target.el.get("dev"):
            n.fail("type='ethernet' needs <target dev=...> naming an existing tap device")
        nic["tap"] = target.attr("dev")
        target.keep("managed", choices=("no",))
        ctx.came_from(sp + ".tap", target.path, "dev")
    link = n.child("link")
    if link is not None:
        link.keep("state", choices=("up",))
    n.keep_children("bandwidth", check=Node.check)
    # 1500, a tap's own MTU, is what the engine sends for a default network
    n.keep_children("mtu", check=lambda m: (m.keep("size", choices=("1500",)), m.check()))
    filt = n.child("filterref")
    if filt is not None:
        if filt.attr("filter", choices=(MAC_FILTER,)) is None:
            filt.fail("a <filterref> needs a filter")
        if kind == "user":
            filt.fail("a user NIC has no host bridge to filter on (kvmd filters taps)")
        nic["noMacSpoofing"] = True
        ctx.came_from(sp + ".noMacSpoofing", filt.path)
    order = _boot_order(n, ctx, sp)
    if order is not None:
        nic["bootIndex"] = order
    ctx.device_template(f"nic:{name}", n.template())
    return nic


def _serial(devs: Node, ctx: Ctx) -> dict[str, Any]:
    serials = devs.children("serial")
    if len(serials) > 1:
        raise UnsupportedXML(serials[1].path, "kvmd gives a VM one serial port")
    consoles = devs.children("console")
    if len(consoles) > 1:
        raise UnsupportedXML(consoles[1].path, "kvmd gives a VM one console (the serial port)")
    out: dict[str, Any] = {"type": "none"}
    for node in serials:
        devs.take(node)
        out = _chardev(node, ctx, "serial")
        tgt = node.child("target")
        if tgt is not None:
            tgt.keep("type", choices=("isa-serial",))
            tgt.keep("port", choices=("0",))
            model = tgt.child("model")
            if model is not None:
                model.keep("name", choices=("isa-serial",))
        ctx.device_template("serial", node.template())
    for node in consoles:
        devs.take(node)
        con = _chardev(node, ctx, "console")
        if serials and con != out:
            node.fail("the console must be the serial port (same type and source)")
        out = con
        tgt = node.child("target")
        if tgt is not None:
            tgt.keep("type", choices=("serial",))
            tgt.keep("port", choices=("0",))
        ctx.device_template("console", node.template(), always=True)
    ctx.came_from("serial", (serials or consoles)[0].path if serials or consoles else "/domain/devices")
    return out


def _chardev(node: Node, ctx: Ctx, what: str) -> dict[str, Any]:
    kind = node.attr("type", "pty", choices=("pty", "unix", "file"))
    node.attr("tty")  # runtime: the pty a running domain got
    node.drop("address", "alias")
    source = node.child("source")
    if kind == "pty":
        if source is not None:
            source.attr("path")  # runtime
        return {"type": "socket"}
    node.keep("type")
    if source is None:
        node.fail(f"a type='{kind}' {what} needs a <source path=...>")
    if kind == "unix":
        source.keep("mode", choices=("bind",))
        source.keep("path")  # kept, not applied: kvmd binds its own console socket
        return {"type": "socket"}
    path = source.attr("path")
    source.keep("append", choices=("on",))
    return {"type": "file", "path": path}


def _graphics(devs: Node, g: Node, index: int, ctx: Ctx) -> dict[str, Any]:
    devs.take(g)
    kind = g.attr("type", choices=("vnc", "spice"))
    if kind is None:
        g.fail("a <graphics> needs a type")
    ctx.came_from(f"graphics[{index}]", g.path)
    out: dict[str, Any] = {"type": kind}
    port = g.int_attr("port", minimum=-1)
    autoport = g.attr("autoport", "no" if port not in (None, -1) else "yes", choices=("yes", "no"))
    if autoport == "no" and port not in (None, -1):
        out["port"] = port
    listen = g.attr("listen")
    for sub in g.children("listen"):
        sub.attr("type", choices=("address",))
        addr = sub.attr("address")
        if listen is not None and addr is not None and addr != listen:
            sub.fail_attr("address", f"differs from the listen attribute {listen!r}")
        listen = listen or addr
    if listen:
        out["listen"] = listen
    pw = g.attr("passwd")
    if pw is not None:
        out["password"] = pw
    valid_to = g.attr("passwdValidTo")
    if valid_to is not None:
        out["passwordValidTo"] = valid_to[:19]
    # what the engine always sends: en-us is QEMU's own VNC layout; tlsPort -1 asks for a
    # TLS port only where TLS is set up, and kvmd has no SPICE TLS (libvirt's spice_tls=0)
    if kind == "vnc":
        g.keep("keymap", choices=("en-us",))
    else:
        g.keep("tlsPort", choices=("-1",))
    g.drop("address")
    _alias(g)
    ctx.device_template(f"graphics:{kind}", g.template())
    return out


def _channels(devs: Node, ctx: Ctx) -> tuple[bool, list[dict[str, Any]]]:
    """Virtio-serial channels: the guest agent's (`guestAgent`), other unix sockets
    (`channels`, e.g. oVirt's ovirt-guest-agent.0) and the SPICE agent's (spicevmc)."""
    found = False
    names: dict[str, None] = {}  # in document order
    channels: list[dict[str, Any]] = []
    spice = any(g.get("type") == "spice" for g in ctx.spec.get("graphics") or [])
    for ch in devs.children("channel"):
        devs.take(ch)
        kind = ch.attr("type", choices=("unix", "spicevmc"))
        if kind is None:
            ch.fail("a <channel> needs a type")
        tgt = ch.child("target")
        if tgt is None:
            ch.fail("a <channel> needs a <target>")
        tgt.attr("type", choices=("virtio",))
        name = tgt.attr("name")
        if kind == "spicevmc":
            if name not in (None, SPICE_CHANNEL):
                tgt.fail_attr("name", f"the SPICE agent's channel is {SPICE_CHANNEL}")
            if not spice:
                ch.fail("a spicevmc channel needs a SPICE <graphics>")
            name = SPICE_CHANNEL
        elif not name:
            tgt.fail("a unix channel needs a name (kvmd names its sockets after it)")
        tgt.attr("state")  # runtime: whether the agent is connected
        if name in names:
            ch.fail(f"a second {name} channel")
        names[name] = None
        src = ch.child("source")
        if src is not None:
            if kind == "spicevmc":
                src.fail("a spicevmc channel has no source")
            src.keep("mode", choices=("bind",))
            src.keep("path")  # kept, not applied: kvmd binds its own sockets in its run dir
        ch.drop("address")
        _alias(ch)
        if name == GA_CHANNEL:
            found = True
            ctx.device_template("channel:qga", ch.template())
        else:
            ctx.came_from(f"channels[{len(channels)}]", ch.path)
            channels.append({"name": name, "type": kind})
            ctx.device_template(f"channel:{name}", ch.template())
    if found and channels and next(iter(names)) != GA_CHANNEL:
        ctx.lv["channelOrder"] = list(names)  # the agent's is not first: say where it goes
    return found, channels


def _memballoon(devs: Node, ctx: Ctx) -> bool:
    mb = devs.child("memballoon")
    if mb is None:
        return True  # libvirt adds a virtio balloon when none is given
    devs.take(mb)
    model = mb.attr("model", choices=("virtio", "none"))
    mb.keep("freePageReporting", choices=("on",))
    stats = mb.child("stats")
    if stats is not None:
        stats.keep("period")  # kept, not applied: kvmd samples the balloon on demand
    mb.drop("address")
    _alias(mb)
    ctx.device_template("memballoon", mb.template())
    return model == "virtio"


def _rng(devs: Node, ctx: Ctx) -> bool:
    rngs = devs.children("rng")
    if len(rngs) > 1:
        raise UnsupportedXML(rngs[1].path, "kvmd gives a VM at most one rng device")
    if not rngs:
        return False
    rng = rngs[0]
    devs.take(rng)
    rng.attr("model", choices=("virtio",))
    backend = rng.child("backend")
    if backend is not None:
        backend.attr("model", choices=("random",))
        path = backend.text()
        if path not in ("", "/dev/urandom"):
            backend.fail(f"{path!r}: kvmd feeds the rng from /dev/urandom only")
    rng.drop("address")
    _alias(rng)
    ctx.device_template("rng", rng.template())
    return True


# -- devices kvmd makes itself: accepted and kept verbatim ----------------------------

CONTROLLERS = ("pci", "usb", "sata", "ide", "virtio-serial", "scsi")


def _controller(node: Node) -> None:
    kind = node.attr("type", choices=CONTROLLERS, keep=True)
    model = node.attr("model", keep=True)
    if kind == "scsi" and model not in (None, "virtio-scsi"):
        node.fail_attr("model", "kvmd's SCSI controller is virtio-scsi")
    node.keep("index", "ports", "vectors")
    if kind == "scsi":  # its iothread is applied by _scsi_iothread
        for drv in node.keep_children("driver"):
            drv.keep("iothread")
            if node.el.get("index", "0") != "0":
                drv.fail_attr("iothread", "kvmd has one SCSI controller (index 0)")
            drv.check()
    for tag in ("model", "target"):
        for sub in node.keep_children(tag):
            sub.keep(*sub.el.attrib.keys())
            sub.check()
    node.drop("address")
    _alias(node)
    node.check()


def _scsi_iothread(ctl: Node, ctx: Ctx) -> None:
    """The virtio-scsi controller's <driver iothread>: the `iothread` of its SCSI disks
    (kvmd's spec keeps it per disk; they all share the one controller)."""
    drv = ctl.el.find("driver")
    if ctl.el.get("type") != "scsi" or drv is None or drv.get("iothread") is None:
        return
    value = drv.get("iothread", "")
    if not value.isascii() or not value.isdigit() or int(value) < 1:
        raise UnsupportedXML(ctl.path + "/driver", "must be an iothread number (1..<iothreads>)",
                             "iothread", value)
    for i, disk in enumerate(ctx.spec.get("disks") or []):
        if disk.get("bus") == "scsi":
            disk["iothread"] = int(value)
            ctx.came_from(f"disks[{i}].iothread", ctl.path + "/driver", "iothread")


def _inputs(devs: Node, ctx: Ctx) -> bool:
    """ps2 mouse/keyboard: built into the machine, kept. A usb tablet: `tablet` (kvmd adds
    a qemu-xhci controller for it, whatever model the XML's USB controller names)."""
    tablet = False
    for node in devs.children("input"):
        kind = node.attr("type", choices=("mouse", "keyboard", "tablet"), keep=True)
        if kind == "tablet":
            node.attr("type")  # regenerated from the spec
            node.attr("bus", "usb", choices=("usb",))
            if tablet:
                node.fail("kvmd gives a VM one tablet")
            usb = [c for c in devs.el.findall("controller") if c.get("type") == "usb"]
            if usb and all(c.get("model") == "none" for c in usb):
                node.fail("a USB tablet needs a USB controller (this domain's is model='none')")
            tablet = True
            devs.take(node)
            node.drop("address")
            _alias(node)
            ctx.device_template("input:tablet", node.template())
            continue
        node.keep("bus", choices=("ps2",))
        node.drop("address")
        _alias(node)
        node.check()
    return tablet


def _video(node: Node) -> None:
    model = node.child("model")
    if model is None:
        node.fail("a <video> needs a <model>")
    model.keep("type", choices=("vga", "qxl", "virtio", "cirrus", "bochs", "none"))
    model.keep("vram", "ram", "vgamem", "vram64", "heads", "primary")
    node.drop("address")
    _alias(node)
    node.check()


def _audio(node: Node) -> None:
    node.keep("id")
    node.keep("type", choices=("none", "spice"))  # a backend only: kvmd has no sound devices
    node.check()

