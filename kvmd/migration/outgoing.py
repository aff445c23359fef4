"""The source half of a live migration: this kvmd drives the whole protocol.

    migrate(name, dest)                        the destination kvmd (dest)
      state running -> migrating-out
      connect (unix socket, or TCP + token)
      vm.migrate_incoming(spec, ...)   ───────▶ QEMU -incoming defer, listens; for a
                                                storage copy: target images + NBD exports
      capabilities, parameters
      [storage] blockdev-add nbd + blockdev-mirror per disk, until every job is READY
      migrate tcp:HOST:PORT
      follow MIGRATION events + query-migrate (progress)
        [storage] pre-switchover: block-job-cancel (a READY mirror ends consistent),
                  blockdev-del, migrate-continue
        [postcopy] after the first RAM pass: migrate-start-postcopy; postcopy-active:
                  vm.migrate_finish  ───────▶ resume there now (pages are pulled)
      completed: vm.migrate_finish     ───────▶ resume, persist, take snapshot metadata
      end the source QEMU (state stopped, "migrated to DEST"); forget the VM (default)
      or keep it stopped (keep_source)

On failure or `vm.migrate_cancel` the source QEMU resumes its guest by itself (or kvmd
does, if the destination failed to take over after the stream completed: the guest
never ran there), kvmd cancels the mirror jobs, removes the NBD nodes, calls
`vm.migrate_abort` on the destination (which destroys its QEMU and images) and puts the
VM back in `running`/`paused`; `vm.migrate_status` then says `failed` or `cancelled`
and why. Once switched to postcopy a migration can no longer be cancelled: the guest's
state is split between the hosts.

`vm.migrate_status` reports the last job per VM name, also after the VM left this host.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kvmd import failpoints, runtime, snapshot
from kvmd.client import ApiError, AsyncClient, ConnectionLost
from kvmd.errors import (
    WRONG_STATE,
    InvalidParams,
    KvmdError,
    MigrationFailed,
    NotSupported,
    WrongState,
)
from kvmd.migration import peer, qemu
from kvmd.migration.mirror import (
    POLL,
    _check_alive,
    _disk_sizes,
    _mirror,
    _next_event,
    _release_storage,
)
from kvmd.spec import to_dict
from kvmd.states import State, can

if TYPE_CHECKING:
    from kvmd.manager import Manager
    from kvmd.vm import VM

log = logging.getLogger(__name__)

FINISH_TIMEOUT = 60.0
DONE = ("completed", "failed", "cancelled")


@dataclass
class Options:
    bandwidth: int | None = None      # bytes/s, None: no limit
    downtime: int | None = None       # ms, None: QEMU's default (300)
    auto_converge: bool = False
    postcopy: bool = False
    copy_storage: bool = False
    storage_dir: str | None = None
    keep_source: bool = False
    address: str | None = None        # where the destination QEMU listens


@dataclass
class Job:
    name: str
    dest: str
    opts: Options
    was_running: bool
    state: str = "preparing"
    error: str = ""
    started: float = field(default_factory=time.time)
    finished: float | None = None
    info: dict[str, Any] = field(default_factory=dict)
    storage: dict[str, dict[str, int]] = field(default_factory=dict)
    storage_speed: int = 0
    uri: str = ""
    nbd: dict[str, Any] | None = None
    nbd_nodes: list[str] = field(default_factory=list)
    mirror_jobs: list[str] = field(default_factory=list)
    postcopy_requested: bool = False
    postcopy_started: bool = False
    switched: bool = False            # pre-switchover handled
    handed_over: bool = False         # the destination confirmed it runs the guest
    dest_resumed: bool = False
    hold: bool = False                # keep the source paused: whether it runs there is unknown
    cancel_requested: bool = False
    client: AsyncClient | None = None
    task: asyncio.Task | None = None
    events: asyncio.Queue = field(default_factory=asyncio.Queue)
    launched: asyncio.Event = field(default_factory=asyncio.Event)  # storage copy or stream begun

    @property
    def done(self) -> bool:
        return self.state in DONE

    def status(self) -> dict[str, Any]:
        ram = self.info.get("ram", {})
        total, remaining = ram.get("total", 0), ram.get("remaining", 0)
        speed = int(ram.get("mbps", 0) * 1_000_000 / 8)
        phase = "storage" if self.state == "storage" else "memory"
        if self.state == "storage":
            total = sum(j["len"] for j in self.storage.values())
            remaining = total - sum(j["offset"] for j in self.storage.values())
            speed = self.storage_speed
        if self.state == "completed":
            percent, remaining = 100.0, 0
        else:
            percent = round(100.0 * (total - remaining) / total, 1) if total else 0.0
        return {
            "name": self.name, "dest": self.dest, "direction": "out", "state": self.state, "phase": phase,
            "percent": percent, "total": total, "remaining": remaining, "transferred": ram.get("transferred", 0),
            "speed": speed, "downtime": self.info.get("downtime") if self.state == "completed" else None,
            "expectedDowntime": self.info.get("expected-downtime"),
            "totalTime": self.info.get("total-time"), "setupTime": self.info.get("setup-time"),
            "postcopy": self.postcopy_started, "error": self.error or None,
            "startedAt": self.started, "finishedAt": self.finished,
            "options": {"bandwidth": self.opts.bandwidth, "downtime": self.opts.downtime,
                        "autoConverge": self.opts.auto_converge, "postcopy": self.opts.postcopy,
                        "copyStorage": self.opts.copy_storage, "keepSource": self.opts.keep_source},
        }


_tables: weakref.WeakKeyDictionary[Manager, dict[str, Job]] = weakref.WeakKeyDictionary()


def jobs(m: Manager) -> dict[str, Job]:
    return _tables.setdefault(m, {})


async def migrate(m: Manager, name: str, dest: str, opts: Options, wait: bool = True) -> dict[str, Any]:
    """Start migrating `name` to the kvmd at `dest`; with `wait`, return when it ended."""
    vm = m.get(name)
    endpoint = peer.parse_endpoint(dest)
    if opts.postcopy and opts.copy_storage:
        raise NotSupported("postcopy together with copy_storage is not supported; choose one")
    if opts.copy_storage and snapshot.has_snapshots(m.cfg, name):
        raise NotSupported(f"{name!r} has snapshots: a storage copy would flatten their chains; "
                           "delete them first, or migrate on shared storage")
    if endpoint.kind == "unix" and endpoint.path == m.cfg.socket_path:
        raise InvalidParams("dest is this kvmd itself", {"param": "dest"})
    async with vm.lock:
        if not can("migrate", vm.state):
            raise WrongState(f"cannot migrate {name!r}: it is {vm.state}", {"name": name, "state": str(vm.state)})
        job = Job(name, str(endpoint), opts, was_running=vm.state == State.RUNNING)
        jobs(m)[name] = job
        vm._set_state(State.MIGRATING_OUT, f"migrating to {job.dest}")
        _mark(vm, {"direction": "out", "dest": job.dest, "keepSource": opts.keep_source,
                   "wasRunning": job.was_running})
    try:
        await _prepare(m, vm, job, endpoint)
    except BaseException as e:
        await _recover(vm, job, _message(e))
        await _close(job)
        raise MigrationFailed(f"cannot migrate {name!r} to {job.dest}: {job.error}",
                              {"name": name, "state": job.state}) from None
    job.task = asyncio.create_task(_drive(m, vm, job), name=f"migrate-{name}")
    if not wait:
        launched = asyncio.ensure_future(job.launched.wait())
        await asyncio.wait({job.task, launched}, return_when=asyncio.FIRST_COMPLETED)
        launched.cancel()
    else:
        await asyncio.shield(job.task)
        if job.state != "completed":
            raise MigrationFailed(f"migration of {name!r} to {job.dest} {job.state}: {job.error}",
                                  {"name": name, "state": job.state})
    return job.status()


def _message(e: BaseException) -> str:
    if isinstance(e, (KvmdError, ApiError)):
        return e.message
    if isinstance(e, asyncio.CancelledError):
        return "interrupted"
    return str(e) or type(e).__name__


async def _prepare(m: Manager, vm: VM, job: Job, endpoint: peer.Endpoint) -> None:
    job.client = await peer.connect(endpoint, m.cfg.peer_token_file)
    assert vm.live_spec is not None
    listen = job.opts.address or (endpoint.host if endpoint.kind == "tcp" else "127.0.0.1")
    disks = await _disk_sizes(vm) if job.opts.copy_storage else None
    try:
        res = await job.client.call(
            "vm.migrate_incoming", spec=to_dict(vm.live_spec), listen=listen,
            definition=to_dict(vm.spec) if vm.persistent else None, persistent=vm.persistent,
            resume=job.was_running, postcopy=job.opts.postcopy, disks=disks, storage_dir=job.opts.storage_dir,
            snapshots=snapshot.export_metadata(m.cfg, vm.name))
    except ApiError as e:
        raise MigrationFailed(f"the destination refused: {e.message}") from None
    job.uri, job.nbd = res["uri"], res.get("nbd")
    log.info("%s: migrating to %s (stream %s)", vm.name, job.dest, job.uri)


# -- the driver ----------------------------------------------------------------------------


async def _drive(m: Manager, vm: VM, job: Job) -> None:
    def feed(_vm: VM, event: str, data: dict[str, Any]) -> None:
        job.events.put_nowait((event, data))

    vm.device_handlers.append(feed)
    try:
        o = job.opts
        await qemu.set_capabilities(vm, postcopy_ram=o.postcopy, auto_converge=o.auto_converge,
                                    pause_before_switchover=o.copy_storage)
        await qemu.set_parameters(vm, o.bandwidth, o.downtime)
        if o.copy_storage:
            job.state = "storage"
            job.launched.set()
            await _mirror(vm, job)
        _check_alive(vm, job)
        job.state = "setup"
        await vm.qmp("migrate", {"uri": job.uri})
        job.launched.set()
        failpoints.hit("migrate.started")
        st = await _follow(vm, job)
        if st != "completed":
            raise MigrationFailed(job.info.get("error-desc") or f"QEMU reports the migration {st}")
        await _hand_over(m, vm, job)
    except BaseException as e:
        await _recover(vm, job, _message(e))
        if isinstance(e, asyncio.CancelledError):
            raise
    finally:
        if feed in vm.device_handlers:
            vm.device_handlers.remove(feed)
        await _close(job)
        job.finished = job.finished or time.time()


async def _follow(vm: VM, job: Job) -> str:
    """Until QEMU says completed, failed or cancelled (returned); act on the states between.

    QEMU's terminal state is not shown as the job's until the clean-up or hand-over
    after it is done, so a client polling the status never sees it early."""
    assert job.client is not None
    st = job.state
    while st not in DONE:
        if vm.state != State.MIGRATING_OUT:
            raise MigrationFailed(f"the VM is now {vm.state} ({vm.reason})")
        ev = await _next_event(job, POLL)
        if ev is not None and ev[0] == "MIGRATION":
            st = str(ev[1].get("status", st))
        else:
            job.info = await vm.qmp("query-migrate")
            st = job.info.get("status", st)
        if st not in DONE:
            job.state = st
        if st == "pre-switchover" and not job.switched:
            job.switched = True
            await _release_storage(vm, job)
            await vm.qmp("migrate-continue", {"state": "pre-switchover"})
        elif st == "active" and job.opts.postcopy and not job.postcopy_started:
            passes = job.info.get("ram", {}).get("dirty-sync-count", 0)
            if job.postcopy_requested or passes >= 2:
                await vm.qmp("migrate-start-postcopy")
                job.postcopy_started = True
        elif st == "postcopy-active" and not job.dest_resumed:
            await job.client.call("vm.migrate_finish", name=job.name)
            job.dest_resumed = True
        elif st in ("postcopy-paused", "postcopy-recover"):
            raise MigrationFailed("the postcopy stream broke; the guest's state is split between the hosts "
                                  "and it cannot run until the stream is recovered")
    # QEMU says "completed" a moment before it has computed total-time and downtime
    for _ in range(50):
        job.info = await vm.qmp("query-migrate")
        if st != "completed" or job.info.get("total-time"):
            break
        await asyncio.sleep(0.02)
    return st


async def _hand_over(m: Manager, vm: VM, job: Job) -> None:
    """The stream is complete: the destination resumes, the source ends."""
    assert job.client is not None
    failpoints.hit("migrate.completed")
    if not job.dest_resumed:
        try:
            await job.client.call("vm.migrate_finish", name=job.name, timeout=FINISH_TIMEOUT)
        except (ApiError, OSError) as e:
            lost = isinstance(e, (ConnectionLost, OSError))
            # the destination kvmd went away mid-call: it may have resumed the guest before
            # it did; ask again (it may be restarting) before resuming the guest here
            there = await _ask_destination(m, vm, job, retry=30.0) if lost else False
            if there is None:
                job.hold = True
                raise MigrationFailed(f"the destination went away during the hand-over ({_message(e)}) and "
                                      f"cannot be asked whether it took over: {job.error}; the guest is kept "
                                      "paused here so that it never runs twice") from None
            if not there:
                raise MigrationFailed(f"the destination could not take over: {_message(e)}; "
                                      "the VM keeps running here") from None
        job.dest_resumed = True
    failpoints.hit("migrate.handed-over")
    job.handed_over = True
    log.info("%s: migrated to %s in %s ms (downtime %s ms)", vm.name, job.dest, job.info.get("total-time"),
             job.info.get("downtime"))
    await vm.destroy(reason=f"migrated to {job.dest}")
    if not job.opts.keep_source:
        if vm.persistent:
            m.store.delete(vm.name)
        if m.vms.get(vm.name) is vm:
            del m.vms[vm.name]
        snapshot.drop_metadata(m.cfg, vm.name)
    job.state, job.finished = "completed", time.time()


async def _recover(vm: VM, job: Job, error: str) -> None:
    """The migration did not complete: undo it on both sides; the VM runs here again."""
    if job.handed_over:  # the guest lives there; only the clean-up here failed
        job.state, job.finished, job.error = "completed", time.time(), f"source clean-up failed: {error}"
        return
    final = "cancelled" if job.cancel_requested else "failed"
    job.error = "cancelled on request" if job.cancel_requested else error
    log.warning("%s: migration to %s %s: %s", vm.name, job.dest, final, error)
    if vm.proc is not None and vm.monitor is not None:
        with contextlib.suppress(KvmdError):
            st = (await vm.qmp("query-migrate")).get("status")
            if st not in DONE and st is not None:
                await vm.qmp("migrate_cancel")
        await _release_storage(vm, job, force=True)
    if job.client is not None and not job.dest_resumed:
        with contextlib.suppress(ApiError, OSError, KvmdError):
            await job.client.call("vm.migrate_abort", name=job.name)
    if vm.state == State.MIGRATING_OUT and vm.proc is not None:
        running = False if job.postcopy_started or job.hold else await _source_running(vm, job)
        vm._set_state(State.RUNNING if running else State.PAUSED, f"migration {final}: {job.error}")
    _mark(vm, None)
    job.state, job.finished = final, time.time()  # last: a client polling the status sees it all done


async def _source_running(vm: VM, job: Job) -> bool:
    """QEMU resumes a guest it stopped for a migration that then failed; make sure."""
    for _ in range(40):
        try:
            st = await vm.qmp("query-status")
        except KvmdError:
            return False
        if st.get("running") or not job.was_running:
            return bool(st.get("running"))
        if st.get("status") in ("postmigrate", "paused"):  # stream done, destination never ran
            with contextlib.suppress(KvmdError):
                await vm.qmp("cont")
        await asyncio.sleep(0.05)
    return False


def _mark(vm: VM, migration: dict[str, Any] | None) -> None:
    """Note the migration in the VM's runtime record, for a restarted kvmd (`recover`)."""
    if vm.record is not None and vm.record.migration != migration and vm.proc is not None:
        vm.record.migration = migration
        runtime.save(vm.cfg.run_dir, vm.record)


