"""Spec -> QEMU argv. Pure: no I/O, every host-specific input arrives as an argument.

QEMU always starts with `-S` (kvmd connects QMP, does the post-launch setup, then
`cont`) and with its QMP monitor on a listening socket that kvmd bound itself and
passes in as an inherited fd, so there is no waiting for QEMU to create a socket. Device
ids and node names are derived from the spec's stable device names:

    disk  NAME -> device `disk-NAME`, format node `fmt-NAME`, protocol node `file-NAME`
    nic   NAME -> device `nic-NAME`, netdev `netdev-NAME`
    iothread K -> object `iothreadK` (K = 1..iothreads, libvirt's numbering)
    channel i  -> chardev and virtserialport `channelI` on `vserial0` (port i + 2)
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from kvmd.qemu import pci
from kvmd.spec.model import Disk, Nic, VMSpec

OVMF_CODE = "/usr/share/OVMF/OVMF_CODE_4M.fd"
OVMF_VARS = "/usr/share/OVMF/OVMF_VARS_4M.fd"

# cache mode -> (cache.direct, cache.no-flush, device write-cache)
CACHE = {
    "writeback": (False, False, "on"),
    "none": (True, False, "on"),
    "writethrough": (False, False, "off"),
    "directsync": (True, False, "off"),
    "unsafe": (False, True, "on"),
}

# disk errorPolicy -> (werror, rerror), as libvirt maps its error_policy
ERROR_POLICY = {
    "report": ("report", "report"),
    "stop": ("stop", "stop"),
    "ignore": ("ignore", "ignore"),
    "enospace": ("enospc", "report"),
}


@dataclass
class LaunchOptions:
    """Host-side inputs for one launch (paths, fds, accelerators, capabilities)."""

    binary: str = "qemu-system-x86_64"
    accels: tuple[str, ...] = ("kvm", "tcg")
    qmp_fd: int = 3
    serial_socket: str | None = None
    serial_log: str | None = None
    qga_socket: str | None = None
    channel_sockets: dict[str, str] = field(default_factory=dict)  # unix channel name -> socket path
    spice_port: int | None = None  # for a spice display without a port (kvmd.ports picks it)
    nvram: str | None = None
    ovmf_code: str = OVMF_CODE
    tap_fds: dict[str, int] = field(default_factory=dict)
    sandbox: bool = True
    run_as: str | None = None
    run_with: bool = False
    incoming: str | None = None


def device_id(dev: Disk | Nic) -> str:
    return f"disk-{dev.name}" if isinstance(dev, Disk) else f"nic-{dev.name}"


def _opts(*parts: str, **kv: object) -> str:
    items = list(parts)
    for key, value in kv.items():
        if value is None:
            continue
        if isinstance(value, bool):
            value = "on" if value else "off"
        items.append(f"{key.replace('_', '-')}={_escape(str(value))}")
    return ",".join(items)


def _escape(value: str) -> str:
    """QEMU option values escape ',' by doubling it."""
    return value.replace(",", ",,")


def boot_indexes(spec: VMSpec) -> dict[str, int]:
    """device id -> bootindex. Explicit bootIndex values win; else follow boot.order."""
    explicit = {device_id(d): d.boot_index for d in [*spec.disks, *spec.nics] if d.boot_index is not None}
    if explicit:
        return explicit
    out: dict[str, int] = {}
    candidates = {
        "disk": [d for d in spec.disks if d.media == "disk"],
        "cdrom": [d for d in spec.disks if d.media == "cdrom"],
        "network": list(spec.nics),
    }
    for kind in spec.boot.order:
        if candidates[kind]:
            out[device_id(candidates[kind][0])] = len(out) + 1
    return out


def blockdev_args(disk: Disk) -> list[dict]:
    """The `-blockdev` node graph of one disk, protocol node first (None if empty)."""
    if not disk.path:
        return []
    direct, no_flush, _ = CACHE[disk.cache]
    proto = {
        "driver": "host_device" if disk.path.startswith("/dev/") else "file",
        "node-name": f"file-{disk.name}",
        "filename": disk.path,
        "aio": disk.aio,
        "cache": {"direct": direct, "no-flush": no_flush},
        "read-only": disk.readonly,
        "auto-read-only": True,
        "discard": "unmap",
    }
    fmt = {
        "driver": disk.format,
        "node-name": f"fmt-{disk.name}",
        "file": f"file-{disk.name}",
        "cache": {"direct": direct, "no-flush": no_flush},
        "read-only": disk.readonly,
    }
    return [proto, fmt]


def render(props: dict[str, object]) -> str:
    """A device/netdev property dict (QMP form) as a command-line option string."""
    props = dict(props)
    head = str(props.pop("driver", props.pop("type", "")))
    return _opts(head, **{k.replace("-", "_"): v for k, v in props.items()})


def _props(head_key: str, head: str, **kv: object) -> dict[str, object]:
    out: dict[str, object] = {head_key: head}
    out.update({k.replace("_", "-"): v for k, v in kv.items() if v is not None})
    return out


def disk_device_props(spec: VMSpec, disk: Disk, bootindex: int | None, scsi_lun: int = 0,
                      sata_port: int = 0) -> dict[str, object]:
    """The device properties of one disk, in QMP `device_add` form."""
    _, _, write_cache = CACHE[disk.cache]
    drive = f"fmt-{disk.name}" if disk.path else None
    werror, rerror = ERROR_POLICY.get(disk.error_policy or "", (None, None))
    common = dict(id=device_id(disk), drive=drive, bootindex=bootindex, werror=werror, rerror=rerror)
    if disk.bus == "virtio":
        where = pci.place(spec, disk.slot if disk.slot is not None else 0)
        return _props("driver", "virtio-blk-pci", bus=where.bus, addr=where.addr, **common,
                      serial=disk.serial, write_cache=write_cache,
                      iothread=iothread_id(disk.iothread) if disk.iothread else None)
    if disk.bus == "scsi":
        model = "scsi-cd" if disk.media == "cdrom" else "scsi-hd"
        extra = {} if disk.media == "cdrom" else {"write_cache": write_cache}
        return _props("driver", model, bus="scsi0.0", channel=0, scsi_id=0, lun=scsi_lun, **common,
                      serial=disk.serial, **extra)
    model = "ide-cd" if disk.media == "cdrom" else "ide-hd"
    if spec.is_q35:
        bus, unit = f"ide.{sata_port}", None
    else:
        bus, unit = f"ide.{sata_port // 2}", sata_port % 2
    extra = {} if disk.media == "cdrom" else {"write_cache": write_cache}
    return _props("driver", model, bus=bus, unit=unit, **common, serial=disk.serial, **extra)


def iothread_id(k: int) -> str:
    return f"iothread{k}"


def scsi_iothread(spec: VMSpec) -> int | None:
    """The virtio-scsi controller's iothread: its disks' (the spec keeps them equal)."""
    return next((d.iothread for d in spec.disks if d.bus == "scsi" and d.iothread), None)


def channel_args(spec: VMSpec, opts: LaunchOptions) -> list[str]:
    """The virtio-serial controller and its ports: the guest agent's, then `channels`."""
    if not (spec.guest_agent or spec.channels):
        return []
    root = pci.root_bus(spec)
    argv = ["-device", _opts("virtio-serial-pci", id="vserial0", bus=root, addr=hex(pci.VSERIAL_ADDR))]
    if spec.guest_agent:
        argv += ["-chardev", _opts("socket", id="qga0", path=opts.qga_socket, server=True, wait=False),
                 "-device", "virtserialport,bus=vserial0.0,nr=1,chardev=qga0,id=qga0,name=org.qemu.guest_agent.0"]
    for i, ch in enumerate(spec.channels):
        cid = f"channel{i}"
        if ch.type == "spicevmc":
            argv += ["-chardev", _opts("spicevmc", id=cid, name="vdagent")]
        else:
            argv += ["-chardev", _opts("socket", id=cid, path=opts.channel_sockets.get(ch.name),
                                       server=True, wait=False)]
        argv += ["-device", _opts("virtserialport", bus="vserial0.0", nr=i + 2, chardev=cid, id=cid, name=ch.name)]
    return argv


