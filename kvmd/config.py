"""Daemon configuration: built-in defaults, an optional YAML file, environment overrides.

Defaults follow who runs the daemon: root gets the system instance (`/var/lib/kvmd`,
`/run/kvmd`); anyone else gets a per-user instance under their XDG directories.
`KVMD_ACCEL` (e.g. `tcg`) overrides the accelerator list — the test suite uses it, since
nested `/dev/kvm` here hangs Linux guests.

Without `XDG_RUNTIME_DIR` a per-user instance falls back to `/tmp/kvmd-UID/kvmd`;
`private_dir` makes sure such a directory (and its parent in /tmp) is a real directory
owned by the user with mode 0700 before any socket goes into it, so nobody else can
pre-create or swap it. `check` is what `kvmd --check-config` runs on top of parsing.
"""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import re
import stat
from dataclasses import dataclass, field, fields

import yaml

from kvmd.errors import SpecError
from kvmd.spec.reader import Problems, Section

ACCELS = ("kvm", "tcg")
_CGROUP_NAME = re.compile(r"^(?!\.\.?$)[A-Za-z0-9_.-]+$")


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
class CgroupSettings:
    enabled: bool = True
    name: str | None = None    # default: kvmd / kvmd-UID (+ run-dir hash if not default)
    parent: str | None = None  # default: / as root, the daemon's own cgroup otherwise


@dataclass
class Config:
    state_dir: str = ""
    run_dir: str = ""
    qemu: str = "qemu-system-x86_64"
    accel: list[str] = field(default_factory=lambda: list(ACCELS))
    shutdown_timeout: float = 60.0
    destroy_grace: float = 5.0
    qmp_connect_timeout: float = 10.0
    qmp_timeout: float = 10.0  # seconds a QMP command may take (long block/migration ones get more)
    sandbox: bool = True
    run_as: str | None = None
    socket_group: str | None = None
    quotas: Quotas = field(default_factory=Quotas)
    cgroups: CgroupSettings = field(default_factory=CgroupSettings)
    # the API on TCP for migration peers (kvmd.migration.listener): "HOST:PORT", and the
    # shared secret file both ends use (the listener's, and a source's to connect)
    api_tcp: str | None = None
    peer_token_file: str | None = None

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


def private_dir(path: str, group: str | None = None) -> None:
    """Create `path` (0700) and make sure nobody else can enter, replace or pre-create it.

    `path` must end up a real directory owned by us, mode 0700 (0710 and owned by
    `group` when the socket is shared with a group, which may then only reach the
    socket, not list the directory); its parent must be ours or root's (and then not
    writable by others unless sticky). The per-user fallback parent `/tmp/kvmd-UID` is
    created here the same way; one that someone else made is refused. Raises
    PermissionError saying what is wrong.
    """
    uid = os.getuid()
    path = os.path.abspath(path)
    parent = os.path.dirname(path)
    fallback = parent == os.path.join("/tmp", f"kvmd-{uid}")
    mode = 0o710 if group else 0o700
    if fallback:
        with contextlib.suppress(FileExistsError):
            os.mkdir(parent, 0o700)
    os.makedirs(path, mode=0o700, exist_ok=True)
    for d in (parent, path):
        st = os.lstat(d)
        if not stat.S_ISDIR(st.st_mode):
            raise PermissionError(f"{d} is not a directory (a symlink?); refusing to use it")
        ours = st.st_uid == uid
        if d == path and not ours or not ours and st.st_uid != 0:
            raise PermissionError(f"{d} belongs to uid {st.st_uid}, not to uid {uid}; refusing to use it")
        if d == path or fallback:
            if group:
                os.chown(d, -1, grp.getgrnam(group).gr_gid)
            if stat.S_IMODE(st.st_mode) != mode:
                os.chmod(d, mode)
        elif not ours and st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX:
            raise PermissionError(f"{d} is writable by other users; refusing to use it")


