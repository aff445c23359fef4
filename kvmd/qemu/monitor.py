"""One QMP session per VM, on `qemu.qmp.QMPClient` (never a hand-rolled QMP).

`Monitor` adds what the library leaves to its user: a timeout on every command (sized
per command: short for queries, long for block jobs and migration), an event callback
fed from the client's event stream, and a callback when the connection is lost (QEMU
exited, or closed the socket). A QMP socket serves one client at a time: kvmd is it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Awaitable, Callable
from typing import Any

from qemu.qmp import ConnectError, ExecuteError, QMPError, Runstate

from kvmd.errors import QemuFailure, Timeout
from kvmd.qemu.qmpclient import LazyLoggingQMPClient

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 10.0
# Commands that may legitimately take long; everything else is a quick query or action.
LONG_COMMANDS = {"blockdev-add": 60.0, "blockdev-del": 60.0, "transaction": 120.0,
                 "migrate-incoming": 60.0, "block-commit": 60.0, "blockdev-create": 120.0}

EventHandler = Callable[[str, dict[str, Any]], None]


class Monitor:
    """A connected QMP session with timeouts, an event callback and a lost callback."""

    def __init__(self, name: str, on_event: EventHandler | None = None,
                 on_lost: Callable[[], Awaitable[None] | None] | None = None,
                 timeout: float = DEFAULT_TIMEOUT):
        self.name = name
        self.timeout = timeout  # for commands not in LONG_COMMANDS (config qmpTimeout)
        self.client = LazyLoggingQMPClient(name)  # a QMPClient that logs lazily
        self._on_event = on_event
        self._on_lost = on_lost
        self._tasks: list[asyncio.Task] = []
        self._closing = False

    async def connect(self, address: str | socket.socket, timeout: float = DEFAULT_TIMEOUT) -> None:
        try:
            await asyncio.wait_for(self.client.connect(address), timeout)
        except asyncio.TimeoutError:
            with contextlib.suppress(Exception):
                await self.client.disconnect()
            raise Timeout(f"{self.name}: QMP did not answer within {timeout:g}s") from None
        except ConnectError as e:
            raise QemuFailure(f"{self.name}: cannot connect to QMP: {e}") from None
        self._tasks = [asyncio.create_task(self._pump_events(), name=f"qmp-events-{self.name}"),
                       asyncio.create_task(self._watch(), name=f"qmp-watch-{self.name}")]

    @property
    def connected(self) -> bool:
        return self.client.runstate == Runstate.RUNNING

    async def execute(self, cmd: str, args: dict[str, Any] | None = None,
                      timeout: float | None = None) -> Any:
        """Run one QMP command; QMP errors become QemuFailure, slowness becomes Timeout."""
        if timeout is None:
            timeout = max(LONG_COMMANDS.get(cmd, 0.0), self.timeout)
        try:
            async with asyncio.timeout(timeout):  # unlike wait_for, no extra task per command
                return await self.client.execute(cmd, args)
        except TimeoutError:
            raise Timeout(f"{self.name}: QMP command {cmd} timed out after {timeout:g}s") from None
        except ExecuteError as e:
            raise QemuFailure(f"{self.name}: {cmd}: {e.error.error.desc}", {"class": e.error_class}) from None
        except (QMPError, OSError, EOFError) as e:
            raise QemuFailure(f"{self.name}: {cmd} failed: QMP connection lost ({e or type(e).__name__})") from None

    def send_fd(self, fd: int) -> None:
        """Pass `fd` to QEMU (SCM_RIGHTS) for a following `getfd`/`add-fd`."""
        self.client.send_fd_scm(fd)

    async def _pump_events(self) -> None:
        try:
            async for event in self.client.events:
                if self._on_event:
                    try:
                        self._on_event(event["event"], dict(event.get("data", {})))
                    except Exception:  # a bad handler must not stop the stream
                        log.exception("%s: event handler failed for %s", self.name, event["event"])
        except asyncio.CancelledError:
            pass

    async def _watch(self) -> None:
        """Wait until the session leaves RUNNING, then report the loss once."""
        try:
            while self.client.runstate == Runstate.RUNNING:
                await self.client.runstate_changed()
        except asyncio.CancelledError:
            return
        if not self._closing and self._on_lost:
            res = self._on_lost()
            if asyncio.iscoroutine(res):
                await res

    async def close(self) -> None:
        """Disconnect without touching the VM (QEMU keeps running)."""
        self._closing = True
        me = asyncio.current_task()
        others = [t for t in self._tasks if t is not me]
        for task in others:
            task.cancel()
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await asyncio.wait_for(self.client.disconnect(), 5)
        for task in others:
            with contextlib.suppress(BaseException):
                await task
        self._tasks = []
