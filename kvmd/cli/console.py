"""`kvmctl console`: attach to a VM's serial console, the unix socket QEMU serves it on.

With a terminal on stdin the terminal goes to raw mode (every key, Ctrl-C included,
goes to the guest) until the escape character, Ctrl-] as in virsh, is typed or the
console closes; the terminal's settings are restored however the session ends
(escape, console EOF, SIGTERM, SIGHUP).

Without a terminal it is a pipe: stdin goes to the guest and the guest's output to
stdout, until the console closes, or stdin reaches EOF and the guest has then been quiet
for `linger` seconds (so `echo cmd | kvmctl console vm` shows the command's output).
QEMU serves one console client at a time; the socket is non-blocking and buffered both
ways, so a guest that stops reading never deadlocks its output.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import signal
import socket
import sys
import termios
import tty
from collections.abc import Iterator
from typing import Any

ESCAPE = b"\x1d"  # Ctrl-]
_CHUNK = 65536
_MAX_PENDING = 1 << 20


class ConsoleError(Exception):
    """The console could not be attached (the message says why)."""


class _Stop(Exception):
    """Raised from a signal handler to end the session and restore the terminal."""


def connect(path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
    except OSError as e:
        sock.close()
        raise ConsoleError(f"cannot connect to console socket {path}: {e.strerror or e}") from None
    sock.setblocking(False)
    return sock


@contextlib.contextmanager
def _signals_stop(*signums: int) -> Iterator[None]:
    def handler(signum: int, frame: Any) -> None:
        raise _Stop(signal.Signals(signum).name)

    old = {s: signal.signal(s, handler) for s in signums}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def pump(sock: socket.socket, in_fd: int, out_fd: int, *, escape: bytes | None = None,
         linger: float = 0.5) -> str:
    """Copy in_fd -> sock and sock -> out_fd; return why it stopped.

    'closed' (console EOF), 'escape' (escape byte typed), 'eof' (input EOF, then
    `linger` seconds of quiet), 'output-closed' (out_fd is a closed pipe).
    """
    pending = b""
    in_open = True
    while True:
        rlist: list[Any] = [sock]
        if in_open and len(pending) < _MAX_PENDING:
            rlist.append(in_fd)
        wlist = [sock] if pending else []
        timeout = None if in_open or pending else linger
        readable, writable, _ = select.select(rlist, wlist, [], timeout)
        if not readable and not writable:
            return "eof"
        if sock in readable:
            try:
                data = sock.recv(_CHUNK)
            except (BlockingIOError, InterruptedError):
                data = None
            except OSError:
                return "closed"
            if data == b"":
                return "closed"
            if data:
                try:
                    _write_all(out_fd, data)
                except BrokenPipeError:
                    return "output-closed"
        if in_fd in readable:
            data = os.read(in_fd, _CHUNK)
            if not data:
                in_open = False
            elif escape is not None and escape in data:
                pending += data[:data.index(escape)]
                _flush(sock, pending)
                return "escape"
            else:
                pending += data
        if pending and sock in writable:
            try:
                n = sock.send(pending)
            except (BlockingIOError, InterruptedError):
                n = 0
            except OSError as e:
                if e.errno in (errno.EPIPE, errno.ECONNRESET):
                    return "closed"
                raise
            pending = pending[n:]


def _flush(sock: socket.socket, data: bytes) -> None:
    """Best effort: send what is left before detaching (never blocks for long)."""
    with contextlib.suppress(OSError):
        sock.setblocking(True)
        sock.settimeout(1.0)
        sock.sendall(data)


def attach(path: str, name: str, linger: float = 0.5,
           in_fd: int | None = None, out_fd: int | None = None) -> int:
    """Attach to the console socket at `path`; return the exit status (0 = detached)."""
    in_fd = sys.stdin.fileno() if in_fd is None else in_fd
    out_fd = sys.stdout.fileno() if out_fd is None else out_fd
    sys.stdout.flush()
    sock = connect(path)
    try:
        if os.isatty(in_fd):
            return _interactive(sock, name, in_fd, out_fd)
        with _signals_stop(signal.SIGTERM, signal.SIGHUP):
            try:
                pump(sock, in_fd, out_fd, linger=linger)
            except (_Stop, KeyboardInterrupt):
                pass
        return 0
    finally:
        sock.close()


def _interactive(sock: socket.socket, name: str, in_fd: int, out_fd: int) -> int:
    err = sys.stderr
    err.write(f"Connected to VM {name!r} (escape character is ^])\n")
    err.flush()
    saved = termios.tcgetattr(in_fd)
    why = "detached"
    try:
        with _signals_stop(signal.SIGTERM, signal.SIGHUP):
            tty.setraw(in_fd)
            try:
                why = pump(sock, in_fd, out_fd, escape=ESCAPE)
            except _Stop as e:
                why = f"{e}"
    finally:
        termios.tcsetattr(in_fd, termios.TCSADRAIN, saved)
    err.write("\n" + ("Console closed (the VM stopped?)\n" if why == "closed" else "Disconnected\n"))
    err.flush()
    return 0
