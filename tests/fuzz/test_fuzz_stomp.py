"""Fuzzing the VDSM endpoint's STOMP 1.2 framing and its JSON-RPC dispatch.

- `FrameBuffer` gets random bytes and mutated valid frames (escaped headers,
  content-length lies, NULs in bodies, a missing final NUL, huge headers, CRLF), in
  random chunks: only frames or FrameError come out, and chunking does not change them.
- A live in-process STOMP server (as in tests/integration/test_stomp_protocol.py) gets
  the same over raw sockets: it answers only with well-formed frames, never raises
  inside its event loop, leaks no connection, and a real stomp.py client still gets
  JSON-RPC answers afterwards.
- JSON-RPC bodies of random shapes sent over STOMP each get a JSON-RPC reply (a result
  or an error) when they carry an id, never a dropped server.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kvmd.api import protocol
from vdsm.client import RpcError, StompRpcClient
from vdsm.jsonrpc import Dispatcher
from vdsm.stomp.frames import Frame, FrameBuffer, FrameError, encode
from vdsm.stomp.server import StompServer

FUZZ = settings(max_examples=150, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])

COMMANDS = ["CONNECT", "STOMP", "SEND", "SUBSCRIBE", "UNSUBSCRIBE", "ACK", "NACK", "BEGIN", "COMMIT",
            "ABORT", "DISCONNECT", "MESSAGE", "FROB", "connect", "", " SEND", "SEND\r"]
HEADER_NAMES = ["accept-version", "heart-beat", "host", "destination", "id", "receipt", "reply-to",
                "content-length", "content-type", "ack", "transaction", "x"]
header_text = st.lists(st.characters(blacklist_categories=("Cs",)) | st.sampled_from(
    ["\\n", "\\c", "\\\\", "\\r", "\\t", "\\", ":", "\r", "\0", "\u0663"]), max_size=12).map("".join)
header_values = st.one_of(
    header_text,
    st.sampled_from(["1.2", "1.0,1.2", "1.0", "0,0", "200,200", "1,1", "-5,-5", "a,b", "1,2,3",
                     f"{10**400},5", f"5,{10**400}", "99999999999999999999,1", "jms.topic.vdsm_requests",
                     "jms.topic.vdsm_responses", "jms.queue.events", "client-individual"]),
    st.integers(-(2**64), 2**64).map(str),
)
json_bodies = st.one_of(
    st.binary(max_size=64),
    st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                 lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
                 max_leaves=8).map(lambda v: json.dumps(v).encode()),
)


@st.composite
def rpc_requests(draw) -> dict:
    req: dict = {"jsonrpc": draw(st.sampled_from(["2.0", "2.0", "2.0", "1.0", None])),
                 "method": draw(st.sampled_from(["Host.echo", "Host.ping2", "Host.boom", "VM.getStats",
                                                 "Host.noSuchVerb", "", 5]))}
    if draw(st.booleans()):
        req["id"] = draw(st.integers(-5, 10**6) | st.text(max_size=6) | st.none() | st.just(1.5) | st.just([1]))
    if draw(st.booleans()):
        req["params"] = draw(st.dictionaries(st.sampled_from(["message", "vmID", "x"]),
                                             st.text(max_size=6) | st.integers() | st.none()
                                             | st.just("6c1d7b4e-0d0b-4b53-9d7b-1f2a3b4c5d01"), max_size=3)
                             | st.lists(st.text(max_size=4), max_size=2) | st.integers())
    return {k: v for k, v in req.items() if v is not None or draw(st.booleans())}


rpc_bodies = st.one_of(
    rpc_requests().map(lambda r: json.dumps(r).encode()),
    st.lists(rpc_requests(), max_size=4).map(lambda r: json.dumps(r).encode()),
    json_bodies,
    st.sampled_from([b"", b"[]", b"{}", b"null", b"[" * 5000, b'{"jsonrpc":"2.0","id":1,"method":"Host.echo",'
                     b'"params":{"message":"' + b"x" * 100000 + b'"}}', b"\xff\xfe", b'"\xed\xa0\x80"']),
)


@st.composite
def frames(draw) -> bytes:
    """One frame: valid, or with a lie or an oddity somewhere."""
    command = draw(st.sampled_from(COMMANDS))
    headers = [(draw(st.sampled_from(HEADER_NAMES) | header_text), draw(header_values))
               for _ in range(draw(st.integers(0, 4)))]
    body = draw(rpc_bodies | st.binary(max_size=32).map(lambda b: b + b"\0" + b))
    eol = draw(st.sampled_from([b"\n", b"\n", b"\r\n"]))
    length = draw(st.sampled_from(["right", "none", "none", "short", "long", "junk"]))
    if length == "right":
        headers.append(("content-length", str(len(body))))
    elif length == "short":
        headers.append(("content-length", str(max(0, len(body) - draw(st.integers(1, 5))))))
    elif length == "long":
        headers.append(("content-length", str(len(body) + draw(st.integers(1, 10**9)))))
    elif length == "junk":
        headers.append(("content-length", draw(st.sampled_from(["x", "-1", "1e3", " 4", "\u0663", "1_0", "9" * 30]))))
    head = eol.join([command.encode(errors="surrogatepass")]
                    + [f"{k}:{v}".encode("utf-8", errors="surrogatepass") for k, v in headers])
    if draw(st.integers(0, 20)) == 0:
        head += eol + b"big:" + b"h" * draw(st.sampled_from([70_000, 200_000]))
    end = draw(st.sampled_from([b"\0", b"\0", b"\0\n", b"", b"\0\0"]))
    return head + eol + eol + body + end


streams = st.one_of(
    st.binary(max_size=512),
    st.lists(frames(), min_size=1, max_size=4).map(b"".join),
    st.tuples(st.lists(frames(), max_size=2).map(b"".join), st.binary(max_size=64)).map(b"".join),
)


def feed_all(data: bytes, cuts: list[int]) -> tuple[list[Frame], FrameError | None]:
    fb = FrameBuffer(max_frame=1 << 20)
    out: list[Frame] = []
    last = 0
    try:
        for cut in sorted(set(cuts)) + [len(data)]:
            out += fb.feed(data[last:cut])
            last = cut
    except FrameError as e:
        return out, e
    return out, None


@FUZZ
@given(streams.flatmap(lambda d: st.tuples(st.just(d), st.lists(st.integers(0, len(d)), max_size=6))))
def test_frame_buffer_yields_only_frames_or_frame_errors_whatever_the_chunking(case):
    data, cuts = case
    whole, err_whole = feed_all(data, [])
    chunked, err_chunked = feed_all(data, cuts)
    for f in whole + chunked:
        assert isinstance(f, Frame) and f.command.isupper() and isinstance(f.body, bytes)
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in f.headers.items())
    assert (err_whole is None) == (err_chunked is None), (err_whole, err_chunked)
    if err_whole is None:
        assert [(f.command, f.headers, f.body) for f in whole] == [(f.command, f.headers, f.body) for f in chunked]
    else:  # the same frames come out before the error, however the bytes arrived
        n = min(len(whole), len(chunked))
        assert [(f.command, f.body) for f in whole[:n]] == [(f.command, f.body) for f in chunked[:n]]


def test_frame_round_trip_of_escaped_headers_and_nul_bodies():
    headers = {"destination": "a:b\nc\\d\re", "x\\": "\\c"}
    body = b"\0nul\0inside\0"
    data = encode("SEND", headers, body)
    (frame,) = FrameBuffer().feed(data)
    assert frame.command == "SEND" and frame.body == body
    assert frame.headers["destination"] == headers["destination"]


# -- the live server ---------------------------------------------------------------------


@pytest.fixture
def server():
    """A STOMP server in a background event loop; exceptions inside its loop are recorded."""
    loop = asyncio.new_event_loop()
    started = threading.Event()
    holder: dict = {"loop_errors": []}

    async def echo(message: str) -> str:
        return message

    async def ping2() -> None:
        return None

    async def boom() -> None:
        raise RuntimeError("a verb that fails")

    async def main():
        loop.set_exception_handler(lambda _loop, ctx: holder["loop_errors"].append(
            f"{ctx.get('message')}: {ctx.get('exception')!r}"))
        srv = StompServer(Dispatcher({"Host.echo": echo, "Host.ping2": ping2,
                                      "Host.getStats": boom}).handle, heartbeat=(200, 200))
        holder["port"] = await srv.start("127.0.0.1", 0)
        holder["srv"] = srv
        holder["stop"] = asyncio.Event()
        started.set()
        await holder["stop"].wait()
        await srv.close()

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    assert started.wait(10)
    yield holder
    loop.call_soon_threadsafe(holder["stop"].set)
    thread.join(10)
    loop.close()


def exchange(port: int, data: bytes, timeout: float = 5.0) -> bytes:
    """Send `data`, half-close, read until the server closes; everything it sent."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        try:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
        except OSError:  # the server hung up first (reset, not connected): fine
            pass
        got = b""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:  # it closed with our bytes unread: closed all the same
                return got
            if not chunk:
                return got
            got += chunk
        raise AssertionError(f"the server did not close after {data[:200]!r}")


