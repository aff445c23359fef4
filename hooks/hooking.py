"""hooking - the helpers a hook script imports, compatible with VDSM's `hooking` module.

A hook script finds its input in a file named by an environment variable: the domain (or
device) XML in `_hook_domxml`, a JSON document in `_hook_json`. It may rewrite that file;
the next script of the same hook point sees the change, and the final content is what the
operation uses. Break something and you own it.

Return codes (what the runner makes of a script's exit status):

    0   the hook ended successfully;
    1   the hook failed, the other hooks of this point still run;
    2   the hook failed, no further hook of this point runs;
    >2  reserved (logged; a failure, and the other hooks still run).

A script imports this module either way VDSM's can be imported::

    import hooking                  # the runner puts this module's folder on PYTHONPATH
    from vdsm.hook import hooking   # newer VDSM hooks

This module needs nothing but the Python standard library: hook scripts run under any
`python3` (`#!/usr/bin/env python3`), not necessarily the one running kvmd.

The helpers keep VDSM's names, signatures and behaviour: `read_domxml`, `write_domxml`,
`read_json`, `write_json`, `log`, `exit_hook`, `tobool`, `execCmd`,
`load_vm_launch_flags_from_file`, `dump_vm_launch_flags_to_file` (and
`remove_vm_launch_flags_file`, which VDSM calls itself once the VM has started).

Launch flags: a `before_vm_start` hook may ask for libvirt `createXML` flags (1 =
`VIR_DOMAIN_START_PAUSED`) by dumping them to a per-VM file,
`<run dir>/<vmId>/launchflags`. The run dir is `$KVMD_HOOKS_RUN_DIR` (the runner sets it
for every script), else VDSM's `/run/vdsm` as root, else `$XDG_RUNTIME_DIR/vdsm`.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from typing import Any
from xml.dom import minidom

__all__ = [
    "read_domxml",
    "write_domxml",
    "read_json",
    "write_json",
    "log",
    "exit_hook",
    "tobool",
    "execCmd",
    "load_vm_launch_flags_from_file",
    "dump_vm_launch_flags_to_file",
    "remove_vm_launch_flags_file",
]

RUN_DIR_ENV = "KVMD_HOOKS_RUN_DIR"
_LAUNCH_FLAGS_FILE = "launchflags"


# -- the data file ---------------------------------------------------------------------


def read_domxml() -> minidom.Document:
    """The XML in the file named by `_hook_domxml`, as a `xml.dom.minidom` Document."""
    with open(os.environ["_hook_domxml"], "rb") as f:
        return minidom.parseString(f.read().decode("utf-8"))


def write_domxml(domxml: minidom.Document) -> None:
    """Write `domxml` (a minidom Document) back to the `_hook_domxml` file, UTF-8."""
    with open(os.environ["_hook_domxml"], "wb") as f:
        f.write(domxml.toxml(encoding="utf-8"))


def read_json() -> Any:
    """The JSON document in the file named by `_hook_json`."""
    with open(os.environ["_hook_json"]) as f:
        return json.loads(f.read())


def write_json(data: Any) -> None:
    """Write `data` as JSON to the `_hook_json` file."""
    with open(os.environ["_hook_json"], "w") as f:
        f.write(json.dumps(data))


# -- reporting -------------------------------------------------------------------------


def log(message: str) -> None:
    """Write `message` and a newline to stderr (the runner logs every script's stderr)."""
    sys.stderr.write(message + "\n")


def exit_hook(message: str, return_code: int = 2) -> None:
    """Print `message` (and a newline) to stderr and exit with `return_code`.

    The default, 2, means: this hook failed and no further hook of this point runs. The
    message becomes the reason of the failed operation.
    """
    sys.stderr.write(message + "\n")
    sys.exit(return_code)


# -- conversions and commands ----------------------------------------------------------


def tobool(s: Any) -> bool:
    """VDSM's lenient boolean: True, 'true' (any case) or a non-zero integer (or its text).

    Everything else — None, 'false', 'no', '', garbage — is False; it never raises.
    """
    try:
        if s is None:
            return False
        if isinstance(s, bool):
            return s
        if s.lower() == "true":
            return True
        return bool(int(s))
    except Exception:
        return False


def execCmd(  # noqa: N802 - VDSM's name
    command: Any,
    sudo: bool = False,
    cwd: str | None = None,
    data: bytes | str | None = None,
    raw: bool = False,
    printable: Any = None,
    env: dict[str, str] | None = None,
    nice: int | None = None,
    ioclass: int | None = None,
    ioclassdata: int | None = None,
    setsid: bool = False,
    execCmdLogger: logging.Logger = logging.root,  # noqa: N803 - VDSM's name
    resetCpuAffinity: bool = True,  # noqa: N803 - VDSM's name
) -> tuple[int, Any, Any]:
    """Run `command` (an argv sequence) and return `(rc, out, err)` like VDSM's execCmd.

    `out` and `err` are lists of lines (bytes, without line ends), or the raw bytes with
    `raw=True`. `data` is fed to the command's stdin. `sudo`, `nice`, `ioclass`/
    `ioclassdata` and `setsid` wrap the command in `sudo -n`, `nice -n`, `ionice` and
    `setsid`; `resetCpuAffinity` runs it through `taskset` on every online CPU when this
    process is pinned to fewer. A command that cannot start raises OSError.
    """
    command = list(command)
    if resetCpuAffinity:
        command = _reset_affinity(command)
    if nice is not None:
        command = ["nice", "-n", str(nice), *command]
    if ioclass is not None:
        wrap = ["ionice", "-c", str(ioclass)]
        if ioclassdata is not None:
            wrap += ["-n", str(ioclassdata)]
        command = [*wrap, *command]
    if setsid:
        command = ["setsid", *command]
    if sudo and os.geteuid() != 0:
        command = ["sudo", "-n", *command]
    execCmdLogger.debug("%s (cwd %s)", " ".join(str(a) for a in (printable or command)), cwd)
    if isinstance(data, str):
        data = data.encode("utf-8")
    p = subprocess.Popen(
        command, close_fds=True, cwd=cwd, env=env,
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        out, err = p.communicate(data)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    execCmdLogger.debug("rc=%s err=%r", p.returncode, err)
    if raw:
        return p.returncode, out or b"", err or b""
    return p.returncode, (out or b"").splitlines(), (err or b"").splitlines()


def _reset_affinity(command: list[str]) -> list[str]:
    try:
        mine = os.sched_getaffinity(0)
        online = os.cpu_count() or len(mine)
    except (AttributeError, OSError):
        return command
    if len(mine) >= online:
        return command
    return ["taskset", "--cpu-list", f"0-{online - 1}", *command]


# -- launch flags ----------------------------------------------------------------------


def _run_dir() -> str:
    configured = os.environ.get(RUN_DIR_ENV)
    if configured:
        return configured
    if os.geteuid() == 0:
        return "/run/vdsm"
    return os.path.join(os.environ.get("XDG_RUNTIME_DIR") or "/tmp", "vdsm")


def _launch_flags_path(vm_id: str) -> str:
    vm_id = str(vm_id)
    if not vm_id or "/" in vm_id or vm_id in (".", ".."):
        raise ValueError(f"not a VM id: {vm_id!r}")
    return os.path.join(_run_dir(), vm_id, _LAUNCH_FLAGS_FILE)


def load_vm_launch_flags_from_file(vm_id: str) -> int:
    """The launch flags a hook dumped for `vm_id`, or 0 (`VIR_DOMAIN_NONE`) if none."""
    path = _launch_flags_path(vm_id)
    if os.path.isfile(path):
        with open(path) as f:
            return int(f.readline())
    return 0


def dump_vm_launch_flags_to_file(vm_id: str, flags: int) -> None:
    """Record libvirt createXML `flags` for `vm_id` (read back when the VM is started)."""
    path = _launch_flags_path(vm_id)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(str(flags))


def remove_vm_launch_flags_file(vm_id: str) -> None:
    """Forget the launch flags of `vm_id` (the endpoint does this after starting it)."""
    path = _launch_flags_path(vm_id)
    try:
        os.remove(path)
    except FileNotFoundError:
        pass
