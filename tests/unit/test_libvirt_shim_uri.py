"""Which kvmd socket a libvirt URI opened through the shim reaches."""

from __future__ import annotations

import pytest

import compat.libvirt as libvirt
from compat.virt import uri


@pytest.fixture(autouse=True)
def no_env(monkeypatch):
    monkeypatch.delenv("KVMD_SOCKET", raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", "/run/user/1000")


def test_system_uri_is_the_system_socket():
    assert uri.resolve("kvmd:///system") == ("/run/kvmd/kvmd.sock", "kvmd:///system")


def test_session_uri_is_the_per_user_socket():
    assert uri.resolve("kvmd:///session")[0] == "/run/user/1000/kvmd/kvmd.sock"


@pytest.mark.parametrize("text", ["kvmd:///?socket=/tmp/x/kvmd.sock",
                                  "kvmd+unix:///system?socket=/tmp/x/kvmd.sock",
                                  "kvmd:///session?socket=/tmp/x/kvmd.sock"])
def test_socket_parameter_names_any_socket(text):
    assert uri.resolve(text) == ("/tmp/x/kvmd.sock", text)


def test_qemu_uri_reaches_kvmd_only_when_kvmd_socket_is_set(monkeypatch):
    with pytest.raises(libvirt.libvirtError) as exc:
        uri.resolve("qemu:///system")
    assert exc.value.get_error_code() == libvirt.VIR_ERR_NO_CONNECT
    assert "KVMD_SOCKET" in str(exc.value)
    monkeypatch.setenv("KVMD_SOCKET", "/tmp/k.sock")
    assert uri.resolve("qemu:///system") == ("/tmp/k.sock", "qemu:///system")
    assert uri.resolve("qemu+unix:///session")[0] == "/tmp/k.sock"
    assert uri.resolve(None)[0] == "/tmp/k.sock"


@pytest.mark.parametrize("text", ["xen:///system", "kvmd://otherhost/system", "kvmd:///elsewhere",
                                  "qemu+tcp://host/system"])
def test_uris_no_kvmd_serves_are_refused_as_libvirt_refuses_them(text, monkeypatch):
    monkeypatch.setenv("KVMD_SOCKET", "/tmp/k.sock")
    with pytest.raises(libvirt.libvirtError) as exc:
        uri.resolve(text)
    assert exc.value.get_error_code() == libvirt.VIR_ERR_NO_CONNECT


def test_opening_a_socket_nobody_listens_on_is_a_system_error(tmp_path):
    with pytest.raises(libvirt.libvirtError) as exc:
        libvirt.open(f"kvmd:///?socket={tmp_path}/none.sock")
    assert exc.value.get_error_code() == libvirt.VIR_ERR_SYSTEM_ERROR
    assert exc.value.get_error_domain() == libvirt.VIR_FROM_RPC
    assert "none.sock" in str(exc.value)
