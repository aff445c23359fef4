"""The QEMU guest agent client (org.qemu.guest_agent.0 channel)."""

from __future__ import annotations

from typing import Any

from kvmd.manager import Manager


def api_methods(m: Manager) -> dict[str, Any]:
    return {}
