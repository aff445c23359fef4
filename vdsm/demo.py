"""`make run`, second half: start the VDSM endpoint on kvmd in the background.

It listens on 127.0.0.1:54321 (plain TCP, for local use), backed by the kvmd that the
first half started, and prints how to point a client at it. `--stop` stops it.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time

from kvmd.client import default_socket


def _listening(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="vdsm-demo")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=54321)
    p.add_argument("--state-dir", default="/var/lib/kvmd-vdsm" if os.getuid() == 0 else os.path.expanduser("~/.local/state/kvmd-vdsm"))
    p.add_argument("--stop", action="store_true")
    args = p.parse_args(argv)
    os.makedirs(args.state_dir, exist_ok=True)
    pidfile = os.path.join(args.state_dir, "vdsm.pid")
    if args.stop:
        try:
            with open(pidfile) as f:
                os.kill(int(f.read()), signal.SIGTERM)
            os.unlink(pidfile)
            print("vdsm endpoint stopped")
        except (OSError, ValueError):
            print("vdsm endpoint was not running")
        return 0
    if _listening(args.host, args.port):
        print(f"vdsm endpoint already listening on {args.host}:{args.port}")
    else:
        log_path = os.path.join(args.state_dir, "vdsm.log")
        with open(log_path, "ab") as log:
            proc = subprocess.Popen([sys.executable, "-m", "vdsm.app", "--host", args.host, "--port", str(args.port),
                                     "--backend", "kvmd", "--kvmd-socket", default_socket(),
                                     "--state-dir", args.state_dir],
                                    stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)
        with open(pidfile, "w") as f:
            f.write(str(proc.pid))
        deadline = time.monotonic() + 30
        while not _listening(args.host, args.port):
            if proc.poll() is not None or time.monotonic() > deadline:
                sys.exit(f"the vdsm endpoint did not start; see {log_path}")
            time.sleep(0.05)
        print(f"started the vdsm endpoint (log: {log_path})")
    py = sys.executable
    print(f"""
VDSM endpoint (JSON-RPC over STOMP 1.2) on {args.host}:{args.port}, backend kvmd
  list VMs:        {py} -m vdsm.client --port {args.port} Host getVMList
  VM stats:        {py} -m vdsm.client --port {args.port} Host getAllVmStats
  any STOMP client (stomp.py, vdsm-client, the oVirt engine over plain TCP) works:
  SEND to jms.topic.vdsm_requests with a reply-to header, SUBSCRIBE to jms.queue.events
""")
    return 0


if __name__ == "__main__":
    sys.exit(main())
