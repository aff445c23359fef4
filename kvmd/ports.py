"""Free TCP ports for displays QEMU cannot pick a port for itself.

QEMU finds a free VNC port on its own (`-vnc HOST:0,to=99`: 5900-5999), but its SPICE
server needs a port number. As libvirt does for `autoport='yes'`, kvmd picks one: the
first port of `SPICE_RANGE` (above VNC's, so a VM's VNC display never takes the port
picked for its SPICE display) that can be bound on the listen address and that this
kvmd has not handed out in the last `HOLD_S` seconds (QEMU binds it shortly after).
Another program can still take the port in between: the start then fails, as libvirt's.
"""

from __future__ import annotations

import socket
import threading
import time

from kvmd.errors import KvmdError

SPICE_RANGE = range(6100, 7000)  # above VNC's 5900-5999, past X11's 6000-6063
HOLD_S = 30.0

_lock = threading.Lock()
_handed: dict[int, float] = {}  # port -> when it was handed out


def _bindable(host: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str, ports: range = SPICE_RANGE) -> int:
    """A port of `ports` free on `host` (an address, '0.0.0.0' or '::' for all)."""
    now = time.monotonic()
    with _lock:
        for port, when in list(_handed.items()):
            if now - when > HOLD_S:
                del _handed[port]
        for port in ports:
            if port not in _handed and _bindable(host, port):
                _handed[port] = now
                return port
    raise KvmdError(f"no free port in {ports.start}-{ports.stop - 1} on {host} for a SPICE display")
