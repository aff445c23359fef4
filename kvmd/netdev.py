"""TAP devices for `backend: tap` NICs: created by kvmd, handed to QEMU as an fd.

As libvirt does, kvmd opens `/dev/net/tun` itself (so QEMU needs no privilege and no
helper script), names the tap, enslaves it to the bridge and brings it up with plain
ioctls, then passes the fd to QEMU (inherited at launch, `getfd` over QMP for hotplug).
The tap is not persistent: it disappears when the last fd (QEMU's) closes.
"""

from __future__ import annotations

import fcntl
import os
import socket
import struct

from kvmd.errors import KvmdError, PermissionDenied
from kvmd.spec.model import Nic, VMSpec

TUNSETIFF = 0x400454CA
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
IFF_VNET_HDR = 0x4000
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
SIOCGIFINDEX = 0x8933
SIOCBRADDIF = 0x89A2
IFF_UP = 0x1
IFNAMSIZ = 16


class NetdevError(KvmdError):
    pass


def tap_name(uuid: str, nic: Nic, index: int) -> str:
    """A stable, unique, <= 15 character name: kv + 8 hex of the VM uuid + s + PCI slot."""
    return nic.tap or f"kv{uuid.replace('-', '')[:8]}s{nic.slot if nic.slot is not None else index}"


def _ifreq(name: str, data: bytes = b"") -> bytes:
    return struct.pack(f"{IFNAMSIZ}s", name.encode()) + data.ljust(24, b"\0")


def open_tap(name: str, bridge: str | None) -> int:
    """Create (or open) tap `name`, enslave it to `bridge`, bring it up; return its fd."""
    try:
        fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
    except PermissionError:
        raise PermissionDenied("cannot open /dev/net/tun: tap networking needs root or CAP_NET_ADMIN") from None
    except OSError as e:
        raise NetdevError(f"cannot open /dev/net/tun: {e.strerror}") from None
    try:
        fcntl.ioctl(fd, TUNSETIFF, _ifreq(name, struct.pack("H", IFF_TAP | IFF_NO_PI | IFF_VNET_HDR)))
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            if bridge:
                index = struct.unpack("i", fcntl.ioctl(s, SIOCGIFINDEX, _ifreq(name))[IFNAMSIZ:IFNAMSIZ + 4])[0]
                fcntl.ioctl(s, SIOCBRADDIF, _ifreq(bridge, struct.pack("i", index)))
            flags = struct.unpack("H", fcntl.ioctl(s, SIOCGIFFLAGS, _ifreq(name))[IFNAMSIZ:IFNAMSIZ + 2])[0]
            fcntl.ioctl(s, SIOCSIFFLAGS, _ifreq(name, struct.pack("H", flags | IFF_UP)))
    except OSError as e:
        os.close(fd)
        where = f" on bridge {bridge!r}" if bridge else ""
        raise NetdevError(f"cannot set up tap {name!r}{where}: {e.strerror or e}") from None
    return fd


def open_taps(spec: VMSpec) -> dict[str, int]:
    """Open the taps of every `backend: tap` NIC of `spec` (names recorded in it)."""
    fds: dict[str, int] = {}
    try:
        for i, nic in enumerate(spec.nics):
            if nic.backend == "tap":
                nic.tap = tap_name(spec.uuid, nic, i)
                fds[nic.name] = open_tap(nic.tap, nic.bridge)
    except KvmdError:
        for fd in fds.values():
            os.close(fd)
        raise
    return fds


def tap_stats(name: str) -> dict[str, int] | None:
    """Counters of a tap from the guest's point of view (host rx is guest tx)."""
    base = f"/sys/class/net/{name}/statistics"
    try:
        def read(key: str) -> int:
            with open(f"{base}/{key}") as f:
                return int(f.read())
        return {"rx_bytes": read("tx_bytes"), "tx_bytes": read("rx_bytes"),
                "rx_packets": read("tx_packets"), "tx_packets": read("rx_packets")}
    except OSError:
        return None
