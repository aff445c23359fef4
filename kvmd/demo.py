"""`make run`: start kvmd (built-in defaults) in the background and boot a demo VM.

The demo VM boots the given kernel/initramfs (the project's test guest) with a serial
console, VNC and user networking, or stays firmware-only when no kernel is given. It
prints how to reach everything. `--stop` destroys the demo VM and stops the daemon
(which, stopped any other way, leaves VMs running by design).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time

from kvmd import config
from kvmd.client import ApiError, Client


def _connect(sock: str) -> Client | None:
    try:
        return Client(sock).connect()
    except OSError:
        return None


def start_daemon(cfg: config.Config) -> Client:
    client = _connect(cfg.socket_path)
    if client:
        print(f"kvmd already running on {cfg.socket_path}")
        return client
    os.makedirs(cfg.state_dir, exist_ok=True)
    log_path = os.path.join(cfg.state_dir, "kvmd.log")
    with open(log_path, "ab") as log:
        subprocess.Popen([sys.executable, "-m", "kvmd.daemon"], stdout=log, stderr=log,
                         stdin=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        client = _connect(cfg.socket_path)
        if client:
            print(f"started kvmd on {cfg.socket_path} (log: {log_path})")
            return client
        time.sleep(0.05)
    sys.exit(f"kvmd did not start; see {log_path}")


def demo_spec(args: argparse.Namespace) -> dict:
    spec: dict = {
        "name": args.name,
        "cpu": {"count": 1},
        "memory": {"size": "256MiB"},
        "nics": [{"backend": "user"}],
        "graphics": [{"type": "vnc", "listen": "127.0.0.1"}],
        "guestAgent": True,
        "metadata": {"purpose": "kvmd demo (make run)"},
    }
    if args.kernel:
        spec["boot"] = {"kernel": args.kernel, "initrd": args.initrd, "cmdline": args.cmdline}
    return spec


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="kvmd-demo", description=__doc__.splitlines()[0])
    p.add_argument("--name", default="demo")
    p.add_argument("--kernel")
    p.add_argument("--initrd")
    p.add_argument("--cmdline", default="console=ttyS0 quiet")
    p.add_argument("--stop", action="store_true", help="destroy the demo VM and stop kvmd")
    args = p.parse_args(argv)
    cfg = config.load()
    if args.stop:
        client = _connect(cfg.socket_path)
        if client:
            try:
                client.call("vm.destroy", name=args.name)
            except ApiError:
                pass
            client.close()
        try:
            with open(os.path.join(cfg.run_dir, "kvmd.pid")) as f:
                os.kill(int(f.read()), signal.SIGTERM)
            print("kvmd stopped")
        except (OSError, ValueError):
            print("kvmd was not running")
        return 0
    client = start_daemon(cfg)
    try:
        info = client.call("vm.info", name=args.name)
    except ApiError:
        info = None
    if info is None or info["state"] not in ("running", "paused"):
        try:
            info = client.call("vm.create", spec=demo_spec(args))
        except ApiError as e:
            sys.exit(f"demo VM failed to start: {e.message}")
    kvmctl = os.path.join(os.path.dirname(sys.executable), "kvmctl")
    vnc = next((g for g in info["graphics"] if g["type"] == "vnc"), None)
    print(f"""
demo VM {info['name']!r} is {info['state']} (pid {info['pid']}, uuid {info['uuid']})
  accelerators tried: {', '.join(cfg.accel)}
  list VMs:        {kvmctl} list
  serial console:  {kvmctl} console {info['name']}     (Ctrl-] leaves)
  console log:     {info['consoleLog']}
  VNC display:     {f"{vnc['host']}:{vnc['port']}" if vnc else 'none'}
  guest agent:     {info['guestAgent']}
  API socket:      {cfg.socket_path}  (JSON-RPC 2.0, one JSON document per line)
  stop it all:     make stop
""")
    client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
