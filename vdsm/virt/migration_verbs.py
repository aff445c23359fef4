"""Migration verbs: VM.migrate, VM.migrationCreate, VM.getMigrationStatus, VM.migrateCancel.

A migration runs between two endpoints on the same kind of backend (kvmd to kvmd, or
libvirt to libvirt), driven by the source endpoint, as VDSM drives it:

    engine ── VM.migrate(vmID, {dst: "host-b:54321", dstqemu, maxBandwidth, ...}) ──▶ source
    source: status "Migration Source"; before_vm_migrate_source hooks over the domain XML
    source ── VM.migrationCreate(vmID, {xml, vmId, backend, ...}) over STOMP ──▶ destination
        destination: a record in status "Migration Destination", before_vm_migrate_destination
        hooks; answers {migrationPort: 0, params, backend, backendUri}
    source backend: dom.migrateToURI3(backendUri, {migrate_uri: tcp://dstqemu-or-host,
        bandwidth: maxBandwidth}, LIVE | PEER2PEER [| AUTO_CONVERGE | POSTCOPY | ...])
        — libvirtd to libvirtd, or kvmd to kvmd through the shim; progress from jobStats()
        pushed as |virt|VM_migration_status|<vmId> {progress, postcopy[, downtime]}
    success: source Down, exitReason 4 (MIGRATION_SUCCEEDED) and after_vm_migrate_source,
        kept until the engine's VM.destroy; destination Up (or Paused) when its backend
        runs the guest, then after_vm_migrate_destination
    failure or VM.migrateCancel: the source VM keeps running (status back to Up) and the
        source calls VM.destroy on the destination, which forgets its record

`backendUri` is the destination endpoint's answer to "how does your backend reach mine":
its config's `migrationUris[backend]`, by default its own backend on this host
(`kvmd:///?socket=PATH`, or the libvirt URI made `qemu+unix://…?socket=` so libvirt does
not take it for itself). Across hosts configure e.g. `kvmd+tcp://host-b:16509` (the
destination kvmd's `--listen-tcp`, both kvmds holding the peer token) or
`qemu+tls://host-b/system`. The stream goes to `dstqemu` if given, else to the host in
`dst`. Honoured params: dst, dstqemu, method (online only), mode (remote only),
maxBandwidth (MiB/s), autoConverge, compressed, tunneled, abortOnError, encrypted,
enablePostcopy and a `postcopy` action in convergenceSchedule (switch after the first
memory pass), convergenceSchedule `setDowntime` init actions and `downtime`
(migrateSetMaxDowntime, where the backend has it), migrateDisks/copyStorage (non-shared
storage). What a backend cannot do fails the migration (status code 12) with its reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from vdsm import errors
from vdsm.errors import VdsmError
from vdsm.virt import domxml
from vdsm.virt import status as st
from vdsm.virt.vmrecord import VmRecord

if TYPE_CHECKING:
    from vdsm.virt.backends import Backend
    from vdsm.virt.service import VirtService

log = logging.getLogger(__name__)

DEFAULT_PORT = 54321
CALL_TIMEOUT = 120.0
CANCEL_WAIT = 60.0
DOWNTIME_WAIT = 2.0


@dataclass
class Outgoing:
    """One outgoing migration, as VDSM's SourceThread status reports it."""

    vm_id: str
    host: str
    port: int
    params: dict[str, Any]
    code: int = 0
    message: str = "Migration in progress"
    progress: int = 0
    downtime: int | None = None
    postcopy: bool = False
    dest_created: bool = False
    started: bool = False
    cancel_requested: bool = False
    done: bool = False
    task: asyncio.Task | None = None
    finished: asyncio.Event = field(default_factory=asyncio.Event)

    def stats(self) -> dict[str, Any]:
        out: dict[str, Any] = {"vmId": self.vm_id, "status": {"code": self.code, "message": self.message},
                               "progress": self.progress}
        if self.downtime is not None:
            out["downtime"] = self.downtime
        return out

    def event(self) -> dict[str, Any]:
        out: dict[str, Any] = {"progress": self.progress, "postcopy": self.postcopy}
        if self.downtime is not None:
            out["downtime"] = self.downtime
        return out


