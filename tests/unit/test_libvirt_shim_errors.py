"""libvirtError and the kvmd -> libvirt error code mapping."""

from __future__ import annotations

import pytest

import compat.libvirt as libvirt
from compat.virt import errors
from kvmd import errors as kerr


def test_not_found_reads_like_libvirts_own_error():
    e = errors.from_api(kerr.NO_SUCH_VM, "no VM named 'web'", {"name": "web"})
    assert isinstance(e, libvirt.libvirtError)
    assert e.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN
    assert e.get_error_domain() == libvirt.VIR_FROM_QEMU
    assert e.get_error_message() == "Domain not found: no domain with matching name 'web'"
    assert str(e) == e.get_error_message()
    assert e.get_str1() == "Domain not found: %s"
    assert e.get_str2() == "no domain with matching name 'web'"
    assert e.get_error_level() == libvirt.VIR_ERR_ERROR
    assert e.get_int1() == -1


@pytest.mark.parametrize("kvmd_code,libvirt_code", [
    (kerr.NO_SUCH_VM, libvirt.VIR_ERR_NO_DOMAIN),
    (kerr.ALREADY_EXISTS, libvirt.VIR_ERR_OPERATION_FAILED),
    (kerr.INVALID_SPEC, libvirt.VIR_ERR_XML_ERROR),
    (kerr.WRONG_STATE, libvirt.VIR_ERR_OPERATION_INVALID),
    (kerr.QEMU_FAILURE, libvirt.VIR_ERR_OPERATION_FAILED),
    (kerr.TIMEOUT, libvirt.VIR_ERR_OPERATION_TIMEOUT),
    (kerr.QUOTA_EXCEEDED, libvirt.VIR_ERR_OPERATION_DENIED),
    (kerr.PERMISSION_DENIED, libvirt.VIR_ERR_ACCESS_DENIED),
    (kerr.STORAGE_FAILURE, libvirt.VIR_ERR_SYSTEM_ERROR),
    (kerr.NOT_SUPPORTED, libvirt.VIR_ERR_OPERATION_UNSUPPORTED),
    (kerr.AGENT_UNRESPONSIVE, libvirt.VIR_ERR_AGENT_UNRESPONSIVE),
    (kerr.NO_SUCH_DEVICE, libvirt.VIR_ERR_DEVICE_MISSING),
    (kerr.AGENT_ERROR, libvirt.VIR_ERR_INTERNAL_ERROR),
    (kerr.INVALID_PARAMS, libvirt.VIR_ERR_INVALID_ARG),
    (kerr.METHOD_NOT_FOUND, libvirt.VIR_ERR_NO_SUPPORT),
    (kerr.INTERNAL_ERROR, libvirt.VIR_ERR_INTERNAL_ERROR),
    (12345, libvirt.VIR_ERR_INTERNAL_ERROR),
])
def test_every_kvmd_error_code_maps_to_a_libvirt_code(kvmd_code, libvirt_code):
    e = errors.from_api(kvmd_code, "it went wrong")
    assert e.get_error_code() == libvirt_code
    assert "it went wrong" in e.get_error_message()


def test_every_kvmd_application_code_is_mapped():
    codes = {v for k, v in vars(kerr).items() if k.isupper() and isinstance(v, int)}
    assert codes <= set(errors.KVMD_TO_LIBVIRT)


def test_a_lost_connection_looks_like_a_dead_libvirt_connection():
    e = errors.from_api(-1, "connection to kvmd lost")
    assert e.get_error_code() == libvirt.VIR_ERR_INTERNAL_ERROR
    assert e.get_error_domain() == libvirt.VIR_FROM_RPC


def test_unsupported_names_the_call():
    e = errors.unsupported("virDomain.migrateToURI3", "kvmd has no live migration yet")
    assert e.get_error_code() == libvirt.VIR_ERR_NO_SUPPORT
    assert "virDomain.migrateToURI3" in str(e) and "migration" in str(e)


def test_plain_libvirterror_has_no_details_like_libvirt_python():
    e = libvirt.libvirtError("something")
    assert str(e) == "something"
    assert e.err is None
    assert e.get_error_code() is None and e.get_error_message() is None and e.get_str1() is None


def test_registered_error_handler_sees_each_error_before_it_is_raised():
    seen = []
    libvirt.registerErrorHandler(lambda ctx, err: seen.append((ctx, err)), "ctx")
    try:
        e = errors.make(libvirt.VIR_ERR_OPERATION_INVALID, "domain is not running")
    finally:
        libvirt.registerErrorHandler(None, None)
    assert seen == [("ctx", e.err)]
    assert libvirt.virGetLastError() == e.err
    errors.make(libvirt.VIR_ERR_OPERATION_INVALID, "again")
    assert len(seen) == 1


def test_a_failing_error_handler_does_not_hide_the_error():
    def bad(_ctx, _err):
        raise RuntimeError("handler bug")

    libvirt.registerErrorHandler(bad, None)
    try:
        e = errors.make(libvirt.VIR_ERR_NO_DOMAIN, "x")
    finally:
        libvirt.registerErrorHandler(None, None)
    assert e.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN
