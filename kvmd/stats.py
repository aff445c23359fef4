"""Runtime statistics of VMs (cpu, memory, block, network), collected concurrently."""

from __future__ import annotations

from typing import Any

from kvmd.manager import Manager


def api_methods(m: Manager) -> dict[str, Any]:
    return {}
