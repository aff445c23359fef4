"""kvmd's API on TCP, for migration peers only (`kvmd --listen-tcp HOST:PORT`, config `apiTcp`).

The unix socket stays the API for local clients. This listener exists so that a kvmd
on another host can drive a migration into this one: each connection first passes the
token handshake of `kvmd.migration.peer` (a connection that fails it, or stays silent
for `HANDSHAKE_TIMEOUT`, is closed), then speaks the same line-framed JSON-RPC as the
unix socket, restricted to `peer.PEER_METHODS`. Kept apart from `kvmd.migration`'s
other modules because it builds on the API server, which imports them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from kvmd import errors
from kvmd.api import protocol
from kvmd.api.methods import Methods
from kvmd.api.server import Connection, Listening
from kvmd.config import Config
from kvmd.errors import PermissionDenied
from kvmd.manager import Manager
from kvmd.migration import peer

log = logging.getLogger(__name__)


class PeerConnection(Connection):
    """An authenticated TCP connection: only the migration methods are served."""

    async def handle_one(self, item: protocol.Request | dict[str, Any]) -> dict[str, Any] | None:
        if not isinstance(item, dict) and item.method not in peer.PEER_METHODS:
            if item.is_notification:
                return None
            err = PermissionDenied(f"{item.method} is not offered to migration peers over TCP",
                                   {"method": item.method})
            return {"jsonrpc": "2.0", "id": item.id, "error": err.to_json()}
        return await super().handle_one(item)


class PeerListener(Listening):
    def __init__(self, manager: Manager, methods: Methods, host: str, port: int, token: bytes):
        self.manager = manager
        self.methods = methods
        self.host, self.port = host, port
        self._token = token
        self._server: asyncio.base_events.Server | None = None
        self.connections: set[PeerConnection] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, self.host, self.port, limit=protocol.MAX_LINE)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("API for migration peers on %s:%d (token authenticated)", self.host, self.port)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        who = writer.get_extra_info("peername")
        snonce, hello = peer.challenge()
        try:
            writer.write(hello)
            await writer.drain()
            line = await asyncio.wait_for(reader.readline(), peer.HANDSHAKE_TIMEOUT)
        except (TimeoutError, OSError):
            writer.close()
            return
        checked = peer.check_response(self._token, snonce, line)
        if checked is None:
            log.warning("migration peer %s failed the token handshake", who)
            with contextlib.suppress(OSError):
                writer.write(protocol.encode(protocol.error_response(
                    None, errors.PERMISSION_DENIED, "authentication failed (peer token)")))
                await writer.drain()
            writer.close()
            return
        req_id, proof = checked
        writer.write(protocol.encode(protocol.result_response(req_id, {"mac": proof})))
        await self.serve_connection(PeerConnection(self, reader, writer))  # type: ignore[arg-type]

    async def close(self) -> None:
        await self.close_listening()


async def start(manager: Manager, methods: Methods, cfg: Config) -> PeerListener | None:
    """Start the peer listener if `cfg.api_tcp` is set (its token must be readable)."""
    if not cfg.api_tcp:
        return None
    host, port = peer.split_host_port(cfg.api_tcp, "apiTcp.listen")
    listener = PeerListener(manager, methods, host, port, peer.load_token(cfg.peer_token_file))
    await listener.start()
    return listener