async def _ask_destination(m: Manager, vm: VM, job: Job, retry: float = 0.0,
                           postcopy: bool = False) -> bool | None:
    """Does the guest run at the destination? True: yes (it was resumed there); False: no
    (and whatever the destination held for it is now destroyed, so the source may run
    it); None: the destination cannot be asked (`job.error` says why). Tries again, for
    up to `retry` seconds, while the destination kvmd cannot be reached or drops the
    connection (it may be restarting); `postcopy`: the stream is past the point of no
    return, so the destination is told to resume the guest rather than asked to abort it."""
    deadline = time.monotonic() + retry
    while True:
        await _close(job)
        try:
            job.client = await peer.connect(peer.parse_endpoint(job.dest), m.cfg.peer_token_file)
            if postcopy:
                with contextlib.suppress(ApiError):
                    await job.client.call("vm.migrate_finish", name=job.name, timeout=FINISH_TIMEOUT)
            res = await job.client.call("vm.migrate_abort", name=job.name)
            break
        except ApiError as e:
            if isinstance(e, ConnectionLost):
                job.error = f"the destination {job.dest} did not say: {e.message}"
            elif e.code == WRONG_STATE:  # "the guest already runs here; not aborting"
                return True
            else:
                job.error = f"the destination {job.dest} did not say: {e.message}"
                return None
        except (KvmdError, OSError) as e:
            job.error = f"cannot reach the destination {job.dest}: {_message(e)}"
        if time.monotonic() >= deadline:
            return None
        await asyncio.sleep(0.5)
    if res.get("aborted"):
        return False
    spec = vm.live_spec or vm.spec
    return res.get("uuid") == spec.uuid and res.get("state") in ("running", "paused", "shutting-down")


