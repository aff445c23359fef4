"""What only the shim has to show: NO_SUPPORT for what kvmd lacks, threads, URIs, a
read-only connection, event delivery without a registered loop, a lost kvmd, metadata
kept across a kvmd restart. All against a real kvmd."""

from __future__ import annotations

import threading
import time

import pytest

import compat.libvirt as libvirt
from compat.virt import events
from tests.support.libvirtd import firmware_domain_xml


@pytest.fixture
def conn(daemon):
    c = libvirt.open(f"kvmd:///?socket={daemon.socket}")
    yield c
    c.close()


def test_calls_kvmd_cannot_do_raise_no_support_naming_the_call(conn):
    dom = conn.createXML(firmware_domain_xml("ns"), 0)
    calls = [
        (dom.migrateSetMaxDowntime, (500, 0), "migrateSetMaxDowntime"),
        (dom.blockCopy, ("vda", "<disk/>", {}, 0), "blockCopy"),
        (dom.reboot, (0,), "reboot"),
        (dom.blockCommit, ("vda", None, None), "blockCommit"),
        (dom.managedSave, (0,), "managedSave"),
        (conn.listNetworks, (), "listNetworks"),
        (conn.storagePoolLookupByName, ("default",), "storagePoolLookupByName"),
    ]
    for fn, args, name in calls:
        with pytest.raises(libvirt.libvirtError) as exc:
            fn(*args)
        assert exc.value.get_error_code() == libvirt.VIR_ERR_NO_SUPPORT, name
        assert name in exc.value.get_error_message()
    with pytest.raises(AttributeError):
        libvirt.VIR_NO_SUCH_CONSTANT  # noqa: B018  (constants are not invented)
    dom.destroy()


