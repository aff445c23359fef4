"""The shim's VIR_* constants carry libvirt's own values (checked against libvirt-python)."""

from __future__ import annotations

import pytest

import compat.libvirt as shim
from compat.virt import constants

real = pytest.importorskip("libvirt")

NAMES = sorted(n for n in vars(constants) if n.startswith("VIR_"))


def test_the_shim_defines_the_constants_its_calls_use():
    for name in ("VIR_DOMAIN_RUNNING", "VIR_DOMAIN_START_PAUSED", "VIR_ERR_NO_DOMAIN",
                 "VIR_DOMAIN_EVENT_ID_LIFECYCLE", "VIR_DOMAIN_METADATA_ELEMENT",
                 "VIR_DOMAIN_SHUTDOWN_GUEST_AGENT", "VIR_CONNECT_LIST_DOMAINS_ACTIVE"):
        assert name in NAMES
    assert len(NAMES) > 300


@pytest.mark.parametrize("name", NAMES)
def test_constant_equals_libvirt_python(name):
    assert getattr(shim, name) == getattr(real, name), name


def test_star_import_gives_every_constant_and_the_api():
    ns: dict = {}
    exec("from compat.libvirt import *", ns)
    assert all(name in ns for name in NAMES)
    for name in ("open", "openReadOnly", "openAuth", "libvirtError", "virConnect", "virDomain",
                 "virEventRegisterDefaultImpl", "virEventRunDefaultImpl", "registerErrorHandler"):
        assert name in ns
