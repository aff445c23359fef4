"""libvirt-python's API, served by kvmd: `import compat.libvirt as libvirt`.

Code written against libvirt-python (VDSM's modules, hook scripts that `import libvirt`)
runs unchanged against kvmd through this module: the same module functions, classes
(`virConnect`, `virDomain`, `libvirtError`) and VIR_* constants with libvirt's values,
for the subset of calls docs/compat.md lists. The connection URI picks the kvmd:

    conn = libvirt.open("kvmd:///system")          # /run/kvmd/kvmd.sock
    conn = libvirt.open("kvmd:///?socket=/path")   # any kvmd socket
    conn = libvirt.open("qemu:///system")          # kvmd too, when KVMD_SOCKET is set

Calls the shim does not provide raise `libvirtError` with VIR_ERR_NO_SUPPORT naming the
call; errors from kvmd carry libvirt's codes (VIR_ERR_NO_DOMAIN, ...). Events are
delivered as libvirt-python delivers them: register the default event loop
(`virEventRegisterDefaultImpl`) and run `virEventRunDefaultImpl` in a thread.
To make `import libvirt` itself resolve to this module (hook scripts), put it in
`sys.modules["libvirt"]` or on the path as `libvirt`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from compat.virt.connection import LIB_VERSION, virConnect
from compat.virt.constants import *  # noqa: F403  (libvirt's VIR_* names)
from compat.virt.constants import VIR_CONNECT_RO
from compat.virt.domain import virDomain
from compat.virt.errors import (
    libvirtError,
    registerErrorHandler,
    virGetLastError,
    virResetLastError,
)
from compat.virt.events import LOOP
from compat.virt.snapshot import virDomainSnapshot

__all__ = [name for name in dir() if name.startswith("VIR_")] + [
    "open", "openAuth", "openReadOnly", "getVersion", "virConnect", "virDomain", "virDomainSnapshot",
    "libvirtError",
    "registerErrorHandler", "virGetLastError", "virResetLastError", "virEventRegisterDefaultImpl",
    "virEventRunDefaultImpl", "virEventAddTimeout", "virEventUpdateTimeout", "virEventRemoveTimeout",
]


def open(name: str | None = None) -> virConnect:  # noqa: A001  (libvirt's name)
    """A read-write connection to the kvmd that `name` designates (see compat.virt.uri)."""
    return virConnect(name)


def openReadOnly(name: str | None = None) -> virConnect:  # noqa: N802
    return virConnect(name, readonly=True)


def openAuth(uri: str, auth: list, flags: int = 0) -> virConnect:  # noqa: N802
    """kvmd's socket is authenticated by peer credentials: `auth` is not needed (nor used)."""
    return virConnect(uri, readonly=bool((flags or 0) & VIR_CONNECT_RO))


def getVersion(name: str | None = None) -> int:  # noqa: N802
    """The libvirt API level the shim follows (major * 1,000,000 + minor * 1,000 + micro)."""
    return LIB_VERSION


def virEventRegisterDefaultImpl() -> int:  # noqa: N802
    """From now on, domain event callbacks run inside virEventRunDefaultImpl()."""
    LOOP.registered = True
    return 0


def virEventRunDefaultImpl() -> int:  # noqa: N802
    """Wait for the next event or timer and run every callback that is due."""
    LOOP.registered = True
    return LOOP.run_once()


def virEventAddTimeout(timeout: int, cb: Callable[[int, Any], Any], opaque: Any) -> int:  # noqa: N802
    """A timer run by virEventRunDefaultImpl every `timeout` ms (-1 disables it)."""
    return LOOP.add_timeout(timeout, cb, opaque)


def virEventUpdateTimeout(timer: int, freq: int) -> None:  # noqa: N802
    LOOP.update_timeout(timer, freq)


def virEventRemoveTimeout(timer: int) -> int:  # noqa: N802
    return LOOP.remove_timeout(timer)
