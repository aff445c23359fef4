"""Hot-plug and unplug of disks and NICs on a running VM."""

from __future__ import annotations

from typing import Any

from kvmd.manager import Manager


def api_methods(m: Manager) -> dict[str, Any]:
    return {}