def split_dst(dst: str) -> tuple[str, int]:
    """VDSM's `dst`: host[:port] ([v6]:port), the port defaulting to 54321."""
    dst = dst.strip()
    if dst.startswith("["):
        host, _, rest = dst[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif dst.count(":") == 1:
        host, _, port = dst.partition(":")
    else:
        host, port = dst, ""
    if not host or (port and not port.isdigit()):
        raise VdsmError(errors.MIGRATION_ERROR, f"dst must be HOST[:PORT], not {dst!r}")
    return host, int(port) if port else DEFAULT_PORT


def backend_uri(svc: VirtService, name: str) -> str:
    """How another host's backend reaches ours (module docstring)."""
    configured = svc.cfg.migration_uris.get(name)
    if configured:
        return configured
    if name == "kvmd":
        return f"kvmd:///?socket={svc.cfg.kvmd_socket}"
    uri = svc.cfg.libvirt_uri
    parts = urlsplit(uri)
    if not parts.netloc and parts.scheme == "qemu" and "socket=" in parts.query:
        return "qemu+unix" + uri[len("qemu"):]
    return uri


def _truthy(value: Any) -> bool:
    return value is True or str(value).lower() == "true"


def percentage(stats: dict[str, Any]) -> int:
    """VDSM's progress: 100 - 100 * remaining // total, at most 99 until it is done."""
    total, remaining = stats.get("data_total", 0), stats.get("data_remaining", 0)
    if not total:
        return 0
    return min(99, 100 - 100 * remaining // total)


def wants_postcopy(params: dict[str, Any]) -> bool:
    if _truthy(params.get("enablePostcopy")):
        return True
    schedule = params.get("convergenceSchedule") or {}
    return any((s.get("action") or {}).get("name") == "postcopy" for s in schedule.get("stalling") or [])


def initial_downtime(params: dict[str, Any]) -> int | None:
    for action in (params.get("convergenceSchedule") or {}).get("init") or []:
        if action.get("name") == "setDowntime" and action.get("params"):
            return int(action["params"][0])
    return int(params["downtime"]) if params.get("downtime") else None


def flags_and_params(lv: Any, job: Outgoing) -> tuple[int, dict[str, Any]]:
    """migrateToURI3's flags and typed parameters for the engine's migrate params."""
    p = job.params
    flags = lv.VIR_MIGRATE_LIVE | lv.VIR_MIGRATE_PEER2PEER
    for key, flag in (("autoConverge", "VIR_MIGRATE_AUTO_CONVERGE"), ("compressed", "VIR_MIGRATE_COMPRESSED"),
                      ("tunneled", "VIR_MIGRATE_TUNNELLED"), ("abortOnError", "VIR_MIGRATE_ABORT_ON_ERROR"),
                      ("encrypted", "VIR_MIGRATE_TLS")):
        if _truthy(p.get(key)):
            flags |= getattr(lv, flag)
    if wants_postcopy(p):
        flags |= lv.VIR_MIGRATE_POSTCOPY
    params: dict[str, Any] = {}
    disks = p.get("migrateDisks")
    if disks or _truthy(p.get("copyStorage")):
        flags |= lv.VIR_MIGRATE_NON_SHARED_DISK
        if isinstance(disks, list):
            params[lv.VIR_MIGRATE_PARAM_MIGRATE_DISKS] = [str(d) for d in disks]
    if not _truthy(p.get("tunneled")):
        host = p.get("dstqemu") or job.host
        params[lv.VIR_MIGRATE_PARAM_URI] = f"tcp://[{host}]" if ":" in host else f"tcp://{host}"
    if p.get("maxBandwidth"):
        params[lv.VIR_MIGRATE_PARAM_BANDWIDTH] = int(p["maxBandwidth"])
    return flags, params


class _Cancelled(Exception):
    pass


def handlers(svc: VirtService) -> dict[str, Any]:
    outgoing: dict[str, Outgoing] = {}

    def emit(rec: VmRecord, job: Outgoing) -> None:
        svc.emit(f"|virt|VM_migration_status|{rec.vm_id}", {rec.vm_id: job.event()})

    async def dest_call(job: Outgoing, method: str, **params: Any) -> Any:
        from vdsm.client import RpcError, StompRpcClient

        cfg = svc.cfg
        tls = (cfg.tls_cert, cfg.tls_key, cfg.tls_ca) if cfg.tls_cert and cfg.tls_key else None

        def call() -> Any:
            with StompRpcClient(job.host, job.port, events=False, timeout=CALL_TIMEOUT, tls=tls) as c:
                return c.call(method, **params)
        try:
            return await asyncio.to_thread(call)
        except RpcError as e:
            raise VdsmError(errors.MIGRATION_ERROR, f"the destination refused {method}: {e.message}") from None
        except Exception as e:  # stomp.py's connect failures, timeouts, OSError
            raise VdsmError(errors.MIGRATION_ERROR, f"cannot reach the destination {job.host}:{job.port}: "
                            f"{e or type(e).__name__}") from None

    # -- the source -----------------------------------------------------------------------

    async def monitor(rec: VmRecord, job: Outgoing, backend: Backend, dom: Any) -> None:
        lv, tuned = backend.lv, False
        while True:
            await asyncio.sleep(svc.cfg.migration_monitor_interval)
            try:
                stats = await asyncio.to_thread(dom.jobStats, 0)
            except lv.libvirtError:
                continue
            if stats.get("type", lv.VIR_DOMAIN_JOB_NONE) == lv.VIR_DOMAIN_JOB_NONE or \
                    stats.get("operation", lv.VIR_DOMAIN_JOB_OPERATION_MIGRATION_OUT) != lv.VIR_DOMAIN_JOB_OPERATION_MIGRATION_OUT:
                continue
            if not tuned:
                tuned = True
                downtime = initial_downtime(job.params)
                if downtime is not None:
                    try:
                        await asyncio.to_thread(dom.migrateSetMaxDowntime, downtime, 0)
                    except lv.libvirtError as e:
                        log.warning("%s: cannot set the migration downtime: %s", rec.vm_id, e.get_error_message())
            job.progress = max(job.progress, percentage(stats))
            rec.migration_progress = job.progress
            if wants_postcopy(job.params) and not job.postcopy and stats.get("memory_iteration", 0) >= 2:
                try:
                    await asyncio.to_thread(dom.migrateStartPostCopy, 0)
                    job.postcopy = True
                except lv.libvirtError as e:
                    log.warning("%s: cannot switch to postcopy: %s", rec.vm_id, e.get_error_message())
            emit(rec, job)

    async def run(rec: VmRecord, job: Outgoing) -> None:
        backend = svc.backend(rec.backend)
        lv = backend.lv
        watcher: asyncio.Task | None = None
        xml = rec.xml
        try:
            dom = await svc.domain(rec)
            xml = await svc.call(backend, dom.XMLDesc, 0, code=errors.MIGRATION_ERROR)
            hook_params = {k: v for k, v in job.params.items() if isinstance(v, (str, int, float, bool))}
            await svc.hooks.domxml("before_vm_migrate_source", xml, rec, params=hook_params,
                                   code=errors.MIGRATION_ERROR)
            created = await dest_call(job, "VM.migrationCreate", vmID=rec.vm_id, params={
                "vmId": rec.vm_id, "xml": xml, "_srcDomXML": xml, "backend": rec.backend,
                "elapsedTimeOffset": time.time() - rec.started, "migrationDest": rec.backend,
                "status": rec.status}, **({"incomingLimit": int(job.params["incomingLimit"])}
                                         if job.params.get("incomingLimit") else {}))
            job.dest_created = True
            if (created or {}).get("backend") != rec.backend or not created.get("backendUri"):
                raise VdsmError(errors.MIGRATION_ERROR, f"the destination runs the VM on backend "
                                f"{(created or {}).get('backend')!r}, not {rec.backend!r}")
            flags, mparams = flags_and_params(lv, job)
            if job.cancel_requested:
                raise _Cancelled()
            job.started = True
            svc.completed_jobs.pop(rec.vm_id, None)
            watcher = asyncio.create_task(monitor(rec, job, backend, dom))
            log.info("%s: migrating to %s (backend %s, flags 0x%x, %s)", rec.vm_id, created["backendUri"],
                     rec.backend, flags, mparams)
            await asyncio.to_thread(dom.migrateToURI3, created["backendUri"], mparams, flags)
        except BaseException as e:
            if watcher is not None:
                watcher.cancel()
            await failed(rec, job, e)
            return
        watcher.cancel()
        await succeeded(rec, job, xml)

    async def succeeded(rec: VmRecord, job: Outgoing, xml: str) -> None:
        job.progress = rec.migration_progress = 100
        deadline = time.monotonic() + DOWNTIME_WAIT
        while rec.vm_id not in svc.completed_jobs and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        stats = svc.completed_jobs.pop(rec.vm_id, {})
        downtime = stats.get("downtime_net", stats.get("downtime"))
        job.downtime = int(downtime) if downtime is not None else None
        job.message = "Migration done"
        job.done = True
        rec.migrating = False
        emit(rec, job)
        if rec.status != st.DOWN:
            rec.set_down(st.NORMAL, st.MIGRATION_SUCCEEDED)
            svc.publish(rec)
        job.finished.set()
        log.info("%s: migration done (downtime %s ms)", rec.vm_id, job.downtime)
        await svc.hooks.notify("after_vm_migrate_source", rec, xml=xml)

    async def failed(rec: VmRecord, job: Outgoing, exc: BaseException) -> None:
        backend = svc.backend(rec.backend)
        lv = backend.lv
        cancelled = job.cancel_requested or isinstance(exc, _Cancelled) or (
            isinstance(exc, lv.libvirtError) and exc.get_error_code() == lv.VIR_ERR_OPERATION_ABORTED)
        if cancelled:
            job.code, job.message = errors.MIGRATE_CANCEL, "Migration canceled"
        else:
            detail = exc.get_error_message() if isinstance(exc, lv.libvirtError) else str(exc)
            job.code, job.message = errors.MIGRATION_ERROR, f"Fatal error during migration: {detail}"
        log.warning("%s: migration %s: %s", rec.vm_id, "cancelled" if cancelled else "failed", exc)
        if job.dest_created and not isinstance(exc, asyncio.CancelledError):  # not while shutting down
            with contextlib.suppress(VdsmError):
                await dest_call(job, "VM.destroy", vmID=rec.vm_id)
        rec.migrating = False
        rec.migration_progress = 0
        if svc.vms.get(rec.vm_id) is rec and rec.status != st.DOWN:
            status = st.UP
            with contextlib.suppress(Exception):
                dom = await svc.domain(rec)
                status = st.from_libvirt_state((await asyncio.to_thread(dom.state, 0))[0])
            if status != st.DOWN:
                svc.set_status(rec, status)
        job.done = True
        job.finished.set()
        if isinstance(exc, asyncio.CancelledError):
            raise exc

    async def migrate(vmID: str, params: dict) -> None:  # noqa: N803 - VDSM's names
        rec = svc.active(vmID)
        if rec.migrating or rec.incoming:
            raise VdsmError(errors.MIGRATION_IN_PROGRESS, f"{vmID} is already migrating")
        if rec.status not in (st.UP, st.PAUSED):
            raise VdsmError(errors.MIGRATION_ERROR, f"cannot migrate a VM in status {rec.status}")
        if not params.get("dst"):
            raise VdsmError(errors.MISSING_PARAM, "params.dst (the destination host[:port])")
        if params.get("mode", "remote") != "remote":
            raise VdsmError(errors.MIGRATION_ERROR, f"migration mode {params.get('mode')!r} is not supported "
                            "(remote only; hibernation is not implemented)")
        if params.get("method", "online") != "online":
            log.warning("%s: migration method %s is deprecated, forced to 'online'", vmID, params["method"])
        host, port = split_dst(str(params["dst"]))
        job = Outgoing(vmID, host, port, dict(params))
        outgoing[vmID] = job
        rec.migrating = True
        rec.migration_progress = 0
        svc.set_status(rec, st.MIGRATION_SOURCE)
        job.task = asyncio.create_task(run(rec, job), name=f"migrate-{vmID}")

    async def get_migration_status(vmID: str) -> dict:  # noqa: N803
        svc.record(vmID)
        job = outgoing.get(vmID)
        if job is None:
            return {"vmId": vmID, "status": {"code": 0, "message": "Migration not in progress"}, "progress": 0}
        return job.stats()

    async def migrate_cancel(vmID: str) -> None:  # noqa: N803
        rec = svc.record(vmID)
        job = outgoing.get(vmID)
        if job is None or job.done:
            raise VdsmError(errors.MIGRATE_CANCEL, "Migration not in progress")
        job.cancel_requested = True
        backend = svc.backend(rec.backend)
        deadline = time.monotonic() + CANCEL_WAIT
        while not job.done and time.monotonic() < deadline:
            if job.started:
                try:
                    dom = await svc.domain(rec)
                    await asyncio.to_thread(dom.abortJob)
                    break
                except VdsmError:
                    break
                except backend.lv.libvirtError as e:  # the backend's job may not have begun yet
                    if e.get_error_code() != backend.lv.VIR_ERR_OPERATION_INVALID:
                        raise VdsmError(errors.MIGRATE_CANCEL, e.get_error_message() or str(e)) from None
            await asyncio.sleep(0.2)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(job.finished.wait(), max(0.1, deadline - time.monotonic()))
        if job.code != errors.MIGRATE_CANCEL:
            raise VdsmError(errors.MIGRATE_CANCEL, f"Migration not in progress ({job.message})")

    # -- the destination ------------------------------------------------------------------

    async def watch_incoming(rec: VmRecord) -> None:
        """Until the backend runs the guest here (Up), or the migration failed (Down)."""
        backend = svc.backend(rec.backend)
        lv = backend.lv
        appear_by = time.monotonic() + svc.cfg.migration_timeout
        seen = False
        waiting = (lv.VIR_DOMAIN_PAUSED_MIGRATION, lv.VIR_DOMAIN_PAUSED_STARTING_UP, lv.VIR_DOMAIN_PAUSED_POSTCOPY)
        while svc.vms.get(rec.vm_id) is rec and rec.incoming:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(rec.wake.wait(), 0.5)
            rec.wake.clear()
            if svc.vms.get(rec.vm_id) is not rec:
                return
            try:
                dom = await asyncio.to_thread(backend.conn.lookupByUUIDString, rec.vm_id)
                state, reason = await asyncio.to_thread(dom.state, 0)
            except lv.libvirtError as e:
                if e.get_error_code() != lv.VIR_ERR_NO_DOMAIN:
                    continue
                if seen or time.monotonic() > appear_by:
                    incoming_failed(rec, "the incoming migration failed" if seen else "no migration arrived")
                    return
                continue
            seen = True
            if state == lv.VIR_DOMAIN_RUNNING or (state == lv.VIR_DOMAIN_PAUSED and reason not in waiting):
                rec.incoming = False
                with contextlib.suppress(lv.libvirtError):
                    rec.xml = await asyncio.to_thread(dom.XMLDesc, 0)
                svc.set_status(rec, st.UP if state == lv.VIR_DOMAIN_RUNNING else st.PAUSED)
                log.info("%s: incoming migration done (%s)", rec.vm_id, rec.status)
                await svc.hooks.notify("after_vm_migrate_destination", rec)
                return
            if state in (lv.VIR_DOMAIN_SHUTOFF, lv.VIR_DOMAIN_CRASHED):
                incoming_failed(rec, "the incoming migration failed")
                return

    def incoming_failed(rec: VmRecord, why: str) -> None:
        rec.incoming = False
        rec.set_down(st.ERROR, st.MIGRATION_FAILED, why)
        svc.publish(rec)

    async def migration_create(vmID: str, params: dict, incomingLimit: int | None = None) -> dict:  # noqa: N803
        if vmID in svc.vms:
            raise VdsmError(errors.EXIST, f"{{'vmId': '{vmID}'}}")
        xml = params.get("_srcDomXML") or params.get("xml")
        if not isinstance(xml, str) or not xml.strip():
            raise VdsmError(errors.MISSING_PARAM, "params.xml (the domain XML)")
        facts = domxml.read(xml)
        if facts.uuid != vmID.lower():
            raise VdsmError(errors.CANNOT_CREATE_VM, f"vmID {vmID} does not match the domain XML uuid {facts.uuid}")
        name = params.get("backend") or svc.backend_for_new(vmID, facts.custom).name
        if name not in svc.backends:
            raise VdsmError(errors.CANNOT_CREATE_VM, f"backend {name!r} is not configured on this host")
        rec = VmRecord(vm_id=vmID, name=facts.name, backend=name, custom=facts.custom, xml=xml)
        rec.incoming, rec.wake = True, asyncio.Event()
        with contextlib.suppress(TypeError, ValueError):
            rec.started = time.time() - float(params.get("elapsedTimeOffset") or 0)
        svc.vms[vmID] = rec
        svc.set_status(rec, st.MIGRATION_DESTINATION)
        try:
            # edits are not applied: the backend takes the domain from the source's stream
            await svc.hooks.domxml("before_vm_migrate_destination", xml, rec, code=errors.CANNOT_CREATE_VM)
        except VdsmError:
            svc.vms.pop(vmID, None)
            raise
        task = asyncio.create_task(watch_incoming(rec), name=f"incoming-{vmID}")
        task.add_done_callback(lambda t: t.cancelled() or t.exception() and log.error(
            "%s: incoming watcher failed: %s", vmID, t.exception()))
        log.info("%s: waiting for the incoming migration on backend %s", vmID, name)
        return {"migrationPort": 0, "params": domxml.definition(rec, xml), "backend": name,
                "backendUri": backend_uri(svc, name)}

    return {"VM.migrate": migrate, "VM.getMigrationStatus": get_migration_status,
            "VM.migrateCancel": migrate_cancel, "VM.migrationCreate": migration_create}
