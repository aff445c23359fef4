"""kvmd's public API: JSON-RPC 2.0 over a unix socket.

`protocol` is the message model (parse/encode, framing: one JSON document per line),
`methods` the dispatch table from method names to the manager, `server` the transport
(asyncio unix server, peer-credential check, per-connection event subscriptions).
"""
