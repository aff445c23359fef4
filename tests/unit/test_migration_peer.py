"""Migration peers: how a destination is named, and the token handshake of the TCP API."""

from __future__ import annotations

import asyncio
import os

import pytest

from kvmd import errors
from kvmd.client import ApiError
from kvmd.errors import InvalidParams
from kvmd.migration import listener, peer

TOKEN = b"0123456789abcdef-shared-secret"


@pytest.mark.parametrize("dest,expected", [
    ("/run/kvmd/kvmd.sock", peer.Endpoint("unix", path="/run/kvmd/kvmd.sock")),
    ("unix:/tmp/k.sock", peer.Endpoint("unix", path="/tmp/k.sock")),
    ("tcp://10.0.0.2:16509", peer.Endpoint("tcp", host="10.0.0.2", port=16509)),
    ("tcp:host.example:1", peer.Endpoint("tcp", host="host.example", port=1)),
    ("tcp://[fd00::2]:16509", peer.Endpoint("tcp", host="fd00::2", port=16509)),
])
def test_destination_is_a_socket_path_or_a_tcp_endpoint(dest, expected):
    assert peer.parse_endpoint(dest) == expected


@pytest.mark.parametrize("dest", ["kvmd.sock", "tcp://nohost", "tcp://h:99999", "http://h:1", ""])
def test_unusable_destination_is_an_invalid_parameter(dest):
    with pytest.raises(InvalidParams):
        peer.parse_endpoint(dest)


def test_endpoint_prints_back_as_it_is_parsed():
    assert str(peer.parse_endpoint("tcp://[fd00::2]:5")) == "tcp://[fd00::2]:5"


def test_token_file_must_be_private_and_long_enough(tmp_path):
    path = tmp_path / "t"
    path.write_bytes(TOKEN + b"\n")
    os.chmod(path, 0o644)
    with pytest.raises(peer.PeerError, match="0600"):
        peer.load_token(str(path))
    os.chmod(path, 0o600)
    assert peer.load_token(str(path)) == TOKEN
    path.write_bytes(b"short")
    with pytest.raises(peer.PeerError, match="too short"):
        peer.load_token(str(path))
    with pytest.raises(peer.PeerError, match="tokenFile"):
        peer.load_token(None)


class FakeMethods:
    def __init__(self):
        self.calls: list[str] = []

    def names(self) -> list[str]:
        return ["host.info", "vm.create"]

    async def call(self, method, params):
        self.calls.append(method)
        return {"method": method}


async def _with_listener(body):
    methods = FakeMethods()
    srv = listener.PeerListener(manager=None, methods=methods, host="127.0.0.1", port=0, token=TOKEN)
    await srv.start()
    try:
        return await body(srv, methods)
    finally:
        await srv.close()


def test_peer_with_the_token_may_call_the_migration_methods_only():
    async def body(srv, methods):
        client = await peer.PeerClient("127.0.0.1", srv.port, TOKEN).connect()
        try:
            assert await client.call("host.info") == {"method": "host.info"}
            with pytest.raises(ApiError) as exc:
                await client.call("vm.create", spec={})
            assert exc.value.code == errors.PERMISSION_DENIED
        finally:
            await client.close()
        assert methods.calls == ["host.info"]
    asyncio.run(_with_listener(body))


def test_peer_with_another_token_is_refused_before_any_call():
    async def body(srv, methods):
        with pytest.raises(peer.PeerError, match="refused"):
            await peer.PeerClient("127.0.0.1", srv.port, b"another-secret-of-16+").connect()
        assert methods.calls == []
    asyncio.run(_with_listener(body))


def test_listener_that_does_not_know_the_token_is_not_trusted():
    """The client checks the server's proof too: an impostor cannot collect a VM spec."""
    async def impostor(reader, writer):
        _, hello = peer.challenge()
        writer.write(hello)
        await reader.readline()
        writer.write(b'{"jsonrpc":"2.0","id":0,"result":{"mac":"00"}}\n')
        await writer.drain()

    async def main():
        server = await asyncio.start_server(impostor, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            with pytest.raises(peer.PeerError, match="does not know our peer token"):
                await peer.PeerClient("127.0.0.1", port, TOKEN).connect()
        finally:
            server.close()
    asyncio.run(main())


def test_silent_connection_is_dropped_after_the_handshake_timeout(monkeypatch):
    monkeypatch.setattr(peer, "HANDSHAKE_TIMEOUT", 0.2)

    async def body(srv, methods):
        reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
        await reader.readline()  # the challenge
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed, nothing else said
        writer.close()
    asyncio.run(_with_listener(body))
