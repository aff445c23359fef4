"""TAP devices for `backend: tap` NICs: created by kvmd, handed to QEMU as an fd.

As libvirt does, kvmd opens `/dev/net/tun` itself (so QEMU needs no privilege and no
helper script), names the tap, enslaves it to the bridge and brings it up with plain
ioctls, then passes the fd to QEMU (inherited at launch, `getfd` over QMP for hotplug).
The tap is not persistent: it disappears when the last fd (QEMU's) closes.

`noMacSpoofing` NICs (libvirt/VDSM's `vdsm-no-mac-spoofing` filter: no-mac-spoofing +
no-arp-mac-spoofing) get an ebtables chain `KVMD-<tap>` in the bridge `nat` table,
jumped to from PREROUTING for frames coming in from the tap, i.e. sent by the guest:
frames whose Ethernet source, or ARP sender hardware address, is not the NIC's MAC are
dropped. It is installed before QEMU gets the tap (so before any guest code runs) and
removed when the VM stops or the NIC is unplugged; a chain left behind by a kvmd that
was not running then is replaced when that tap is set up again. No ebtables, or a
failing one, fails the start (or the hot-plug): the filter is never silently skipped.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import socket
import struct
import subprocess

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
EBTABLES_TIMEOUT = 30

log = logging.getLogger(__name__)


class NetdevError(KvmdError):
    pass


def tap_name(uuid: str, nic: Nic, index: int) -> str:
    """A stable, unique, <= 15 character name: kv + 8 hex of the VM uuid + s + PCI slot."""
    return nic.tap or f"kv{uuid.replace('-', '')[:8]}s{nic.slot if nic.slot is not None else index}"


def filter_chain(tap: str) -> str:
    """The ebtables chain of a tap's MAC filter (chain names fit 31 characters)."""
    return f"KVMD-{tap}"


def _ebtables() -> str:
    exe = shutil.which("ebtables", path=os.environ.get("PATH", "") + ":/usr/sbin:/sbin")
    if exe is None:
        raise NetdevError("noMacSpoofing needs ebtables, which is not installed")
    return exe


def _eb(*args: str, check: bool = True) -> bool:
    try:
        r = subprocess.run([_ebtables(), "-t", "nat", *args], capture_output=True, text=True,
                           timeout=EBTABLES_TIMEOUT, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise NetdevError(f"ebtables {' '.join(args)}: {e}") from None
    if r.returncode != 0 and check:
        raise NetdevError(f"ebtables {' '.join(args)}: {(r.stderr or r.stdout).strip()}")
    return r.returncode == 0


def install_mac_filter(tap: str, mac: str) -> None:
    """Drop frames from `tap` (from the guest) not sent from `mac`, Ethernet and ARP."""
    remove_mac_filter(tap)
    chain = filter_chain(tap)
    try:
        _eb("-N", chain, "-P", "RETURN")
        _eb("-A", chain, "!", "-s", mac, "-j", "DROP")
        _eb("-A", chain, "-p", "ARP", "!", "--arp-mac-src", mac, "-j", "DROP")
        _eb("-A", "PREROUTING", "-i", tap, "-j", chain)
    except NetdevError:
        remove_mac_filter(tap)
        raise


def remove_mac_filter(tap: str) -> None:
    """Remove a tap's MAC filter, if any (never raises: stopping must not fail on it)."""
    chain = filter_chain(tap)
    try:
        while _eb("-D", "PREROUTING", "-i", tap, "-j", chain, check=False):
            pass
        if _eb("-F", chain, check=False):
            _eb("-X", chain, check=False)
    except NetdevError as e:
        log.warning("cannot remove the MAC filter of %s: %s", tap, e)


def remove_filters(spec: VMSpec) -> None:
    """Remove the MAC filters of every `noMacSpoofing` tap NIC of `spec`."""
    for nic in spec.nics:
        if nic.no_mac_spoofing and nic.tap:
            remove_mac_filter(nic.tap)


def _ifreq(name: str, data: bytes = b"") -> bytes:
    return struct.pack(f"{IFNAMSIZ}s", name.encode()) + data.ljust(24, b"\0")


def open_tap(name: str, bridge: str | None, mac_filter: str | None = None) -> int:
    """Create (or open) tap `name`, enslave it to `bridge`, bring it up; return its fd.
    `mac_filter`: install the no-MAC-spoofing filter for that MAC before bringing it up."""
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
            if mac_filter:
                install_mac_filter(name, mac_filter)
            flags = struct.unpack("H", fcntl.ioctl(s, SIOCGIFFLAGS, _ifreq(name))[IFNAMSIZ:IFNAMSIZ + 2])[0]
            fcntl.ioctl(s, SIOCSIFFLAGS, _ifreq(name, struct.pack("H", flags | IFF_UP)))
    except OSError as e:
        os.close(fd)
        where = f" on bridge {bridge!r}" if bridge else ""
        raise NetdevError(f"cannot set up tap {name!r}{where}: {e.strerror or e}") from None
    except NetdevError:
        os.close(fd)
        raise
    return fd


def open_taps(spec: VMSpec) -> dict[str, int]:
    """Open the taps of every `backend: tap` NIC of `spec` (names recorded in it)."""
    fds: dict[str, int] = {}
    try:
        for i, nic in enumerate(spec.nics):
            if nic.backend == "tap":
                nic.tap = tap_name(spec.uuid, nic, i)
                fds[nic.name] = open_tap(nic.tap, nic.bridge, nic.mac if nic.no_mac_spoofing else None)
    except KvmdError:
        for fd in fds.values():
            os.close(fd)
        remove_filters(spec)
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
