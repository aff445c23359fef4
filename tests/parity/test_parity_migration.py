"""Parity: live migration with migrateToURI3 between two daemons of the same kind — two
private libvirtds (the second with a host UUID of its own), or two kvmds through the shim.
Same assertions: the domain arrives with its identity, lifecycle events on both sides and
JOB_COMPLETED on the source, job statistics, abortJob, and libvirt's refusals."""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
import uuid

import pytest

from tests.parity.conftest import EventLog
from tests.support.daemon import Daemon
from tests.support.libvirtd import PrivateLibvirtd, firmware_domain_xml


@pytest.fixture(scope="module")
def _peer_libvirtd(parity_libvirtd):
    lv = PrivateLibvirtd(host_uuid=str(uuid.uuid4()))
    try:
        lv.start()
        yield lv
    finally:
        lv.stop()


@pytest.fixture
def peer(virt, request):
    """(connection to the destination, the dconnuri the source migrates to)."""
    if virt.is_kvmd:
        base = tempfile.mkdtemp(prefix="kvq", dir="/tmp")
        daemon = Daemon(base)
        try:
            daemon.start()
            conn = virt.lv.open(f"kvmd:///?socket={daemon.socket}")
            try:
                yield conn, f"kvmd:///?socket={daemon.socket}"
            finally:
                conn.close()
        finally:
            daemon.cleanup()
            shutil.rmtree(base, ignore_errors=True)
        return
    lvd = request.getfixturevalue("_peer_libvirtd")
    conn = virt.lv.open(lvd.uri)
    try:
        yield conn, lvd.uri.replace("qemu:", "qemu+unix:", 1)  # libvirt takes qemu:///system for itself
    finally:
        for dom in conn.listAllDomains(0):
            try:
                dom.destroy()
            except virt.lv.libvirtError:
                pass
        conn.close()


def peer_events(virt, conn) -> EventLog:
    log = EventLog()
    conn.domainEventRegisterAny(None, virt.lv.VIR_DOMAIN_EVENT_ID_LIFECYCLE, log.callback, None)
    return log


def guest_xml(name: str, guest: dict) -> str:
    return f"""<domain type='qemu'>
  <name>{name}</name>
  <memory unit='MiB'>256</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='q35'>hvm</type><kernel>{guest['kernel']}</kernel>
    <initrd>{guest['initrd']}</initrd><cmdline>{guest['cmdline']}</cmdline></os>
  <features><acpi/><apic/></features>
  <devices><video><model type='none'/></video><memballoon model='none'/></devices>
</domain>
"""


def test_migrate_to_uri3_moves_the_domain_with_events_on_both_sides(virt, peer):
    lv, conn = virt.lv, virt.conn
    dconn, duri = peer
    src_log, dst_log = virt.events(), peer_events(virt, dconn)
    jobs: list[dict] = []
    conn.domainEventRegisterAny(None, lv.VIR_DOMAIN_EVENT_ID_JOB_COMPLETED,
                                lambda _c, _d, params, _o: jobs.append(params), None)
    name = virt.name("mig")
    dom = conn.createXML(virt.firmware_xml(name), 0)
    uuid_ = dom.UUIDString()
    assert dom.jobStats() == {"type": lv.VIR_DOMAIN_JOB_NONE}
    assert dom.jobInfo()[0] == lv.VIR_DOMAIN_JOB_NONE

    assert dom.migrateToURI3(duri, {lv.VIR_MIGRATE_PARAM_URI: "tcp://127.0.0.1"},
                             lv.VIR_MIGRATE_LIVE | lv.VIR_MIGRATE_PEER2PEER) == 0
    there = dconn.lookupByName(name)
    assert there.UUIDString() == uuid_
    assert there.state() == [lv.VIR_DOMAIN_RUNNING, lv.VIR_DOMAIN_RUNNING_MIGRATED]
    assert (there.isActive(), there.isPersistent()) == (1, 0)
    assert virt.error(conn.lookupByName, name).get_error_code() == lv.VIR_ERR_NO_DOMAIN

    E = lv  # noqa: N806
    src = src_log.wait_for(name, lambda ev: (E.VIR_DOMAIN_EVENT_STOPPED, E.VIR_DOMAIN_EVENT_STOPPED_MIGRATED) in ev)
    assert src[-2:] == [(E.VIR_DOMAIN_EVENT_SUSPENDED, E.VIR_DOMAIN_EVENT_SUSPENDED_MIGRATED),
                        (E.VIR_DOMAIN_EVENT_STOPPED, E.VIR_DOMAIN_EVENT_STOPPED_MIGRATED)]
    dst = dst_log.wait_for(name, lambda ev: len(ev) >= 2)
    assert dst == [(E.VIR_DOMAIN_EVENT_STARTED, E.VIR_DOMAIN_EVENT_STARTED_MIGRATED),
                   (E.VIR_DOMAIN_EVENT_RESUMED, E.VIR_DOMAIN_EVENT_RESUMED_MIGRATED)]
    deadline = time.monotonic() + 5
    while not jobs and time.monotonic() < deadline:
        time.sleep(0.05)
    (job,) = jobs
    assert job[lv.VIR_DOMAIN_JOB_OPERATION] == lv.VIR_DOMAIN_JOB_OPERATION_MIGRATION_OUT
    assert isinstance(job[lv.VIR_DOMAIN_JOB_DOWNTIME], int) and job[lv.VIR_DOMAIN_JOB_TIME_ELAPSED] > 0
    assert job[lv.VIR_DOMAIN_JOB_DATA_REMAINING] == 0 and job[lv.VIR_DOMAIN_JOB_MEMORY_TOTAL] > 0
    there.destroy()


