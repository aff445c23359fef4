"""A real kvmd daemon in a subprocess, in a private short directory under /tmp."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from kvmd import cgroups, config, runtime
from kvmd.qemu.process import is_vm_process
from kvmd.client import Client
from tests.support.procs import kill_all, pids_mentioning


class Daemon:
    def __init__(self, base: str, config: str | None = None, env: dict | None = None,
                 wrapper: list[str] | None = None, args: list[str] | None = None):
        """`wrapper` prefixes the command (e.g. `ip netns exec NS`); `args` are extra kvmd options."""
        self.base = base
        self.wrapper = list(wrapper or [])
        self.args = list(args or [])
        self.state_dir = os.path.join(base, "s")
        self.run_dir = os.path.join(base, "r")
        self.socket = os.path.join(self.run_dir, "kvmd.sock")
        self.log_path = os.path.join(base, "kvmd.log")
        self.config = config
        self.env = dict(os.environ, KVMD_ACCEL="tcg", **(env or {}))
        self.proc: subprocess.Popen | None = None
        self._clients: list[Client] = []

    def start(self, timeout: float = 15.0) -> Daemon:
        argv = [*self.wrapper, sys.executable, "-m", "kvmd.daemon", "--state-dir", self.state_dir,
                "--run-dir", self.run_dir, *self.args]
        if self.config:
            argv += ["--config", self.config]
        if os.path.exists(self.socket):
            os.unlink(self.socket)
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(argv, env=self.env, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        log.close()
        deadline = time.monotonic() + timeout
        while not os.path.exists(self.socket):
            if self.proc.poll() is not None:
                raise RuntimeError(f"kvmd exited with {self.proc.returncode}:\n{self.log()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"kvmd did not create its socket:\n{self.log()}")
            time.sleep(0.01)
        return self

    def log(self) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()[-6000:]
        except OSError:
            return ""

    def client(self) -> Client:
        c = Client(self.socket).connect()
        self._clients.append(c)
        return c

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Stop the daemon only (its QEMUs keep running)."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=30)
        for c in self._clients:
            try:
                c.close()
            except Exception:
                pass
        self._clients = []

    def restart(self) -> Daemon:
        self.kill(signal.SIGKILL)
        return self.start()

    def cleanup(self) -> None:
        """Kill the daemon and every process (QEMU) that references our directory, then
        remove the cgroups its VMs were put in (kvmd/cgroups.py)."""
        self.kill(signal.SIGKILL)
        kill_all(sorted(set(pids_mentioning(self.base)) | set(self.vm_pids())))
        remove_cgroups(self.run_dir, self.state_dir, self.config)

    def vm_pids(self) -> list[int]:
        """QEMUs of this kvmd found without relying on their argv: the runtime records
        (checked against /proc, so a reused pid is never hit) and the VM cgroups."""
        pids: set[int] = set()
        if os.path.isdir(self.run_dir):
            for rec in runtime.load_all(self.run_dir):
                if is_vm_process(rec.pid, rec.uuid, rec.start_time):
                    pids.add(rec.pid)
        try:
            cfg = config.load(None, state_dir=self.state_dir, run_dir=self.run_dir)
            for inst in cgroups.for_config(cfg).instance.values():
                for dirpath, _dirs, files in os.walk(inst):
                    if "cgroup.procs" in files:
                        with open(os.path.join(dirpath, "cgroup.procs")) as f:
                            pids.update(int(x) for x in f.read().split())
        except Exception:
            pass
        pids.discard(os.getpid())
        return sorted(pids)


def remove_cgroups(run_dir: str, state_dir: str, config_path: str | None = None) -> None:
    """Remove the instance cgroup (and any VM cgroup left in it) of a kvmd run as us."""
    try:
        cfg = config.load(config_path, state_dir=state_dir, run_dir=run_dir)
    except Exception:
        cfg = config.load(None, state_dir=state_dir, run_dir=run_dir)
    cgroups.for_config(cfg).remove_all()
