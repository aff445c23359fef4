"""The guest agent API: ping, guest info, filesystem freeze/thaw (for snapshots).

The session itself (connect, `guest-sync`, one command at a time, timeouts) is
`kvmd.qga`; this module only turns API calls into agent commands and shapes the
answers. Every method takes an optional `timeout` (seconds, default
`qga.DEFAULT_TIMEOUT`); an agent that does not answer in time is `AGENT_UNRESPONSIVE`
(11), an agent that answers with an error is `AGENT_ERROR` (13). The agent shutdown mode
is `vm.shutdown(mode="agent")` (kvmd.vm).
"""

from __future__ import annotations

import time
from typing import Any

from kvmd import qga
from kvmd.errors import AgentError, InvalidParams, WrongState
from kvmd.manager import Manager
from kvmd.states import State
from kvmd.vm import VM


def agent_of(vm: VM) -> qga.GuestAgent:
    """The VM's agent session; WrongState unless the guest runs (a paused one cannot answer)."""
    if vm.state not in (State.RUNNING, State.SHUTTING_DOWN):
        raise WrongState(f"the guest agent of {vm.name!r} cannot answer: the VM is {vm.state}",
                         {"name": vm.name, "state": str(vm.state)})
    return qga.for_vm(vm)


def _timeout(timeout: float | None) -> float | None:
    if timeout is not None and timeout <= 0:
        raise InvalidParams("timeout must be positive", {"param": "timeout"})
    return timeout


async def ping(vm: VM, timeout: float | None = None) -> dict[str, Any]:
    started = time.monotonic()
    await agent_of(vm).call("guest-ping", timeout=_timeout(timeout))
    return {"name": vm.name, "responsive": True, "ms": round((time.monotonic() - started) * 1000, 1)}


async def guest_info(vm: VM, timeout: float | None = None) -> dict[str, Any]:
    """OS, hostname and network interfaces; a command the agent refuses gives null."""
    agent = agent_of(vm)
    t = _timeout(timeout)
    out: dict[str, Any] = {"name": vm.name}
    errors: dict[str, str] = {}
    for key, cmd in (("os", "guest-get-osinfo"), ("hostname", "guest-get-host-name"),
                     ("interfaces", "guest-network-get-interfaces")):
        try:
            out[key] = await agent.call(cmd, timeout=t)
        except AgentError as e:  # e.g. a command the guest's agent does not have
            out[key] = None
            errors[key] = e.message
    if isinstance(out["hostname"], dict):
        out["hostname"] = out["hostname"].get("host-name")
    if errors:
        out["errors"] = errors
    return out


async def fsfreeze(vm: VM, timeout: float | None = None) -> dict[str, Any]:
    frozen = await agent_of(vm).call("guest-fsfreeze-freeze", timeout=_timeout(timeout))
    return {"name": vm.name, "status": "frozen", "filesystems": frozen}


async def fsthaw(vm: VM, timeout: float | None = None) -> dict[str, Any]:
    thawed = await agent_of(vm).call("guest-fsfreeze-thaw", timeout=_timeout(timeout))
    return {"name": vm.name, "status": "thawed", "filesystems": thawed}


async def fsfreeze_status(vm: VM, timeout: float | None = None) -> dict[str, Any]:
    status = await agent_of(vm).call("guest-fsfreeze-status", timeout=_timeout(timeout))
    return {"name": vm.name, "status": status}


def api_methods(m: Manager) -> dict[str, Any]:
    async def agent_ping(name: str, timeout: float | None = None) -> dict:
        return await ping(m.get(name), timeout)

    async def guest_info_(name: str, timeout: float | None = None) -> dict:
        return await guest_info(m.get(name), timeout)

    async def fsfreeze_(name: str, timeout: float | None = None) -> dict:
        return await fsfreeze(m.get(name), timeout)

    async def fsthaw_(name: str, timeout: float | None = None) -> dict:
        return await fsthaw(m.get(name), timeout)

    async def fsfreeze_status_(name: str, timeout: float | None = None) -> dict:
        return await fsfreeze_status(m.get(name), timeout)

    return {"vm.agent_ping": agent_ping, "vm.guest_info": guest_info_, "vm.fsfreeze": fsfreeze_,
            "vm.fsthaw": fsthaw_, "vm.fsfreeze_status": fsfreeze_status_}
