"""Live migration through the shim: libvirt's migrateToURI3 and job calls on kvmd's vm.migrate.

kvmd migrations are always live and driven by the source kvmd, which calls the
destination kvmd itself — libvirt's peer-to-peer mode. The destination is named by the
`dconnuri`, as libvirt names the destination libvirtd:

    kvmd:///?socket=PATH, kvmd+unix:///?socket=PATH   a kvmd on this host (its API socket)
    kvmd:///system, kvmd:///session                   the system / per-user kvmd on this host
    kvmd+tcp://HOST:PORT                              a kvmd's TCP API for migration peers
                                                      (`--listen-tcp`; both hold the peer token)

    libvirt                                  kvmd vm.migrate
    VIR_MIGRATE_PARAM_URI tcp://HOST         address=HOST (where the destination QEMU listens;
    (or VIR_MIGRATE_PARAM_LISTEN_ADDRESS)     its port is QEMU's own choice, so none may be given)
    VIR_MIGRATE_PARAM_BANDWIDTH (MiB/s)      bandwidth (bytes/s; 0: no limit)
    VIR_MIGRATE_PARAM_MIGRATE_DISKS          every writable disk, or refused (kvmd copies all)
    VIR_MIGRATE_PARAM_DEST_NAME              the same name only
    LIVE, PEER2PEER, UNSAFE,                 accepted: kvmd always migrates live, source-driven,
    CHANGE_PROTECTION                        never checks cache modes, holds the VM meanwhile
    AUTO_CONVERGE                            auto_converge
    POSTCOPY                                 postcopy (kvmd then switches by itself after the
                                             first memory pass; migrateStartPostCopy: at once)
    NON_SHARED_DISK                          copy_storage (images made in the same directories)
    UNDEFINE_SOURCE / not                    a persistent source is forgotten / kept, stopped
    PERSIST_DEST                             a persistent domain stays persistent (kvmd moves its
                                             definition); for a transient one: refused
    TUNNELLED, PAUSED, OFFLINE, COMPRESSED, ABORT_ON_ERROR, RDMA_PIN_ALL, TLS, PARALLEL,
    NON_SHARED_INC, NON_SHARED_SYNCHRONOUS_WRITES, POSTCOPY_RESUME, ZEROCOPY and the other
    parameters: VIR_ERR_NO_SUPPORT naming them. Without PEER2PEER: VIR_ERR_ARGUMENT_UNSUPPORTED,
    as libvirt's QEMU driver ("direct migration is not supported").

`migrateToURI3` returns when kvmd's migration ended; `abortJob()` from another thread
(`vm.migrate_cancel`) makes it raise VIR_ERR_OPERATION_ABORTED, as libvirt's does.
`jobInfo()`/`jobStats()` read `vm.migrate_status` into libvirt's fields and units (bytes,
bytes/s, ms). On success the shim raises VIR_DOMAIN_EVENT_ID_JOB_COMPLETED with the
completed job's statistics (downtime included), as libvirtd does on the source.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from compat.virt import constants as c
from compat.virt import errors, uri

if TYPE_CHECKING:
    from compat.virt.domain import virDomain

MiB = 1024 * 1024
DONE = ("completed", "failed", "cancelled")

ALL_FLAGS = (c.VIR_MIGRATE_LIVE | c.VIR_MIGRATE_PEER2PEER | c.VIR_MIGRATE_TUNNELLED | c.VIR_MIGRATE_PERSIST_DEST
             | c.VIR_MIGRATE_UNDEFINE_SOURCE | c.VIR_MIGRATE_PAUSED | c.VIR_MIGRATE_NON_SHARED_DISK
             | c.VIR_MIGRATE_NON_SHARED_INC | c.VIR_MIGRATE_CHANGE_PROTECTION | c.VIR_MIGRATE_UNSAFE
             | c.VIR_MIGRATE_OFFLINE | c.VIR_MIGRATE_COMPRESSED | c.VIR_MIGRATE_ABORT_ON_ERROR
             | c.VIR_MIGRATE_AUTO_CONVERGE | c.VIR_MIGRATE_RDMA_PIN_ALL | c.VIR_MIGRATE_POSTCOPY | c.VIR_MIGRATE_TLS
             | c.VIR_MIGRATE_PARALLEL | c.VIR_MIGRATE_NON_SHARED_SYNCHRONOUS_WRITES | c.VIR_MIGRATE_POSTCOPY_RESUME
             | c.VIR_MIGRATE_ZEROCOPY)
_UNSUPPORTED_FLAGS = {
    "VIR_MIGRATE_TUNNELLED": "kvmd streams QEMU to QEMU; it has no tunnel through its API",
    "VIR_MIGRATE_PAUSED": "kvmd resumes the guest on the destination when it ran on the source",
    "VIR_MIGRATE_OFFLINE": "kvmd migrates running VMs only",
    "VIR_MIGRATE_COMPRESSED": "kvmd does not compress the migration stream",
    "VIR_MIGRATE_ABORT_ON_ERROR": "kvmd does not abort a migration on guest I/O errors",
    "VIR_MIGRATE_RDMA_PIN_ALL": "kvmd migrates over TCP only",
    "VIR_MIGRATE_TLS": "kvmd's migration stream is not encrypted (use a trusted network)",
    "VIR_MIGRATE_PARALLEL": "kvmd uses one migration connection",
    "VIR_MIGRATE_NON_SHARED_INC": "kvmd copies whole disks (VIR_MIGRATE_NON_SHARED_DISK), never only the top layer",
    "VIR_MIGRATE_NON_SHARED_SYNCHRONOUS_WRITES": "kvmd's disk mirror is not write-blocking",
    "VIR_MIGRATE_POSTCOPY_RESUME": "kvmd cannot recover a broken postcopy migration",
    "VIR_MIGRATE_ZEROCOPY": "kvmd uses one migration connection",
}
_KNOWN_PARAMS = {getattr(c, n) for n in dir(c) if n.startswith("VIR_MIGRATE_PARAM_")}
_SUPPORTED_PARAMS = {c.VIR_MIGRATE_PARAM_URI, c.VIR_MIGRATE_PARAM_LISTEN_ADDRESS, c.VIR_MIGRATE_PARAM_BANDWIDTH,
                     c.VIR_MIGRATE_PARAM_MIGRATE_DISKS, c.VIR_MIGRATE_PARAM_DEST_NAME}


def destination(dconnuri: str) -> str:
    """kvmd's `dest` for a libvirt destination URI (see the module docstring)."""
    try:
        parts = urlsplit(dconnuri or "")
        port = parts.port
    except ValueError:
        parts, port = None, None
    scheme = parts.scheme.lower() if parts else ""
    if parts and scheme == "kvmd+tcp" and parts.hostname and port:
        host = parts.hostname
        return f"tcp://[{host}]:{port}" if ":" in host else f"tcp://{host}:{port}"
    if parts and scheme in ("kvmd", "kvmd+unix") and not parts.netloc:
        return uri.resolve(dconnuri)[0]
    raise errors.make(c.VIR_ERR_INVALID_ARG, f"dconnuri {dconnuri!r}: kvmd migrates to another kvmd only: "
                      "kvmd:///?socket=PATH (this host) or kvmd+tcp://HOST:PORT", c.VIR_FROM_DOMAIN)