RECOVERY_SETTLE = 30.0


async def _settle(vm: VM, timeout: float = RECOVERY_SETTLE, cancel: bool = True) -> str:
    """QEMU's own migration state once it stopped moving: a migration still under way is
    cancelled (unless it switched to postcopy: there is no way back from that)."""
    deadline = time.monotonic() + timeout
    cancelled = False
    while True:
        st = str((await vm.qmp("query-migrate")).get("status") or "none")
        if st in DONE or st == "none" or (cancel and st.startswith("postcopy")):
            return st
        if cancel and not cancelled:
            with contextlib.suppress(KvmdError):
                await vm.qmp("migrate_cancel")
            cancelled = True
        if time.monotonic() > deadline:
            return st
        await asyncio.sleep(0.05)


async def recover(m: Manager, vm: VM, info: dict[str, Any]) -> None:
    """A kvmd restarted and found `vm` was migrating out (its runtime record says where).

    QEMU carried on alone meanwhile; a migration still under way is cancelled. Then the
    destination decides: if the guest runs there (it was resumed before the restart, or
    a postcopy migration must finish there) the source QEMU ends and the VM is forgotten
    here, as after any migration; otherwise the destination's copy is destroyed and the
    guest runs on here. If the destination cannot be asked and the stream had completed,
    the guest stays paused here (the only way to never run it twice) and the reason
    says so. `vm.migrate_status` reports the outcome."""
    dest = str(info.get("dest") or "")
    job = Job(vm.name, dest, Options(keep_source=bool(info.get("keepSource"))),
              was_running=bool(info.get("wasRunning", True)))
    job.state = "recovering"
    jobs(m)[vm.name] = job
    vm._set_state(State.MIGRATING_OUT, f"recovering the migration to {dest} interrupted by a kvmd restart",
                  force=True)
    try:
        st = await _settle(vm)
        postcopy = st.startswith("postcopy")
        there = await _ask_destination(m, vm, job, retry=10.0, postcopy=postcopy)
        if there and postcopy:
            st = await _settle(vm, timeout=qemu.MEMORY_TIMEOUT, cancel=False)
        if there:
            job.handed_over = job.dest_resumed = True
            job.info = await vm.qmp("query-migrate")
            await vm.destroy(reason=f"migrated to {dest}")
            if not job.opts.keep_source:
                if vm.persistent:
                    m.store.delete(vm.name)
                if m.vms.get(vm.name) is vm:
                    del m.vms[vm.name]
                snapshot.drop_metadata(m.cfg, vm.name)
            job.state, job.error = "completed", ""
            log.info("%s: the migration to %s had completed; the guest runs there", vm.name, dest)
            return
        job.hold = there is None and (st == "completed" or postcopy)
        why = "interrupted by a kvmd restart" + (f"; {job.error}" if there is None else "")
        job.state, job.error = "failed", why
        if job.hold:
            vm._set_state(State.PAUSED, f"migration to {dest} {why}: it may run there; kept paused here so that "
                                        "it never runs twice (check the destination, then resume or destroy it)")
        else:
            running = await _source_running(vm, job)
            vm._set_state(State.RUNNING if running else State.PAUSED, f"migration failed: {why}")
        log.warning("%s: migration to %s %s; the VM is %s here", vm.name, dest, why, vm.state)
    except (KvmdError, OSError) as e:
        job.state, job.error = "failed", f"recovery after a kvmd restart failed: {_message(e)}"
        log.error("%s: %s", vm.name, job.error)
        if vm.state == State.MIGRATING_OUT:
            vm._set_state(State.PAUSED, f"migration to {dest}: {job.error}")
    finally:
        job.finished = time.time()
        _mark(vm, None)
        await _close(job)


