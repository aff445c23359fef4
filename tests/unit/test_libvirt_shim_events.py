"""The shim's libvirt event loop (virEventRunDefaultImpl, timers) and callback registry."""

from __future__ import annotations

import threading
import time

import pytest

import compat.libvirt as lv
from compat.virt import events


def test_run_once_runs_posted_callbacks_in_order():
    loop = events.DefaultLoop()
    seen = []
    loop.post(lambda: seen.append(1))
    loop.post(lambda: seen.append(2))
    loop.run_once()
    assert seen == [1, 2]


def test_run_once_blocks_until_something_is_posted_from_another_thread():
    loop = events.DefaultLoop()
    seen = []
    t = threading.Timer(0.05, lambda: loop.post(lambda: seen.append("late")))
    t.start()
    started = time.monotonic()
    loop.run_once()
    assert seen == ["late"] and time.monotonic() - started >= 0.04
    t.join()


def test_timers_fire_repeatedly_until_removed_and_disabled_ones_never():
    loop = events.DefaultLoop()
    fired = []
    tid = loop.add_timeout(0, lambda timer, opaque: fired.append((timer, opaque)), "op")
    off = loop.add_timeout(-1, lambda timer, opaque: fired.append("never"), None)
    loop.run_once()
    loop.run_once()
    assert fired == [(tid, "op"), (tid, "op")]
    assert loop.remove_timeout(tid) == 0
    assert loop.remove_timeout(tid) == -1
    loop.update_timeout(off, 10)
    loop.run_once()
    assert fired[-1] == "never"


def test_a_failing_callback_does_not_stop_the_others(capsys):
    loop = events.DefaultLoop()
    seen = []

    def bad():
        raise RuntimeError("callback bug")

    loop.post(bad)
    loop.post(lambda: seen.append("ok"))
    loop.run_once()
    assert seen == ["ok"]
    assert "callback bug" in capsys.readouterr().err


def test_callback_registrations_match_by_event_and_domain():
    regs = events.Callbacks()
    a = regs.add(lv.VIR_DOMAIN_EVENT_ID_LIFECYCLE, None, print, None)
    b = regs.add(lv.VIR_DOMAIN_EVENT_ID_LIFECYCLE, "u-1", print, None)
    regs.add(lv.VIR_DOMAIN_EVENT_ID_REBOOT, None, print, None)
    assert (a, b) == (0, 1)
    assert [r.id for r in regs.matching(lv.VIR_DOMAIN_EVENT_ID_LIFECYCLE, "u-1")] == [0, 1]
    assert [r.id for r in regs.matching(lv.VIR_DOMAIN_EVENT_ID_LIFECYCLE, "u-2")] == [0]
    regs.remove(a)
    with pytest.raises(lv.libvirtError) as exc:
        regs.remove(a)
    assert exc.value.get_error_code() == lv.VIR_ERR_INVALID_ARG
    with pytest.raises(lv.libvirtError):
        regs.add(999, None, print, None)


def test_dispatcher_thread_runs_posted_work_and_stops():
    d = events.Dispatcher("test-dispatcher")
    done = threading.Event()
    d.post(done.set)
    assert done.wait(2)
    d.stop()
