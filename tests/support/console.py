"""Read a guest's serial console the way a user does: through its unix socket."""

from __future__ import annotations

import socket
import time


class Console:
    def __init__(self, path: str, timeout: float = 60.0):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.sock.connect(path)
                break
            except (FileNotFoundError, ConnectionRefusedError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        self.buf = b""

    def expect(self, marker: str, timeout: float = 60.0) -> str:
        """Read until `marker` appears; return everything read so far."""
        deadline = time.monotonic() + timeout
        m = marker.encode()
        while m not in self.buf:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{marker!r} not seen on console; got: {self.buf[-2000:]!r}")
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            if not data:
                raise EOFError(f"console closed before {marker!r}; got: {self.buf[-2000:]!r}")
            self.buf += data
        return self.buf.decode(errors="replace")

    def run(self, command: str, timeout: float = 30.0) -> str:
        """Type a shell command; return its output (counter lines filtered out)."""
        token = f"END{time.monotonic_ns()}"
        done = f"{token}-42"  # only the shell's output has it; an echoed command line has $((..))
        start = len(self.buf)
        self.sock.sendall(f"{command}; echo {token}-$((40+2))\n".encode())
        self.expect(done + "\r\n", timeout)
        end = self.buf.index(done.encode() + b"\r\n", start)
        out = self.buf[start:end].decode(errors="replace")
        self.buf = self.buf[end + len(done) + 2:]
        lines = [ln for ln in out.replace("\r", "").split("\n")
                 if not ln.startswith("KVMD-COUNTER") and token not in ln]
        return "\n".join(lines)

    def close(self) -> None:
        self.sock.close()