def assert_well_formed_replies(got: bytes) -> None:
    out = FrameBuffer().feed(got)
    for f in out:
        assert f.command in ("CONNECTED", "ERROR", "RECEIPT", "MESSAGE"), f.command
        assert "internal" not in f.headers.get("message", ""), (f.headers, f.body)


def assert_serves(port: int) -> None:
    with StompRpcClient("127.0.0.1", port, events=False, timeout=10) as c:
        assert c.call("Host.echo", message="still here") == "still here"
        with pytest.raises(RpcError) as exc:
            c.call("Host.getStats")
        assert exc.value.code == 16 and "a verb that fails" in exc.value.message


def wait_no_connections(srv, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while srv.connections and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not srv.connections, "connections leaked"


CONNECT = b"CONNECT\naccept-version:1.2\nheart-beat:0,0\n\n\0"


def test_garbage_streams_on_a_live_server_get_well_formed_answers_and_it_keeps_serving(server):
    @settings(FUZZ, max_examples=120)
    @given(streams, st.booleans())
    def throw(data, connect_first):
        got = exchange(server["port"], (CONNECT if connect_first else b"") + data)
        assert_well_formed_replies(got)

    throw()
    assert_serves(server["port"])
    wait_no_connections(server["srv"])
    assert server["loop_errors"] == []


def test_a_connection_dropped_mid_frame_or_mid_request_leaves_the_server_serving(server):
    port = server["port"]
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "Host.echo", "params": {"message": "x"}}).encode()
    send = b"SEND\ndestination:jms.topic.vdsm_requests\nreply-to:r\ncontent-length:%d\n\n%s\0" % (len(body), body)
    for data in (CONNECT + send[:20], CONNECT + send, CONNECT + b"SUBSCRIBE\nid:1\ndestination:r\n\n\0" + send,
                 b"CONNECT\naccept-version:1.2\nheart-beat:" + str(10**400).encode() + b",5\n\n\0",
                 CONNECT + b"SEND\ndestination:x\ncontent-length:100000000\n\n" + b"y" * 1000):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(data)
        # and once more, reading until the server closes
        assert_well_formed_replies(exchange(port, data))
    assert_serves(port)
    wait_no_connections(server["srv"])
    assert server["loop_errors"] == []


