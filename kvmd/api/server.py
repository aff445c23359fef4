"""The API transport: an asyncio unix-socket server speaking line-framed JSON-RPC 2.0.

The socket is created mode 0600 (or 0660 with a configured group) and every connection's
peer credentials (SO_PEERCRED) are checked: only the daemon's own user and root may
call it. Requests on one connection run concurrently (a long `vm.shutdown` does not hold
up a `vm.list`); responses carry the request id. `events.subscribe` turns a connection
into an event stream: every VM state change is sent to it as an `event` notification.
Malformed input gets a JSON-RPC error and the connection (and the daemon) carry on.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import logging
import os
import socket
import struct
from typing import Any

from kvmd import errors
from kvmd.api import protocol
from kvmd.api.methods import Methods
from kvmd.errors import KvmdError
from kvmd.manager import Manager

log = logging.getLogger(__name__)


def peer_uid(sock: socket.socket) -> int:
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", creds)
    return uid


class Connection:
    def __init__(self, server: Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.server = server
        self.reader = reader
        self.writer = writer
        self.tasks: set[asyncio.Task] = set()
        self.subscribed = False
        self.closed = False

    def send(self, msg: Any) -> None:
        if self.closed:
            return
        try:
            self.writer.write(protocol.encode(msg))
        except (ConnectionError, RuntimeError):
            self.closed = True

    def on_event(self, event: dict[str, Any]) -> None:
        self.send(protocol.notification("event", event))

    async def serve(self) -> None:
        try:
            while not self.closed:
                try:
                    line = await self.reader.readuntil(b"\n")
                except asyncio.IncompleteReadError as e:
                    line = e.partial
                    if not line.strip():
                        break
                except asyncio.LimitOverrunError:
                    self.send(protocol.error_response(None, errors.INVALID_REQUEST, "request too large"))
                    break
                if not line.strip():
                    continue
                task = asyncio.create_task(self.handle_line(line))
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)
                await self.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            self.closed = True
            if self.subscribed:
                self.server.manager.unsubscribe(self.on_event)
            # let in-flight requests finish on the daemon side; nobody reads the replies
            with contextlib.suppress(Exception):
                self.writer.close()

    async def drain(self) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            await self.writer.drain()

    async def handle_line(self, line: bytes) -> None:
        items, is_batch = protocol.parse_line(line)
        replies = await asyncio.gather(*(self.handle_one(item) for item in items))
        replies = [r for r in replies if r is not None]
        if is_batch:
            if replies:
                self.send(replies)
        elif replies:
            self.send(replies[0])
        await self.drain()

    async def handle_one(self, item: protocol.Request | dict[str, Any]) -> dict[str, Any] | None:
        if isinstance(item, dict):
            return item
        try:
            if item.method == "events.subscribe":
                if not self.subscribed:
                    self.server.manager.subscribe(self.on_event)
                    self.subscribed = True
                result: Any = {"subscribed": True}
            elif item.method == "events.unsubscribe":
                if self.subscribed:
                    self.server.manager.unsubscribe(self.on_event)
                    self.subscribed = False
                result = {"subscribed": False}
            elif item.method == "api.methods":
                result = sorted(self.server.methods.names() + ["events.subscribe", "events.unsubscribe", "api.methods"])
            else:
                result = await self.server.methods.call(item.method, item.params)
        except KvmdError as e:
            return None if item.is_notification else {"jsonrpc": "2.0", "id": item.id, "error": e.to_json()}
        except Exception as e:  # a bug must not take the daemon down
            log.exception("internal error in %s", item.method)
            return None if item.is_notification else protocol.error_response(
                item.id, errors.INTERNAL_ERROR, f"internal error: {type(e).__name__}: {e}")
        return None if item.is_notification else protocol.result_response(item.id, result)


class Listening:
    """What the unix API server and the TCP migration-peer listener share: the set of
    live connections, serving one, and closing them all."""

    _server: asyncio.base_events.Server | None = None
    connections: set[Connection]

    async def serve_connection(self, conn: Connection) -> None:
        self.connections.add(conn)
        try:
            await conn.serve()
        finally:
            self.connections.discard(conn)

    async def close_listening(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)
        for conn in list(self.connections):
            conn.closed = True
            conn.writer.close()


class Server(Listening):
    def __init__(self, manager: Manager, path: str, group: str | None = None):
        self.manager = manager
        self.methods = Methods(manager)
        self.path = path
        self.group = group
        self.uid = os.getuid()
        self._server: asyncio.base_events.Server | None = None
        self.connections: set[Connection] = set()

    async def start(self) -> None:
        # bind and listen under a temporary name, then rename into place: the socket
        # appears already listening with its final mode (no refused connect, no window
        # with a wider mode)
        tmp = self.path + ".new"
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            sock.bind(tmp)
        except OSError:
            sock.close()
            raise
        finally:
            os.umask(old)
        if self.group:
            os.chown(tmp, -1, grp.getgrnam(self.group).gr_gid)
            os.chmod(tmp, 0o660)
        else:
            os.chmod(tmp, 0o600)
        self._server = await asyncio.start_unix_server(self._accept, sock=sock, limit=protocol.MAX_LINE)
        os.rename(tmp, self.path)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        uid = peer_uid(sock)
        if uid not in (0, self.uid):
            writer.write(protocol.encode(protocol.error_response(
                None, errors.PERMISSION_DENIED, f"permission denied: uid {uid} may not use this kvmd (owner uid {self.uid})")))
            with contextlib.suppress(Exception):
                await writer.drain()
                # let a request already on its way arrive before closing: closing with
                # unread data would reset the connection and the peer might never read why
                await asyncio.wait_for(reader.readline(), 2)
            writer.close()
            return
        await self.serve_connection(Connection(self, reader, writer))

    async def close(self) -> None:
        await self.close_listening()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
