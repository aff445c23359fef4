"""The QEMU process: spawn it detached, watch it exit, and recognise it again later.

QEMU outlives kvmd: it runs in its own session (so a signal to kvmd's process group
never reaches it), with stdin closed and stdout/stderr appended to its log file. Exit
is noticed through a pidfd (works for children and for processes re-adopted after a
kvmd restart alike). A pid is only trusted together with its /proc start time and a
/proc/<pid>/cmdline that names the VM's uuid, so a reused pid is never mistaken for a VM.

Each launch appends a `START_MARKER` line to the log before QEMU's own output, so error
reasons (`log_tail`) only ever quote the current run, never an earlier one.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import pwd
import signal
import subprocess
import time
from dataclasses import dataclass

from kvmd.errors import StorageFailure

START_MARKER = "--- kvmd: starting QEMU"


@dataclass
class ExitInfo:
    """How a QEMU process ended; `status` is None when it was not our child."""

    status: int | None

    @property
    def signal(self) -> int | None:
        if self.status is not None and os.WIFSIGNALED(self.status):
            return os.WTERMSIG(self.status)
        return None

    @property
    def code(self) -> int | None:
        if self.status is not None and os.WIFEXITED(self.status):
            return os.WEXITSTATUS(self.status)
        return None

    def describe(self) -> str:
        if self.signal is not None:
            try:
                name = signal.Signals(self.signal).name
            except ValueError:
                name = f"signal {self.signal}"
            return f"QEMU was killed by {name}"
        if self.code is not None:
            return f"QEMU exited with status {self.code}"
        return "QEMU exited (status unknown: not a child of this kvmd)"


def spawn(argv: list[str], pass_fds: list[int], log_path: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start QEMU detached from kvmd's session, logging to `log_path` (StorageFailure if
    the log cannot be written, e.g. a full disk: QEMU is not started then)."""
    with open(log_path, "ab", buffering=0) as log:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        try:
            log.write(f"{START_MARKER} at {stamp} ---\n".encode())
        except OSError as e:
            reason = "no space left on device" if e.errno == errno.ENOSPC else (e.strerror or str(e))
            raise StorageFailure(f"cannot write {log_path}: {reason}", {"path": log_path, "errno": e.errno}) from None
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                pass_fds=pass_fds, start_new_session=True, close_fds=True,
                                env=env)


def start_time(pid: int) -> int | None:
    """The process start time (clock ticks since boot) from /proc, or None if gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    # comm may contain spaces and parentheses: fields resume after the last ')'
    rest = data[data.rindex(b")") + 2:].split()
    return int(rest[19])


def cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        return []


def is_vm_process(pid: int, uuid: str, started: int | None) -> bool:
    """True when `pid` is alive, started at `started`, and runs QEMU with `-uuid uuid`."""
    if started is not None and start_time(pid) != started:
        return False
    argv = cmdline(pid)
    return any(a == "-uuid" and b == uuid for a, b in zip(argv, argv[1:]))


async def end_orphans(record: object, timeout: float = 5.0) -> int:
    """SIGKILL the QEMUs a kvmd spawned for `record` (a runtime record) but died before it
    could write down their pid: found by their exact argv (which names the VM's uuid and
    this kvmd's own sockets), never by a guess. Returns how many were ended."""
    argv = list(getattr(record, "argv", []) or [])
    uuid = getattr(record, "uuid", "")
    if not argv:
        return 0
    me = os.getpid()
    handles = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        pid = int(entry)
        if cmdline(pid) != argv:
            continue
        try:
            handle = ProcessHandle(pid)
        except OSError:
            continue
        if cmdline(pid) == argv and is_vm_process(pid, uuid, None):  # still that process
            handle.send(signal.SIGKILL)
            handles.append(handle)
        else:
            handle.close()
    if handles:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.gather(*(h.exited() for h in handles)), timeout)
    return len(handles)


def hand_over(paths: list[str | None], user: str | None) -> None:
    """Give files kvmd makes for a VM (log, console log, NVRAM) to the user QEMU runs as
    (`runAs`), creating missing ones 0600, so QEMU can still use them after it drops root."""
    if not user:
        return
    try:
        pw = pwd.getpwnam(user)
    except KeyError:
        raise FileNotFoundError(f"runAs: no such user {user!r}") from None
    for path in paths:
        if not path:
            continue
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o600)
        try:
            os.fchown(fd, pw.pw_uid, pw.pw_gid)
        finally:
            os.close(fd)


def log_tail(path: str, lines: int = 8, max_bytes: int = 8192) -> str:
    """The last lines QEMU wrote to its log in its current (or last) run, for error reasons."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            data = f.read().decode(errors="replace")
    except OSError:
        return ""
    marker = data.rfind(START_MARKER)
    if marker >= 0:
        data = data[marker:].partition("\n")[2]
    return "\n".join(data.strip().splitlines()[-lines:])


class ProcessHandle:
    """A live QEMU process: signal it safely and await its exit via a pidfd."""

    def __init__(self, pid: int, popen: subprocess.Popen | None = None):
        self.pid = pid
        self.popen = popen
        self.pidfd = os.pidfd_open(pid)
        self._exited: asyncio.Future[ExitInfo] | None = None

    def exited(self) -> asyncio.Future[ExitInfo]:
        """A future resolved with ExitInfo when the process ends."""
        if self._exited is None:
            loop = asyncio.get_running_loop()
            self._exited = loop.create_future()
            loop.add_reader(self.pidfd, self._on_readable)
        return self._exited

    def _on_readable(self) -> None:
        loop = asyncio.get_running_loop()
        loop.remove_reader(self.pidfd)
        status = None
        if self.popen is not None:
            self.popen.wait()
            rc = self.popen.returncode
            # Popen reports -N for a signal; turn it back into a wait status
            status = (-rc) & 0x7F if rc < 0 else (rc & 0xFF) << 8
        else:
            with contextlib.suppress(ChildProcessError, OSError):
                _, status = os.waitpid(self.pid, os.WNOHANG)
                status = status or None
        os.close(self.pidfd)
        self.pidfd = -1
        if self._exited is not None and not self._exited.done():
            self._exited.set_result(ExitInfo(status))

    @property
    def alive(self) -> bool:
        return self.pidfd >= 0 and not (self._exited is not None and self._exited.done())

    def send(self, sig: int) -> bool:
        """Signal the process; False if it is already gone. Never hits a reused pid."""
        if self.pidfd < 0:
            return False
        try:
            signal.pidfd_send_signal(self.pidfd, sig)
            return True
        except ProcessLookupError:
            return False

    def close(self) -> None:
        """Stop watching (kvmd shutting down); the process itself is left alone."""
        if self.pidfd >= 0:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(self.pidfd)
            os.close(self.pidfd)
            self.pidfd = -1
