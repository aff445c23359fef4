"""The asyncio STOMP 1.2 server carrying JSON-RPC, as the oVirt engine expects of VDSM.

One `StompServer` listens on TCP (plain for local use and tests, TLS with a configured
certificate in production). Per connection: CONNECT/STOMP → CONNECTED (version 1.2,
heart-beats negotiated and honoured both ways: the server beats at the agreed interval
and drops a client silent for twice its interval), SUBSCRIBE/UNSUBSCRIBE, SEND to a
request destination → JSON-RPC → MESSAGE to the subscribers of `reply-to`, DISCONNECT →
RECEIPT, any `receipt` header → RECEIPT, and an ERROR frame (then close, as STOMP
requires) for protocol errors. Requests run concurrently.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import ssl
from collections.abc import Awaitable, Callable

from vdsm.stomp.broker import Broker, Subscription
from vdsm.stomp.frames import Frame, FrameBuffer, FrameError, encode

log = logging.getLogger(__name__)

REQUEST_DESTINATIONS = ("jms.topic.vdsm_requests", "jms.topic.vdsm_irs_requests")
DEFAULT_RESPONSES = "jms.topic.vdsm_responses"
EVENTS_DESTINATION = "jms.queue.events"

RequestHandler = Callable[[bytes, dict[str, str]], Awaitable[bytes | None]]


def is_request_destination(dest: str) -> bool:
    return any(dest == d or dest.startswith(d + ".") for d in REQUEST_DESTINATIONS)


class ProtocolError(Exception):
    pass


class StompConnection:
    _ids = itertools.count(1)

    def __init__(self, server: StompServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.id = next(self._ids)
        self.server = server
        self.reader = reader
        self.writer = writer
        self.frames = FrameBuffer()
        self.connected = False
        self.closed = False
        self.send_interval = 0.0  # server -> client heart-beat, seconds
        self.recv_interval = 0.0  # client -> server heart-beat, seconds
        self._last_write = 0.0
        self._tasks: set[asyncio.Task] = set()

    def send(self, data: bytes) -> None:
        if self.closed:
            return
        try:
            self.writer.write(data)
            self._last_write = asyncio.get_running_loop().time()
        except (ConnectionError, RuntimeError):
            self.closed = True

    def error(self, message: str, detail: str = "", receipt: str | None = None) -> None:
        headers = {"message": message, "content-type": "text/plain"}
        if receipt:
            headers["receipt-id"] = receipt
        self.send(encode("ERROR", headers, (detail or message).encode()))

    async def run(self) -> None:
        try:
            while not self.closed:
                timeout = self.recv_interval * 2 if self.recv_interval else None
                try:
                    data = await asyncio.wait_for(self.reader.read(65536), timeout)
                except asyncio.TimeoutError:
                    log.info("stomp: connection %d silent for %.1fs; dropping it", self.id, timeout)
                    break
                if not data:
                    break
                try:
                    frames = self.frames.feed(data)
                    for frame in frames:
                        self.handle(frame)
                except (FrameError, ProtocolError) as e:
                    self.error(str(e))
                    break
                except Exception:  # a bug: this connection ends with an ERROR, the server serves on
                    log.exception("stomp: connection %d: internal error", self.id)
                    self.error("internal server error")
                    break
                with contextlib.suppress(ConnectionError):
                    await self.writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            await self.close()

    def handle(self, frame: Frame) -> None:
        cmd = frame.command
        h = frame.headers
        if not self.connected:
            if cmd not in ("CONNECT", "STOMP"):
                raise ProtocolError(f"{cmd} before CONNECT")
            self.on_connect(h)
            return
        if cmd == "SEND":
            dest = h.get("destination")
            if not dest:
                raise ProtocolError("SEND without a destination header")
            if is_request_destination(dest):
                self._spawn(self.on_request(frame))
            else:
                self.server.broker.publish(dest, frame.body)
        elif cmd == "SUBSCRIBE":
            dest, sub_id = h.get("destination"), h.get("id")
            if not dest or not sub_id:
                raise ProtocolError("SUBSCRIBE needs destination and id headers")
            sub = Subscription(self.id, sub_id, dest, h.get("ack", "auto"), self.send)
            if not self.server.broker.subscribe(sub):
                raise ProtocolError(f"subscription id {sub_id!r} already in use")
        elif cmd == "UNSUBSCRIBE":
            sub_id = h.get("id")
            if not sub_id:
                raise ProtocolError("UNSUBSCRIBE needs an id header")
            self.server.broker.unsubscribe(self.id, sub_id)
        elif cmd == "DISCONNECT":
            if h.get("receipt"):
                self.send(encode("RECEIPT", {"receipt-id": h["receipt"]}))
            self.closed = True
            return
        elif cmd in ("ACK", "NACK"):
            pass
        elif cmd in ("BEGIN", "COMMIT", "ABORT"):
            raise ProtocolError(f"{cmd}: transactions are not supported")
        else:
            raise ProtocolError(f"unknown command {cmd}")
        if h.get("receipt"):
            self.send(encode("RECEIPT", {"receipt-id": h["receipt"]}))

    def on_connect(self, h: dict[str, str]) -> None:
        versions = [v.strip() for v in h.get("accept-version", "1.0").split(",")]
        if "1.2" not in versions:
            self.send(encode("ERROR", {"version": "1.2", "content-type": "text/plain",
                                       "message": "unsupported protocol version"},
                             b"Supported protocol versions are 1.2"))
            raise_close = ProtocolError("unsupported version")
            self.closed = True
            raise raise_close
        cx, cy = _parse_heartbeat(h.get("heart-beat", "0,0"))
        sx, sy = self.server.heartbeat
        # STOMP 1.2: client->server every max(cx, sy), server->client every max(sx, cy)
        self.recv_interval = max(cx, sy) / 1000 if cx and sy else 0.0
        self.send_interval = max(sx, cy) / 1000 if sx and cy else 0.0
        self.connected = True
        self.send(encode("CONNECTED", {"version": "1.2", "heart-beat": f"{sx},{sy}",
                                       "server": "kvmd-vdsm/1.0"}))
        if self.send_interval:
            self._spawn(self._beat())

    async def _beat(self) -> None:
        loop = asyncio.get_running_loop()
        while not self.closed:
            await asyncio.sleep(self.send_interval / 2)
            if loop.time() - self._last_write >= self.send_interval * 0.9:
                self.send(b"\n")
                with contextlib.suppress(ConnectionError):
                    await self.writer.drain()

    async def on_request(self, frame: Frame) -> None:
        reply = await self.server.handler(frame.body, frame.headers)
        if reply is None:
            return
        dest = frame.headers.get("reply-to") or DEFAULT_RESPONSES
        if not self.server.broker.publish(dest, reply):
            log.debug("stomp: response to %s has no subscriber", dest)
        with contextlib.suppress(ConnectionError):
            await self.writer.drain()

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        self.closed = True
        self.server.broker.drop_connection(self.id)
        self.server.connections.discard(self)
        for task in list(self._tasks):
            if task is not asyncio.current_task() and "_beat" in repr(task):
                task.cancel()
        with contextlib.suppress(Exception):
            await self.writer.drain()
        with contextlib.suppress(Exception):
            self.writer.close()


MAX_HEARTBEAT_MS = (1 << 31) - 1  # ~25 days: longer is "never" (and 10**400 ms is no float)


def _parse_heartbeat(value: str) -> tuple[int, int]:
    try:
        cx, cy = (int(x) for x in value.split(","))
        return min(max(cx, 0), MAX_HEARTBEAT_MS), min(max(cy, 0), MAX_HEARTBEAT_MS)
    except ValueError:
        raise ProtocolError(f"bad heart-beat header {value[:40]!r}") from None


class StompServer:
    def __init__(self, handler: RequestHandler, heartbeat: tuple[int, int] = (5000, 5000),
                 ssl_context: ssl.SSLContext | None = None):
        self.handler = handler
        self.heartbeat = heartbeat
        self.ssl_context = ssl_context
        self.broker = Broker()
        self.connections: set[StompConnection] = set()
        self._server: asyncio.base_events.Server | None = None

    async def start(self, host: str, port: int) -> int:
        self._server = await asyncio.start_server(self._accept, host, port, ssl=self.ssl_context)
        return self._server.sockets[0].getsockname()[1]

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = StompConnection(self, reader, writer)
        self.connections.add(conn)
        await conn.run()

    def notify(self, body: bytes, destination: str = EVENTS_DESTINATION) -> int:
        return self.broker.publish(destination, body)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)
        for conn in list(self.connections):
            await conn.close()


def tls_context(cert: str, key: str, ca: str | None = None) -> ssl.SSLContext:
    """Server TLS; with `ca`, clients must present a certificate it signed (mutual TLS)."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    if ca:
        ctx.load_verify_locations(ca)
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx
