"""A JSON-RPC-over-STOMP client of the endpoint, on the `stomp.py` package.

Used by `python -m vdsm.client` (a vdsm-client-style CLI) and by the tests:

    with StompRpcClient("127.0.0.1", 54321) as c:
        c.call("Host.ping2")
        c.call("VM.getStats", vmID="...")

    python -m vdsm.client [--host H] [--port P] VM getStats vmID=...

Responses are matched by id; notifications (events) are queued and read with
`next_event()`. A JSON-RPC error raises `RpcError` with VDSM's code and message.
"""

from __future__ import annotations

import argparse
import json
import queue
import signal
import sys
import threading
import uuid
from typing import Any

import stomp

REQUESTS = "jms.topic.vdsm_requests"
EVENTS = "jms.queue.events"


class RpcError(Exception):
    def __init__(self, code: int, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class _Listener(stomp.ConnectionListener):
    def __init__(self, client: StompRpcClient):
        self.client = client

    def on_message(self, frame: Any) -> None:
        self.client._on_message(frame)

    def on_error(self, frame: Any) -> None:
        self.client.errors.put(frame)

    def on_disconnected(self) -> None:
        self.client.disconnected.set()


class StompRpcClient:
    def __init__(self, host: str = "127.0.0.1", port: int = 54321, heartbeats: tuple[int, int] = (0, 0),
                 timeout: float = 60.0, events: bool = True, tls: tuple[str, str, str | None] | None = None):
        """`tls`: (certificate, key, CA file) to speak TLS with a client certificate, as one
        VDSM host does to another during a migration."""
        self.host, self.port, self.timeout = host, port, timeout
        self.conn = stomp.Connection12([(host, port)], heartbeats=heartbeats, auto_content_length=True)
        if tls is not None:
            cert, key, ca = tls
            self.conn.set_ssl(for_hosts=[(host, port)], cert_file=cert, key_file=key, ca_certs=ca)
        self.reply_to = f"jms.topic.{uuid.uuid4()}"
        self._pending: dict[str, queue.Queue] = {}
        self._lock = threading.Lock()
        self.events: queue.Queue = queue.Queue()
        self.errors: queue.Queue = queue.Queue()
        self.disconnected = threading.Event()
        self.want_events = events

    def connect(self) -> StompRpcClient:
        self.conn.set_listener("rpc", _Listener(self))
        self.conn.connect(wait=True)
        self.conn.subscribe(self.reply_to, id="replies", ack="auto")
        if self.want_events:
            self.conn.subscribe(EVENTS, id="events", ack="auto")
        return self

    def _on_message(self, frame: Any) -> None:
        try:
            msg = json.loads(frame.body)
        except ValueError:
            return
        for m in msg if isinstance(msg, list) else [msg]:
            if "id" not in m or m.get("method"):
                self.events.put(m)
                continue
            with self._lock:
                q = self._pending.get(str(m.get("id")))
            if q is not None:
                q.put(m)

    def call(self, method: str, **params: Any) -> Any:
        req_id = str(uuid.uuid4())
        q: queue.Queue = queue.Queue()
        with self._lock:
            self._pending[req_id] = q
        try:
            body = json.dumps({"jsonrpc": "2.0", "id": req_id, "method": method, "params": params})
            self.conn.send(REQUESTS, body, headers={"reply-to": self.reply_to}, content_type="application/json")
            try:
                msg = q.get(timeout=self.timeout)
            except queue.Empty:
                raise TimeoutError(f"no reply to {method} within {self.timeout:g}s") from None
        finally:
            with self._lock:
                self._pending.pop(req_id, None)
        if "error" in msg:
            raise RpcError(msg["error"].get("code", -1), msg["error"].get("message", ""))
        return msg.get("result")

    def next_event(self, timeout: float = 30.0) -> dict[str, Any]:
        return self.events.get(timeout=timeout)

    def close(self) -> None:
        try:
            if self.conn.is_connected():
                self.conn.disconnect()
        except Exception:
            pass

    def __enter__(self) -> StompRpcClient:
        return self.connect()

    def __exit__(self, *exc: object) -> None:
        self.close()


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `... | head` ends quietly
    p = argparse.ArgumentParser(prog="python -m vdsm.client",
                                description="Call a VDSM verb over JSON-RPC/STOMP: NAMESPACE VERB [name=value ...]")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=54321)
    p.add_argument("--timeout", type=float, default=60)
    p.add_argument("namespace")
    p.add_argument("verb")
    p.add_argument("params", nargs="*", help="name=value (value parsed as JSON when it is JSON)")
    args = p.parse_args(argv)
    params = {}
    for item in args.params:
        if "=" not in item:
            p.error(f"parameter {item!r} is not name=value")
        k, v = item.split("=", 1)
        params[k] = _value(v)
    try:
        with StompRpcClient(args.host, args.port, timeout=args.timeout, events=False) as c:
            result = c.call(f"{args.namespace}.{args.verb}", **params)
    except RpcError as e:
        print(json.dumps({"code": e.code, "message": e.message}, indent=4), file=sys.stderr)
        return 1
    except (OSError, TimeoutError, stomp.exception.StompException) as e:
        print(f"vdsm-client: cannot reach {args.host}:{args.port}: {e}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=4))
    return 0


if __name__ == "__main__":
    sys.exit(main())
