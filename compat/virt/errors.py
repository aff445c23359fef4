"""`libvirtError` and the mapping of kvmd's error codes onto libvirt's.

libvirt-python raises one exception type, `libvirtError`, and callers branch on
`get_error_code()` (VIR_ERR_*) and sometimes `get_error_domain()` (VIR_FROM_*). The shim
keeps that contract: every failure, whatever its cause (a kvmd API error, an XML the
converter cannot take, a lost socket, a call kvmd cannot do), surfaces as a
`libvirtError` carrying libvirt's numbers and a message built the way libvirt builds its
own (`"<prefix>: <detail>"`, the prefix being libvirt's wording for that code, kept in
`get_str1()` as a format and the detail in `get_str2()`).

    kvmd code                 libvirt code                  domain
    1  no such VM             VIR_ERR_NO_DOMAIN (42)        VIR_FROM_QEMU
    2  already exists         VIR_ERR_OPERATION_FAILED (9)  VIR_FROM_DOMAIN
    3  invalid spec           VIR_ERR_XML_ERROR (27)        VIR_FROM_DOMAIN
    4  wrong state            VIR_ERR_OPERATION_INVALID (55) VIR_FROM_QEMU
    ...                       (see KVMD_TO_LIBVIRT below, docs/compat.md)

`registerErrorHandler(f, ctx)` is honoured: `f(ctx, err)` is called with the error tuple
before each raise, as libvirt does; without one, nothing is printed.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from compat.virt import constants as c
from kvmd import errors as kerr

# libvirt's own wording for the codes the shim raises (the "%s" takes the detail)
_FORMATS: dict[int, str] = {
    c.VIR_ERR_INTERNAL_ERROR: "internal error: %s",
    c.VIR_ERR_NO_SUPPORT: "this function is not supported by the connection driver: %s",
    c.VIR_ERR_NO_CONNECT: "no connection driver available for %s",
    c.VIR_ERR_INVALID_CONN: "invalid connection pointer in %s",
    c.VIR_ERR_INVALID_ARG: "invalid argument: %s",
    c.VIR_ERR_OPERATION_FAILED: "operation failed: %s",
    c.VIR_ERR_XML_ERROR: "XML error: %s",
    c.VIR_ERR_XML_DETAIL: "%s",
    c.VIR_ERR_OPERATION_DENIED: "operation forbidden: %s",
    c.VIR_ERR_SYSTEM_ERROR: "%s",
    c.VIR_ERR_NO_DOMAIN: "Domain not found: %s",
    c.VIR_ERR_OPERATION_INVALID: "Requested operation is not valid: %s",
    c.VIR_ERR_CONFIG_UNSUPPORTED: "unsupported configuration: %s",
    c.VIR_ERR_OPERATION_TIMEOUT: "Timed out during operation: %s",
    c.VIR_ERR_ARGUMENT_UNSUPPORTED: "argument unsupported: %s",
    c.VIR_ERR_NO_DOMAIN_METADATA: "metadata not found: %s",
    c.VIR_ERR_OPERATION_UNSUPPORTED: "Operation not supported: %s",
    c.VIR_ERR_AGENT_UNRESPONSIVE: "Guest agent is not responding: %s",
    c.VIR_ERR_ACCESS_DENIED: "access denied: %s",
    c.VIR_ERR_DEVICE_MISSING: "device not found: %s",
    c.VIR_ERR_OPERATION_ABORTED: "operation aborted: %s",
    c.VIR_ERR_NO_DOMAIN_SNAPSHOT: "Domain snapshot not found: %s",
    c.VIR_ERR_INVALID_DOMAIN_SNAPSHOT: "invalid domain snapshot: %s",
}

# kvmd API error code -> (libvirt error code, libvirt error domain)
KVMD_TO_LIBVIRT: dict[int, tuple[int, int]] = {
    kerr.NO_SUCH_VM: (c.VIR_ERR_NO_DOMAIN, c.VIR_FROM_QEMU),
    kerr.ALREADY_EXISTS: (c.VIR_ERR_OPERATION_FAILED, c.VIR_FROM_DOMAIN),
    kerr.INVALID_SPEC: (c.VIR_ERR_XML_ERROR, c.VIR_FROM_DOMAIN),
    kerr.WRONG_STATE: (c.VIR_ERR_OPERATION_INVALID, c.VIR_FROM_QEMU),
    kerr.QEMU_FAILURE: (c.VIR_ERR_OPERATION_FAILED, c.VIR_FROM_QEMU),
    kerr.TIMEOUT: (c.VIR_ERR_OPERATION_TIMEOUT, c.VIR_FROM_QEMU),
    kerr.QUOTA_EXCEEDED: (c.VIR_ERR_OPERATION_DENIED, c.VIR_FROM_QEMU),
    kerr.PERMISSION_DENIED: (c.VIR_ERR_ACCESS_DENIED, c.VIR_FROM_RPC),
    kerr.STORAGE_FAILURE: (c.VIR_ERR_SYSTEM_ERROR, c.VIR_FROM_QEMU),
    kerr.NOT_SUPPORTED: (c.VIR_ERR_OPERATION_UNSUPPORTED, c.VIR_FROM_QEMU),
    kerr.AGENT_UNRESPONSIVE: (c.VIR_ERR_AGENT_UNRESPONSIVE, c.VIR_FROM_QEMU),
    kerr.NO_SUCH_DEVICE: (c.VIR_ERR_DEVICE_MISSING, c.VIR_FROM_QEMU),
    kerr.AGENT_ERROR: (c.VIR_ERR_INTERNAL_ERROR, c.VIR_FROM_QEMU),
    kerr.MIGRATION_FAILED: (c.VIR_ERR_OPERATION_FAILED, c.VIR_FROM_QEMU),
    kerr.INVALID_PARAMS: (c.VIR_ERR_INVALID_ARG, c.VIR_FROM_QEMU),
    kerr.METHOD_NOT_FOUND: (c.VIR_ERR_NO_SUPPORT, c.VIR_FROM_NONE),
    kerr.INTERNAL_ERROR: (c.VIR_ERR_INTERNAL_ERROR, c.VIR_FROM_QEMU),
    kerr.INVALID_REQUEST: (c.VIR_ERR_INTERNAL_ERROR, c.VIR_FROM_RPC),
    kerr.PARSE_ERROR: (c.VIR_ERR_INTERNAL_ERROR, c.VIR_FROM_RPC),
}

ErrorTuple = tuple[int, int, str, int, str | None, str | None, str | None, int, int]


class libvirtError(Exception):  # noqa: N801  (libvirt's name)
    """libvirt-python's exception: `err` is libvirt's 9-tuple, or None.

    `libvirtError("message")` alone (as code written for libvirt sometimes builds one)
    has no error details: every getter returns None, as in libvirt-python.
    """

    def __init__(self, defmsg: str, code: int | None = None, domain: int = c.VIR_FROM_NONE,
                 detail: str | None = None):
        self.err: ErrorTuple | None = None
        if code is not None:
            detail = defmsg if detail is None else detail
            fmt = _FORMATS.get(code, "%s")
            message = fmt % detail
            self.err = (code, domain, message, c.VIR_ERR_ERROR, fmt, detail, None, -1, -1)
            defmsg = message
        super().__init__(defmsg)

    def get_error_code(self) -> int | None:
        return None if self.err is None else self.err[0]

    def get_error_domain(self) -> int | None:
        return None if self.err is None else self.err[1]

    def get_error_message(self) -> str | None:
        return None if self.err is None else self.err[2]

    def get_error_level(self) -> int | None:
        return None if self.err is None else self.err[3]

    def get_str1(self) -> str | None:
        return None if self.err is None else self.err[4]

    def get_str2(self) -> str | None:
        return None if self.err is None else self.err[5]

    def get_str3(self) -> str | None:
        return None if self.err is None else self.err[6]

    def get_int1(self) -> int | None:
        return None if self.err is None else self.err[7]

    def get_int2(self) -> int | None:
        return None if self.err is None else self.err[8]


# -- the error handler (libvirt's virSetErrorFunc) -------------------------------------

_handler: tuple[Callable[[Any, ErrorTuple], None], Any] | None = None
_last = threading.local()


def registerErrorHandler(f: Callable[[Any, ErrorTuple], None] | None, ctx: Any) -> int:  # noqa: N802
    """Call `f(ctx, err)` for every error before it is raised; None restores the default."""
    global _handler
    _handler = None if f is None else (f, ctx)
    return 1


def virGetLastError() -> ErrorTuple | None:  # noqa: N802
    """The last error raised in this thread, as libvirt's 9-tuple."""
    return getattr(_last, "err", None)


