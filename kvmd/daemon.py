"""`kvmd`: the daemon's entry point — configuration, logging, the API server, signals.

`--listen-tcp HOST:PORT` (with `--peer-token-file`) also serves the API to migration
peers on TCP, token-authenticated and limited to the migration methods
(`kvmd.migration.listener`).

SIGTERM/SIGINT stop the daemon cleanly: the API socket closes and every QMP session
is let go, but no QEMU is touched; the next kvmd re-attaches to all of them.

`kvmd --check-config [--config FILE]` validates the configuration and the host side of
it (QEMU binary, runAs user, directories) without starting anything: it prints
`config OK` and the effective settings (exit 0), or every problem by field path (exit 2).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys

from kvmd import __version__, cgroups, config, storage
from kvmd.api.server import Server
from kvmd.errors import KvmdError
from kvmd.manager import Manager
from kvmd.migration import listener as migration_listener

log = logging.getLogger("kvmd")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="kvmd", description="KVM mid-layer daemon: runs QEMU VMs over QMP.")
    p.add_argument("--config", help="YAML configuration file (default: built-in defaults)")
    p.add_argument("--state-dir", help="definitions and logs (default /var/lib/kvmd as root, $XDG_STATE_HOME/kvmd otherwise)")
    p.add_argument("--run-dir", help="sockets and runtime records (default /run/kvmd as root, $XDG_RUNTIME_DIR/kvmd otherwise)")
    p.add_argument("--accel", help="comma-separated accelerators to try in order (default kvm,tcg)")
    p.add_argument("--log-level", default=os.environ.get("KVMD_LOG_LEVEL", "INFO"))
    p.add_argument("--listen-tcp", metavar="HOST:PORT",
                   help="also serve the API to migration peers on TCP (token-authenticated; config apiTcp.listen)")
    p.add_argument("--peer-token-file", metavar="PATH",
                   help="shared secret of migration peers, mode 0600 (config apiTcp.tokenFile)")
    p.add_argument("--check-config", action="store_true",
                   help="validate the configuration and probe QEMU; print the effective settings "
                        "(exit 0) or every problem (exit 2)")
    p.add_argument("--version", action="version", version=f"kvmd {__version__}")
    return p.parse_args(argv)


async def serve(cfg: config.Config, ready: asyncio.Event | None = None) -> None:
    manager = Manager(cfg)
    await manager.load()
    server = Server(manager, cfg.socket_path, cfg.socket_group)
    peers = await migration_listener.start(manager, server.methods, cfg)
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
        if peers is not None:
            await peers.close()
        await manager.close()
        await storage.close()
        with contextlib.suppress(OSError):
            os.unlink(pidfile)


def check_config(args: argparse.Namespace) -> int:
    """`--check-config`: every problem by field path, or `config OK` and the settings."""
    import yaml

    from kvmd.qemu import probe

    where = args.config or "built-in defaults"
    try:
        cfg = config.load(args.config, state_dir=args.state_dir, run_dir=args.run_dir,
                          accel=args.accel.split(",") if args.accel else None)
        problems = config.check(cfg)
    except KvmdError as e:
        problems = list(getattr(e, "problems", [("", e.message)]))
    except OSError as e:
        problems = [("", f"cannot read {args.config}: {e.strerror or e}")]
    if problems:
        print(f"config {where}: {len(problems)} problem(s)")
        for path, reason in problems:
            print(f"  {path or '(file)'}: {reason}")
        return 2
    print(f"config OK ({where})")
    doc = config.to_doc(cfg)
    caps = probe.probe(cfg.qemu)
    doc["qemuVersion"] = ".".join(map(str, caps.version))
    doc["cgroupsHere"] = cgroups.for_config(cfg).to_json()
    print(yaml.safe_dump(doc, sort_keys=False, default_flow_style=False).rstrip())
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.check_config:
        return check_config(args)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        cfg = config.load(args.config, state_dir=args.state_dir, run_dir=args.run_dir,
                          accel=args.accel.split(",") if args.accel else None,
                          api_tcp=args.listen_tcp, peer_token_file=args.peer_token_file)
    except (KvmdError, OSError) as e:
        print(f"kvmd: bad configuration: {e}", file=sys.stderr)
        return 2
    try:
        asyncio.run(serve(cfg))
    except (OSError, KvmdError) as e:
        print(f"kvmd: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
