"""The hook runner: VDSM's hook semantics, run synchronously or from asyncio.

A hook point `P` runs every executable regular file in `<root>/P/` (not dot-files), in
sorted name order, one after the other, each in its own process group. Lifecycle of one
run (`run_hooks` / `run_hooks_async`):

1. No script: the data is returned unchanged, nothing else happens.
2. The data goes to a private temp file: XML (or nothing, for points without payload) in
   the file named by `_hook_domxml`, JSON in the one named by `_hook_json`.
3. Each script runs with the runner's environment plus the call's params and the VM's
   custom properties (custom wins on a clash, as in VDSM), `vmId`, `PYTHONPATH` ending
   with the folder that holds `hooking.py` (and the `vdsm.hook` stand-in) and starting,
   per backend, with a folder whose `libvirt.py` is the compat shim (kvmd) or the real
   libvirt-python (libvirt). Whatever a script leaves in the file is the next one's input.
4. Exit codes as VDSM: 0 ok; 1 failed, the others still run; 2 failed, no further script
   runs; >2 reserved — logged, a failure, the others still run. A script that outlives the
   per-script timeout is killed with its whole process group and counts as a failure; so
   does a script that cannot be executed at all.
5. The final file content is returned. If a script failed and the point is one whose
   errors fail the operation (`points.HookPoint.fails_operation`), `HookError` is raised
   instead, carrying the point, the last failing script, its exit code and stderr (VDSM's
   reason), every script's result, and the final data (VDSM's `before_vm_start` still
   hands that to its caller). At the other points failures are logged and ignored.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sysconfig
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from hooks import points as _points
from hooks.points import HookPoint

log = logging.getLogger("hooks")

DEFAULT_ROOT = "/usr/libexec/vdsm/hooks"
DEFAULT_TIMEOUT = 120.0
BACKENDS = ("libvirt", "kvmd")
RUN_DIR_ENV = "KVMD_HOOKS_RUN_DIR"  # read by hooking's launch-flags helpers
SYSPATH_ENV = "_kvmd_hooks_syspath"  # read by pylib/_kvmd_hooks_import.py

_HERE = os.path.dirname(os.path.abspath(__file__))
PYLIB = os.path.join(_HERE, "pylib")  # hooking.py and the vdsm.hook stand-in
BACKEND_PYLIB = {
    "kvmd": os.path.join(_HERE, "pylib-kvmd"),  # libvirt.py = compat.libvirt
    "libvirt": os.path.join(_HERE, "pylib-libvirt"),  # libvirt.py = libvirt-python
}
_KILL_GRACE = 5.0  # after SIGKILL, how long to wait for the pipes to close


@dataclass(frozen=True)
class HookConfig:
    """Where hooks live and how they run; one per endpoint (or per call).

    `root`: the hooks root (`<root>/<point>/<script>`). `timeout`: seconds per script, None
    for no limit. `backend`: "kvmd" or "libvirt" — which `libvirt` module scripts import.
    `uri`: exported as `LIBVIRT_DEFAULT_URI`, so `libvirt.open()` in a hook reaches the
    libvirtd that runs the VM. `kvmd_socket`: exported as `KVMD_SOCKET` on the kvmd backend,
    so the shim's `libvirt.open()` / `open("qemu:///system")` reach the kvmd that runs the
    VM. `run_dir`: exported as `KVMD_HOOKS_RUN_DIR` (launch flags).
    `env`: the base environment (default: this process's, read at each run).
    """

    root: str = DEFAULT_ROOT
    timeout: float | None = DEFAULT_TIMEOUT
    backend: str = "libvirt"
    uri: str | None = None
    kvmd_socket: str | None = None
    run_dir: str | None = None
    env: Mapping[str, str] | None = None

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"hook backend must be one of {', '.join(BACKENDS)}, not {self.backend!r}")
        if self.timeout is not None and self.timeout <= 0:
            raise ValueError(f"hook timeout must be positive (or None), not {self.timeout!r}")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> HookConfig:
        """Defaults overridden by KVMD_HOOKS_DIR, KVMD_HOOKS_TIMEOUT (0: none),
        KVMD_HOOKS_BACKEND, KVMD_HOOKS_URI, KVMD_SOCKET, KVMD_HOOKS_RUN_DIR, then by
        `overrides`."""
        e = os.environ if environ is None else environ
        kw: dict[str, Any] = {}
        if e.get("KVMD_HOOKS_DIR"):
            kw["root"] = e["KVMD_HOOKS_DIR"]
        if e.get("KVMD_HOOKS_TIMEOUT"):
            t = float(e["KVMD_HOOKS_TIMEOUT"])
            kw["timeout"] = t if t > 0 else None
        if e.get("KVMD_HOOKS_BACKEND"):
            kw["backend"] = e["KVMD_HOOKS_BACKEND"]
        if e.get("KVMD_HOOKS_URI"):
            kw["uri"] = e["KVMD_HOOKS_URI"]
        if e.get("KVMD_SOCKET"):
            kw["kvmd_socket"] = e["KVMD_SOCKET"]
        if e.get(RUN_DIR_ENV):
            kw["run_dir"] = e[RUN_DIR_ENV]
        kw.update(overrides)
        return cls(**kw)


@dataclass
class ScriptResult:
    """What one script did, as the runner saw it."""

    script: str  # the file name, e.g. "50_qemucmdline"
    path: str
    returncode: int | None  # None: it could not be executed, or was killed on timeout
    stdout: str = ""
    stderr: str = ""
    duration: float = 0.0
    timed_out: bool = False
    changed: bool = False  # it rewrote the data file

    @property
    def failed(self) -> bool:
        return self.returncode != 0

    def describe(self) -> str:
        """'exit code 1', 'timed out after 5s (killed)', 'could not be executed', ..."""
        if self.timed_out:
            return f"timed out after {self.duration:.3g}s (killed with its process group)"
        if self.returncode is None:
            return "could not be executed"
        if self.returncode < 0:
            try:
                name = signal.Signals(-self.returncode).name
            except ValueError:
                name = f"signal {-self.returncode}"
            return f"killed by {name}"
        if self.returncode > 2:
            return f"exit code {self.returncode} (reserved; treated as a failure)"
        return f"exit code {self.returncode}"


@dataclass
class HookResult:
    """The outcome of one hook point: the final data and each script's result."""

    point: str
    data: Any
    scripts: list[ScriptResult] = field(default_factory=list)

    @property
    def failures(self) -> list[ScriptResult]:
        return [s for s in self.scripts if s.failed]

    @property
    def changed(self) -> bool:
        return any(s.changed for s in self.scripts)


class HookError(Exception):
    """A hook point failed and its failure fails the operation.

    `reason` is what VDSM reports (the last failing script's stderr, or a description of
    how it failed when it wrote nothing); `str(e)` names the point and script too.
    """

    def __init__(self, point: str, script: str | None, returncode: int | None, stderr: str,
                 *, reason: str | None = None, timed_out: bool = False,
                 results: list[ScriptResult] | None = None, data: Any = None):
        self.point = point
        self.script = script
        self.returncode = returncode
        self.stderr = stderr
        self.timed_out = timed_out
        self.results = list(results or [])
        self.data = data
        self.reason = reason if reason is not None else (stderr.strip() or "hook failed")
        where = f"{point}/{script}" if script else point
        super().__init__(f"hook {where} failed: {self.reason}")

    @classmethod
    def from_script(cls, point: str, failed: ScriptResult, results: list[ScriptResult],
                    data: Any) -> HookError:
        stderr = failed.stderr.strip()
        how = failed.describe()
        reason = stderr if stderr and not failed.timed_out else (f"{how}: {stderr}" if stderr else how)
        return cls(point, failed.script, failed.returncode, failed.stderr, reason=reason,
                   timed_out=failed.timed_out, results=results, data=data)


# -- discovery -------------------------------------------------------------------------


def _check_dir_name(name: str) -> None:
    if os.path.isabs(name):
        raise ValueError("Cannot use absolute path as hook directory")
    head = name
    while head:
        head, tail = os.path.split(head)
        if tail == "..":
            raise ValueError("Hook directory paths cannot contain '..'")


def find_scripts(root: str, point: str) -> list[str]:
    """The scripts of hook point `point` under `root`, in the order they run.

    Every executable regular file in `<root>/<point>/` whose name does not start with a
    dot (VDSM globs `*`), sorted by name. An absolute name or one with `..` is refused.
    """
    _check_dir_name(point)
    folder = os.path.join(root, point)
    try:
        names = sorted(os.listdir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return []
    found = []
    for name in names:
        path = os.path.join(folder, name)
        if not name.startswith(".") and os.path.isfile(path) and os.access(path, os.X_OK):
            found.append(path)
    return found


def installed(root: str = DEFAULT_ROOT) -> dict[str, list[str]]:
    """{hook point folder: [script names]} for every folder under `root` with scripts."""
    try:
        folders = sorted(os.listdir(root))
    except FileNotFoundError:
        return {}
    out = {}
    for folder in folders:
        if os.path.isdir(os.path.join(root, folder)):
            scripts = [os.path.basename(s) for s in find_scripts(root, folder)]
            if scripts:
                out[folder] = scripts
    return out


def resolve_point(point: str | HookPoint) -> HookPoint:
    return point if isinstance(point, HookPoint) else _points.get(point)


# -- environment -----------------------------------------------------------------------


def _package_paths() -> list[str]:
    """Folders a hook's `import libvirt` may need from this interpreter: the one holding
    the kvmd packages (`compat`, `kvmd`) and this interpreter's site-packages."""
    paths = [os.path.dirname(_HERE)]
    cfg = sysconfig.get_paths()
    for key in ("purelib", "platlib"):
        p = cfg.get(key)
        if p and os.path.isdir(p) and p not in paths:
            paths.append(p)
    return paths


def build_env(point: HookPoint, data_path: str, config: HookConfig, *, vm_id: str | None = None,
              custom: Mapping[str, Any] | None = None,
              params: Mapping[str, Any] | None = None) -> dict[str, str]:
    """The environment one run's scripts get (see the module docstring)."""
    env = dict(os.environ if config.env is None else config.env)
    for source in (params or {}, custom or {}):
        for key, value in source.items():
            key = str(key)
            if not key or "=" in key or "\0" in key:
                log.warning("hook %s: not an environment variable name: %r (skipped)", point.name, key)
                continue
            env[key] = value if isinstance(value, str) else _env_text(value)
    if vm_id:
        env["vmId"] = str(vm_id)
    env.pop("_hook_domxml", None)
    env.pop("_hook_json", None)
    env[point.env_var] = data_path
    inherited = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join([BACKEND_PYLIB[config.backend], *inherited, PYLIB])
    env[SYSPATH_ENV] = os.pathsep.join(_package_paths())
    if config.uri:
        env["LIBVIRT_DEFAULT_URI"] = config.uri
    if config.backend == "kvmd" and config.kvmd_socket:
        env["KVMD_SOCKET"] = config.kvmd_socket
    if config.run_dir:
        env[RUN_DIR_ENV] = config.run_dir
    return env


def _env_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return str(value)


# -- one run (shared by the sync and async entry points) -------------------------------


class _Run:
    def __init__(self, point: HookPoint, data: Any, config: HookConfig, vm_id: str | None,
                 custom: Mapping[str, Any] | None, params: Mapping[str, Any] | None,
                 raise_errors: bool | None):
        self.point = point
        self.data = data
        self.config = config
        self.raise_errors = point.fails_operation if raise_errors is None else raise_errors
        self.scripts = find_scripts(config.root, point.name)
        self.results: list[ScriptResult] = []
        self.path = ""
        self.env: dict[str, str] = {}
        self._vm = (vm_id, custom, params)

    def prepare(self) -> None:
        suffix = ".json" if self.point.carries_json else ".xml"
        fd, self.path = tempfile.mkstemp(prefix=f"hook-{self.point.name}-", suffix=suffix)
        with os.fdopen(fd, "wb") as f:
            f.write(self._encode(self.data))
        vm_id, custom, params = self._vm
        self.env = build_env(self.point, self.path, self.config, vm_id=vm_id, custom=custom,
                             params=params)

    def _encode(self, data: Any) -> bytes:
        if self.point.carries_json:
            return json.dumps(data).encode("utf-8")
        if data is None:
            return b""
        return data if isinstance(data, bytes) else str(data).encode("utf-8")

    def snapshot(self) -> bytes:
        with open(self.path, "rb") as f:
            return f.read()

    def record(self, result: ScriptResult) -> bool:
        """Log and keep `result`; False when no further script may run (exit code 2)."""
        self.results.append(result)
        log.info("%s/%s: rc=%s err=%r", self.point.name, result.script, result.returncode,
                 result.stderr)
        if result.returncode is not None and result.returncode > 2:
            log.warning("hook %s/%s returned unexpected return code %s", self.point.name,
                        result.script, result.returncode)
        if result.timed_out:
            log.error("hook %s/%s %s", self.point.name, result.script, result.describe())
        return result.returncode != 2

    def finish(self) -> HookResult:
        try:
            raw = self.snapshot()
        finally:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
        failures = [r for r in self.results if r.failed]
        try:
            final = self._decode(raw)
        except ValueError as e:
            if not self.raise_errors:
                log.warning("hook %s left unusable data (%s); keeping the original", self.point.name, e)
                final = self.data
            else:
                writers = [r.script for r in self.results if r.changed]
                raise HookError(self.point.name, writers[-1] if writers else None, None, "",
                                results=self.results,
                                data=raw.decode("utf-8", "replace"),
                                reason=f"hooks left invalid JSON in _hook_json: {e}") from None
        if failures:
            if self.raise_errors:
                raise HookError.from_script(self.point.name, failures[-1], self.results, final)
            log.warning("hook %s: %d script(s) failed, ignored at this point (%s)", self.point.name,
                        len(failures), "; ".join(f"{f.script}: {f.describe()}" for f in failures))
        return HookResult(self.point.name, final, self.results)

    def _decode(self, raw: bytes) -> Any:
        if self.point.carries_json:
            return json.loads(raw.decode("utf-8"))
        return raw.decode("utf-8")


def _decode_output(b: bytes | None) -> str:
    return (b or b"").decode("utf-8", "replace")


def _killpg(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)  # the script leads its own process group
    except (ProcessLookupError, PermissionError):
        pass


def _run_script(path: str, env: dict[str, str], timeout: float | None) -> ScriptResult:
    name = os.path.basename(path)
    start = time.monotonic()
    try:
        p = subprocess.Popen([path], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, env=env, close_fds=True,
                             start_new_session=True)
    except OSError as e:
        return ScriptResult(name, path, None, stderr=f"cannot execute {path}: {e}",
                            duration=time.monotonic() - start)
    timed_out = False
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = p.poll() is None
        _killpg(p.pid)
        try:
            out, err = p.communicate(timeout=_KILL_GRACE)
        except subprocess.TimeoutExpired:  # something escaped the group and holds the pipes
            for pipe in (p.stdout, p.stderr):
                if pipe:
                    pipe.close()
            p.wait()
            out = err = b""
    except BaseException:
        _killpg(p.pid)
        p.wait()
        raise
    rc = None if timed_out else p.returncode
    return ScriptResult(name, path, rc, _decode_output(out), _decode_output(err),
                        time.monotonic() - start, timed_out)


async def _run_script_async(path: str, env: dict[str, str], timeout: float | None) -> ScriptResult:
    name = os.path.basename(path)
    start = time.monotonic()
    try:
        p = await asyncio.create_subprocess_exec(
            path, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env=env, close_fds=True, start_new_session=True)
    except OSError as e:
        return ScriptResult(name, path, None, stderr=f"cannot execute {path}: {e}",
                            duration=time.monotonic() - start)
    comm = asyncio.ensure_future(p.communicate())
    timed_out = False
    try:
        out, err = await asyncio.wait_for(asyncio.shield(comm), timeout)
    except TimeoutError:
        timed_out = p.returncode is None
        _killpg(p.pid)
        try:
            out, err = await asyncio.wait_for(comm, _KILL_GRACE)
        except TimeoutError:
            await p.wait()
            out = err = b""
    except BaseException:  # our caller was cancelled: leave no hook running
        _killpg(p.pid)
        comm.cancel()
        await asyncio.shield(p.wait())
        raise
    rc = None if timed_out else p.returncode
    return ScriptResult(name, path, rc, _decode_output(out), _decode_output(err),
                        time.monotonic() - start, timed_out)


# -- entry points ----------------------------------------------------------------------


def run_hooks(point: str | HookPoint, data: Any = None, *, config: HookConfig | None = None,
              vm_id: str | None = None, custom: Mapping[str, Any] | None = None,
              params: Mapping[str, Any] | None = None,
              raise_errors: bool | None = None) -> HookResult:
    """Run hook point `point` over `data` (XML text, or a JSON-able value) and return the
    final data with each script's result. Raises HookError when a script failed at a point
    whose failures fail the operation (or `raise_errors=True`)."""
    run = _Run(resolve_point(point), data, config or HookConfig(), vm_id, custom, params,
               raise_errors)
    if not run.scripts:
        return HookResult(run.point.name, data)
    try:
        run.prepare()
        for path in run.scripts:
            before = run.snapshot()
            result = _run_script(path, run.env, run.config.timeout)
            result.changed = run.snapshot() != before
            if not run.record(result):
                break
    except BaseException:
        _unlink(run.path)
        raise
    return run.finish()


async def run_hooks_async(point: str | HookPoint, data: Any = None, *,
                          config: HookConfig | None = None, vm_id: str | None = None,
                          custom: Mapping[str, Any] | None = None,
                          params: Mapping[str, Any] | None = None,
                          raise_errors: bool | None = None) -> HookResult:
    """`run_hooks` for asyncio: scripts run as asyncio subprocesses; cancelling the call
    kills the running script's process group."""
    run = _Run(resolve_point(point), data, config or HookConfig(), vm_id, custom, params,
               raise_errors)
    if not run.scripts:
        return HookResult(run.point.name, data)
    try:
        run.prepare()
        for path in run.scripts:
            before = run.snapshot()
            result = await _run_script_async(path, run.env, run.config.timeout)
            result.changed = run.snapshot() != before
            if not run.record(result):
                break
    except BaseException:
        _unlink(run.path)
        raise
    return run.finish()


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
