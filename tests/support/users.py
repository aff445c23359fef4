"""Real Unix users for per-user kvmd tests: create them, run things as them, remove them.

A test user is named `kvt_<role><random>` (`useradd --create-home`) and removed with
`userdel -r` after every process it owns has been killed. Code runs as a user through
`runuser`, with Debian's /usr/bin/python3 (same 3.11 ABI as the venv) and the repo plus
the venv's site-packages on PYTHONPATH: the venv's own interpreter lives under /root,
which is 0700, and the tests do not loosen that.
"""

from __future__ import annotations

import json
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass

from tests.support.procs import kill_all

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SITE = os.path.join(ROOT, ".venv", "lib", "python3.11", "site-packages")
PYTHON = "/usr/bin/python3"


@dataclass
class User:
    name: str
    uid: int
    gid: int
    home: str


def create_user(role: str) -> User:
    name = f"kvt_{role}{secrets.token_hex(3)}"
    subprocess.run(["useradd", "--create-home", "--shell", "/bin/sh", name], check=True,
                   capture_output=True)
    pw = pwd.getpwnam(name)
    return User(name, pw.pw_uid, pw.pw_gid, pw.pw_dir)


def pids_of_uid(uid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/status") as f:
                for line in f:
                    if line.startswith("Uid:"):
                        if int(line.split()[1]) == uid:
                            out.append(int(entry))
                        break
        except (OSError, ValueError):
            continue
    return out


def remove_user(user: User) -> None:
    """Kill everything the user runs, then `userdel -r`; also its /tmp fallback dir."""
    for _ in range(3):
        pids = pids_of_uid(user.uid)
        if not pids:
            break
        kill_all(pids)
    subprocess.run(["userdel", "-r", user.name], capture_output=True)
    shutil.rmtree(f"/tmp/kvmd-{user.uid}", ignore_errors=True)


def user_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "PYTHONPATH": f"{ROOT}:{SITE}",
           "PYTHONDONTWRITEBYTECODE": "1", "KVMD_ACCEL": "tcg", "LANG": "C.UTF-8"}
    env.update(extra or {})
    return env


def as_user(user: User, argv: list[str], env: dict[str, str]) -> list[str]:
    """argv that runs `argv` as `user` with exactly `env`."""
    return ["runuser", "-u", user.name, "--", "env", "-i",
            *(f"{k}={v}" for k, v in env.items()), *argv]


def run_python(user: User, code: str, env: dict[str, str] | None = None, timeout: float = 30) -> object:
    """Run `code` as `user`; it must print one JSON value as its last line, returned here."""
    proc = subprocess.run(as_user(user, [PYTHON, "-c", code], user_env(env)), capture_output=True,
                          text=True, timeout=timeout, cwd="/")
    if proc.returncode != 0:
        raise RuntimeError(f"as {user.name}: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


class UserDaemon:
    """A kvmd run by `user` with its default (XDG) directories in a private base dir."""

    def __init__(self, user: User, config_text: str | None = None):
        self.user = user
        self.base = tempfile.mkdtemp(prefix="kvt", dir="/tmp")
        os.chown(self.base, user.uid, user.gid)
        os.chmod(self.base, 0o700)
        self.xdg_run = os.path.join(self.base, "run")
        self.xdg_state = os.path.join(self.base, "state")
        for d in (self.xdg_run, self.xdg_state):
            os.mkdir(d, 0o700)
            os.chown(d, user.uid, user.gid)
        self.run_dir = os.path.join(self.xdg_run, "kvmd")
        self.state_dir = os.path.join(self.xdg_state, "kvmd")
        self.socket = os.path.join(self.run_dir, "kvmd.sock")
        self.log_path = os.path.join(self.base, "kvmd.log")
        self.config = None
        if config_text is not None:
            self.config = os.path.join(self.base, "kvmd.yaml")
            with open(self.config, "w") as f:
                f.write(config_text)
            os.chown(self.config, user.uid, user.gid)
        self.env = {"XDG_RUNTIME_DIR": self.xdg_run, "XDG_STATE_HOME": self.xdg_state,
                    "HOME": user.home}
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 20.0) -> UserDaemon:
        argv = [PYTHON, "-m", "kvmd.daemon"] + (["--config", self.config] if self.config else [])
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(as_user(self.user, argv, user_env(self.env)), stdout=log,
                                         stderr=log, stdin=subprocess.DEVNULL, cwd="/")
        deadline = time.monotonic() + timeout
        while not os.path.exists(self.socket):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"kvmd as {self.user.name} did not come up:\n{self.log()}")
            time.sleep(0.02)
        return self

    def log(self) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()[-6000:]
        except OSError:
            return ""

    def call(self, method: str, **params: object) -> object:
        """Call this kvmd as its own user (a client process run by that user)."""
        return call_as(self.user, self.socket, method, params)

    def cleanup(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)
        shutil.rmtree(self.base, ignore_errors=True)


CALL = """
import json, socket, sys
path, req = sys.argv[1], sys.argv[2]
try:
    s = socket.socket(socket.AF_UNIX)
    s.connect(path)
    s.sendall(req.encode() + b"\\n")
    f = s.makefile("rb")
    line = f.readline()
    print(json.dumps({"reply": json.loads(line) if line else None}))
except OSError as e:
    print(json.dumps({"errno": e.errno, "error": str(e)}))
"""


def call_as(user: User, socket_path: str, method: str, params: dict | None = None) -> dict:
    """One raw JSON-RPC request to `socket_path` from a process of `user`.

    Returns `{"reply": response}` or `{"errno": N, "error": text}` if it cannot connect.
    """
    req = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": params or {}})
    proc = subprocess.run(as_user(user, [PYTHON, "-c", CALL, socket_path, req], user_env()),
                          capture_output=True, text=True, timeout=30, cwd="/")
    if proc.returncode != 0:
        raise RuntimeError(f"client as {user.name} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])
