"""Runtime tuning of a running VM: display tickets, balloon target, removable media."""

from __future__ import annotations

from typing import Any

from kvmd.manager import Manager


def api_methods(m: Manager) -> dict[str, Any]:
    return {}
