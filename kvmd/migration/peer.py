"""Reaching another kvmd: where it is (`Endpoint`), and proving who we both are on TCP.

A migration is driven by the source kvmd, which calls the destination kvmd's API. The
destination is named by a string:

    /run/kvmd/kvmd.sock, unix:/path      a kvmd on this host (its unix socket; the usual
                                         peer-credential check applies: same user or root)
    tcp://HOST:PORT, tcp:HOST:PORT       a kvmd on another host, listening for migration
                                         peers with `--listen-tcp` / config `apiTcp`

TCP connections authenticate both ways with a shared secret (the `apiTcp.tokenFile` of
both daemons) before anything else is read, by HMAC-SHA256 challenge-response: the
server sends a random nonce, the client answers with its own nonce and
HMAC(token, "client|snonce|cnonce"), the server checks it and proves itself with
HMAC(token, "server|snonce|cnonce"). The token never crosses the wire and a recorded
handshake cannot be replayed. The session itself is not encrypted (nor is QEMU's
migration stream): use a trusted migration network. An authenticated peer may only
call the migration methods (`PEER_METHODS`), but those start QEMU from a spec it sends,
so the token is worth as much as root on the destination: keep it 0600.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import secrets
import stat
from dataclasses import dataclass

from kvmd.client import AsyncClient
from kvmd.errors import InvalidParams, MigrationFailed

PROTOCOL = "kvmd-peer-1"
HANDSHAKE_TIMEOUT = 10.0
CONNECT_TIMEOUT = 10.0
MAX_LINE = 16 * 1024 * 1024
# What a TCP peer may call once authenticated: the destination half of a migration.
PEER_METHODS = frozenset({"vm.migrate_incoming", "vm.migrate_finish", "vm.migrate_abort",
                          "vm.migrate_status", "host.info"})


class PeerError(MigrationFailed):
    """The destination kvmd cannot be reached, or the two do not share the peer token."""


@dataclass(frozen=True)
class Endpoint:
    kind: str  # "unix" | "tcp"
    path: str = ""
    host: str = ""
    port: int = 0

    def __str__(self) -> str:
        if self.kind == "unix":
            return self.path
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"tcp://{host}:{self.port}"


def split_host_port(text: str, what: str = "address") -> tuple[str, int]:
    """"HOST:PORT" or "[V6]:PORT" -> (host, port)."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise InvalidParams(f"{what} must be HOST:PORT, not {text!r}", {"param": what})
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


def parse_endpoint(dest: str) -> Endpoint:
    """The destination kvmd named by `dest` (see the module docstring)."""
    if dest.startswith("unix:"):
        dest = dest[5:]
    if dest.startswith("/"):
        return Endpoint("unix", path=dest)
    for prefix in ("tcp://", "tcp:"):
        if dest.startswith(prefix):
            host, port = split_host_port(dest[len(prefix):], "dest")
            return Endpoint("tcp", host=host, port=port)
    raise InvalidParams(f"dest must be a kvmd socket path or tcp://HOST:PORT, not {dest!r}", {"param": "dest"})


def load_token(path: str | None) -> bytes:
    """The shared peer secret: a regular file, not readable by group or others."""
    if not path:
        raise PeerError("no peer token configured (apiTcp.tokenFile): TCP peers need one")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as e:
        raise PeerError(f"cannot read peer token file {path}: {e.strerror}", {"path": path}) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_mode & 0o077:
            raise PeerError(f"peer token file {path} must be a regular file with mode 0600", {"path": path})
        token = os.read(fd, 4096).strip()
    finally:
        os.close(fd)
    if len(token) < 16:
        raise PeerError(f"peer token in {path} is too short (at least 16 bytes)", {"path": path})
    return token


def mac(token: bytes, role: str, snonce: str, cnonce: str) -> str:
    return hmac.new(token, f"{PROTOCOL}|{role}|{snonce}|{cnonce}".encode(), hashlib.sha256).hexdigest()


def challenge() -> tuple[str, bytes]:
    """(server nonce, the challenge line the server sends first)."""
    snonce = secrets.token_hex(16)
    line = {"jsonrpc": "2.0", "method": "auth.challenge", "params": {"protocol": PROTOCOL, "nonce": snonce}}
    return snonce, json.dumps(line).encode() + b"\n"


def check_response(token: bytes, snonce: str, line: bytes) -> tuple[object, str] | None:
    """(request id, the server's proof) if `line` is a valid answer to `snonce`, else None."""
    try:
        msg = json.loads(line)
        params = msg["params"]
        cnonce, their = str(params["nonce"]), str(params["mac"])
    except (ValueError, KeyError, TypeError):
        return None
    if msg.get("method") != "auth.response" or len(cnonce) < 16:
        return None
    if not hmac.compare_digest(their, mac(token, "client", snonce, cnonce)):
        return None
    return msg.get("id"), mac(token, "server", snonce, cnonce)


class PeerClient(AsyncClient):
    """An AsyncClient to a kvmd's TCP peer listener, authenticated by the shared token."""

    def __init__(self, host: str, port: int, token: bytes):
        super().__init__(str(Endpoint("tcp", host=host, port=port)))
        self.host, self.port, self._token = host, port, token

    async def connect(self) -> PeerClient:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port, limit=MAX_LINE), CONNECT_TIMEOUT)
        except (TimeoutError, OSError) as e:
            raise PeerError(f"cannot connect to kvmd at {self.path}: {e or 'timed out'}") from None
        try:
            first = await asyncio.wait_for(reader.readline(), HANDSHAKE_TIMEOUT)
            hello = json.loads(first)
            snonce = str(hello["params"]["nonce"])
            if hello.get("method") != "auth.challenge" or hello["params"].get("protocol") != PROTOCOL:
                raise ValueError("not a kvmd peer listener")
            cnonce = secrets.token_hex(16)
            writer.write(json.dumps({"jsonrpc": "2.0", "id": 0, "method": "auth.response", "params": {
                "nonce": cnonce, "mac": mac(self._token, "client", snonce, cnonce)}}).encode() + b"\n")
            await writer.drain()
            reply = json.loads(await asyncio.wait_for(reader.readline(), HANDSHAKE_TIMEOUT))
            if "error" in reply:
                raise PeerError(f"kvmd at {self.path} refused us: {reply['error'].get('message')}")
            proof = str((reply.get("result") or {}).get("mac", ""))
            if not hmac.compare_digest(proof, mac(self._token, "server", snonce, cnonce)):
                raise PeerError(f"kvmd at {self.path} does not know our peer token")
        except PeerError:
            writer.close()
            raise
        except (TimeoutError, OSError, ValueError, KeyError, TypeError) as e:
            writer.close()
            raise PeerError(f"handshake with {self.path} failed: {e or type(e).__name__}") from None
        self._reader, self._writer = reader, writer
        self._task = asyncio.create_task(self._read_loop())
        return self


async def connect(endpoint: Endpoint, token_file: str | None) -> AsyncClient:
    """A connected client of the kvmd at `endpoint`."""
    if endpoint.kind == "tcp":
        return await PeerClient(endpoint.host, endpoint.port, load_token(token_file)).connect()
    client = AsyncClient(endpoint.path)
    try:
        return await asyncio.wait_for(client.connect(), CONNECT_TIMEOUT)
    except (TimeoutError, OSError) as e:
        raise PeerError(f"cannot connect to kvmd at {endpoint.path}: {e or 'timed out'}") from None
