"""A tiny RFB (VNC) client for tests: the handshake and VNC authentication, nothing more.

`security_types(host, port)` returns what the server offers (1 = none, 2 = VNC auth);
`vnc_auth(host, port, password)` does the whole VNC authentication and returns True if
the server accepted the password. VNC authentication encrypts the server's 16-byte
challenge with DES, keyed by the password with each byte's bits reversed; DES comes from
the `cryptography` package.
"""

from __future__ import annotations

import socket
import struct

from cryptography.hazmat.primitives.ciphers import Cipher, modes

try:  # cryptography >= 43 keeps the old ciphers in `decrepit`
    from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
except ImportError:  # pragma: no cover
    from cryptography.hazmat.primitives.ciphers.algorithms import TripleDES

def des_encrypt_block(key: bytes, block: bytes) -> bytes:
    """Single DES, ECB, one block: TripleDES with K1 = K2 = K3 is DES (`cryptography`)."""
    encryptor = Cipher(TripleDES(key * 3), modes.ECB()).encryptor()
    return encryptor.update(block) + encryptor.finalize()


def vnc_response(password: str, challenge: bytes) -> bytes:
    """The 16-byte answer to a VNC auth challenge (password truncated/padded to 8 bytes)."""
    key = bytes(int(f"{b:08b}"[::-1], 2) for b in password.encode()[:8].ljust(8, b"\0"))
    return des_encrypt_block(key, challenge[:8]) + des_encrypt_block(key, challenge[8:16])


# -- RFB ---------------------------------------------------------------------------------

def _recv(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise EOFError(f"VNC server closed the connection ({buf!r})")
        buf += chunk
    return buf


def _handshake(host: str, port: int, timeout: float) -> tuple[socket.socket, list[int]]:
    sock = socket.create_connection((host, port), timeout=timeout)
    version = _recv(sock, 12)
    if not version.startswith(b"RFB "):
        sock.close()
        raise ValueError(f"not an RFB server: {version!r}")
    sock.sendall(b"RFB 003.008\n")
    (count,) = _recv(sock, 1)
    if count == 0:  # failure: a reason string follows
        (n,) = struct.unpack(">I", _recv(sock, 4))
        reason = _recv(sock, n).decode(errors="replace")
        sock.close()
        raise ConnectionRefusedError(f"VNC server refused: {reason}")
    return sock, list(_recv(sock, count))


def security_types(host: str, port: int, timeout: float = 10.0) -> list[int]:
    sock, types = _handshake(host, port, timeout)
    sock.close()
    return types


def vnc_auth(host: str, port: int, password: str, timeout: float = 10.0) -> bool:
    """True if the server accepts `password` with VNC authentication (security type 2)."""
    sock, types = _handshake(host, port, timeout)
    try:
        if 2 not in types:
            raise ValueError(f"server does not offer VNC authentication: {types}")
        sock.sendall(b"\x02")
        challenge = _recv(sock, 16)
        sock.sendall(vnc_response(password, challenge))
        (result,) = struct.unpack(">I", _recv(sock, 4))
        return result == 0
    finally:
        sock.close()
