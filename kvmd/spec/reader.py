"""A small reader that walks a parsed document and collects every problem with its path.

Validation must report all problems at once (`disks[1].format: must be one of qcow2,
raw`), so nothing here raises: each check records `(path, reason)` and returns a
fallback value so parsing carries on.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

from kvmd.units import parse_size

_MISSING = object()
_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
MAX_INT = (1 << 63) - 1  # the largest integer any field takes (QEMU's sizes are int64)


class Problems(list):
    """A list of (path, reason) pairs."""

    def add(self, path: str, reason: str) -> None:
        self.append((path, reason))


def join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


class Section:
    """One mapping in the document, read key by key; unknown keys are problems."""

    def __init__(self, data: Any, path: str, problems: Problems):
        self.path = path
        self.problems = problems
        self.seen: set[str] = set()
        if data is None:
            data = {}
        # a section that is not a mapping is one problem, not one more per field read from it
        self.valid = isinstance(data, dict)
        if not self.valid:
            problems.add(path or "(document)", "must be a mapping")
            data = {}
        self.data = data

    def _get(self, key: str) -> Any:
        self.seen.add(key)
        return self.data.get(key, _MISSING)

    def fail(self, key: str, reason: str) -> None:
        if self.valid:
            self.problems.add(join(self.path, key), reason)

    def str(self, key: str, default: Any = None, *, required: bool = False,
            choices: Iterable[str] | None = None, pattern: re.Pattern | None = None,
            pattern_reason: str = "") -> Any:
        value = self._get(key)
        if value is _MISSING or value is None:
            if required:
                self.fail(key, "is required")
            return default
        if not isinstance(value, str):
            self.fail(key, "must be a string")
            return default
        if choices is not None and value not in choices:
            self.fail(key, "must be one of " + ", ".join(choices))
            return default
        if pattern is not None and not pattern.fullmatch(value):  # `$` would let a trailing \n in
            self.fail(key, pattern_reason or f"must match {pattern.pattern}")
            return default
        return value

    def int(self, key: str, default: Any = None, *, minimum: int | None = None,
            maximum: int | None = None) -> Any:
        value = self._get(key)
        if value is _MISSING or value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(key, "must be an integer")
            return default
        if minimum is not None and value < minimum:
            self.fail(key, f"must be at least {minimum}")
            return default
        if maximum is not None and value > maximum:
            self.fail(key, f"must be at most {maximum}")
            return default
        if abs(value) > MAX_INT:  # no field means more; huge ints break YAML/JSON output
            self.fail(key, f"must be at most {MAX_INT}")
            return default
        return value

    def number(self, key: str, default: Any = None, *, minimum: float | None = None) -> Any:
        value = self._get(key)
        if value is _MISSING or value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            self.fail(key, "must be a number")
            return default
        if minimum is not None and value < minimum:
            self.fail(key, f"must be at least {minimum:g}")
            return default
        return value

    def bool(self, key: str, default: bool) -> bool:
        value = self._get(key)
        if value is _MISSING or value is None:
            return default
        if not isinstance(value, bool):
            self.fail(key, "must be true or false")
            return default
        return value

    def size(self, key: str, default: Any = None, *, minimum: int = 0) -> Any:
        value = self._get(key)
        if value is _MISSING or value is None:
            return default
        try:
            size = parse_size(value)
        except ValueError as e:
            self.fail(key, str(e))
            return default
        if size < minimum:
            self.fail(key, f"must be at least {minimum} bytes")
            return default
        if size > MAX_INT:
            self.fail(key, "must be at most 8EiB")
            return default
        return size

    def section(self, key: str) -> Section:
        value = self._get(key)
        return Section(None if value is _MISSING else value, join(self.path, key), self.problems)

    def list(self, key: str) -> list[tuple[str, Any]]:
        """Items of a list with their paths; a missing list is empty."""
        value = self._get(key)
        if value is _MISSING or value is None:
            return []
        if not isinstance(value, list):
            self.fail(key, "must be a list")
            return []
        base = join(self.path, key)
        return [(join(base, i), item) for i, item in enumerate(value)]

    def str_list(self, key: str, default: list[str], *,
                 check: Callable[[str], str | None] | None = None) -> list[str]:
        value = self._get(key)
        if value is _MISSING or value is None:
            return list(default)
        if not isinstance(value, list):
            self.fail(key, "must be a list of strings")
            return list(default)
        out = []
        for i, item in enumerate(value):
            path = join(join(self.path, key), i)
            if not isinstance(item, str):
                self.problems.add(path, "must be a string")
                continue
            reason = check(item) if check else None
            if reason:
                self.problems.add(path, reason)
                continue
            out.append(item)
        return out

    def raw(self, key: str, default: Any = None) -> Any:
        value = self._get(key)
        return default if value is _MISSING else value

    def finish(self) -> None:
        for key in self.data:
            if key not in self.seen:
                # an odd key ('', 'a.b', 5, 'x\n') is quoted so the path stays readable
                shown = key if isinstance(key, str) and _PLAIN_KEY.fullmatch(key) else repr(key)
                self.problems.add(join(self.path, shown), "unknown field")
