"""The engine-facing VDSM-compatible agent (JSON-RPC over STOMP); built in a later issue."""