def check(cfg: Config) -> list[tuple[str, str]]:
    """Host-level problems of a parsed configuration, by field path (`--check-config`)."""
    from kvmd.qemu import probe  # only here: the daemon's hot path does not need it at import

    problems: list[tuple[str, str]] = []
    caps = None
    try:
        caps = probe.probe(cfg.qemu)
    except probe.ProbeError as e:
        problems.append(("qemu", str(e)))
    if "tcg" not in cfg.accel and not os.access("/dev/kvm", os.R_OK | os.W_OK):
        problems.append(("accel", "/dev/kvm is not usable here and tcg is not in the list"))
    if cfg.run_as:
        try:
            pwd.getpwnam(cfg.run_as)
        except KeyError:
            problems.append(("runAs", f"no such user: {cfg.run_as}"))
        if os.getuid() != 0:
            problems.append(("runAs", "only the system instance (root) can run QEMU as another user"))
        if caps is not None and not (caps.runas or caps.run_with):
            problems.append(("runAs", f"{caps.binary} has neither -run-with nor -runas"))
    if cfg.socket_group:
        try:
            grp.getgrnam(cfg.socket_group)
        except KeyError:
            problems.append(("socketGroup", f"no such group: {cfg.socket_group}"))
    for key, path in (("stateDir", cfg.state_dir), ("runDir", cfg.run_dir)):
        existing = path
        while not os.path.exists(existing):
            existing = os.path.dirname(existing)
        if not os.path.isdir(existing) or not os.access(existing, os.W_OK | os.X_OK):
            problems.append((key, f"cannot create or write {path} ({existing} is not a writable directory)"))
    if cfg.cgroups.parent is not None and not cfg.cgroups.parent.startswith("/"):
        problems.append(("cgroups.parent", "must be an absolute cgroup path such as /machine"))
    return problems


def to_doc(cfg: Config) -> dict[str, object]:
    """The effective settings, with the config file's key names."""
    q, cg = cfg.quotas, cfg.cgroups
    return {
        "stateDir": cfg.state_dir, "runDir": cfg.run_dir, "socket": cfg.socket_path,
        "qemu": cfg.qemu, "accel": list(cfg.accel), "shutdownTimeout": cfg.shutdown_timeout,
        "destroyGrace": cfg.destroy_grace, "qmpTimeout": cfg.qmp_timeout, "sandbox": cfg.sandbox,
        "runAs": cfg.run_as,
        "socketGroup": cfg.socket_group,
        "quotas": {"maxVms": q.max_vms, "maxVcpus": q.max_vcpus, "maxMemory": q.max_memory},
        "cgroups": {"enabled": cg.enabled, "name": cg.name, "parent": cg.parent},
        "apiTcp": {"listen": cfg.api_tcp, "tokenFile": cfg.peer_token_file},
    }


def _parse(doc: object) -> dict[str, object]:
    problems = Problems()
    sec = Section(doc, "", problems)
    out: dict[str, object] = {
        "state_dir": sec.str("stateDir"),
        "run_dir": sec.str("runDir"),
        "qemu": sec.str("qemu"),
        "accel": sec.str_list("accel", list(ACCELS),
                              check=lambda a: None if a in ACCELS else "must be one of " + ", ".join(ACCELS)),
        "shutdown_timeout": sec.number("shutdownTimeout", minimum=0),
        "destroy_grace": sec.number("destroyGrace", minimum=0),
        "qmp_timeout": sec.number("qmpTimeout", minimum=0.1),
        "sandbox": sec.bool("sandbox", True),
        "run_as": sec.str("runAs"),
        "socket_group": sec.str("socketGroup"),
    }
    q = sec.section("quotas")
    out["quotas"] = Quotas(max_vms=q.int("maxVms", minimum=0), max_vcpus=q.int("maxVcpus", minimum=0),
                           max_memory=q.size("maxMemory"))
    q.finish()
    cg = sec.section("cgroups")
    name = cg.str("name", pattern=_CGROUP_NAME,
                  pattern_reason="must be a plain name such as kvmd (letters, digits, . _ -)")
    out["cgroups"] = CgroupSettings(enabled=cg.bool("enabled", True), name=name, parent=cg.str("parent"))
    cg.finish()
    tcp = sec.section("apiTcp")
    out["api_tcp"], out["peer_token_file"] = tcp.str("listen"), tcp.str("tokenFile")
    tcp.finish()
    sec.finish()
    if problems:
        raise SpecError(problems)
    names = {f.name for f in fields(Config)}
    return {k: v for k, v in out.items() if v is not None and k in names}
