"""The QEMU guest agent client: one session per VM on its `org.qemu.guest_agent.0` channel.

QEMU serves the channel as a unix socket (`VM.paths.qga`) and relays bytes to whatever
runs in the guest. The protocol is QMP without greeting or capability negotiation, so
this is `qemu.qmp.QMPClient` with `await_greeting = False` and `negotiate = False`.
What makes an agent different from a QMP monitor:

- Nobody may be listening. QEMU accepts the connection whether or not an agent runs in
  the guest, so only a reply proves one does: every call has a timeout, and a silent
  agent is `AgentUnresponsive` (a stable error code), never a hang.
- Replies can be stale. A command that timed out may still be answered later, and the
  channel may hold replies meant for an earlier client. After each (re)connect the
  session is resynchronised with `guest-sync` and a random id, and every message carries
  an id that is never reused for the life of the `GuestAgent` (one `QMPClient` object
  is reconnected, so its id counter keeps counting).
- One command at a time (an `asyncio.Lock` per VM): the agent is single-threaded and
  some commands (fsfreeze) change what the next one may do.
- `guest-shutdown` never answers on success: it is sent, given a moment to fail, and the
  session dropped; the VM's own lifecycle (SHUTDOWN event, exit) tells the rest.

After a timeout or a lost connection the session is dropped and the next call starts
afresh (connect + guest-sync). `for_vm(vm)` keeps one `GuestAgent` per VM run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import weakref
from typing import Any, Protocol

from qemu.qmp import ExecInterruptedError, ExecuteError, QMPError, Runstate

from kvmd.errors import AgentError, AgentUnresponsive, NotSupported, WrongState
from kvmd.qemu.qmpclient import LazyLoggingQMPClient

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 5.0
# guest-fsfreeze-freeze syncs every filesystem first: it may take long on a busy guest.
LONG_COMMANDS = {"guest-fsfreeze-freeze": 60.0, "guest-fsfreeze-thaw": 30.0}
# How long to listen for an error reply to guest-shutdown (success has no reply).
SHUTDOWN_ERROR_GRACE = 0.5


class _VMLike(Protocol):  # what this module needs of kvmd.vm.VM
    @property
    def name(self) -> str: ...

    paths: Any
    proc: Any
    live_spec: Any
    spec: Any


class GuestAgent:
    """A resynchronising, serialised, time-bounded session with one guest's agent."""

    def __init__(self, name: str, path: str):
        self.name = name
        self.path = path
        self.lock = asyncio.Lock()
        self.client = LazyLoggingQMPClient(f"{name}-qga")
        self.client.await_greeting = False
        self.client.negotiate = False
        self._synced = False

    async def call(self, cmd: str, args: dict[str, Any] | None = None,
                   timeout: float | None = None) -> Any:
        """Run one agent command; AgentUnresponsive on silence, AgentError on refusal."""
        if timeout is None:
            timeout = LONG_COMMANDS.get(cmd, DEFAULT_TIMEOUT)
        deadline = time.monotonic() + timeout
        async with self.lock:
            await self._ensure(deadline, timeout)
            return await self._execute(cmd, args, deadline, timeout)

    async def shutdown(self, mode: str = "powerdown", limit: float | None = None) -> None:
        """Send guest-shutdown after checking the agent answers; do not wait for a reply.

        The agent gets DEFAULT_TIMEOUT to answer, or less if the caller's whole shutdown
        has less (`limit`, its deadline in seconds), but never under half a second.
        """
        timeout = DEFAULT_TIMEOUT if limit is None else min(DEFAULT_TIMEOUT, max(limit, 0.5))
        deadline = time.monotonic() + timeout
        async with self.lock:
            await self._ensure(deadline, timeout)
            task = asyncio.ensure_future(self.client.execute("guest-shutdown", {"mode": mode}))
            done, _ = await asyncio.wait({task}, timeout=SHUTDOWN_ERROR_GRACE)
            try:
                if task in done:
                    exc = task.exception()
                    if isinstance(exc, ExecuteError):
                        raise AgentError(f"{self.name}: guest agent refused guest-shutdown: {exc}",
                                         {"name": self.name, "class": exc.error_class})
                    # no error reply: the guest went down (connection lost) or is going
            finally:
                task.add_done_callback(_consume)
                await self._drop()

    async def close(self) -> None:
        async with self.lock:
            await self._drop()

    # -- internals ---------------------------------------------------------------------

    def _unresponsive(self, timeout: float, what: str) -> AgentUnresponsive:
        return AgentUnresponsive(
            f"{self.name}: the guest agent did not answer {what} within {timeout:g}s "
            "(is qemu-ga running in the guest?)", {"name": self.name, "timeout": timeout})

    async def _ensure(self, deadline: float, timeout: float) -> None:
        """Connect and resynchronise unless a synchronised session is open."""
        if self._synced and self.client.runstate == Runstate.RUNNING:
            return
        await self._drop()
        try:
            await asyncio.wait_for(self.client.connect(self.path), max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            await self._drop()
            raise self._unresponsive(timeout, "the connection") from None
        except (QMPError, OSError) as e:
            await self._drop()
            raise AgentUnresponsive(f"{self.name}: cannot connect to the guest agent channel: {e}",
                                    {"name": self.name}) from None
        # Stale replies (other ids) are dropped by the client; a stale reply to a
        # reused id would carry the wrong token: try again with a fresh one.
        for _ in range(3):
            token = random.randrange(1, 2**31)
            got = await self._execute("guest-sync", {"id": token}, deadline, timeout)
            if got == token:
                self._synced = True
                return
            log.warning("%s: guest-sync answered %r, expected %r; retrying", self.name, got, token)
        await self._drop()
        raise AgentUnresponsive(f"{self.name}: cannot synchronise with the guest agent", {"name": self.name})

    async def _execute(self, cmd: str, args: dict[str, Any] | None, deadline: float,
                       timeout: float) -> Any:
        try:
            return await asyncio.wait_for(self.client.execute(cmd, args),
                                          max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            await self._drop()
            raise self._unresponsive(timeout, cmd) from None
        except ExecuteError as e:
            raise AgentError(f"{self.name}: guest agent: {cmd}: {e}",
                             {"name": self.name, "class": e.error_class}) from None
        except (ExecInterruptedError, QMPError, OSError, EOFError) as e:
            await self._drop()
            raise AgentUnresponsive(f"{self.name}: guest agent connection lost during {cmd} "
                                    f"({e or type(e).__name__})", {"name": self.name}) from None

    async def _drop(self) -> None:
        self._synced = False
        if self.client.runstate != Runstate.IDLE:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(self.client.disconnect(), 2)


def _consume(task: asyncio.Future) -> None:
    if not task.cancelled():
        task.exception()


_agents: weakref.WeakKeyDictionary[Any, tuple[int, GuestAgent]] = weakref.WeakKeyDictionary()


def for_vm(vm: _VMLike) -> GuestAgent:
    """The agent session of `vm`'s current run (a new QEMU process gets a new session)."""
    spec = vm.live_spec or vm.spec
    if vm.proc is None:
        raise WrongState(f"{vm.name!r} is not running", {"name": vm.name})
    if not spec.guest_agent:
        raise NotSupported(f"VM {vm.name!r} has no guest agent channel (spec guestAgent: false)",
                           {"name": vm.name})
    pid = vm.proc.pid
    entry = _agents.get(vm)
    if entry is None or entry[0] != pid:
        if entry is not None:
            old = entry[1]
            asyncio.ensure_future(old.close()).add_done_callback(_consume)
        entry = (pid, GuestAgent(vm.name, vm.paths.qga))
        _agents[vm] = entry
    return entry[1]
