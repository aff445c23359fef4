"""Domain events: kvmd's event stream turned into libvirt's, and libvirt's event loop API.

kvmd pushes `{type: "state", vm, uuid, state, previous, reason}` on every state change
and `{type: "qmp", vm, uuid, event, data}` for some QEMU events (docs/api.md, Events).
`translate` maps each onto the libvirt events a libvirtd would have raised for the same
change, as (event id, callback arguments) pairs: a start becomes
RESUMED/UNPAUSED then STARTED/BOOTED (libvirt's own order), a destroy
SHUTDOWN/HOST then STOPPED/DESTROYED, a QEMU RESET becomes VIR_DOMAIN_EVENT_ID_REBOOT, etc.

Delivery follows libvirt-python: once `virEventRegisterDefaultImpl()` was called, the
callbacks run inside `virEventRunDefaultImpl()`, in whichever thread calls it (VDSM runs
one that loops on it), together with the timers of `virEventAddTimeout`. Without a
registered loop, each connection delivers from a dispatcher thread of its own. Callbacks
never run on the thread that reads kvmd's socket, so they may call back into the shim.
"""

from __future__ import annotations

import collections
import itertools
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from compat.virt import constants as c
from compat.virt import errors

Dispatch = Callable[[], None]


# -- kvmd event -> libvirt events ---------------------------------------------------------

def _shutdown_detail(reason: str) -> int:
    """SHUTDOWN event detail from kvmd's "shutdown (<QEMU's reason>)"."""
    if "guest" in reason:
        return c.VIR_DOMAIN_EVENT_SHUTDOWN_GUEST
    if "host" in reason:
        return c.VIR_DOMAIN_EVENT_SHUTDOWN_HOST
    return c.VIR_DOMAIN_EVENT_SHUTDOWN_FINISHED


def lifecycle(state: str, previous: str, reason: str) -> list[tuple[int, int]]:
    """libvirt lifecycle (event, detail) pairs for one kvmd state change, in order."""
    E = c  # noqa: N806  (short alias for the constants)
    if reason.startswith("re-attached"):
        return []  # kvmd restarted and found the VM: nothing happened to the guest
    if state == "migrating-in":  # an incoming domain (also a snapshot's memory being restored)
        return [(E.VIR_DOMAIN_EVENT_STARTED, E.VIR_DOMAIN_EVENT_STARTED_MIGRATED)] if previous == "starting" else []
    if previous == "migrating-in" and state in ("running", "paused"):
        if reason.startswith("reverted to snapshot"):
            return [(E.VIR_DOMAIN_EVENT_RESUMED, E.VIR_DOMAIN_EVENT_RESUMED_FROM_SNAPSHOT)] if state == "running" else []
        if state == "running":
            return [(E.VIR_DOMAIN_EVENT_RESUMED, E.VIR_DOMAIN_EVENT_RESUMED_MIGRATED)]
        return [(E.VIR_DOMAIN_EVENT_SUSPENDED, E.VIR_DOMAIN_EVENT_SUSPENDED_MIGRATED)]
    if previous == "migrating-out" and state in ("running", "paused"):
        return []  # the migration failed or was cancelled: the guest ran on here all along
    if state == "running":
        if previous == "starting":
            return [(E.VIR_DOMAIN_EVENT_RESUMED, E.VIR_DOMAIN_EVENT_RESUMED_UNPAUSED),
                    (E.VIR_DOMAIN_EVENT_STARTED, E.VIR_DOMAIN_EVENT_STARTED_BOOTED)]
        if previous in ("paused", "shutting-down"):
            return [(E.VIR_DOMAIN_EVENT_RESUMED, E.VIR_DOMAIN_EVENT_RESUMED_UNPAUSED)]
        return []
    if state == "paused":
        out = []
        if previous == "starting":
            out.append((E.VIR_DOMAIN_EVENT_STARTED, E.VIR_DOMAIN_EVENT_STARTED_BOOTED))
        detail = E.VIR_DOMAIN_EVENT_SUSPENDED_IOERROR if "error" in reason.lower() else E.VIR_DOMAIN_EVENT_SUSPENDED_PAUSED
        return out + [(E.VIR_DOMAIN_EVENT_SUSPENDED, detail)]
    if state == "shutting-down":
        if reason.startswith("shutdown ("):  # QEMU's SHUTDOWN event: the guest is going down
            return [(E.VIR_DOMAIN_EVENT_SHUTDOWN, _shutdown_detail(reason))]
        return []  # only requested (ACPI button, agent): the guest may ignore it
    if state == "stopped":
        if previous in ("defined", "stopped", "crashed"):
            return []
        if reason.startswith("failed to start"):
            return [(E.VIR_DOMAIN_EVENT_STOPPED, E.VIR_DOMAIN_EVENT_STOPPED_FAILED)]
        if reason.startswith("migrated to"):  # QEMU pauses the source for the switch-over, then ends
            return [(E.VIR_DOMAIN_EVENT_SUSPENDED, E.VIR_DOMAIN_EVENT_SUSPENDED_MIGRATED),
                    (E.VIR_DOMAIN_EVENT_STOPPED, E.VIR_DOMAIN_EVENT_STOPPED_MIGRATED)]
        if reason.endswith("destroyed"):
            # QEMU reports a SHUTDOWN (host) on the SIGTERM of a destroy; libvirt passes it on
            return [(E.VIR_DOMAIN_EVENT_SHUTDOWN, E.VIR_DOMAIN_EVENT_SHUTDOWN_HOST),
                    (E.VIR_DOMAIN_EVENT_STOPPED, E.VIR_DOMAIN_EVENT_STOPPED_DESTROYED)]
        if previous == "migrating-in":  # the incoming migration failed or was abandoned
            return [(E.VIR_DOMAIN_EVENT_STOPPED, E.VIR_DOMAIN_EVENT_STOPPED_FAILED)]
        return [(E.VIR_DOMAIN_EVENT_STOPPED, E.VIR_DOMAIN_EVENT_STOPPED_SHUTDOWN)]
    if state == "crashed":
        if previous == "migrating-in":
            return [(E.VIR_DOMAIN_EVENT_STOPPED, E.VIR_DOMAIN_EVENT_STOPPED_FAILED)]
        return [(E.VIR_DOMAIN_EVENT_STOPPED, E.VIR_DOMAIN_EVENT_STOPPED_CRASHED)]
    return []