def _address(value: str) -> str:
    """The host of a VIR_MIGRATE_PARAM_URI (`tcp://HOST`, `tcp:HOST`, `HOST`) without a port."""
    text = value[len("tcp://"):] if value.startswith("tcp://") else value[4:] if value.startswith("tcp:") else value
    text = text.rstrip("/")
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest.lstrip(":")
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    else:
        host, port = text, ""
    if port:
        raise errors.unsupported(f"{c.VIR_MIGRATE_PARAM_URI}={value}",
                                 "the destination QEMU picks its own port; give the host only")
    if not host or "/" in host:
        raise errors.make(c.VIR_ERR_INVALID_ARG, f"{c.VIR_MIGRATE_PARAM_URI}={value!r} is not tcp://HOST")
    return host


def options(dom: virDomain, info: dict[str, Any], params: dict[str, Any] | None, flags: int) -> dict[str, Any]:
    """vm.migrate's keyword arguments for migrateToURI3(params, flags); refusals as libvirt's."""
    from compat.virt.domain import check_flags
    from compat.virt.xmlconv import disk_by_path

    check_flags("virDomainMigrateToURI3", flags, ALL_FLAGS)
    if not flags & c.VIR_MIGRATE_PEER2PEER:
        raise errors.make(c.VIR_ERR_ARGUMENT_UNSUPPORTED, "direct migration is not supported by the source host",
                          c.VIR_FROM_DOMAIN)
    for name, why in _UNSUPPORTED_FLAGS.items():
        if flags & getattr(c, name):
            raise errors.unsupported(f"virDomain.migrateToURI3 flag {name}", why)
    params = dict(params or {})
    for key in params:
        if key not in _KNOWN_PARAMS:
            raise errors.make(c.VIR_ERR_INVALID_ARG, f"unsupported migration parameter '{key}'")
        if key not in _SUPPORTED_PARAMS:
            raise errors.unsupported(f"virDomain.migrateToURI3 parameter {key}", "kvmd's vm.migrate has no such option")
    persistent = bool(info.get("persistent"))
    if flags & c.VIR_MIGRATE_PERSIST_DEST and not persistent:
        raise errors.unsupported("virDomain.migrateToURI3 flag VIR_MIGRATE_PERSIST_DEST",
                                 "kvmd keeps a transient domain transient on the destination")
    name = params.get(c.VIR_MIGRATE_PARAM_DEST_NAME)
    if name is not None and name != dom.name():
        raise errors.unsupported(f"{c.VIR_MIGRATE_PARAM_DEST_NAME}={name}", "kvmd keeps the VM's name")
    opts: dict[str, Any] = {
        "auto_converge": bool(flags & c.VIR_MIGRATE_AUTO_CONVERGE),
        "postcopy": bool(flags & c.VIR_MIGRATE_POSTCOPY),
        "copy_storage": bool(flags & c.VIR_MIGRATE_NON_SHARED_DISK),
        "keep_source": persistent and not flags & c.VIR_MIGRATE_UNDEFINE_SOURCE,
    }
    bandwidth = params.get(c.VIR_MIGRATE_PARAM_BANDWIDTH)
    if bandwidth:
        if not isinstance(bandwidth, int) or bandwidth < 0:
            raise errors.make(c.VIR_ERR_INVALID_ARG, f"{c.VIR_MIGRATE_PARAM_BANDWIDTH} must be MiB/s (an integer)")
        opts["bandwidth"] = bandwidth * MiB
    where = params.get(c.VIR_MIGRATE_PARAM_URI) or params.get(c.VIR_MIGRATE_PARAM_LISTEN_ADDRESS)
    if where:
        opts["address"] = _address(str(where))
    disks = params.get(c.VIR_MIGRATE_PARAM_MIGRATE_DISKS)
    if disks is not None:
        if not opts["copy_storage"]:
            raise errors.make(c.VIR_ERR_INVALID_ARG, f"{c.VIR_MIGRATE_PARAM_MIGRATE_DISKS} needs "
                              "VIR_MIGRATE_NON_SHARED_DISK")
        spec = dom._info(spec=True)["spec"]
        wanted = {disk_by_path(spec, d) for d in ([disks] if isinstance(disks, str) else disks)}
        writable = {d["name"] for d in spec.get("disks") or []
                    if d.get("path") and not d.get("readonly") and d.get("media", "disk") == "disk"}
        if wanted != writable:
            raise errors.unsupported(f"{c.VIR_MIGRATE_PARAM_MIGRATE_DISKS}={sorted(wanted)}",
                                     f"kvmd copies every writable disk ({', '.join(sorted(writable))})")
    return opts


