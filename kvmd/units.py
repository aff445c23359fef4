"""Byte sizes with units: parse `512MiB`, `2G`, `1048576` and print them back.

Binary prefixes are used for both spellings (`G` and `GiB` are 2**30), as QEMU and
libvirt do for memory; a bare integer is bytes.
"""

from __future__ import annotations

import re

_UNITS = {
    "": 1,
    "b": 1,
    "k": 1 << 10,
    "kb": 1 << 10,
    "kib": 1 << 10,
    "m": 1 << 20,
    "mb": 1 << 20,
    "mib": 1 << 20,
    "g": 1 << 30,
    "gb": 1 << 30,
    "gib": 1 << 30,
    "t": 1 << 40,
    "tb": 1 << 40,
    "tib": 1 << 40,
}
_SIZE_RE = re.compile(r"\s*([0-9]+)\s*([a-zA-Z]*)\s*", re.ASCII)  # ASCII digits only: no '٣'
_MAX_DIGITS = 24  # more than any size (2**64 has 20 digits); int() of thousands is slow, or refused


def parse_size(value: object) -> int:
    """Return `value` in bytes; raise ValueError with a readable reason."""
    if isinstance(value, bool):
        raise ValueError("must be a size such as 512MiB or 2G")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("must not be negative")
        return value
    if not isinstance(value, str):
        raise ValueError("must be a size such as 512MiB or 2G")
    m = _SIZE_RE.fullmatch(value)
    if not m or m.group(2).lower() not in _UNITS:
        raise ValueError(f"{value[:40]!r} is not a size such as 512MiB or 2G")
    if len(m.group(1).lstrip("0")) > _MAX_DIGITS:
        raise ValueError("is too large")
    return int(m.group(1)) * _UNITS[m.group(2).lower()]


def format_size(nbytes: int) -> str:
    """Shortest exact spelling of `nbytes`: 268435456 -> '256MiB'."""
    for suffix, mult in (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if nbytes and nbytes % mult == 0:
            return f"{nbytes // mult}{suffix}"
    return str(nbytes)
