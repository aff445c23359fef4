"""How `kvmctl` shows results: plain-text tables and key/value lines for people, JSON
for scripts.

Everything here is pure (data in, text out) so it is unit-tested without a daemon.
Missing values (`None`) show as `-`; sizes use binary units (`256MiB`, `1.5GiB`);
durations are short (`5m07s`); times are local (`2025-06-01 12:00:00`).
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Iterable, Sequence
from typing import Any

import yaml

NONE = "-"

_SIZE_UNITS = (("TiB", 1 << 40), ("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10))

# info() keys shown as sizes, durations or times, wherever they appear
_SIZE_KEYS = {"memory", "maxMemory", "size"}
_DURATION_KEYS = {"uptime"}
_TIME_KEYS = {"startedAt", "time"}


def human_size(nbytes: int | None) -> str:
    """268435456 -> '256MiB'; 1610612736 -> '1.5GiB'; 512 -> '512B'."""
    if nbytes is None:
        return NONE
    for suffix, mult in _SIZE_UNITS:
        if abs(nbytes) >= mult:
            if nbytes % mult == 0:
                return f"{nbytes // mult}{suffix}"
            return f"{nbytes / mult:.1f}{suffix}"
    return f"{nbytes}B"


def human_duration(seconds: float | None) -> str:
    """7 -> '7s'; 427 -> '7m07s'; 11040 -> '3h04m'; 183600 -> '2d03h'."""
    if seconds is None:
        return NONE
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def human_time(ts: float | None, millis: bool = False) -> str:
    """A Unix timestamp as local time: '2025-06-01 12:00:00' (with '.123' if `millis`)."""
    if ts is None:
        return NONE
    dt = datetime.datetime.fromtimestamp(ts)
    text = dt.strftime("%Y-%m-%d %H:%M:%S")
    return f"{text}.{dt.microsecond // 1000:03d}" if millis else text


def scalar(value: Any) -> str:
    """One value as table text: None -> '-', booleans -> yes/no, lists comma-joined."""
    if value is None or value == "":
        return NONE
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (list, tuple)):
        return ", ".join(scalar(v) for v in value) if value else NONE
    if isinstance(value, dict):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """Columns padded to their widest cell, two spaces apart, no trailing blanks."""
    cells = [[str(h) for h in headers]] + [[scalar(c) for c in row] for row in rows]
    for row in cells:
        if len(row) != len(headers):
            raise ValueError(f"table row has {len(row)} cells, expected {len(headers)}: {row}")
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    return "\n".join(lines)


def key_values(pairs: Iterable[tuple[str, Any]]) -> str:
    """'key:  value' lines with the values aligned."""
    items = [(k, scalar(v)) for k, v in pairs]
    if not items:
        return ""
    width = max(len(k) for k, _ in items) + 1
    return "\n".join(f"{k + ':':<{width}} {v}".rstrip() for k, v in items)


def to_json(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=False)


def to_yaml(value: Any) -> str:
    return yaml.safe_dump(value, sort_keys=False, default_flow_style=False).rstrip("\n")


# -- VMs -----------------------------------------------------------------------------

VM_COLUMNS = ("NAME", "STATE", "UUID", "VCPUS", "MEMORY", "PID", "UPTIME")


def vm_row(vm: dict[str, Any]) -> list[Any]:
    return [vm.get("name"), vm.get("state"), vm.get("uuid"), vm.get("vcpus"),
            human_size(vm.get("memory")), vm.get("pid"), human_duration(vm.get("uptime"))]


def vm_table(vms: Iterable[dict[str, Any]]) -> str:
    return table(VM_COLUMNS, (vm_row(vm) for vm in vms))


def _graphics(items: list[dict[str, Any]]) -> str:
    return ", ".join(f"{g.get('type')} {g.get('host')}:{g.get('port')}" for g in items) or NONE


def _value(key: str, value: Any) -> Any:
    if value is None:
        return None
    if key in _SIZE_KEYS and isinstance(value, int) and not isinstance(value, bool):
        return human_size(value)
    if key in _DURATION_KEYS and isinstance(value, (int, float)):
        return human_duration(value)
    if key in _TIME_KEYS and isinstance(value, (int, float)):
        return human_time(value)
    return value


def vm_info(info: dict[str, Any]) -> str:
    """vm.info as key/value lines (the spec, if present, is left to `to_yaml`)."""
    pairs: list[tuple[str, Any]] = []
    for key, value in info.items():
        if key in ("spec", "definition"):
            continue
        if key == "graphics":
            pairs.append((key, _graphics(value or [])))
        elif key == "channels":  # {name: socket}
            pairs.append((key, _value(key, ", ".join(f"{k}={v}" for k, v in (value or {}).items()) or None)))
        else:
            pairs.append((key, _value(key, value)))
    return key_values(pairs)


def flatten(value: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """Nested mappings as dotted keys: {'qemu': {'version': '7.2'}} -> [('qemu.version', '7.2')]."""
    if isinstance(value, dict):
        if not value and prefix:
            return [(prefix, None)]
        out: list[tuple[str, Any]] = []
        for k, v in value.items():
            out += flatten(v, f"{prefix}.{k}" if prefix else str(k))
        return out
    if isinstance(value, list) and any(isinstance(v, (dict, list)) for v in value):
        out = []
        for i, v in enumerate(value):
            out += flatten(v, f"{prefix}[{i}]")
        return out
    leaf = prefix.rsplit(".", 1)[-1]
    return [(prefix, _value(leaf, value))]


def host_info(info: dict[str, Any]) -> str:
    return key_values(flatten(info))


# -- events --------------------------------------------------------------------------

def event_line(event: dict[str, Any]) -> str:
    """'2025-06-01 12:00:00.123  vm1  running -> paused  (paused)'."""
    when = human_time(event.get("time"), millis=True)
    vm = event.get("vm") or NONE
    if event.get("type", "state") == "state" and "state" in event:
        line = f"{when}  {vm}  {event.get('previous') or NONE} -> {event['state']}"
        reason = event.get("reason")
        return f"{line}  ({reason})" if reason and reason != event["state"] else line
    rest = {k: v for k, v in event.items() if k not in ("time", "vm", "type")}
    return f"{when}  {vm}  {event.get('type', 'event')}  {json.dumps(rest, separators=(',', ':'))}"


# -- errors --------------------------------------------------------------------------

def spec_problems(data: Any) -> list[str]:
    """The 'path: reason' lines of an invalid-spec error's data (may be empty)."""
    errors = data.get("errors") if isinstance(data, dict) else None
    out = []
    for e in errors or []:
        if isinstance(e, dict):
            path, reason = e.get("path"), e.get("reason", "")
            out.append(f"{path}: {reason}" if path else str(reason))
    return out
