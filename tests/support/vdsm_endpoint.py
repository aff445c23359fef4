"""A real VDSM endpoint (`python -m vdsm.app`) in a subprocess, on a free TCP port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

from vdsm.client import StompRpcClient


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Endpoint:
    def __init__(self, base: str, backend: str, *, kvmd_socket: str | None = None,
                 libvirt_uri: str | None = None, hooks_dir: str | None = None, extra: list[str] | None = None):
        self.base = base
        self.backend = backend
        self.port = free_port()
        self.log_path = os.path.join(base, f"vdsm-{self.port}.log")
        self.argv = [sys.executable, "-m", "vdsm.app", "--host", "127.0.0.1", "--port", str(self.port),
                     "--backend", backend, "--state-dir", os.path.join(base, f"vdsm-state-{self.port}"),
                     "--hooks-dir", hooks_dir or os.path.join(base, "no-hooks")]
        if kvmd_socket:
            self.argv += ["--kvmd-socket", kvmd_socket]
        if libvirt_uri:
            self.argv += ["--libvirt-uri", libvirt_uri]
        self.argv += extra or []
        self.proc: subprocess.Popen | None = None
        self.clients: list[StompRpcClient] = []

    def start(self, timeout: float = 30.0) -> Endpoint:
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        log.close()
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"vdsm endpoint exited {self.proc.returncode}:\n{self.log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"vdsm endpoint did not listen:\n{self.log()}") from None
                time.sleep(0.05)
        # the port listens before recovery ends; ping until verbs are served
        with StompRpcClient("127.0.0.1", self.port, events=False, timeout=10) as c:
            while True:
                try:
                    c.call("Host.getVMList")
                    break
                except Exception:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)
        return self

    def client(self, **kw) -> StompRpcClient:
        c = StompRpcClient("127.0.0.1", self.port, **kw).connect()
        self.clients.append(c)
        return c

    def log(self) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()[-6000:]
        except OSError:
            return ""

    def stop(self) -> None:
        for c in self.clients:
            c.close()
        self.clients = []
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
