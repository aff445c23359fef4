"""kvmd states, reasons and events as libvirt's numbers (pure mapping, no daemon)."""

from __future__ import annotations

import pytest

import compat.libvirt as lv
from compat.virt import events, states


@pytest.mark.parametrize("state,reason,expected", [
    ("defined", "", (lv.VIR_DOMAIN_SHUTOFF, lv.VIR_DOMAIN_SHUTOFF_UNKNOWN)),
    ("starting", "starting", (lv.VIR_DOMAIN_PAUSED, lv.VIR_DOMAIN_PAUSED_STARTING_UP)),
    ("running", "booted", (lv.VIR_DOMAIN_RUNNING, lv.VIR_DOMAIN_RUNNING_BOOTED)),
    ("running", "resumed", (lv.VIR_DOMAIN_RUNNING, lv.VIR_DOMAIN_RUNNING_UNPAUSED)),
    ("running", "re-attached", (lv.VIR_DOMAIN_RUNNING, lv.VIR_DOMAIN_RUNNING_UNKNOWN)),
    ("paused", "paused", (lv.VIR_DOMAIN_PAUSED, lv.VIR_DOMAIN_PAUSED_USER)),
    ("paused", "started paused", (lv.VIR_DOMAIN_PAUSED, lv.VIR_DOMAIN_PAUSED_USER)),
    ("paused", "re-attached (prelaunch)", (lv.VIR_DOMAIN_PAUSED, lv.VIR_DOMAIN_PAUSED_UNKNOWN)),
    ("shutting-down", "ACPI shutdown requested", (lv.VIR_DOMAIN_RUNNING, lv.VIR_DOMAIN_RUNNING_UNKNOWN)),
    ("shutting-down", "shutdown (guest-shutdown)", (lv.VIR_DOMAIN_SHUTDOWN, lv.VIR_DOMAIN_SHUTDOWN_USER)),
    ("stopped", "destroyed", (lv.VIR_DOMAIN_SHUTOFF, lv.VIR_DOMAIN_SHUTOFF_DESTROYED)),
    ("stopped", "guest did not shut down within 60s; destroyed",
     (lv.VIR_DOMAIN_SHUTOFF, lv.VIR_DOMAIN_SHUTOFF_DESTROYED)),
    ("stopped", "guest shut down", (lv.VIR_DOMAIN_SHUTOFF, lv.VIR_DOMAIN_SHUTOFF_SHUTDOWN)),
    ("stopped", "failed to start: exit 1", (lv.VIR_DOMAIN_SHUTOFF, lv.VIR_DOMAIN_SHUTOFF_FAILED)),
    ("crashed", "killed by signal 9", (lv.VIR_DOMAIN_SHUTOFF, lv.VIR_DOMAIN_SHUTOFF_CRASHED)),
])
def test_kvmd_state_and_reason_map_to_libvirt_state_and_reason(state, reason, expected):
    assert states.to_libvirt(state, reason) == expected


def info(state: str, persistent: bool) -> dict:
    return {"state": state, "reason": "", "persistent": persistent}


def test_list_filters_follow_libvirt_flag_groups():
    run_p, off_p, run_t = info("running", True), info("defined", True), info("running", False)
    assert all(states.list_flags_match(0, i) for i in (run_p, off_p, run_t))
    active = lv.VIR_CONNECT_LIST_DOMAINS_ACTIVE
    assert [states.list_flags_match(active, i) for i in (run_p, off_p, run_t)] == [True, False, True]
    pers = lv.VIR_CONNECT_LIST_DOMAINS_PERSISTENT | lv.VIR_CONNECT_LIST_DOMAINS_INACTIVE
    assert [states.list_flags_match(pers, i) for i in (run_p, off_p, run_t)] == [False, True, False]
    assert states.list_flags_match(lv.VIR_CONNECT_LIST_DOMAINS_SHUTOFF, off_p)
    assert not states.list_flags_match(lv.VIR_CONNECT_LIST_DOMAINS_PAUSED, run_p)
    assert not states.list_flags_match(lv.VIR_CONNECT_LIST_DOMAINS_HAS_SNAPSHOT, run_p)
    assert states.list_flags_match(lv.VIR_CONNECT_LIST_DOMAINS_NO_AUTOSTART, run_p)


E = lv


