"""Parity: starting, pausing, resuming, destroying — numeric states, reasons, events, errors."""

from __future__ import annotations

import xml.etree.ElementTree as ET

URI = "http://kvmd.example/parity/1"


def test_transient_domain_runs_pauses_resumes_and_is_gone_after_destroy(virt):
    lv, conn = virt.lv, virt.conn
    log = virt.events()
    name = virt.name("tr")
    dom = conn.createXML(virt.firmware_xml(name), 0)
    assert dom.state() == [lv.VIR_DOMAIN_RUNNING, lv.VIR_DOMAIN_RUNNING_BOOTED]
    assert (dom.isActive(), dom.isPersistent()) == (1, 0)
    assert dom.ID() > 0 and dom.ID() in conn.listDomainsID()
    assert conn.lookupByID(dom.ID()).name() == name
    assert [d.name() for d in conn.listAllDomains(lv.VIR_CONNECT_LIST_DOMAINS_TRANSIENT)] == [name]

    assert dom.suspend() == 0
    assert dom.state() == [lv.VIR_DOMAIN_PAUSED, lv.VIR_DOMAIN_PAUSED_USER]
    assert dom.suspend() == 0  # already paused: a no-op in libvirt
    assert dom.resume() == 0
    assert dom.state() == [lv.VIR_DOMAIN_RUNNING, lv.VIR_DOMAIN_RUNNING_UNPAUSED]
    assert virt.error(dom.resume).get_error_code() == lv.VIR_ERR_OPERATION_INVALID

    assert dom.destroy() == 0
    assert virt.error(conn.lookupByName, name).get_error_code() == lv.VIR_ERR_NO_DOMAIN
    assert virt.error(dom.state).get_error_code() == lv.VIR_ERR_NO_DOMAIN

    E = lv  # noqa: N806
    expected = [(E.VIR_DOMAIN_EVENT_RESUMED, E.VIR_DOMAIN_EVENT_RESUMED_UNPAUSED),
                (E.VIR_DOMAIN_EVENT_STARTED, E.VIR_DOMAIN_EVENT_STARTED_BOOTED),
                (E.VIR_DOMAIN_EVENT_SUSPENDED, E.VIR_DOMAIN_EVENT_SUSPENDED_PAUSED),
                (E.VIR_DOMAIN_EVENT_RESUMED, E.VIR_DOMAIN_EVENT_RESUMED_UNPAUSED),
                (E.VIR_DOMAIN_EVENT_SHUTDOWN, E.VIR_DOMAIN_EVENT_SHUTDOWN_HOST),
                (E.VIR_DOMAIN_EVENT_STOPPED, E.VIR_DOMAIN_EVENT_STOPPED_DESTROYED)]
    assert log.wait_for(name, lambda ev: len(ev) >= len(expected)) == expected


def test_persistent_domain_starts_paused_refuses_wrong_states_and_keeps_its_stop_reason(virt):
    lv, conn = virt.lv, virt.conn
    log = virt.events()
    name = virt.name("pe")
    dom = conn.defineXML(virt.firmware_xml(name))
    for verb in (dom.suspend, dom.resume, dom.destroy, dom.shutdown, dom.reset):
        assert virt.error(verb).get_error_code() == lv.VIR_ERR_OPERATION_INVALID, verb.__name__

    assert dom.createWithFlags(lv.VIR_DOMAIN_START_PAUSED) == 0
    assert dom.state() == [lv.VIR_DOMAIN_PAUSED, lv.VIR_DOMAIN_PAUSED_USER]
    assert virt.error(dom.create).get_error_code() == lv.VIR_ERR_OPERATION_INVALID
    assert dom.resume() == 0
    assert dom.reset() == 0
    assert dom.state()[0] == lv.VIR_DOMAIN_RUNNING

    assert dom.destroy() == 0
    assert dom.state() == [lv.VIR_DOMAIN_SHUTOFF, lv.VIR_DOMAIN_SHUTOFF_DESTROYED]
    assert (dom.isActive(), dom.ID()) == (0, -1)
    assert dom.undefine() == 0

    E = lv  # noqa: N806
    expected = [(E.VIR_DOMAIN_EVENT_DEFINED, E.VIR_DOMAIN_EVENT_DEFINED_ADDED),
                (E.VIR_DOMAIN_EVENT_STARTED, E.VIR_DOMAIN_EVENT_STARTED_BOOTED),
                (E.VIR_DOMAIN_EVENT_SUSPENDED, E.VIR_DOMAIN_EVENT_SUSPENDED_PAUSED),
                (E.VIR_DOMAIN_EVENT_RESUMED, E.VIR_DOMAIN_EVENT_RESUMED_UNPAUSED),
                (E.VIR_DOMAIN_EVENT_SHUTDOWN, E.VIR_DOMAIN_EVENT_SHUTDOWN_HOST),
                (E.VIR_DOMAIN_EVENT_STOPPED, E.VIR_DOMAIN_EVENT_STOPPED_DESTROYED),
                (E.VIR_DOMAIN_EVENT_UNDEFINED, E.VIR_DOMAIN_EVENT_UNDEFINED_REMOVED)]
    assert log.wait_for(name, lambda ev: len(ev) >= len(expected)) == expected