def expected_ids(body: bytes) -> list | None:
    """The ids the JSON-RPC reply must carry (None: no reply at all is due)."""
    items, _ = protocol.parse_line(body)
    ids = [it["id"] if isinstance(it, dict) else it.id for it in items
           if isinstance(it, dict) or not it.is_notification]
    return ids or None


def test_jsonrpc_bodies_of_any_shape_over_stomp_get_jsonrpc_replies(server):
    port = server["port"]
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(CONNECT + b"SUBSCRIBE\nid:r\ndestination:fuzz.replies\n\n\0")
    fb = FrameBuffer()
    pending: list[Frame] = []

    def next_frame(timeout: float = 10.0) -> Frame:
        deadline = time.monotonic() + timeout
        while not pending:
            assert time.monotonic() < deadline, "no reply"
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            data = sock.recv(1 << 20)
            assert data, "the server closed the connection"
            pending.extend(fb.feed(data))
        return pending.pop(0)

    assert next_frame().command == "CONNECTED"

    @settings(FUZZ, max_examples=150)
    @given(rpc_bodies)
    def send(body):
        want = expected_ids(body)
        frame = encode("SEND", {"destination": "jms.topic.vdsm_requests", "reply-to": "fuzz.replies"}, body)
        # a notification-only body gets no reply: follow it with a ping that does
        ping = json.dumps({"jsonrpc": "2.0", "id": "sync", "method": "Host.ping2"}).encode()
        sock.sendall(frame + encode("SEND", {"destination": "jms.topic.vdsm_requests",
                                             "reply-to": "fuzz.replies"}, ping))
        seen_sync = False
        replies = []
        while not seen_sync:
            f = next_frame()
            assert f.command == "MESSAGE", (f.command, f.headers, f.body[:300])
            msg = json.loads(f.body)
            for m in msg if isinstance(msg, list) else [msg]:
                assert m.get("jsonrpc") == "2.0" and ("result" in m) != ("error" in m), m
                if "error" in m:
                    assert isinstance(m["error"]["code"], int) and isinstance(m["error"]["message"], str)
            if msg == {"jsonrpc": "2.0", "id": "sync", "result": None}:
                seen_sync = True
            else:
                replies.append(msg)
        # replies run concurrently: the one to `body` may come before or after the sync's
        if want is not None and not replies:
            f = next_frame()
            replies.append(json.loads(f.body))
        got = [m.get("id") for r in replies for m in (r if isinstance(r, list) else [r])]
        assert sorted(map(repr, got)) == sorted(map(repr, want or [])), (body[:300], replies)

    try:
        send()
    finally:
        sock.close()
    assert_serves(port)
    wait_no_connections(server["srv"])
    assert server["loop_errors"] == []