@pytest.mark.parametrize("state,previous,reason,expected", [
    ("running", "starting", "booted",
     [(E.VIR_DOMAIN_EVENT_RESUMED, E.VIR_DOMAIN_EVENT_RESUMED_UNPAUSED),
      (E.VIR_DOMAIN_EVENT_STARTED, E.VIR_DOMAIN_EVENT_STARTED_BOOTED)]),
    ("paused", "starting", "started paused",
     [(E.VIR_DOMAIN_EVENT_STARTED, E.VIR_DOMAIN_EVENT_STARTED_BOOTED),
      (E.VIR_DOMAIN_EVENT_SUSPENDED, E.VIR_DOMAIN_EVENT_SUSPENDED_PAUSED)]),
    ("paused", "running", "paused", [(E.VIR_DOMAIN_EVENT_SUSPENDED, E.VIR_DOMAIN_EVENT_SUSPENDED_PAUSED)]),
    ("running", "paused", "resumed", [(E.VIR_DOMAIN_EVENT_RESUMED, E.VIR_DOMAIN_EVENT_RESUMED_UNPAUSED)]),
    ("shutting-down", "running", "ACPI shutdown requested", []),
    ("shutting-down", "running", "shutdown (guest-shutdown)",
     [(E.VIR_DOMAIN_EVENT_SHUTDOWN, E.VIR_DOMAIN_EVENT_SHUTDOWN_GUEST)]),
    ("shutting-down", "running", "shutdown (host-qmp-quit)",
     [(E.VIR_DOMAIN_EVENT_SHUTDOWN, E.VIR_DOMAIN_EVENT_SHUTDOWN_HOST)]),
    ("stopped", "shutting-down", "guest shut down",
     [(E.VIR_DOMAIN_EVENT_STOPPED, E.VIR_DOMAIN_EVENT_STOPPED_SHUTDOWN)]),
    ("stopped", "running", "destroyed",
     [(E.VIR_DOMAIN_EVENT_SHUTDOWN, E.VIR_DOMAIN_EVENT_SHUTDOWN_HOST),
      (E.VIR_DOMAIN_EVENT_STOPPED, E.VIR_DOMAIN_EVENT_STOPPED_DESTROYED)]),
    ("stopped", "starting", "failed to start: boom",
     [(E.VIR_DOMAIN_EVENT_STOPPED, E.VIR_DOMAIN_EVENT_STOPPED_FAILED)]),
    ("crashed", "running", "killed by signal 9",
     [(E.VIR_DOMAIN_EVENT_STOPPED, E.VIR_DOMAIN_EVENT_STOPPED_CRASHED)]),
    ("starting", "defined", "starting", []),
    ("running", "defined", "re-attached", []),
])
def test_state_changes_become_libvirts_lifecycle_events_in_libvirts_order(state, previous, reason, expected):
    assert events.lifecycle(state, previous, reason) == expected
    translated = events.translate({"type": "state", "state": state, "previous": previous, "reason": reason})
    assert translated == [(E.VIR_DOMAIN_EVENT_ID_LIFECYCLE, pair) for pair in expected]


def test_qemu_events_become_reboot_device_removed_and_io_error_events():
    assert events.translate({"type": "qmp", "event": "RESET", "data": {}}) == [(E.VIR_DOMAIN_EVENT_ID_REBOOT, ())]
    assert events.translate({"type": "qmp", "event": "DEVICE_DELETED", "data": {"device": "disk-vdb"}}) == [
        (E.VIR_DOMAIN_EVENT_ID_DEVICE_REMOVED, ("disk-vdb",))]
    io = events.translate({"type": "qmp", "event": "BLOCK_IO_ERROR",
                           "data": {"device": "", "node-name": "fmt-vda", "action": "stop", "nospace": True}})
    assert io == [(E.VIR_DOMAIN_EVENT_ID_IO_ERROR, ("", "fmt-vda", E.VIR_DOMAIN_EVENT_IO_ERROR_PAUSE)),
                  (E.VIR_DOMAIN_EVENT_ID_IO_ERROR_REASON, ("", "fmt-vda", E.VIR_DOMAIN_EVENT_IO_ERROR_PAUSE, "enospc"))]
    # the connection turns the kvmd device id in those places into the device's libvirt alias
    assert events.ALIAS_ARG == {E.VIR_DOMAIN_EVENT_ID_DEVICE_REMOVED: 0, E.VIR_DOMAIN_EVENT_ID_IO_ERROR: 1,
                                E.VIR_DOMAIN_EVENT_ID_IO_ERROR_REASON: 1}
    assert events.device_key("fmt-vda") == ("disk", "vda") and events.device_key("nic-lan") == ("nic", "lan")
    assert events.default_alias("disk-data") == "ua-data" and events.default_alias("other") == "other"
    assert events.translate({"type": "qmp", "event": "POWERDOWN", "data": {}}) == []
    assert events.translate({"type": "disconnected"}) == []
