"""Per-VM cgroups: each QEMU in its own cgroup under the kvmd instance's, with limits.

Where the daemon can write cgroups, a VM's QEMU is moved into
`PARENT/INSTANCE/VM-NAME` right after it is spawned (it starts with `-S`, so no guest
code has run yet) and that cgroup is removed once QEMU has exited. The limits come from
the spec: CPU bandwidth of `cpu.count` whole CPUs (`cfs_quota_us = count * period`, or
`cpu.max` on v2) and memory of the guest's RAM plus QEMU's own overhead
(`MEMORY_OVERHEAD` + `MEMORY_OVERHEAD_PERCENT`); with the spec's `cpu.shares` (libvirt
`<cputune><shares>`) also the VM's relative CPU weight: `cpu.shares` on v1, on v2
`cpu.weight` converted as libvirt does (1 + (shares - 2) * 9999 / 262142).

Which hierarchy: the v2 unified hierarchy when `/sys/fs/cgroup` is one (with the `cpu`
and `memory` controllers available), else the v1 `cpu` and `memory` hierarchies
wherever they are mounted. PARENT is configurable; by default it is the hierarchy's
root for root, and the daemon's own cgroup for anyone else (the only place a
delegated, unprivileged user may write). INSTANCE defaults to `kvmd` for the system
instance and `kvmd-UID` for a per-user one, with a suffix from the run dir when that is
not the default, so two kvmd instances never share VM cgroups.

Where none of that is writable (an unprivileged user without delegated cgroups), the
`Cgroups` object says so (`to_json()` → `host.info`'s `cgroups`), `place()` does
nothing, and quotas are enforced at admission only. The cgroup paths of a VM are kept
in its runtime record, so a restarted kvmd removes the right ones even if its own
cgroup (hence its default PARENT) changed in between.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import logging
import os
import time
from dataclasses import dataclass

from kvmd.config import Config, default_dirs
from kvmd.spec.model import VMSpec

log = logging.getLogger(__name__)

CGROUP_ROOT = "/sys/fs/cgroup"
CONTROLLERS = ("cpu", "memory")
CPU_PERIOD_US = 100_000
MEMORY_OVERHEAD = 256 << 20
MEMORY_OVERHEAD_PERCENT = 10


@dataclass(frozen=True)
class Limits:
    cpu_quota_us: int
    cpu_period_us: int
    memory_bytes: int
    cpu_shares: int | None = None  # relative weight (v1 cpu.shares), None: the kernel's default


def shares_to_weight(shares: int) -> int:
    """cgroup v1 cpu.shares (2..262144) as v2 cpu.weight (1..10000), libvirt's formula."""
    return 1 + (shares - 2) * 9999 // 262142


