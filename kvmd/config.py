"""Daemon configuration: built-in defaults, an optional YAML file, environment overrides.

Defaults follow who runs the daemon: root gets the system instance (`/var/lib/kvmd`,
`/run/kvmd`); anyone else gets a per-user instance under their XDG directories.
`KVMD_ACCEL` (e.g. `tcg`) overrides the accelerator list — the test suite uses it, since
nested `/dev/kvm` here hangs Linux guests.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields

import yaml

from kvmd.errors import SpecError
from kvmd.spec.reader import Problems, Section

ACCELS = ("kvm", "tcg")


def default_dirs(uid: int | None = None) -> tuple[str, str]:
    """(state_dir, run_dir) for this user."""
    uid = os.getuid() if uid is None else uid
    if uid == 0:
        return "/var/lib/kvmd", "/run/kvmd"
    home = os.path.expanduser("~")
    state = os.environ.get("XDG_STATE_HOME") or os.path.join(home, ".local", "state")
    runtime = os.environ.get("XDG_RUNTIME_DIR") or os.path.join("/tmp", f"kvmd-{uid}")
    return os.path.join(state, "kvmd"), os.path.join(runtime, "kvmd")


@dataclass
class Quotas:
    max_vms: int | None = None
    max_vcpus: int | None = None
    max_memory: int | None = None


@dataclass
class Config:
    state_dir: str = ""
    run_dir: str = ""
    qemu: str = "qemu-system-x86_64"
    accel: list[str] = field(default_factory=lambda: list(ACCELS))
    shutdown_timeout: float = 60.0
    destroy_grace: float = 5.0
    qmp_connect_timeout: float = 10.0
    sandbox: bool = True
    run_as: str | None = None
    socket_group: str | None = None
    quotas: Quotas = field(default_factory=Quotas)

    def __post_init__(self) -> None:
        state, run = default_dirs()
        self.state_dir = self.state_dir or state
        self.run_dir = self.run_dir or run

    @property
    def socket_path(self) -> str:
        return os.path.join(self.run_dir, "kvmd.sock")


def load(path: str | None = None, **overrides: object) -> Config:
    """Config from defaults, then `path` (YAML), then non-None `overrides`, then env."""
    values: dict[str, object] = {}
    if path:
        with open(path, encoding="utf-8") as f:
            try:
                doc = yaml.safe_load(f) or {}
            except yaml.YAMLError as e:
                raise SpecError([(path, f"not valid YAML: {e}")]) from None
        values = _parse(doc)
    values.update({k: v for k, v in overrides.items() if v is not None})
    env_accel = os.environ.get("KVMD_ACCEL")
    if env_accel:
        values["accel"] = [a for a in env_accel.split(",") if a]
    cfg = Config(**values)  # type: ignore[arg-type]
    bad = [a for a in cfg.accel if a not in ACCELS]
    if bad or not cfg.accel:
        raise SpecError([("accel", "must be a list drawn from " + ", ".join(ACCELS))])
    return cfg


def _parse(doc: object) -> dict[str, object]:
    problems = Problems()
    sec = Section(doc, "", problems)
    out: dict[str, object] = {
        "state_dir": sec.str("stateDir"),
        "run_dir": sec.str("runDir"),
        "qemu": sec.str("qemu"),
        "accel": sec.str_list("accel", list(ACCELS)),
        "shutdown_timeout": sec.int("shutdownTimeout", minimum=0),
        "destroy_grace": sec.int("destroyGrace", minimum=0),
        "sandbox": sec.bool("sandbox", True),
        "run_as": sec.str("runAs"),
        "socket_group": sec.str("socketGroup"),
    }
    q = sec.section("quotas")
    out["quotas"] = Quotas(max_vms=q.int("maxVms", minimum=0), max_vcpus=q.int("maxVcpus", minimum=0),
                           max_memory=q.size("maxMemory"))
    q.finish()
    sec.finish()
    if problems:
        raise SpecError(problems)
    names = {f.name for f in fields(Config)}
    return {k: v for k, v in out.items() if v is not None and k in names}