def test_many_threads_share_one_connection_and_a_slow_call_holds_up_no_other(conn, tmp_path):
    import subprocess

    dom = conn.createXML(firmware_domain_xml("th"), 0)
    img = tmp_path / "d.raw"
    subprocess.run(["qemu-img", "create", "-q", "-f", "raw", str(img), "8M"], check=True)
    disk = (f"<disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='{img}'/>"
            "<target dev='vdb' bus='virtio'/></disk>")
    dom.attachDevice(disk)
    slow = threading.Thread(target=dom.detachDevice, args=(disk,))  # waits ~5 s for the guest
    slow.start()
    problems: list[BaseException] = []
    latencies: list[float] = []

    def worker() -> None:
        try:
            for _ in range(25):
                t = time.monotonic()
                assert dom.state()[0] == libvirt.VIR_DOMAIN_RUNNING
                assert conn.lookupByName("th").UUIDString() == dom.UUIDString()
                latencies.append(time.monotonic() - t)
        except BaseException as e:  # noqa: BLE001  (reported below)
            problems.append(e)

    workers = [threading.Thread(target=worker) for _ in range(8)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(30)
    assert slow.is_alive(), "the detach is still waiting for the guest"
    assert problems == [] and len(latencies) == 200
    assert max(latencies) < 1.0
    slow.join(15)
    dom.destroy()


def test_read_only_connection_reads_but_refuses_changes(daemon, conn):
    dom = conn.defineXML(firmware_domain_xml("ro"))
    ro = libvirt.openReadOnly(f"kvmd:///?socket={daemon.socket}")
    try:
        rdom = ro.lookupByName("ro")
        assert rdom.state() == [libvirt.VIR_DOMAIN_SHUTOFF, libvirt.VIR_DOMAIN_SHUTOFF_UNKNOWN]
        assert "<name>ro</name>" in rdom.XMLDesc(0)
        for fn, args in ((rdom.create, ()), (rdom.undefine, ()), (ro.defineXML, (firmware_domain_xml("x"),)),
                         (ro.createXML, (firmware_domain_xml("y"), 0))):
            with pytest.raises(libvirt.libvirtError) as exc:
                fn(*args)
            assert exc.value.get_error_code() == libvirt.VIR_ERR_OPERATION_DENIED
    finally:
        ro.close()
    dom.undefine()


def test_qemu_uri_reaches_kvmd_when_kvmd_socket_is_set(daemon, monkeypatch):
    monkeypatch.setenv("KVMD_SOCKET", daemon.socket)
    c = libvirt.open("qemu:///system")
    try:
        assert c.getURI() == "qemu:///system"
        assert c.listAllDomains(0) == []
    finally:
        c.close()
    c = libvirt.openAuth("qemu:///system", [[libvirt.VIR_CRED_AUTHNAME], None, None], libvirt.VIR_CONNECT_RO)
    try:
        with pytest.raises(libvirt.libvirtError) as exc:
            c.defineXML(firmware_domain_xml("z"))
        assert exc.value.get_error_code() == libvirt.VIR_ERR_OPERATION_DENIED
    finally:
        c.close()


def test_events_arrive_on_a_dispatcher_thread_without_a_registered_loop(conn, monkeypatch):
    monkeypatch.setattr(events.LOOP, "registered", False)
    got: list[tuple[str, int, int, str]] = []
    done = threading.Event()

    def cb(c, dom, event, detail, opaque):
        assert c is conn
        got.append((dom.name(), event, detail, threading.current_thread().name))
        if event == libvirt.VIR_DOMAIN_EVENT_STOPPED:
            done.set()
        else:
            dom.state()  # calling back into the shim from a callback is fine

    conn.domainEventRegisterAny(None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, cb, "opaque")
    reboots = []
    dom = conn.createXML(firmware_domain_xml("ev"), 0)
    conn.domainEventRegisterAny(dom, libvirt.VIR_DOMAIN_EVENT_ID_REBOOT, lambda c, d, o: reboots.append(o), "r")
    dom.reset()
    dom.destroy()
    assert done.wait(10)
    assert [(n, e, d) for n, e, d, _t in got][-1] == ("ev", libvirt.VIR_DOMAIN_EVENT_STOPPED,
                                                      libvirt.VIR_DOMAIN_EVENT_STOPPED_DESTROYED)
    assert all(t.startswith("kvmd-shim-events") for *_x, t in got)
    assert reboots == ["r"]


def test_a_lost_kvmd_closes_the_connection_as_libvirt_reports_it(daemon, conn):
    closed = threading.Event()
    reasons = []
    conn.registerCloseCallback(lambda c, reason, opaque: (reasons.append((reason, opaque)), closed.set()), "o")
    assert conn.isAlive() == 1
    daemon.kill()
    assert closed.wait(10)
    assert reasons == [(libvirt.VIR_CONNECT_CLOSE_REASON_EOF, "o")]
    assert conn.isAlive() == 0
    with pytest.raises(libvirt.libvirtError) as exc:
        conn.listAllDomains(0)
    assert exc.value.get_error_domain() == libvirt.VIR_FROM_RPC


def test_live_metadata_written_through_the_shim_survives_a_kvmd_restart(daemon, conn):
    uri = "http://ovirt.org/vm/1.0"
    dom = conn.createXML(firmware_domain_xml("md"), 0)
    dom.setMetadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, "<vm><clusterVersion>4.7</clusterVersion></vm>",
                    "ovirt-vm", uri, libvirt.VIR_DOMAIN_AFFECT_LIVE)
    conn.close()
    daemon.restart()
    again = libvirt.open(f"kvmd:///?socket={daemon.socket}")
    try:
        dom = again.lookupByName("md")
        assert dom.state()[0] == libvirt.VIR_DOMAIN_RUNNING
        assert dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, uri, 0) == (
            "<vm>\n  <clusterVersion>4.7</clusterVersion>\n</vm>")
        assert 'xmlns:ovirt-vm="http://ovirt.org/vm/1.0"' in dom.XMLDesc(0)
        dom.destroy()
    finally:
        again.close()


def test_kvmd_set_metadata_replaces_live_or_stored_metadata_and_refuses_the_impossible(daemon, client):
    from kvmd import errors as kerr
    from kvmd.client import ApiError

    client.call("vm.define", spec={"name": "sm", "memory": {"size": "128MiB"}})
    with pytest.raises(ApiError) as exc:
        client.call("vm.set_metadata", name="sm", metadata={"a": 1})  # live: not running
    assert exc.value.code == kerr.WRONG_STATE
    assert client.call("vm.set_metadata", name="sm", metadata={"a": 1}, live=False)["metadata"] == {"a": 1}
    assert client.call("vm.info", name="sm", spec=True)["spec"]["metadata"] == {"a": 1}
    with pytest.raises(ApiError) as exc:
        client.call("vm.set_metadata", name="sm", metadata={}, live=False, config=False)
    assert exc.value.code == kerr.INVALID_PARAMS
    client.call("vm.start", name="sm")
    client.call("vm.set_metadata", name="sm", metadata={"b": 2}, config=False)
    info = client.call("vm.info", name="sm", spec=True)
    assert (info["spec"]["metadata"], info["definition"]["metadata"]) == ({"b": 2}, {"a": 1})
    client.call("vm.undefine", name="sm")  # now transient: no stored definition
    with pytest.raises(ApiError) as exc:
        client.call("vm.set_metadata", name="sm", metadata={"c": 3}, live=False)
    assert exc.value.code == kerr.WRONG_STATE
    client.call("vm.destroy", name="sm")