def smbios_arg(spec: VMSpec) -> list[str]:
    """`-smbios type=1,...`: the SMBIOS system strings the guest reads (dmidecode -t 1)."""
    if not spec.smbios:
        return []
    return ["-smbios", _opts("type=1", **{k: v for k, v in spec.smbios.items()})]


def pm_args(spec: VMSpec) -> list[str]:
    """ACPI S3/S4 offered or not: the power-management device's disable_s3/disable_s4."""
    dev = "ICH9-LPC" if spec.is_q35 else "PIIX4_PM"
    out = []
    for prop, enabled in (("disable_s3", spec.pm.suspend_to_mem), ("disable_s4", spec.pm.suspend_to_disk)):
        if enabled is not None:
            out += ["-global", f"{dev}.{prop}={0 if enabled else 1}"]
    return out


def disk_device(spec: VMSpec, disk: Disk, bootindex: int | None, scsi_lun: int = 0,
                sata_port: int = 0) -> str:
    """The `-device` option string of one disk."""
    return render(disk_device_props(spec, disk, bootindex, scsi_lun, sata_port))


def netdev_props(nic: Nic, tap_fd: int | str | None) -> dict[str, object] | None:
    """The netdev of one NIC in QMP `netdev_add` form (None for backend `none`).

    `tap_fd` is an inherited fd number on the command line, or a `getfd` name in QMP.
    """
    if nic.backend == "user":
        return _props("type", "user", id=f"netdev-{nic.name}")
    if nic.backend == "tap":
        if tap_fd is not None:
            return _props("type", "tap", id=f"netdev-{nic.name}", fd=str(tap_fd))
        return _props("type", "tap", id=f"netdev-{nic.name}", ifname=nic.tap, script="no", downscript="no")
    return None


NIC_MODELS = {"virtio": "virtio-net-pci", "e1000": "e1000", "rtl8139": "rtl8139"}


def nic_device_props(spec: VMSpec, nic: Nic, bootindex: int | None) -> dict[str, object]:
    where = pci.place(spec, nic.slot if nic.slot is not None else 0)
    return _props("driver", NIC_MODELS[nic.model], id=device_id(nic),
                  netdev=f"netdev-{nic.name}" if nic.backend != "none" else None,
                  mac=nic.mac, bus=where.bus, addr=where.addr, bootindex=bootindex)


def nic_args(spec: VMSpec, nic: Nic, bootindex: int | None, tap_fd: int | None) -> tuple[str | None, str]:
    """(netdev option string or None, device option string) for one NIC."""
    netdev = netdev_props(nic, tap_fd)
    return (render(netdev) if netdev else None), render(nic_device_props(spec, nic, bootindex))


def build_argv(spec: VMSpec, opts: LaunchOptions) -> list[str]:
    """The full argv for `spec`. Slots must already be assigned (pci.assign_slots)."""
    root = pci.root_bus(spec)
    argv = [
        opts.binary,
        "-name", _opts(f"guest={_escape(spec.name)}", debug_threads=True),
        "-uuid", spec.uuid,
        "-S",
        "-no-user-config",
        "-nodefaults",
        "-msg", "timestamp=on",
        "-chardev", _opts("socket", id="qmp", fd=opts.qmp_fd, server=True, wait=False),
        "-mon", "chardev=qmp,mode=control",
        "-machine", spec.machine,
    ]
    for accel in opts.accels:
        argv += ["-accel", accel]
    if opts.sandbox:
        sandbox = "on,obsolete=deny,spawn=deny,resourcecontrol=deny"
        if not opts.run_as:
            sandbox += ",elevateprivileges=deny"
        argv += ["-sandbox", sandbox]
    if opts.run_as:
        argv += ["-run-with", f"user={opts.run_as}"] if opts.run_with else ["-runas", opts.run_as]
    if spec.cpu.model:
        argv += ["-cpu", spec.cpu.model]
    cpu = spec.cpu
    smp = _opts(str(cpu.count), sockets=cpu.sockets, cores=cpu.cores, threads=cpu.threads)
    if cpu.maximum > cpu.count:
        # maxCount (or a topology bigger than count) leaves room for vCPU hotplug
        smp += f",maxcpus={cpu.maximum}"
    argv += ["-smp", smp]
    mem_mib = spec.memory.size // (1 << 20)
    if spec.memory.max and spec.memory.max > spec.memory.size:
        slots = spec.memory.slots or 8
        argv += ["-m", f"size={mem_mib}M,slots={slots},maxmem={spec.memory.max // (1 << 20)}M"]
    else:
        argv += ["-m", f"{mem_mib}M"]
    if spec.lifecycle.on_reboot == "destroy":
        argv.append("-no-reboot")
    argv += smbios_arg(spec)
    argv += pm_args(spec)
    for k in range(1, spec.iothreads + 1):
        argv += ["-object", f"iothread,id={iothread_id(k)}"]

    # firmware and direct kernel boot
    if spec.boot.firmware == "uefi":
        argv += ["-drive", "if=pflash,format=raw,unit=0,readonly=on,file=" + _escape(opts.ovmf_code)]
        if opts.nvram:
            argv += ["-drive", "if=pflash,format=raw,unit=1,file=" + _escape(opts.nvram)]
    if spec.boot.kernel:
        argv += ["-kernel", spec.boot.kernel]
        if spec.boot.initrd:
            argv += ["-initrd", spec.boot.initrd]
        if spec.boot.cmdline:
            argv += ["-append", spec.boot.cmdline]

    argv += pci.root_port_args(spec)

    # disks
    boots = boot_indexes(spec)
    scsi_disks = [d for d in spec.disks if d.bus == "scsi"]
    if scsi_disks:
        iothread = scsi_iothread(spec)
        argv += ["-device", _opts("virtio-scsi-pci", id="scsi0", bus=root, addr=hex(pci.SCSI_ADDR),
                                  iothread=iothread_id(iothread) if iothread else None)]
    scsi_lun = sata_port = 0
    for disk in spec.disks:
        for node in blockdev_args(disk):
            argv += ["-blockdev", json.dumps(node, separators=(",", ":"))]
        argv += ["-device", disk_device(spec, disk, boots.get(device_id(disk)), scsi_lun, sata_port)]
        if disk.bus == "scsi":
            scsi_lun += 1
        elif disk.bus == "sata":
            sata_port += 1

    # NICs
    for nic in spec.nics:
        netdev, device = nic_args(spec, nic, boots.get(device_id(nic)), opts.tap_fds.get(nic.name))
        if netdev:
            argv += ["-netdev", netdev]
        argv += ["-device", device]

    # serial console (isa-serial, ttyS0 in the guest)
    if spec.serial.type != "none":
        path = spec.serial.path if spec.serial.type == "file" else opts.serial_socket
        if spec.serial.type == "file":
            argv += ["-chardev", _opts("file", id="serial0", path=path)]
        else:
            argv += ["-chardev", _opts("socket", id="serial0", path=path, server=True, wait=False,
                                       logfile=opts.serial_log, logappend=True if opts.serial_log else None)]
        argv += ["-device", "isa-serial,chardev=serial0,id=serial0"]

    # graphics
    if spec.graphics:
        video = "qxl-vga" if any(g.type == "spice" for g in spec.graphics) else "VGA"
        argv += ["-device", _opts(video, id="video0", bus=root, addr=hex(pci.video_addr(spec)))]
        for gfx in spec.graphics:
            if gfx.type == "vnc":
                if gfx.port:
                    display = f"{_host(gfx.listen)}:{gfx.port - 5900}"
                else:
                    display = f"{_host(gfx.listen)}:0,to=99"
                if gfx.password:
                    display += ",password=on"
                argv += ["-vnc", display]
            else:
                spice = _opts(port=gfx.port or opts.spice_port, addr=gfx.listen)
                spice += ",disable-ticketing=on" if not gfx.password else ""
                argv += ["-spice", spice.lstrip(",")]
    else:
        argv += ["-display", "none", "-vga", "none"]

    # guest agent channel and the other virtio-serial ports
    argv += channel_args(spec, opts)
    if spec.memory.balloon:
        argv += ["-device", _opts("virtio-balloon-pci", id="balloon0", bus=root, addr=hex(pci.BALLOON_ADDR),
                                  free_page_reporting=True)]
    if spec.tablet:
        argv += ["-device", _opts("qemu-xhci", id="usb0", bus=root, addr=hex(pci.USB_ADDR)),
                 "-device", "usb-tablet,id=tablet0,bus=usb0.0"]
    if spec.rng:
        argv += ["-object", "rng-random,id=rng0,filename=/dev/urandom",
                 "-device", _opts("virtio-rng-pci", id="rng0dev", rng="rng0", bus=root, addr=hex(pci.RNG_ADDR))]
    if opts.incoming:
        argv += ["-incoming", opts.incoming]
    argv += list(spec.qemu_args)
    return argv


def _host(listen: str) -> str:
    return f"[{listen}]" if ":" in listen else listen
