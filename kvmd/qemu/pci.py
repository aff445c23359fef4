"""PCI placement: one place that decides where every device sits, for cold start and
hotplug alike.

On q35 each hotpluggable device (virtio disks, NICs) gets its own `pcie-root-port`
(`rp<slot>`), as libvirt does, plus `hotplugSlots` spare ports for later hotplug. On
i440fx (`pc`) the slot is a `pci.0` slot number. Fixed devices (video, controllers,
balloon, rng) sit on the root bus at fixed addresses. A device's slot is stable: an
explicit `slot` in the spec wins, the rest get the lowest free slots in spec order.
"""

from __future__ import annotations

from dataclasses import dataclass

from kvmd.spec.model import VMSpec

# Root-bus addresses of the fixed devices.
VIDEO_ADDR = 0x01  # q35; on pc 00:01.0 is the PIIX3 ISA bridge, see video_addr()
PC_VIDEO_ADDR = 0x02  # where QEMU itself puts the VGA on pc
SCSI_ADDR = 0x05
VSERIAL_ADDR = 0x06
BALLOON_ADDR = 0x07
RNG_ADDR = 0x08
USB_ADDR = 0x09  # the qemu-xhci controller of a `tablet`
FIRST_PORT_SLOT = 0x10  # q35: root ports from 00:10.0, eight functions per slot
LAST_PORT_SLOT = 0x1E  # 0x1f is the ICH9 LPC/SATA/SMBus function block
PC_MAX_SLOTS = LAST_PORT_SLOT - FIRST_PORT_SLOT + 1


def root_bus(spec: VMSpec) -> str:
    return "pcie.0" if spec.is_q35 else "pci.0"


def video_addr(spec: VMSpec) -> int:
    """Root-bus slot of the video device (00:01.0 on pc belongs to the PIIX3)."""
    return VIDEO_ADDR if spec.is_q35 else PC_VIDEO_ADDR


def max_slots(spec: VMSpec) -> int:
    if spec.is_q35:
        return (LAST_PORT_SLOT - FIRST_PORT_SLOT + 1) * 8
    return PC_MAX_SLOTS


def hotpluggable(spec: VMSpec) -> list:
    """The devices that take a slot: virtio disks and NICs, in spec order."""
    return [d for d in spec.disks if d.bus == "virtio"] + list(spec.nics)


def assign_slots(spec: VMSpec) -> dict[int, object]:
    """Fill in `slot` on every slot-taking device that lacks one; return slot -> device.

    Raises ValueError when the machine has no room left, or an explicit slot is beyond it.
    """
    devices = hotpluggable(spec)
    used = {dev.slot: dev for dev in devices if dev.slot is not None}
    limit = max_slots(spec)
    for slot, dev in sorted(used.items()):
        if slot >= limit:
            raise ValueError(f"{dev.name}: slot {slot} does not exist (the machine has {limit}: 0-{limit - 1})")
    nxt = 0
    for dev in devices:
        if dev.slot is None:
            while nxt in used:
                nxt += 1
            if nxt >= limit:
                raise ValueError(f"no free PCI slot left (the machine has {limit})")
            dev.slot = nxt
            used[nxt] = dev
    return used


def port_count(spec: VMSpec) -> int:
    """How many root ports a q35 VM gets: every used slot plus the spare ones."""
    used = [dev.slot for dev in hotpluggable(spec) if dev.slot is not None]
    top = max(used) + 1 if used else 0
    return min(max(top, len(used)) + spec.hotplug_slots, max_slots(spec))


def free_slot(spec: VMSpec) -> int | None:
    """The lowest slot with no device, among the ports the running VM has."""
    used = {dev.slot for dev in hotpluggable(spec)}
    for slot in range(port_count(spec) if spec.is_q35 else max_slots(spec)):
        if slot not in used:
            return slot
    return None


@dataclass(frozen=True)
class Placement:
    bus: str
    addr: str


def place(spec: VMSpec, slot: int) -> Placement:
    """Bus and address for a device in `slot`."""
    if spec.is_q35:
        return Placement(f"rp{slot}", "0x0")
    return Placement("pci.0", hex(FIRST_PORT_SLOT + slot))


def root_port_args(spec: VMSpec) -> list[str]:
    """`-device pcie-root-port` arguments for a q35 VM (none on pc)."""
    if not spec.is_q35:
        return []
    args = []
    for i in range(port_count(spec)):
        slot, fn = FIRST_PORT_SLOT + i // 8, i % 8
        opts = f"pcie-root-port,id=rp{i},bus=pcie.0,chassis={i + 1},port={i + 1},addr={slot:#x}.{fn}"
        if fn == 0:
            opts += ",multifunction=on"
        args += ["-device", opts]
    return args