def aborted() -> errors.libvirtError:
    return errors.make(c.VIR_ERR_OPERATION_ABORTED, "job 'migration out' canceled by client")


# -- job statistics ------------------------------------------------------------------------


def job_stats(status: dict[str, Any] | None, flags: int = 0) -> dict[str, Any]:
    """libvirt's jobStats dict for kvmd's vm.migrate_status (None: no migration known)."""
    completed = bool(flags & c.VIR_DOMAIN_JOB_STATS_COMPLETED)
    if not status:
        return {"type": c.VIR_DOMAIN_JOB_NONE}
    state = status.get("state")
    if status.get("direction") == "in":
        if state in DONE or completed:
            return {"type": c.VIR_DOMAIN_JOB_NONE}
        return {"type": c.VIR_DOMAIN_JOB_UNBOUNDED, "operation": c.VIR_DOMAIN_JOB_OPERATION_MIGRATION_IN}
    wanted = state == "completed" if completed else state not in DONE
    if not wanted:  # no job now (or, with COMPLETED, none completed: libvirt keeps none of failed ones)
        return {"type": c.VIR_DOMAIN_JOB_NONE}
    out: dict[str, Any] = {"type": c.VIR_DOMAIN_JOB_COMPLETED if completed else c.VIR_DOMAIN_JOB_UNBOUNDED,
                           "operation": c.VIR_DOMAIN_JOB_OPERATION_MIGRATION_OUT}
    started, finished = status.get("startedAt") or time.time(), status.get("finishedAt")
    out["time_elapsed"] = int(status.get("totalTime") or ((finished or time.time()) - started) * 1000)
    total, remaining = int(status.get("total") or 0), int(status.get("remaining") or 0)
    memory = {"total": 0, "processed": 0, "remaining": 0}
    disk = {"total": 0, "processed": 0, "remaining": 0}
    if status.get("phase") == "storage":
        disk.update(total=total, processed=total - remaining, remaining=remaining)
        out["disk_bps"] = int(status.get("speed") or 0)
    else:
        memory.update(total=total, processed=int(status.get("transferred") or 0), remaining=remaining)
        out["memory_bps"] = int(status.get("speed") or 0)
    for key in ("total", "processed", "remaining"):
        out[f"data_{key}"] = memory[key] + disk[key]
        out[f"memory_{key}"] = memory[key]
        out[f"disk_{key}"] = disk[key]
    downtime = status.get("downtime") if completed else status.get("expectedDowntime")
    if downtime is not None:
        out["downtime"] = int(downtime)
    if status.get("setupTime") is not None:
        out["setup_time"] = int(status["setupTime"])
    return out


def job_info(stats: dict[str, Any]) -> list[int]:
    """jobInfo()'s 12 numbers from jobStats(): type, elapsed, remaining ms, data, memory, file."""
    return [stats.get("type", 0), stats.get("time_elapsed", 0), stats.get("time_remaining", 0),
            stats.get("data_total", 0), stats.get("data_processed", 0), stats.get("data_remaining", 0),
            stats.get("memory_total", 0), stats.get("memory_processed", 0), stats.get("memory_remaining", 0),
            stats.get("disk_total", 0), stats.get("disk_processed", 0), stats.get("disk_remaining", 0)]


def completed_event(status: dict[str, Any]) -> dict[str, Any]:
    """VIR_DOMAIN_EVENT_ID_JOB_COMPLETED's parameters (jobStats of the completed job, no type)."""
    stats = job_stats(status, c.VIR_DOMAIN_JOB_STATS_COMPLETED)
    stats.pop("type", None)
    if "downtime" in stats:
        stats["downtime_net"] = stats["downtime"]
    return stats
