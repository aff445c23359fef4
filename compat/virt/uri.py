"""Connection URIs of the shim: which kvmd socket a `libvirt.open(uri)` talks to.

    kvmd:///system                       /run/kvmd/kvmd.sock (the system instance)
    kvmd:///session                      $XDG_RUNTIME_DIR/kvmd/kvmd.sock (or /tmp/kvmd-UID/kvmd/...)
    kvmd:///?socket=PATH                 PATH (tests, private instances)
    kvmd+unix:///system?socket=PATH      PATH
    qemu:///system, qemu:///session,     $KVMD_SOCKET, when it is set: the host's backend is
    qemu+unix:///..., None               kvmd, so code that opens libvirt's usual URI gets kvmd

A `qemu://` URI with `KVMD_SOCKET` unset, a remote host, or any other scheme is refused
with VIR_ERR_NO_CONNECT, as libvirt refuses a URI no driver serves.
"""

from __future__ import annotations

import os
from urllib.parse import parse_qs, urlsplit

from compat.virt import constants as c
from compat.virt import errors

SYSTEM_SOCKET = "/run/kvmd/kvmd.sock"
ENV = "KVMD_SOCKET"


def session_socket(uid: int | None = None) -> str:
    """The per-user kvmd's socket (kvmd.config.default_dirs for a non-root user)."""
    uid = os.getuid() if uid is None else uid
    runtime = os.environ.get("XDG_RUNTIME_DIR") or os.path.join("/tmp", f"kvmd-{uid}")
    return os.path.join(runtime, "kvmd", "kvmd.sock")


def _no_driver(uri: str, why: str) -> errors.libvirtError:
    return errors.make(c.VIR_ERR_NO_CONNECT, f"{uri} ({why})", c.VIR_FROM_NONE)


def resolve(uri: str | None) -> tuple[str, str]:
    """(socket path, URI to report from getURI) for `uri`; libvirtError if not served."""
    env = os.environ.get(ENV)
    if not uri:
        if env:
            return env, "kvmd:///?socket=" + env
        return (SYSTEM_SOCKET, "kvmd:///system") if os.getuid() == 0 else (session_socket(), "kvmd:///session")
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    if parts.netloc:
        raise _no_driver(uri, "the kvmd shim serves the local host only")
    path = parts.path.rstrip("/") or "/"
    if scheme in ("qemu", "qemu+unix"):
        if not env:
            raise _no_driver(uri, f"qemu:// URIs reach kvmd only when {ENV} names kvmd's socket")
        if path not in ("/system", "/session"):
            raise _no_driver(uri, "expected qemu:///system or qemu:///session")
        return env, uri
    if scheme not in ("kvmd", "kvmd+unix"):
        raise _no_driver(uri, "the kvmd shim serves kvmd:/// URIs")
    query = parse_qs(parts.query)
    sockets = query.get("socket")
    if sockets:
        return sockets[-1], uri
    if path == "/system":
        return SYSTEM_SOCKET, uri
    if path == "/session":
        return session_socket(), uri
    raise _no_driver(uri, "expected kvmd:///system, kvmd:///session or kvmd:///?socket=PATH")