def test_migration_refusals_and_job_calls_without_a_job(virt, peer):
    lv, conn = virt.lv, virt.conn
    _dconn, duri = peer
    dom = conn.createXML(virt.firmware_xml(virt.name("migr")), 0)
    err = virt.error(dom.migrateToURI3, duri, {}, lv.VIR_MIGRATE_LIVE)
    assert err.get_error_code() == lv.VIR_ERR_ARGUMENT_UNSUPPORTED  # no direct migration
    bogus = (1 << 30) | lv.VIR_MIGRATE_LIVE | lv.VIR_MIGRATE_PEER2PEER
    assert virt.error(dom.migrateToURI3, duri, {}, bogus).get_error_code() == lv.VIR_ERR_INVALID_ARG
    assert virt.error(dom.abortJob).get_error_code() == lv.VIR_ERR_OPERATION_INVALID
    assert virt.error(dom.migrateStartPostCopy, 0).get_error_code() == lv.VIR_ERR_OPERATION_INVALID
    assert dom.state()[0] == lv.VIR_DOMAIN_RUNNING
    dom.destroy()


@pytest.mark.slow
def test_abort_job_cancels_a_running_migration_and_the_domain_runs_on(virt, peer, guest):
    lv, conn = virt.lv, virt.conn
    dconn, duri = peer
    name = virt.name("migc")
    dom = conn.createXML(guest_xml(name, guest), 0)
    time.sleep(5)  # the guest unpacks its initramfs: ~100 MiB to copy at 1 MiB/s
    outcome: dict = {}

    def migrate() -> None:
        try:
            dom.migrateToURI3(duri, {lv.VIR_MIGRATE_PARAM_BANDWIDTH: 1, lv.VIR_MIGRATE_PARAM_URI: "tcp://127.0.0.1"},
                              lv.VIR_MIGRATE_LIVE | lv.VIR_MIGRATE_PEER2PEER)
            outcome["ok"] = True
        except lv.libvirtError as e:
            outcome["error"] = e
    t = threading.Thread(target=migrate)
    t.start()
    try:
        deadline = time.monotonic() + 60
        while True:
            stats = dom.jobStats()
            if stats.get(lv.VIR_DOMAIN_JOB_DATA_PROCESSED, 0) > 0 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert stats["type"] == lv.VIR_DOMAIN_JOB_UNBOUNDED, stats
        assert stats[lv.VIR_DOMAIN_JOB_OPERATION] == lv.VIR_DOMAIN_JOB_OPERATION_MIGRATION_OUT
        assert 0 < stats[lv.VIR_DOMAIN_JOB_MEMORY_REMAINING] < stats[lv.VIR_DOMAIN_JOB_MEMORY_TOTAL]
        assert stats[lv.VIR_DOMAIN_JOB_DATA_TOTAL] == stats[lv.VIR_DOMAIN_JOB_MEMORY_TOTAL]
        info = dom.jobInfo()
        assert info[0] == lv.VIR_DOMAIN_JOB_UNBOUNDED and info[3] == stats[lv.VIR_DOMAIN_JOB_DATA_TOTAL]
        assert virt.error(dom.migrateStartPostCopy, 0).get_error_code() == lv.VIR_ERR_OPERATION_INVALID
        assert dom.abortJob() == 0
    finally:
        t.join(60)
    assert outcome["error"].get_error_code() == lv.VIR_ERR_OPERATION_ABORTED
    assert dom.state()[0] == lv.VIR_DOMAIN_RUNNING
    assert dom.jobStats() == {"type": lv.VIR_DOMAIN_JOB_NONE}
    deadline = time.monotonic() + 10
    while dconn.listAllDomains(0) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert dconn.listAllDomains(0) == []
    dom.destroy()


def test_shim_refuses_what_kvmd_migration_cannot_do_naming_it(daemon, event_loops):
    import compat.libvirt as lv

    conn = lv.open(f"kvmd:///?socket={daemon.socket}")
    try:
        dom = conn.createXML(firmware_domain_xml("mign"), 0)
        p2p = lv.VIR_MIGRATE_LIVE | lv.VIR_MIGRATE_PEER2PEER
        elsewhere = "kvmd+tcp://127.0.0.1:1"
        for params, flags, named in (
                ({}, p2p | lv.VIR_MIGRATE_TUNNELLED, "VIR_MIGRATE_TUNNELLED"),
                ({}, p2p | lv.VIR_MIGRATE_PERSIST_DEST, "VIR_MIGRATE_PERSIST_DEST"),  # a transient domain
                ({lv.VIR_MIGRATE_PARAM_URI: "tcp://127.0.0.1:49152"}, p2p, "migrate_uri"),
                ({lv.VIR_MIGRATE_PARAM_DEST_XML: "<domain/>"}, p2p, "destination_xml")):
            with pytest.raises(lv.libvirtError) as exc:
                dom.migrateToURI3(elsewhere, params, flags)
            assert exc.value.get_error_code() == lv.VIR_ERR_NO_SUPPORT and named in exc.value.get_error_message()
        for bad in ("qemu+tcp://elsewhere/system", "kvmd+tcp://nohost", "/tmp/x.sock", conn.getURI()):
            with pytest.raises(lv.libvirtError) as exc:  # not a kvmd, or this very kvmd
                dom.migrateToURI3(bad, {}, p2p)
            assert exc.value.get_error_code() == lv.VIR_ERR_INVALID_ARG, bad
        assert dom.state()[0] == lv.VIR_DOMAIN_RUNNING
        dom.destroy()
    finally:
        conn.close()