async def _close(job: Job) -> None:
    if job.client is not None:
        with contextlib.suppress(Exception):
            await job.client.close()
        job.client = None


# -- control -------------------------------------------------------------------------------


def _active_job(m: Manager, name: str) -> Job:
    job = jobs(m).get(name)
    if job is None or job.done:
        raise WrongState(f"{name!r} is not migrating", {"name": name, "state": job.state if job else "none"})
    return job


async def cancel(m: Manager, name: str, timeout: float = 60.0) -> dict[str, Any]:
    job = _active_job(m, name)
    if job.postcopy_started:
        raise NotSupported(f"{name!r} switched to postcopy: the migration can no longer be cancelled")
    vm = m.get(name)
    job.cancel_requested = True
    with contextlib.suppress(KvmdError):
        if job.state == "storage":
            for jid in job.mirror_jobs:
                await vm.qmp("block-job-cancel", {"device": jid, "force": True})
        elif job.state not in ("preparing",):
            await vm.qmp("migrate_cancel")
    if job.task is not None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(job.task), timeout)
    return job.status()


async def start_postcopy(m: Manager, name: str) -> dict[str, Any]:
    job = _active_job(m, name)
    if not job.opts.postcopy:
        raise InvalidParams("postcopy was not enabled for this migration (start it with postcopy=true)",
                            {"param": "postcopy"})
    job.postcopy_requested = True
    return job.status()


def status(m: Manager, name: str) -> dict[str, Any] | None:
    job = jobs(m).get(name)
    return job.status() if job is not None else None
