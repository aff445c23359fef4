"""JSON-RPC 2.0 dispatch for the VDSM endpoint: schema checks, VDSM error codes.

A body (one request or a batch) arrives from a STOMP SEND; the reply body goes back as
a MESSAGE. Unknown verb → JSON-RPC -32601; missing or mistyped parameter → VDSM code 11
naming it; a verb in the schema without an implementation → 44; while the endpoint
recovers its VM list → 99; any unexpected failure → 16 with the reason. Requests in a
batch run concurrently.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from kvmd.api import protocol
from vdsm import errors, schema
from vdsm.errors import VdsmError

log = logging.getLogger(__name__)

Handler = Callable[..., Awaitable[Any]]


class Dispatcher:
    def __init__(self, handlers: dict[str, Handler], verbs: dict[str, schema.Verb] | None = None):
        self.verbs = verbs if verbs is not None else schema.load()
        self.handlers = handlers
        self.recovering = False

    async def handle(self, body: bytes, headers: dict[str, str] | None = None) -> bytes | None:
        items, is_batch = protocol.parse_line(body)
        replies = await asyncio.gather(*(self._one(item) for item in items))
        out = [r for r in replies if r is not None]
        if not out:
            return None
        return json.dumps(out if is_batch else out[0], default=str).encode()

    async def _one(self, item: protocol.Request | dict[str, Any]) -> dict[str, Any] | None:
        if isinstance(item, dict):
            return item
        try:
            result = await self.call(item.method, item.params)
        except VdsmError as e:
            if item.is_notification:
                return None
            return {"jsonrpc": "2.0", "id": item.id, "error": e.to_json()}
        except _MethodNotFound:
            return None if item.is_notification else protocol.error_response(
                item.id, protocol.errors.METHOD_NOT_FOUND, f"The method does not exist / is not available: {item.method}")
        except Exception as e:
            log.exception("verb %s failed", item.method)
            if item.is_notification:
                return None
            err = VdsmError(errors.UNEXPECTED, f"{type(e).__name__}: {e}")
            return {"jsonrpc": "2.0", "id": item.id, "error": err.to_json()}
        return None if item.is_notification else protocol.result_response(item.id, result)

    async def call(self, method: str, params: dict[str, Any] | list[Any]) -> Any:
        verb = self.verbs.get(method)
        if verb is None:
            raise _MethodNotFound(method)
        if isinstance(params, list):
            params = {p.name: v for p, v in zip(verb.params, params)}
        try:
            schema.check(verb, params)
        except schema.ParamError as e:
            raise VdsmError(errors.MISSING_PARAM, message=str(e)) from None
        handler = self.handlers.get(method)
        if handler is None:
            raise VdsmError(errors.NOT_IMPLEMENTED, method)
        if self.recovering and method not in ("Host.ping2", "Host.echo"):
            raise VdsmError(errors.RECOVERY)
        known = {p.name for p in verb.params}
        return await handler(**{k: v for k, v in params.items() if k in known})


class _MethodNotFound(Exception):
    pass
