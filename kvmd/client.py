"""Clients of kvmd's API: `AsyncClient` (asyncio) and `Client`, a thin sync wrapper.

    with Client("/run/kvmd/kvmd.sock") as c:
        c.call("vm.create", spec={...})

A JSON-RPC error comes back as `ApiError` with the server's code, message and data.
After `events.subscribe`, notifications are queued and read with `next_event()`.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
from typing import Any

from kvmd.config import default_dirs


def default_socket() -> str:
    return os.environ.get("KVMD_SOCKET") or os.path.join(default_dirs()[1], "kvmd.sock")


class ApiError(Exception):
    def __init__(self, code: int, message: str, data: Any = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data


class ConnectionLost(ApiError):
    def __init__(self, message: str = "connection to kvmd lost"):
        super().__init__(-1, message)


class AsyncClient:
    def __init__(self, path: str | None = None):
        self.path = path or default_socket()
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future] = {}
        self._events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._task: asyncio.Task | None = None

    async def connect(self) -> AsyncClient:
        self._reader, self._writer = await asyncio.open_unix_connection(self.path, limit=16 * 1024 * 1024)
        self._task = asyncio.create_task(self._read_loop())
        return self

    async def _read_loop(self) -> None:
        assert self._reader is not None
        try:
            while True:
                line = await self._reader.readline()
                if not line:
                    break
                msg = json.loads(line)
                for m in msg if isinstance(msg, list) else [msg]:
                    if "method" in m and "id" not in m:
                        self._events.put_nowait(m.get("params", {}))
                        continue
                    fut = self._pending.pop(m.get("id"), None)
                    if fut is None and m.get("id") is None and "error" in m:
                        err = m["error"]
                        exc = ApiError(err.get("code", -1), err.get("message", ""), err.get("data"))
                        for f in self._pending.values():
                            if not f.done():
                                f.set_exception(exc)
                        self._pending.clear()
                        continue
                    if fut is not None and not fut.done():
                        fut.set_result(m)
        except (ConnectionError, OSError, ValueError):
            pass
        finally:
            for fut in self._pending.values():
                if not fut.done():
                    fut.set_exception(ConnectionLost())
            self._pending.clear()
            self._events.put_nowait({"type": "disconnected"})

    async def call(self, method: str, **params: Any) -> Any:
        if self._writer is None:
            await self.connect()
        assert self._writer is not None
        id_ = next(self._ids)
        fut = asyncio.get_running_loop().create_future()
        self._pending[id_] = fut
        self._writer.write(json.dumps({"jsonrpc": "2.0", "id": id_, "method": method, "params": params}).encode() + b"\n")
        await self._writer.drain()
        msg = await fut
        if "error" in msg:
            err = msg["error"]
            raise ApiError(err.get("code", -1), err.get("message", ""), err.get("data"))
        return msg.get("result")

    async def next_event(self, timeout: float | None = None) -> dict[str, Any]:
        return await asyncio.wait_for(self._events.get(), timeout)

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            try:
                await self._writer.wait_closed()
            except (ConnectionError, OSError):
                pass
            self._writer = None
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
            self._task = None

    async def __aenter__(self) -> AsyncClient:
        return await self.connect()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


class Client:
    """Synchronous wrapper: runs an AsyncClient on a private event loop."""

    def __init__(self, path: str | None = None):
        self._loop = asyncio.new_event_loop()
        self._client = AsyncClient(path)
        self.path = self._client.path

    def connect(self) -> Client:
        self._loop.run_until_complete(self._client.connect())
        return self

    def call(self, method: str, **params: Any) -> Any:
        return self._loop.run_until_complete(self._client.call(method, **params))

    def next_event(self, timeout: float | None = None) -> dict[str, Any]:
        return self._loop.run_until_complete(self._client.next_event(timeout))

    def close(self) -> None:
        if not self._loop.is_closed():
            self._loop.run_until_complete(self._client.close())
            self._loop.close()

    def __enter__(self) -> Client:
        return self.connect()

    def __exit__(self, *exc: object) -> None:
        self.close()