def virResetLastError() -> None:  # noqa: N802
    _last.err = None


def make(code: int, detail: str, domain: int = c.VIR_FROM_QEMU) -> libvirtError:
    """A libvirtError for libvirt `code`, reported to the handler, ready to raise."""
    err = libvirtError(detail, code, domain)
    _last.err = err.err
    if _handler is not None:
        f, ctx = _handler
        try:
            f(ctx, err.err)  # type: ignore[arg-type]
        except Exception:  # a broken handler must not hide the real error
            pass
    return err


def unsupported(call: str, why: str = "") -> libvirtError:
    """VIR_ERR_NO_SUPPORT naming the call, as libvirt reports a driver without it."""
    detail = call + (f" ({why})" if why else "")
    return make(c.VIR_ERR_NO_SUPPORT, detail, c.VIR_FROM_NONE)


def from_api(code: int, message: str, data: Any = None) -> libvirtError:
    """The libvirtError for a kvmd API error (kvmd.client.ApiError's code, message, data)."""
    if code == -1:  # kvmd.client.ConnectionLost
        return make(c.VIR_ERR_INTERNAL_ERROR, f"client socket is closed: {message}", c.VIR_FROM_RPC)
    lv_code, domain = KVMD_TO_LIBVIRT.get(code, (c.VIR_ERR_INTERNAL_ERROR, c.VIR_FROM_QEMU))
    if code == kerr.NO_SUCH_VM and isinstance(data, dict) and "name" in data:
        message = f"no domain with matching name '{data['name']}'"  # libvirt's wording
    return make(lv_code, message, domain)