_IO_ACTIONS = {"stop": c.VIR_DOMAIN_EVENT_IO_ERROR_PAUSE, "report": c.VIR_DOMAIN_EVENT_IO_ERROR_REPORT,
               "ignore": c.VIR_DOMAIN_EVENT_IO_ERROR_NONE}


def device_key(device: str) -> tuple[str, str] | None:
    """("disk" | "nic", kvmd name) of a QEMU device/node id (`disk-NAME`, `fmt-NAME`, `nic-NAME`)."""
    for prefix, kind in (("disk-", "disk"), ("fmt-", "disk"), ("file-", "disk"), ("nic-", "nic")):
        if device.startswith(prefix):
            return kind, device[len(prefix):]
    return None


def default_alias(device: str) -> str:
    """The alias when the device's XML record has none: `ua-NAME` (how kvmd names XML devices)."""
    key = device_key(device)
    return f"ua-{key[1]}" if key else device


# event ids whose first callback argument after `dom` (or second, for IO errors) is a
# device alias: translate() puts the kvmd device id there, the connection resolves it
ALIAS_ARG = {c.VIR_DOMAIN_EVENT_ID_DEVICE_REMOVED: 0, c.VIR_DOMAIN_EVENT_ID_IO_ERROR: 1,
             c.VIR_DOMAIN_EVENT_ID_IO_ERROR_REASON: 1}


def translate(event: dict[str, Any]) -> list[tuple[int, tuple[Any, ...]]]:
    """(libvirt event id, callback arguments after `dom`) for one kvmd event.

    Device aliases are given as kvmd's QEMU device id (`disk-NAME`); see ALIAS_ARG.
    """
    kind = event.get("type")
    if kind == "state":
        return [(c.VIR_DOMAIN_EVENT_ID_LIFECYCLE, pair)
                for pair in lifecycle(event.get("state", ""), event.get("previous", ""), event.get("reason") or "")]
    if kind != "qmp":
        return []
    name, data = event.get("event"), event.get("data") or {}
    if name == "RESET":
        return [(c.VIR_DOMAIN_EVENT_ID_REBOOT, ())]
    if name == "DEVICE_DELETED" and data.get("device"):
        return [(c.VIR_DOMAIN_EVENT_ID_DEVICE_REMOVED, (data["device"],))]
    if name == "BLOCK_IO_ERROR":
        alias = data.get("device") or data.get("node-name") or ""
        action = _IO_ACTIONS.get(data.get("action", ""), c.VIR_DOMAIN_EVENT_IO_ERROR_NONE)
        reason = "enospc" if data.get("nospace") else "eio"
        return [(c.VIR_DOMAIN_EVENT_ID_IO_ERROR, ("", alias, action)),
                (c.VIR_DOMAIN_EVENT_ID_IO_ERROR_REASON, ("", alias, action, reason))]
    return []


