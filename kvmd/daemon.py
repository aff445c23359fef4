"""`kvmd`: the daemon's entry point — configuration, logging, the API server, signals.

SIGTERM/SIGINT stop the daemon cleanly: the API socket closes and every QMP session
is let go, but no QEMU is touched; the next kvmd re-attaches to all of them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys

from kvmd import __version__, config, storage
from kvmd.api.server import Server
from kvmd.errors import KvmdError
from kvmd.manager import Manager

log = logging.getLogger("kvmd")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="kvmd", description="KVM mid-layer daemon: runs QEMU VMs over QMP.")
    p.add_argument("--config", help="YAML configuration file (default: built-in defaults)")
    p.add_argument("--state-dir", help="definitions and logs (default /var/lib/kvmd as root, $XDG_STATE_HOME/kvmd otherwise)")
    p.add_argument("--run-dir", help="sockets and runtime records (default /run/kvmd as root, $XDG_RUNTIME_DIR/kvmd otherwise)")
    p.add_argument("--accel", help="comma-separated accelerators to try in order (default kvm,tcg)")
    p.add_argument("--log-level", default=os.environ.get("KVMD_LOG_LEVEL", "INFO"))
    p.add_argument("--version", action="version", version=f"kvmd {__version__}")
    return p.parse_args(argv)


async def serve(cfg: config.Config, ready: asyncio.Event | None = None) -> None:
    manager = Manager(cfg)
    await manager.load()
    server = Server(manager, cfg.socket_path, cfg.socket_group)
    await server.start()
    pidfile = os.path.join(cfg.run_dir, "kvmd.pid")
    with open(pidfile, "w") as f:
        f.write(f"{os.getpid()}\n")
    log.info("kvmd %s serving on %s (%d VMs known)", __version__, cfg.socket_path, len(manager.vms))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if ready is not None:
        ready.set()
    try:
        await stop.wait()
    finally:
        log.info("stopping: VMs keep running")
        await server.close()
        await manager.close()
        await storage.close()
        with contextlib.suppress(OSError):
            os.unlink(pidfile)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        cfg = config.load(args.config, state_dir=args.state_dir, run_dir=args.run_dir,
                          accel=args.accel.split(",") if args.accel else None)
    except (KvmdError, OSError) as e:
        print(f"kvmd: bad configuration: {e}", file=sys.stderr)
        return 2
    try:
        asyncio.run(serve(cfg))
    except OSError as e:
        print(f"kvmd: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