def limits_for(vcpus: int, memory: int, shares: int | None = None) -> Limits:
    """Limits of a VM with `vcpus` vCPUs and `memory` bytes of guest RAM (the memory
    limit is rounded up to whole MiB, so the kernel stores it exactly as written)."""
    overhead = MEMORY_OVERHEAD + memory * MEMORY_OVERHEAD_PERCENT // 100
    mib = 1 << 20
    return Limits(cpu_quota_us=vcpus * CPU_PERIOD_US, cpu_period_us=CPU_PERIOD_US,
                  memory_bytes=-(-(memory + overhead) // mib) * mib, cpu_shares=shares)


def default_name(run_dir: str, default_run_dir: str, uid: int | None = None) -> str:
    """`kvmd` / `kvmd-UID`, plus a run-dir hash when the run dir is not the default."""
    uid = os.getuid() if uid is None else uid
    name = "kvmd" if uid == 0 else f"kvmd-{uid}"
    if os.path.abspath(run_dir) != os.path.abspath(default_run_dir):
        name += "-" + hashlib.sha256(os.path.abspath(run_dir).encode()).hexdigest()[:8]
    return name


def _mounts() -> list[tuple[str, str, set[str]]]:
    """(mount point, fs type, options) of every cgroup mount."""
    out = []
    try:
        with open("/proc/self/mounts") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 4 and parts[2] in ("cgroup", "cgroup2"):
                    out.append((parts[1].replace("\\040", " "), parts[2], set(parts[3].split(","))))
    except OSError:
        pass
    return out


def _own_cgroups() -> dict[str, str]:
    """controller (or '' for v2) -> this process's cgroup path, from /proc/self/cgroup."""
    out: dict[str, str] = {}
    try:
        with open("/proc/self/cgroup") as f:
            for line in f:
                _, controllers, path = line.rstrip("\n").split(":", 2)
                for c in controllers.split(",") if controllers else [""]:
                    out[c] = path
    except (OSError, ValueError):
        pass
    return out


class Cgroups:
    """This kvmd instance's cgroups: detection, per-VM placement with limits, removal."""

    def __init__(self, name: str, parent: str | None = None, enabled: bool = True):
        self.name = name
        self.parent = parent
        self.version: str | None = None
        self.writable = False
        self.reason = ""
        # hierarchy key ("cpu", "memory" on v1; "unified" on v2) -> instance cgroup dir
        self.instance: dict[str, str] = {}
        if not enabled:
            self.reason = "disabled in the configuration (cgroups.enabled: false)"
            return
        try:
            self._detect()
        except OSError as e:
            self.writable, self.reason = False, f"cannot use cgroups: {e}"

    # -- detection ---------------------------------------------------------------

    def _detect(self) -> None:
        mounts = _mounts()
        own = _own_cgroups()
        uid = os.getuid()
        v2_root = next((m for m, t, _ in mounts if t == "cgroup2" and m == CGROUP_ROOT), None)
        if v2_root is not None:
            self.version = "v2"
            base = self._parent_dir(v2_root, own.get("", "/"), uid)
            with open(os.path.join(base, "cgroup.controllers")) as f:
                available = set(f.read().split())
            missing = [c for c in CONTROLLERS if c not in available]
            if missing:
                self.reason = f"cgroup v2 controllers {', '.join(missing)} not available in {base}"
                return
            self.instance = {"unified": os.path.join(base, self.name)}
        else:
            v1 = {}
            for mount, fstype, opts in mounts:
                for c in CONTROLLERS:
                    if fstype == "cgroup" and c in opts:
                        v1[c] = mount
            if not v1:
                self.reason = "no cgroup hierarchy with the cpu and memory controllers is mounted"
                return
            self.version = "v1"
            missing = [c for c in CONTROLLERS if c not in v1]
            if missing:
                self.reason = f"cgroup v1 controllers {', '.join(missing)} are not mounted"
                return
            self.instance = {c: os.path.join(self._parent_dir(v1[c], own.get(c, "/"), uid), self.name)
                             for c in CONTROLLERS}
        problems = [p for p in (self._check_writable(d) for d in self.instance.values()) if p]
        if problems:
            self.reason = "; ".join(problems)
            return
        if self.version == "v2":
            problem = self._enable_v2_controllers(os.path.dirname(self.instance["unified"]))
            if problem:
                self.reason = problem
                return
        self.writable = True

    def _parent_dir(self, mount: str, own: str, uid: int) -> str:
        # By default VM cgroups nest under the daemon's own cgroup, so whatever contains
        # kvmd (a container, a CI job, a delegated user slice) still contains its QEMUs;
        # set `cgroups.parent` (e.g. /machine) to place them elsewhere.
        rel = self.parent if self.parent is not None else own
        return os.path.join(mount, rel.lstrip("/"))

    @staticmethod
    def _check_writable(instance_dir: str) -> str:
        """'' if we can create VM cgroups in `instance_dir` (or create it), else why not."""
        target = instance_dir if os.path.isdir(instance_dir) else os.path.dirname(instance_dir)
        if not os.path.isdir(target):
            return f"{target} does not exist"
        if not os.access(target, os.W_OK | os.X_OK):
            return (f"{target} is not writable by uid {os.getuid()} "
                    "(cgroups not delegated to this user)")
        return ""

    @staticmethod
    def _enable_v2_controllers(parent: str) -> str:
        """Let the instance cgroup's children use cpu and memory (v2 subtree_control)."""
        try:
            with open(os.path.join(parent, "cgroup.subtree_control")) as f:
                enabled = set(f.read().split())
            want = [c for c in CONTROLLERS if c not in enabled]
            if want:
                with open(os.path.join(parent, "cgroup.subtree_control"), "w") as f:
                    f.write(" ".join(f"+{c}" for c in want))
        except OSError as e:
            return f"cannot enable the cpu and memory controllers in {parent}: {e.strerror or e}"
        return ""

    def to_json(self) -> dict[str, object]:
        return {"version": self.version, "writable": self.writable, "reason": self.reason,
                "paths": sorted(self.instance.values()) if self.writable else []}

    # -- per-VM cgroups -------------------------------------------------------------

    def place(self, vm_name: str, pid: int, vcpus: int, memory: int, shares: int | None = None) -> list[str]:
        """Put `pid` into the VM's own cgroup(s) with its limits; the paths, [] if unsupported.

        On failure, what was created is removed again and the OSError propagates.
        """
        if not self.writable:
            return []
        limits = limits_for(vcpus, memory, shares)
        created: list[str] = []
        try:
            for key, inst in sorted(self.instance.items()):
                os.makedirs(inst, exist_ok=True)
                if self.version == "v2" and key == "unified":
                    self._enable_v2_controllers(inst)
                path = os.path.join(inst, vm_name)
                if os.path.lexists(path) and not os.path.isdir(path):
                    path = os.path.join(inst, f"vm-{vm_name}")  # a VM named like a control file
                with contextlib.suppress(FileExistsError):
                    os.mkdir(path)
                created.append(path)
                for file, value in self._limit_files(key, limits):
                    _write(os.path.join(path, file), value)
                _write(os.path.join(path, "cgroup.procs"), str(pid))
        except OSError:
            remove(created)
            raise
        return created

    def _limit_files(self, key: str, limits: Limits) -> list[tuple[str, str]]:
        shares = limits.cpu_shares
        if self.version == "v2":
            weight = [("cpu.weight", str(shares_to_weight(shares)))] if shares is not None else []
            return [("cpu.max", f"{limits.cpu_quota_us} {limits.cpu_period_us}"), *weight,
                    ("memory.max", str(limits.memory_bytes))]
        if key == "cpu":
            return [("cpu.cfs_period_us", str(limits.cpu_period_us)),
                    ("cpu.cfs_quota_us", str(limits.cpu_quota_us)),
                    *([("cpu.shares", str(shares))] if shares is not None else [])]
        return [("memory.limit_in_bytes", str(limits.memory_bytes))]

    def prune(self, keep: set[str]) -> list[str]:
        """Remove empty VM cgroups of this instance that no known VM uses (left by QEMUs
        that ended unseen); cgroups that still hold tasks are left alone. The removed."""
        gone = []
        for inst in self.instance.values():
            with contextlib.suppress(OSError):
                for entry in os.scandir(inst):
                    if entry.is_dir() and entry.path not in keep:
                        with contextlib.suppress(OSError):
                            os.rmdir(entry.path)
                            gone.append(entry.path)
        return gone

    def remove_all(self) -> None:
        """Remove every VM cgroup of this instance and the instance cgroup (test cleanup)."""
        for inst in self.instance.values():
            if os.path.isdir(inst):
                remove([e.path for e in os.scandir(inst) if e.is_dir()])
            with contextlib.suppress(OSError):
                _rmdir(inst)


def _write(path: str, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def _rmdir(path: str) -> bool:
    """True when `path` is gone; False while an exiting task still holds it (EBUSY)."""
    if not os.path.abspath(path).startswith(CGROUP_ROOT + "/"):
        raise OSError(errno.EINVAL, f"not a cgroup path: {path}")
    try:
        os.rmdir(path)
    except FileNotFoundError:
        pass
    except OSError as e:
        if e.errno == errno.EBUSY:
            return False
        raise
    return True


def _vm_gone(path: str) -> None:
    """After a VM cgroup went: drop the instance cgroup too if that was its last VM
    (`place` recreates it), so a kvmd that is never seen again leaves nothing behind."""
    with contextlib.suppress(OSError):
        os.rmdir(os.path.dirname(path))


def remove(paths: list[str], wait: float = 1.0) -> list[str]:
    """rmdir each cgroup (once its last task is gone); the paths that could not go."""
    left = []
    for path in paths:
        deadline = time.monotonic() + wait
        try:
            while not _rmdir(path):
                if time.monotonic() > deadline:
                    raise OSError(errno.EBUSY, "still has tasks")
                time.sleep(0.005)
            _vm_gone(path)
        except OSError as e:
            log.warning("cannot remove cgroup %s: %s", path, e.strerror or e)
            left.append(path)
    return left


async def remove_async(paths: list[str], wait: float = 2.0) -> list[str]:
    """`remove` for the event loop: waits for an exiting QEMU to leave without blocking."""
    left = []
    for path in paths:
        deadline = time.monotonic() + wait
        try:
            while not _rmdir(path):
                if time.monotonic() > deadline:
                    raise OSError(errno.EBUSY, "still has tasks")
                await asyncio.sleep(0.005)
            _vm_gone(path)
        except OSError as e:
            log.warning("cannot remove cgroup %s: %s", path, e.strerror or e)
            left.append(path)
    return left


def place_vm(cfg: Config, name: str, pid: int, spec: VMSpec) -> list[str]:
    """Put a just-spawned QEMU into its VM cgroup, limits from `spec` (memory: the
    larger of size and max, so memory hotplug fits); the paths, [] where unsupported."""
    memory = max(spec.memory.size, spec.memory.max or 0)
    return for_config(cfg).place(name, pid, spec.cpu.count, memory, spec.cpu.shares)


_instances: dict[tuple[str, str | None, bool], Cgroups] = {}


def for_config(cfg: Config) -> Cgroups:
    """The (cached) Cgroups of the kvmd instance `cfg` describes; detection runs once."""
    name = cfg.cgroups.name or default_name(cfg.run_dir, default_dirs()[1])
    key = (name, cfg.cgroups.parent, cfg.cgroups.enabled)
    if key not in _instances:
        _instances[key] = Cgroups(name, cfg.cgroups.parent, cfg.cgroups.enabled)
    return _instances[key]
