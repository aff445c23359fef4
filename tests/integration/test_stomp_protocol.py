"""The endpoint's STOMP 1.2 server, spoken to by the real stomp.py client and raw sockets."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time

import pytest
import stomp

from vdsm.client import RpcError, StompRpcClient
from vdsm.jsonrpc import Dispatcher
from vdsm.stomp.server import StompServer


@pytest.fixture
def server():
    """A STOMP server in a background event loop, serving Host.ping2 and Host.echo."""
    loop = asyncio.new_event_loop()
    started = threading.Event()
    holder: dict = {}

    async def echo(message: str) -> str:
        return message

    async def ping2() -> None:
        return None

    async def main():
        srv = StompServer(Dispatcher({"Host.echo": echo, "Host.ping2": ping2}).handle, heartbeat=(200, 200))
        holder["port"] = await srv.start("127.0.0.1", 0)
        holder["srv"] = srv
        started.set()
        holder["stop"] = asyncio.Event()
        await holder["stop"].wait()
        await srv.close()

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    started.wait(10)
    yield holder
    loop.call_soon_threadsafe(holder["stop"].set)
    thread.join(10)
    loop.close()


class Raw:
    """A raw TCP peer that reads whole frames (keeping what follows for the next read)."""

    def __init__(self, port: int):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.buf = b""

    def sendall(self, data: bytes) -> None:
        self.sock.sendall(data)

    def settimeout(self, t: float) -> None:
        self.sock.settimeout(t)

    def recv(self, n: int) -> bytes:
        if self.buf:
            data, self.buf = self.buf[:n], self.buf[n:]
            return data
        return self.sock.recv(n)

    def close(self) -> None:
        self.sock.close()


def raw(port: int) -> Raw:
    return Raw(port)


def read_frame(s: Raw) -> bytes:
    while b"\0" not in s.buf.lstrip(b"\n"):
        data = s.sock.recv(65536)
        if not data:
            break
        s.buf += data
    s.buf = s.buf.lstrip(b"\n")
    end = s.buf.find(b"\0")
    if end < 0:
        frame, s.buf = s.buf, b""
        return frame
    frame, s.buf = s.buf[:end + 1], s.buf[end + 1:]
    return frame


def test_jsonrpc_round_trip_and_errors_over_stomp(server):
    with StompRpcClient("127.0.0.1", server["port"], events=False) as c:
        assert c.call("Host.echo", message="héllo") == "héllo"
        assert c.call("Host.ping2") is None
        with pytest.raises(RpcError) as exc:
            c.call("Host.echo")
        assert exc.value.code == 11 and "message" in exc.value.message
        with pytest.raises(RpcError) as exc:
            c.call("Host.echo", message=5)
        assert exc.value.code == 11
        with pytest.raises(RpcError) as exc:
            c.call("Host.noSuchVerb")
        assert exc.value.code == -32601
        with pytest.raises(RpcError) as exc:
            c.call("VM.getStats", vmID="00000000-0000-0000-0000-000000000001")
        assert exc.value.code == 44  # in the schema, not served by this test server


def test_connected_negotiates_version_and_heartbeats(server):
    s = raw(server["port"])
    s.sendall(b"CONNECT\naccept-version:1.0,1.2\nheart-beat:0,100\nhost:x\n\n\0")
    frame = read_frame(s)
    assert frame.startswith(b"CONNECTED\n")
    assert b"version:1.2" in frame and b"heart-beat:200,200" in frame
    # the server beats at max(200, 100) ms: EOLs arrive while we stay quiet (we sent 0 = no beats)
    s.settimeout(2)
    assert s.recv(10).strip(b"\n") == b""
    s.close()


def test_silent_client_is_dropped_after_its_heartbeat_interval(server):
    s = raw(server["port"])
    s.sendall(b"CONNECT\naccept-version:1.2\nheart-beat:200,0\n\n\0")
    assert read_frame(s).startswith(b"CONNECTED")
    started = time.monotonic()
    s.settimeout(5)
    while s.recv(100):
        pass
    assert time.monotonic() - started < 2.0, "a client that promised beats every 200 ms and went silent must be dropped"


def test_unsupported_version_gets_error_frame(server):
    s = raw(server["port"])
    s.sendall(b"CONNECT\naccept-version:1.0\n\n\0")
    frame = read_frame(s)
    assert frame.startswith(b"ERROR\n") and b"version:1.2" in frame


@pytest.mark.parametrize("frame, reason", [
    (b"SUBSCRIBE\nid:1\n\n\0", b"destination"),
    (b"SEND\n\n{}\0", b"destination"),
    (b"FROB\n\n\0", b"unknown command"),
])
def test_protocol_errors_get_an_error_frame_and_close(server, frame, reason):
    s = raw(server["port"])
    s.sendall(b"CONNECT\naccept-version:1.2\n\n\0")
    read_frame(s)
    s.sendall(frame)
    err = read_frame(s)
    assert err.startswith(b"ERROR\n") and reason in err
    s.settimeout(5)
    assert s.recv(100) == b""


def test_duplicate_subscription_id_is_an_error(server):
    s = raw(server["port"])
    s.sendall(b"CONNECT\naccept-version:1.2\n\n\0SUBSCRIBE\nid:a\ndestination:x\n\n\0SUBSCRIBE\nid:a\ndestination:y\n\n\0")
    assert read_frame(s).startswith(b"CONNECTED")
    assert read_frame(s).startswith(b"ERROR\n")


def test_disconnect_with_receipt_and_batch_and_default_reply_destination(server):
    s = raw(server["port"])
    s.sendall(b"CONNECT\naccept-version:1.2\n\n\0SUBSCRIBE\nid:r\ndestination:jms.topic.vdsm_responses\nreceipt:s1\n\n\0")
    assert read_frame(s).startswith(b"CONNECTED")
    assert b"receipt-id:s1" in read_frame(s)
    batch = json.dumps([{"jsonrpc": "2.0", "id": 1, "method": "Host.echo", "params": {"message": "a"}},
                        {"jsonrpc": "2.0", "id": 2, "method": "Host.echo", "params": ["b"]}]).encode()
    s.sendall(b"SEND\ndestination:jms.topic.vdsm_requests\ncontent-length:%d\n\n%s\0" % (len(batch), batch))
    msg = read_frame(s)
    assert msg.startswith(b"MESSAGE\n") and b"subscription:r" in msg
    body = msg[msg.index(b"\n\n") + 2:msg.rindex(b"\0")]
    assert sorted(r["result"] for r in json.loads(body)) == ["a", "b"]
    s.sendall(b"DISCONNECT\nreceipt:bye\n\n\0")
    assert b"receipt-id:bye" in read_frame(s)


def test_subscriptions_match_hierarchically_and_events_reach_subscribers(server):
    received = []

    class L(stomp.ConnectionListener):
        def on_message(self, frame):
            received.append((frame.headers["destination"], frame.body))

    conn = stomp.Connection12([("127.0.0.1", server["port"])])
    conn.set_listener("l", L())
    conn.connect(wait=True)
    conn.subscribe("jms.queue", id="q")
    conn.send("jms.queue.events", '{"jsonrpc":"2.0","method":"|virt|VM_status|x","params":{}}')
    conn.send("jms.other", "nope")
    deadline = time.monotonic() + 5
    while not received and time.monotonic() < deadline:
        time.sleep(0.02)
    conn.disconnect()
    assert received and received[0][0] == "jms.queue.events"
    assert all(dest != "jms.other" for dest, _ in received)
