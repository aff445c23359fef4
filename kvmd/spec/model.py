"""The VM spec data model: plain dataclasses, no I/O, no validation logic.

A spec is kvmd's own self-contained description of a VM ("OVF for KVM"). Attribute
names are snake_case; the document keys are camelCase (see `to_dict`). Sizes are bytes.
`parse.py` builds these from documents and reports every problem with its field path.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

API_VERSION = "kvmd/v1"

DISK_FORMATS = ("qcow2", "raw")
DISK_BUSES = ("virtio", "scsi", "sata")
DISK_MEDIA = ("disk", "cdrom")
CACHE_MODES = ("none", "writeback", "writethrough", "directsync", "unsafe")
AIO_MODES = ("threads", "native", "io_uring")
# what a disk does on an I/O error: libvirt error_policy (QEMU werror/rerror)
ERROR_POLICIES = ("report", "stop", "ignore", "enospace")
NIC_MODELS = ("virtio", "e1000", "rtl8139")
NIC_BACKENDS = ("user", "tap", "none")
FIRMWARES = ("bios", "uefi")
BOOT_DEVICES = ("disk", "cdrom", "network")
SERIAL_TYPES = ("socket", "file", "none")
GRAPHICS_TYPES = ("vnc", "spice")
LIFECYCLE_ACTIONS = ("destroy", "restart")
CHANNEL_TYPES = ("unix", "spicevmc")
SMBIOS_SYSTEM_FIELDS = ("manufacturer", "product", "version", "serial", "uuid", "sku", "family")


@dataclass
class Cpu:
    count: int = 1
    model: str | None = None
    sockets: int | None = None
    cores: int | None = None
    threads: int | None = None
    max_count: int | None = None  # vCPU hotplug room: QEMU maxcpus (None: the topology's size, else count)
    shares: int | None = None  # relative CPU weight of the VM's cgroup (cgroup v1 cpu.shares)

    @property
    def maximum(self) -> int:
        """The vCPU count the VM can grow to (QEMU maxcpus)."""
        if self.max_count is not None:
            return self.max_count
        if self.sockets and self.cores and self.threads:
            return max(self.count, self.sockets * self.cores * self.threads)
        return self.count


@dataclass
class Memory:
    size: int = 256 << 20
    max: int | None = None
    balloon: bool = True
    slots: int | None = None  # memory hotplug DIMM slots with `max` (None: 8)


@dataclass
class Boot:
    firmware: str = "bios"
    kernel: str | None = None
    initrd: str | None = None
    cmdline: str | None = None
    order: list[str] = field(default_factory=lambda: ["disk", "cdrom", "network"])
    nvram: str | None = None


@dataclass
class Disk:
    name: str
    path: str | None
    format: str = "raw"
    bus: str = "virtio"
    media: str = "disk"
    readonly: bool = False
    cache: str = "writeback"
    aio: str = "threads"
    serial: str | None = None
    boot_index: int | None = None
    slot: int | None = None
    error_policy: str | None = None  # None: QEMU's default (werror=enospc, rerror=report)
    iothread: int | None = None  # 1..VMSpec.iothreads: virtio-blk's (or the virtio-scsi controller's) iothread


@dataclass
class Nic:
    name: str
    mac: str
    model: str = "virtio"
    backend: str = "user"
    bridge: str | None = None
    tap: str | None = None
    boot_index: int | None = None
    slot: int | None = None
    no_mac_spoofing: bool = False  # drop guest frames whose Ethernet/ARP source MAC is not `mac` (tap)


@dataclass
class Serial:
    type: str = "socket"
    path: str | None = None


@dataclass
class Graphics:
    type: str = "vnc"
    listen: str = "127.0.0.1"
    port: int | None = None
    password: str | None = None
    password_valid_to: str | None = None  # UTC 'YYYY-MM-DDTHH:MM:SS'; in the past = locked


@dataclass
class Power:
    """ACPI sleep states the guest is offered (None: QEMU's default, both offered)."""

    suspend_to_mem: bool | None = None  # S3
    suspend_to_disk: bool | None = None  # S4


@dataclass
class Channel:
    """An extra virtio-serial port beside the guest agent's: `unix` is a socket kvmd
    binds in its run dir (`RUN_DIR/VM.NAME`), `spicevmc` the SPICE agent's channel."""

    name: str
    type: str = "unix"


@dataclass
class Lifecycle:
    on_poweroff: str = "destroy"
    on_reboot: str = "restart"
    on_crash: str = "destroy"


@dataclass
class VMSpec:
    name: str
    uuid: str
    api_version: str = API_VERSION
    machine: str = "q35"
    cpu: Cpu = field(default_factory=Cpu)
    memory: Memory = field(default_factory=Memory)
    boot: Boot = field(default_factory=Boot)
    disks: list[Disk] = field(default_factory=list)
    nics: list[Nic] = field(default_factory=list)
    serial: Serial = field(default_factory=Serial)
    graphics: list[Graphics] = field(default_factory=list)
    guest_agent: bool = False
    rng: bool = False
    hotplug_slots: int = 4
    lifecycle: Lifecycle = field(default_factory=Lifecycle)
    metadata: dict[str, Any] = field(default_factory=dict)
    qemu_args: list[str] = field(default_factory=list)
    iothreads: int = 0
    smbios: dict[str, str] = field(default_factory=dict)  # SMBIOS type 1 (system) strings
    channels: list[Channel] = field(default_factory=list)
    pm: Power = field(default_factory=Power)
    tablet: bool = False  # a USB tablet (absolute pointer) on a qemu-xhci controller

    @property
    def is_q35(self) -> bool:
        return "q35" in self.machine
