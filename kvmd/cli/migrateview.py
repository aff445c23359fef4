"""`kvmctl migrate`: start a migration and follow it with a progress bar until it ends.

The migration is started with `wait=false`, then `vm.migrate_status` is polled a few
times a second: the bar shows the phase (storage copy, then memory), percent, speed and
what remains. Drawn with `rich` on stderr when it is a terminal; otherwise (or with
`--no-progress`, or `--json`) only the outcome is printed, on stdout. Ctrl-C cancels the migration (the VM keeps
running here) unless it already switched to postcopy.
"""

from __future__ import annotations

import time
from typing import Any

from kvmd.client import ApiError, Client

POLL = 0.2
DONE = ("completed", "failed", "cancelled")


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def describe(st: dict[str, Any]) -> str:
    """One line for a status: `memory 42.0% 120.3 MiB/s, 80.1 MiB left (active)`."""
    return (f"{st.get('phase', '?')} {st.get('percent', 0):.1f}% {_fmt_bytes(st.get('speed') or 0)}/s, "
            f"{_fmt_bytes(st.get('remaining') or 0)} left ({st.get('state')})")


def summary(st: dict[str, Any]) -> str:
    if st["state"] == "completed":
        return (f"VM {st['name']!r} migrated to {st['dest']} in {st.get('totalTime')} ms "
                f"(downtime {st.get('downtime')} ms)")
    return f"VM {st['name']!r} was not migrated ({st['state']}): {st.get('error')}; it keeps running here"


def follow(client: Client, name: str, show: bool) -> dict[str, Any]:
    """Poll the status until the migration ends; draw a bar if `show`."""
    if not show:
        return _poll(client, name, None)
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

    columns = (TextColumn("[bold]{task.fields[phase]}"), BarColumn(), TaskProgressColumn(),
               TextColumn("{task.fields[detail]}"), TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True), transient=False) as progress:
        task = progress.add_task(name, total=100.0, phase="preparing", detail="")

        def draw(st: dict[str, Any]) -> None:
            detail = f"{_fmt_bytes(st.get('speed') or 0)}/s, {_fmt_bytes(st.get('remaining') or 0)} left"
            progress.update(task, completed=st.get("percent") or 0.0, phase=f"{st['phase']} ({st['state']})",
                            detail=detail)
        return _poll(client, name, draw)


def _poll(client: Client, name: str, draw: Any) -> dict[str, Any]:
    try:
        while True:
            st = client.call("vm.migrate_status", name=name)
            if draw is not None:
                draw(st)
            if st["state"] in DONE:
                return st
            time.sleep(POLL)
    except KeyboardInterrupt:
        try:
            return client.call("vm.migrate_cancel", name=name)
        except ApiError:
            return client.call("vm.migrate_status", name=name)