def test_running_domain_reports_stats_and_takes_live_metadata(virt):
    lv, conn = virt.lv, virt.conn
    name = virt.name("st")
    dom = conn.createXML(virt.firmware_xml(name, 192), 0)

    st, max_kib, mem_kib, vcpus, cpu_ns = dom.info()
    assert (st, max_kib, mem_kib, vcpus) == (lv.VIR_DOMAIN_RUNNING, 192 * 1024, 192 * 1024, 1)
    assert cpu_ns > 0
    assert dom.maxMemory() == 192 * 1024
    assert dom.memoryStats()["rss"] > 0
    ((sdom, rec),) = [r for r in conn.getAllDomainStats(lv.VIR_DOMAIN_STATS_STATE) if r[0].name() == name]
    assert sdom.UUIDString() == dom.UUIDString()
    assert (rec["state.state"], rec["state.reason"]) == (lv.VIR_DOMAIN_RUNNING, lv.VIR_DOMAIN_RUNNING_BOOTED)
    ((_, rec),) = conn.domainListGetStats([dom], lv.VIR_DOMAIN_STATS_BALLOON | lv.VIR_DOMAIN_STATS_CPU_TOTAL)
    assert rec["balloon.maximum"] == 192 * 1024 and rec["cpu.time"] > 0

    assert virt.error(dom.blockStats, "vdz").get_error_code() == lv.VIR_ERR_INVALID_ARG
    assert virt.error(dom.interfaceStats, "vnet99").get_error_code() == lv.VIR_ERR_INVALID_ARG
    # the firmware guest has no balloon and no guest agent
    assert virt.error(dom.setMemory, 100 * 1024).get_error_code() == lv.VIR_ERR_OPERATION_INVALID
    e = virt.error(dom.shutdownFlags, lv.VIR_DOMAIN_SHUTDOWN_GUEST_AGENT)
    assert e.get_error_code() == lv.VIR_ERR_ARGUMENT_UNSUPPORTED

    root = ET.fromstring(dom.XMLDesc(0))
    assert root.get("id") == str(dom.ID())

    elem = lv.VIR_DOMAIN_METADATA_ELEMENT
    assert dom.setMetadata(elem, "<state>up</state>", "par", URI, lv.VIR_DOMAIN_AFFECT_LIVE) == 0
    assert dom.metadata(elem, URI, 0) == "<state>up</state>"
    assert dom.metadata(elem, URI, lv.VIR_DOMAIN_AFFECT_LIVE) == "<state>up</state>"
    e = virt.error(dom.setMetadata, elem, "<x/>", "par", URI, lv.VIR_DOMAIN_AFFECT_CONFIG)
    assert e.get_error_code() == lv.VIR_ERR_OPERATION_INVALID  # transient: no config

    assert dom.shutdown() == 0  # the firmware ignores the ACPI button: still up
    assert dom.state()[0] == lv.VIR_DOMAIN_RUNNING
    dom.destroy()
