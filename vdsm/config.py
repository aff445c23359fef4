"""The endpoint's configuration: built-in defaults, a YAML file, command-line overrides."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields

import yaml

BACKENDS = ("kvmd", "libvirt")


@dataclass
class Config:
    host: str = "127.0.0.1"
    port: int = 54321
    backend: str = "kvmd"
    kvmd_socket: str = ""
    libvirt_uri: str = "qemu:///system"
    hooks_dir: str = "/usr/libexec/vdsm/hooks"
    hook_timeout: float = 60.0
    heartbeat_ms: tuple[int, int] = (5000, 5000)
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_ca: str | None = None
    events_destination: str = "jms.queue.events"
    state_dir: str = ""
    vm_backends: dict[str, str] = field(default_factory=dict)
    # migration: the URI by which a source endpoint's backend reaches this host's backend
    # (returned by VM.migrationCreate); default: this host's own socket (same-host only)
    migration_uris: dict[str, str] = field(default_factory=dict)
    migration_monitor_interval: float = 1.0   # seconds between VM_migration_status events
    migration_timeout: float = 120.0          # a destination whose domain never appears gives up

    def __post_init__(self) -> None:
        if not self.kvmd_socket:
            from kvmd.client import default_socket
            self.kvmd_socket = default_socket()
        if not self.state_dir:
            self.state_dir = "/var/lib/kvmd-vdsm" if os.getuid() == 0 else os.path.expanduser("~/.local/state/kvmd-vdsm")
        if self.backend not in BACKENDS:
            raise ValueError(f"backend: must be one of {', '.join(BACKENDS)}")


_KEYS = {"host": "host", "port": "port", "backend": "backend", "kvmdSocket": "kvmd_socket",
         "libvirtUri": "libvirt_uri", "hooksDir": "hooks_dir", "hookTimeout": "hook_timeout",
         "tlsCert": "tls_cert", "tlsKey": "tls_key", "tlsCa": "tls_ca",
         "eventsDestination": "events_destination", "stateDir": "state_dir", "vmBackends": "vm_backends",
         "migrationUris": "migration_uris", "migrationMonitorInterval": "migration_monitor_interval",
         "migrationTimeout": "migration_timeout"}


def load(path: str | None = None, **overrides: object) -> Config:
    values: dict[str, object] = {}
    if path:
        with open(path, encoding="utf-8") as f:
            doc = yaml.safe_load(f) or {}
        if not isinstance(doc, dict):
            raise ValueError(f"{path}: must be a mapping")
        for key, value in doc.items():
            if key == "heartbeat":
                values["heartbeat_ms"] = tuple(int(x) for x in str(value).split(","))
            elif key in _KEYS:
                values[_KEYS[key]] = value
            else:
                raise ValueError(f"{path}: {key}: unknown setting")
    values.update({k: v for k, v in overrides.items() if v is not None})
    names = {f.name for f in fields(Config)}
    return Config(**{k: v for k, v in values.items() if k in names})  # type: ignore[arg-type]