# -- callback registrations of one connection -------------------------------------------

@dataclass
class Registration:
    id: int
    event_id: int
    uuid: str | None  # None: every domain
    cb: Callable[..., Any]
    opaque: Any


class Callbacks:
    """The domainEventRegisterAny registrations of one connection."""

    def __init__(self) -> None:
        self._ids = itertools.count(0)
        self._regs: dict[int, Registration] = {}
        self._lock = threading.Lock()

    def add(self, event_id: int, uuid: str | None, cb: Callable[..., Any], opaque: Any) -> int:
        if not 0 <= event_id <= c.VIR_DOMAIN_EVENT_ID_MEMORY_DEVICE_SIZE_CHANGE:
            raise errors.make(c.VIR_ERR_INVALID_ARG, f"unsupported event ID {event_id}", c.VIR_FROM_EVENT)
        with self._lock:
            reg = Registration(next(self._ids), event_id, uuid, cb, opaque)
            self._regs[reg.id] = reg
            return reg.id

    def remove(self, callback_id: int) -> None:
        with self._lock:
            if self._regs.pop(callback_id, None) is None:
                raise errors.make(c.VIR_ERR_INVALID_ARG, f"event callback id {callback_id} not registered",
                                  c.VIR_FROM_NONE)

    def __bool__(self) -> bool:
        return bool(self._regs)

    def matching(self, event_id: int, uuid: str) -> list[Registration]:
        with self._lock:
            return [r for r in self._regs.values()
                    if r.event_id == event_id and (r.uuid is None or r.uuid == uuid)]


# -- the default event loop (virEventRegisterDefaultImpl / virEventRunDefaultImpl) ------

@dataclass
class _Timer:
    interval_ms: int
    cb: Callable[[int, Any], Any]
    opaque: Any
    due: float


class DefaultLoop:
    """libvirt's default event loop, reduced to what the shim needs: dispatch + timers."""

    def __init__(self) -> None:
        self.registered = False
        self._cond = threading.Condition()
        self._pending: collections.deque[Dispatch] = collections.deque()
        self._timers: dict[int, _Timer] = {}
        self._timer_ids = itertools.count(1)

    def post(self, fn: Dispatch) -> None:
        with self._cond:
            self._pending.append(fn)
            self._cond.notify_all()

    def add_timeout(self, interval_ms: int, cb: Callable[[int, Any], Any], opaque: Any) -> int:
        with self._cond:
            tid = next(self._timer_ids)
            self._timers[tid] = _Timer(interval_ms, cb, opaque, time.monotonic() + max(interval_ms, 0) / 1000)
            self._cond.notify_all()
            return tid

    def update_timeout(self, tid: int, interval_ms: int) -> None:
        with self._cond:
            t = self._timers.get(tid)
            if t is not None:
                t.interval_ms = interval_ms
                t.due = time.monotonic() + max(interval_ms, 0) / 1000
                self._cond.notify_all()

    def remove_timeout(self, tid: int) -> int:
        with self._cond:
            return 0 if self._timers.pop(tid, None) is not None else -1

    def run_once(self) -> int:
        """One iteration: wait for an event or a timer, run everything that is due."""
        with self._cond:
            while True:
                now = time.monotonic()
                due = [tid for tid, t in self._timers.items() if t.interval_ms >= 0 and t.due <= now]
                if self._pending or due:
                    break
                waits = [t.due - now for t in self._timers.values() if t.interval_ms >= 0]
                self._cond.wait(min(waits) if waits else None)
            work = list(self._pending)
            self._pending.clear()
            fired = []
            for tid in due:
                t = self._timers[tid]
                t.due = now + max(t.interval_ms, 0) / 1000
                fired.append((tid, t))
        for tid, t in fired:
            _safely(lambda: t.cb(tid, t.opaque))  # noqa: B023  (called right away)
        for fn in work:
            _safely(fn)
        return 0


LOOP = DefaultLoop()


def _safely(fn: Dispatch) -> None:
    try:
        fn()
    except Exception:  # a failing callback must not stop event delivery (libvirt ignores it too)
        import traceback
        traceback.print_exc()


class Dispatcher:
    """Where one connection's callbacks run when no default loop is registered: a thread."""

    def __init__(self, name: str) -> None:
        self._queue: queue.SimpleQueue[Dispatch | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def post(self, fn: Dispatch) -> None:
        self._queue.put(fn)

    def _run(self) -> None:
        while True:
            fn = self._queue.get()
            if fn is None:
                return
            _safely(fn)

    def stop(self) -> None:
        self._queue.put(None)
        if threading.current_thread() is not self._thread:
            self._thread.join(5)
