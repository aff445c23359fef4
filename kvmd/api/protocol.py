"""JSON-RPC 2.0 message model and framing (one JSON text per line, UTF-8).

Parsing never raises on bad input: it yields a `Request`, or an error response to send
back (parse error, invalid request), so a malformed message never disturbs the daemon.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from kvmd import errors

MAX_LINE = 16 * 1024 * 1024


@dataclass
class Request:
    method: str
    params: dict[str, Any] | list[Any]
    id: Any = None
    is_notification: bool = False


def error_response(id_: Any, code: int, message: str, data: Any = None) -> dict[str, Any]:
    err: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        err["data"] = data
    return {"jsonrpc": "2.0", "id": id_, "error": err}


def result_response(id_: Any, result: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": id_, "result": result}


def notification(method: str, params: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "method": method, "params": params}


def encode(msg: Any) -> bytes:
    return json.dumps(msg, separators=(",", ":"), default=str).encode() + b"\n"


def parse_request(obj: Any) -> Request | dict[str, Any]:
    """One request object -> Request, or the error response for it."""
    if not isinstance(obj, dict):
        return error_response(None, errors.INVALID_REQUEST, "invalid request: not an object")
    id_ = obj.get("id")
    if "id" in obj and not (id_ is None or isinstance(id_, (str, int)) and not isinstance(id_, bool)):
        return error_response(None, errors.INVALID_REQUEST, "invalid request: id must be a string, number or null")
    if obj.get("jsonrpc") != "2.0":
        return error_response(id_, errors.INVALID_REQUEST, "invalid request: jsonrpc must be \"2.0\"")
    method = obj.get("method")
    if not isinstance(method, str) or not method:
        return error_response(id_, errors.INVALID_REQUEST, "invalid request: method must be a non-empty string")
    params = obj.get("params", {})
    if not isinstance(params, (dict, list)):
        return error_response(id_, errors.INVALID_REQUEST, "invalid request: params must be an object or array")
    return Request(method=method, params=params, id=id_, is_notification="id" not in obj)


def parse_line(line: bytes) -> tuple[list[Request | dict[str, Any]], bool]:
    """A framed line -> (requests-or-errors, is_batch)."""
    try:
        obj = json.loads(line)
    except (ValueError, UnicodeDecodeError) as e:
        return [error_response(None, errors.PARSE_ERROR, f"parse error: {e}")], False
    except RecursionError:
        return [error_response(None, errors.PARSE_ERROR, "parse error: nested too deeply")], False
    if isinstance(obj, list):
        if not obj:
            return [error_response(None, errors.INVALID_REQUEST, "invalid request: empty batch")], False
        return [parse_request(o) for o in obj], True
    return [parse_request(obj)], False
