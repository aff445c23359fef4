"""The shim's link to kvmd: one API connection, callable from any thread.

libvirt-python connections are shared by many threads (VDSM calls from its API, stats
and event threads at once), and one slow call — a destroy waiting for QEMU to exit, a
detach waiting for the guest — must not hold up the others. So each shim connection runs
a `kvmd.client.AsyncClient` on an event loop in a thread of its own, and `call()` from
any thread submits the request there and waits for its reply: requests are concurrent
on the one socket, as kvmd serves them. The same client subscribes to kvmd's events
when the connection has event callbacks; `on_event` is called on the loop thread and
must only hand the event over (events.py does).

An API error comes back as `libvirtError` with libvirt's code (errors.from_api); a socket
that cannot be reached or is lost as libvirt reports a dead remote connection
(VIR_ERR_SYSTEM_ERROR / VIR_ERR_INTERNAL_ERROR from VIR_FROM_RPC).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import Callable
from typing import Any

from compat.virt import constants as c
from compat.virt import errors
from kvmd.client import ApiError, AsyncClient

EventSink = Callable[[dict[str, Any]], None]


class Transport:
    def __init__(self, socket_path: str):
        self.path = socket_path
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"kvmd-shim:{socket_path}",
                                        daemon=True)
        self._thread.start()
        self._client = AsyncClient(socket_path)
        self._pump: asyncio.Task | None = None
        self.closed = False
        self.lost = False
        self.on_lost: Callable[[], None] | None = None
        try:
            self._run(self._client.connect())
        except OSError as e:
            self._stop_loop()
            raise errors.make(c.VIR_ERR_SYSTEM_ERROR,
                              f"Failed to connect socket to '{socket_path}': {e.strerror or e}",
                              c.VIR_FROM_RPC) from None

    def _run(self, coro: Any) -> Any:
        if threading.current_thread() is self._thread:
            coro.close()
            raise errors.make(c.VIR_ERR_INTERNAL_ERROR, "shim call from its own I/O thread", c.VIR_FROM_RPC)
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def call(self, method: str, **params: Any) -> Any:
        """kvmd API `method`; its errors as libvirtError with libvirt's codes."""
        if self.closed:
            raise errors.make(c.VIR_ERR_INVALID_CONN, method, c.VIR_FROM_NONE)
        try:
            return self._run(self._client.call(method, **params))
        except ApiError as e:
            if e.code == -1:  # kvmd.client.ConnectionLost
                self.lost = True
            raise errors.from_api(e.code, e.message, e.data) from None
        except (OSError, concurrent.futures.CancelledError) as e:
            self.lost = True
            raise errors.make(c.VIR_ERR_INTERNAL_ERROR, f"client socket is closed: {e}", c.VIR_FROM_RPC) from None

    @property
    def alive(self) -> bool:
        return not self.closed and not self.lost

    # -- events ----------------------------------------------------------------------------

    def subscribe(self, sink: EventSink) -> None:
        """Start passing kvmd's events to `sink` (on the loop thread); idempotent."""
        if self._pump is not None:
            return
        self.call("events.subscribe")

        async def start() -> asyncio.Task:
            return asyncio.create_task(self._pump_events(sink))

        self._pump = self._run(start())

    async def _pump_events(self, sink: EventSink) -> None:
        while True:
            event = await self._client.next_event()
            if event.get("type") == "disconnected":
                self.lost = True
                if self.on_lost is not None and not self.closed:
                    self.on_lost()
                return
            sink(event)

    # -- teardown ----------------------------------------------------------------------------

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True

        async def shut() -> None:
            if self._pump is not None:
                self._pump.cancel()
                with contextlib.suppress(BaseException):
                    await self._pump
            await self._client.close()

        with contextlib.suppress(Exception):
            self._run(shut())
        self._stop_loop()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        if threading.current_thread() is not self._thread:
            self._thread.join(5)
            if not self._loop.is_running():
                self._loop.close()
