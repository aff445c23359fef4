"""The private libvirtd test support itself: start it, run a firmware-only domain, clean up."""

from __future__ import annotations

import pytest

from tests.support.libvirt_fixture import libvirtd  # noqa: F401  (the fixture)
from tests.support.libvirtd import firmware_domain_xml
from tests.support.procs import alive

pytestmark = pytest.mark.libvirt


def test_private_libvirtd_runs_and_destroys_a_firmware_domain(libvirtd):  # noqa: F811
    import libvirt

    conn = libvirtd.connect()
    assert conn.getURI().startswith("qemu:///system")
    dom = conn.createXML(firmware_domain_xml("lvt-fw"), 0)
    state, _reason = dom.state()
    assert state == libvirt.VIR_DOMAIN_RUNNING
    pids = libvirtd.qemu_pids()
    assert len(pids) == 1 and alive(pids[0])
    assert [d.name() for d in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE)] == ["lvt-fw"]

    dom.destroy()
    assert conn.listAllDomains(0) == []
    assert not alive(pids[0])
    assert libvirtd.qemu_pids() == []


def test_stop_kills_daemons_and_leftover_qemu(libvirtd):  # noqa: F811
    """A second private instance, stopped with a domain still running: nothing survives."""
    from tests.support.libvirtd import PrivateLibvirtd

    lv = PrivateLibvirtd()
    try:
        lv.start()
        lv.connect().createXML(firmware_domain_xml("lvt-left"), 0)
        owned = lv.pids()
        assert len(lv.qemu_pids()) == 1 and len(owned) >= 3  # libvirtd, virtlogd, qemu
    finally:
        lv.stop()
    assert [p for p in owned if alive(p)] == []
    # the module's own instance is untouched
    assert libvirtd.connect().getVersion() > 0
