"""STOMP 1.2 server side, as VDSM speaks it: framing (`frames`), destinations and
subscriptions (`broker`), and the asyncio server with heart-beats and TLS (`server`).

Header parsing and frame serialisation come from the `stomp.py` package's utilities;
what it does not offer a server (splitting a byte stream into frames honouring
`content-length` and heart-beat EOLs, the server state machine) lives here.
"""
