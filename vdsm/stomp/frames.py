"""STOMP frames on a byte stream: split incoming bytes into frames, serialise outgoing.

A frame is `COMMAND\\n` + `header:value\\n`* + `\\n` + body + NUL. When `content-length`
is present the body is exactly that many bytes (it may contain NULs); otherwise it
ends at the first NUL. Bare EOLs between frames are heart-beats. Header parsing (with
STOMP 1.2 unescaping) is `stomp.utils.parse_frame`; we only find frame boundaries.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from stomp import utils as stomp_utils

MAX_HEADER_BYTES = 64 * 1024
MAX_FRAME_BYTES = 64 * 1024 * 1024

_ESCAPES = {"\\": "\\\\", "\n": "\\n", ":": "\\c", "\r": "\\r"}


class FrameError(Exception):
    """The peer sent something that is not STOMP; the connection gets an ERROR frame."""


@dataclass
class Frame:
    command: str
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    def encode(self) -> bytes:
        return encode(self.command, self.headers, self.body)


def _escape(value: str) -> str:
    return "".join(_ESCAPES.get(c, c) for c in value)


def encode(command: str, headers: dict[str, object], body: bytes = b"") -> bytes:
    """Serialise one frame (headers escaped as STOMP 1.2 requires; CONNECTED excepted)."""
    lines = [command]
    esc = command != "CONNECTED"
    for key, value in headers.items():
        if value is None:
            continue
        k, v = str(key), str(value)
        lines.append(f"{_escape(k)}:{_escape(v)}" if esc else f"{k}:{v}")
    if body and "content-length" not in headers:
        lines.append(f"content-length:{len(body)}")
    return ("\n".join(lines) + "\n\n").encode() + body + b"\0"


class FrameBuffer:
    """Feed bytes in, take complete frames out; heart-beat EOLs are counted, not framed."""

    def __init__(self, max_frame: int = MAX_FRAME_BYTES):
        self.buf = bytearray()
        self.max_frame = max_frame
        self.heartbeats = 0

    def feed(self, data: bytes) -> list[Frame]:
        self.buf += data
        frames = []
        while True:
            frame = self._next()
            if frame is None:
                break
            frames.append(frame)
        return frames

    def _next(self) -> Frame | None:
        buf = self.buf
        # heart-beats: EOLs before a frame
        start = 0
        while start < len(buf) and buf[start] in (0x0A, 0x0D):
            if buf[start] == 0x0A:
                self.heartbeats += 1
            start += 1
        if start:
            del buf[:start]
        if not buf:
            return None
        end_headers = buf.find(b"\n\n")
        alt = buf.find(b"\r\n\r\n")
        if alt != -1 and (end_headers == -1 or alt < end_headers):
            end_headers, sep = alt, 4
        else:
            sep = 2
        if end_headers == -1 or end_headers > MAX_HEADER_BYTES:
            # the limit holds however the bytes arrived (in one read or in many)
            if len(buf) > MAX_HEADER_BYTES:
                raise FrameError("frame headers too large")
            return None
        preamble = bytes(buf[:end_headers])
        body_start = end_headers + sep
        length = None
        for line in preamble.split(b"\n")[1:]:
            if line.lower().startswith(b"content-length:"):
                try:
                    length = int(line.split(b":", 1)[1].strip())
                except ValueError:
                    raise FrameError("content-length is not a number") from None
                if length < 0 or length > self.max_frame:
                    raise FrameError("content-length out of range")
                break
        if length is not None:
            if len(buf) < body_start + length + 1:
                return None
            if buf[body_start + length] != 0:
                raise FrameError("frame body longer than its content-length")
            body = bytes(buf[body_start:body_start + length])
            end = body_start + length + 1
        else:
            nul = buf.find(b"\0", body_start)
            if nul == -1:
                if len(buf) > self.max_frame:
                    raise FrameError("frame too large")
                return None
            body = bytes(buf[body_start:nul])
            end = nul + 1
        del buf[:end]
        parsed = stomp_utils.parse_frame(preamble + b"\n\n")
        if parsed is None or not parsed.cmd:
            raise FrameError("frame without a command")
        command = parsed.cmd.strip()
        if not command.isalpha() or not command.isupper():
            raise FrameError(f"not a STOMP command: {command[:40]!r}")
        return Frame(command, dict(parsed.headers), body)
