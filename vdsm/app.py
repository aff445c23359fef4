"""`vdsm`: the engine-facing endpoint — VDSM verbs as JSON-RPC over STOMP.

    vdsm [--config FILE] [--host ADDR] [--port N] [--backend kvmd|libvirt]
         [--kvmd-socket PATH] [--libvirt-uri URI] [--hooks-dir DIR]

It needs nothing but a reachable kvmd (or libvirtd). The verbs themselves live in
`vdsm.virt`; this module wires configuration, the STOMP server, the JSON-RPC dispatcher
and the event feed together, and handles signals.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
import time
from typing import Any

from vdsm import config as vconfig
from vdsm.jsonrpc import Dispatcher
from vdsm.stomp.server import StompServer, tls_context

log = logging.getLogger("vdsm")


class Endpoint:
    """The running endpoint: STOMP server + dispatcher + the virtualization layer."""

    def __init__(self, cfg: vconfig.Config):
        self.cfg = cfg
        from vdsm.virt.service import VirtService  # the verbs; imported late (libvirt is heavy)
        self.virt = VirtService(cfg, self.emit)
        self.dispatcher = Dispatcher(self.virt.handlers())
        ctx = tls_context(cfg.tls_cert, cfg.tls_key, cfg.tls_ca) if cfg.tls_cert and cfg.tls_key else None
        self.stomp = StompServer(self.dispatcher.handle, heartbeat=tuple(cfg.heartbeat_ms), ssl_context=ctx)  # type: ignore[arg-type]
        self.port: int | None = None

    def emit(self, method: str, params: dict[str, Any]) -> None:
        """Push a JSON-RPC notification to the events destination's subscribers."""
        params = dict(params)
        params.setdefault("notify_time", int(time.monotonic() * 1000))
        body = json.dumps({"jsonrpc": "2.0", "method": method, "params": params}, default=str).encode()
        self.stomp.notify(body, self.cfg.events_destination)

    async def start(self) -> int:
        await self.agent_hook("before_vdsm_start")
        self.dispatcher.recovering = True
        self.port = await self.stomp.start(self.cfg.host, self.cfg.port)
        try:
            await self.virt.start()
        finally:
            self.dispatcher.recovering = False
        return self.port

    async def close(self) -> None:
        await self.stomp.close()
        await self.virt.close()
        await self.agent_hook("after_vdsm_stop")

    async def agent_hook(self, point: str) -> None:
        """The agent's own lifecycle points; VDSM ignores their failures."""
        from hooks.runner import run_hooks_async
        try:
            await run_hooks_async(point, None, config=self.virt.hooks.config(self.cfg.backend), raise_errors=False)
        except Exception as e:
            log.warning("hook %s failed (ignored): %s", point, e)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="vdsm", description="VDSM-compatible endpoint (JSON-RPC over STOMP) on kvmd or libvirt")
    p.add_argument("--config")
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument("--backend", choices=vconfig.BACKENDS)
    p.add_argument("--kvmd-socket")
    p.add_argument("--libvirt-uri")
    p.add_argument("--hooks-dir")
    p.add_argument("--state-dir")
    p.add_argument("--log-level", default="INFO")
    return p.parse_args(argv)


async def serve(cfg: vconfig.Config) -> None:
    endpoint = Endpoint(cfg)
    port = await endpoint.start()
    log.info("vdsm endpoint on %s:%d (backend %s)", cfg.host, port, cfg.backend)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await endpoint.close()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        cfg = vconfig.load(args.config, host=args.host, port=args.port, backend=args.backend,
                           kvmd_socket=args.kvmd_socket, libvirt_uri=args.libvirt_uri,
                           hooks_dir=args.hooks_dir, state_dir=args.state_dir)
    except (OSError, ValueError) as e:
        print(f"vdsm: bad configuration: {e}", file=sys.stderr)
        return 2
    try:
        asyncio.run(serve(cfg))
    except OSError as e:
        print(f"vdsm: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
