"""The API's method table: JSON-RPC method name -> manager call, with parameter checks.

Each method is a coroutine taking keyword parameters; a call with a missing, unknown or
mistyped parameter is answered with INVALID_PARAMS naming the parameter. The server
knows nothing of VMs; this module knows nothing of sockets.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any, get_type_hints

from kvmd.errors import InvalidParams, MethodNotFound
from kvmd import agent, hotplug, metadata, migration, snapshot, stats, storage, tuning
from kvmd.manager import Manager

Handler = Callable[..., Awaitable[Any]]


# Feature modules each contribute `api_methods(manager) -> {name: coroutine}`.
FEATURES = (hotplug, stats, agent, tuning, storage, metadata, migration, snapshot)


class Methods:
    def __init__(self, manager: Manager):
        m = manager
        self.manager = m

        async def define(spec: dict | str) -> dict:
            return await m.define(spec)

        async def undefine(name: str) -> None:
            await m.undefine(name)

        async def create(spec: dict | str, paused: bool = False) -> dict:
            return await m.create(spec, paused=paused)

        async def start(name: str, paused: bool = False) -> dict:
            return await m.start(name, paused=paused)

        async def pause(name: str) -> dict:
            return await m.pause(name)

        async def resume(name: str) -> dict:
            return await m.resume(name)

        async def reset(name: str) -> dict:
            return await m.reset(name)

        async def shutdown(name: str, timeout: float | None = None, wait: bool = True,
                           mode: str = "acpi") -> dict:
            return await m.shutdown(name, timeout=timeout, wait=wait, mode=mode)

        async def destroy(name: str) -> dict:
            return await m.destroy(name)

        async def list_() -> list:
            return m.list()

        async def info(name: str, spec: bool = False) -> dict:
            return m.info(name, spec=spec)

        async def host_info() -> dict:
            return m.host_info()

        self.table: dict[str, Handler] = {
            "vm.define": define, "vm.undefine": undefine, "vm.create": create,
            "vm.start": start, "vm.pause": pause, "vm.resume": resume, "vm.reset": reset,
            "vm.shutdown": shutdown, "vm.destroy": destroy, "vm.list": list_, "vm.info": info,
            "host.info": host_info,
        }
        for feature in FEATURES:
            self.table.update(feature.api_methods(m))

    def names(self) -> list[str]:
        return sorted(self.table)

    async def call(self, method: str, params: dict[str, Any] | list[Any]) -> Any:
        handler = self.table.get(method)
        if handler is None:
            raise MethodNotFound(f"method not found: {method}", {"method": method})
        kwargs = bind(handler, method, params)
        return await handler(**kwargs)


_TYPES = {"str": str, "dict": dict, "bool": bool, "float": (int, float), "int": int, "list": list}


def bind(handler: Handler, method: str, params: dict[str, Any] | list[Any]) -> dict[str, Any]:
    """Check `params` against the handler's signature; return keyword arguments."""
    sig = inspect.signature(handler)
    names = list(sig.parameters)
    if isinstance(params, list):
        if len(params) > len(names):
            raise InvalidParams(f"{method}: takes at most {len(names)} parameters, got {len(params)}")
        params = dict(zip(names, params))
    hints = get_type_hints(handler)
    for key in params:
        if key not in sig.parameters:
            raise InvalidParams(f"{method}: unknown parameter {key!r}", {"param": key})
    for name, p in sig.parameters.items():
        if name not in params:
            if p.default is inspect.Parameter.empty:
                raise InvalidParams(f"{method}: missing parameter {name!r}", {"param": name})
            continue
        value = params[name]
        allowed = _allowed(hints.get(name))
        if allowed and not _isinstance(value, allowed):
            want = " or ".join(sorted({t.__name__ if t is not type(None) else "null" for t in allowed}))
            raise InvalidParams(f"{method}: parameter {name!r} must be {want}", {"param": name})
    return dict(params)


def _allowed(hint: Any) -> tuple[type, ...]:
    if hint is None:
        return ()
    args = getattr(hint, "__args__", None)
    if args and getattr(hint, "__origin__", None) is None or args and type(hint).__name__ == "UnionType":
        out: list[type] = []
        for a in args:
            out.extend(_allowed(a) or ())
        return tuple(out)
    if hint is type(None):
        return (type(None),)
    if hint is float:
        return (int, float)
    origin = getattr(hint, "__origin__", None)
    return (origin or hint,) if isinstance(origin or hint, type) else ()


def _isinstance(value: Any, allowed: tuple[type, ...]) -> bool:
    if isinstance(value, bool) and bool not in allowed:
        return False
    return isinstance(value, allowed)
