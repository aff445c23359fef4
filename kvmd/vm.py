"""One VM: its QEMU process, its QMP session and its state, driven by events.

State changes come from QMP events (STOP, RESUME, SHUTDOWN...) and from the QEMU
process's exit (seen through a pidfd), never from polling; `states.py` decides what each
one means. Lifecycle verbs (start, pause, resume, reset, shutdown, destroy) check the
state first and fail with WrongState. `attach` re-adopts a QEMU left running by an
earlier kvmd, without pausing, resuming or restarting it.
"""

from __future__ import annotations

import asyncio
import calendar
import contextlib
import copy
import logging
import os
import shutil
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kvmd import cgroups, failpoints, hostcheck, netdev, ports, qga, runtime
from kvmd.config import Config
from kvmd.errors import InvalidParams, KvmdError, QemuFailure, Timeout, WrongState
from kvmd.qemu import cmdline, probe
from kvmd.qemu.monitor import Monitor
from kvmd.qemu.process import (
    ExitInfo,
    ProcessHandle,
    hand_over,
    is_vm_process,
    log_tail,
    spawn,
    start_time,
)
from kvmd.spec import VMSpec, from_dict, to_dict
from kvmd.states import ACTIVE, INACTIVE, State, can, check_transition, on_event, on_exit

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Paths:
    qmp: str
    console: str
    qga: str
    log: str
    console_log: str
    nvram: str

    @classmethod
    def for_vm(cls, cfg: Config, name: str) -> Paths:
        run, state = cfg.run_dir, cfg.state_dir
        return cls(
            qmp=os.path.join(run, f"{name}.qmp"),
            console=os.path.join(run, f"{name}.console"),
            qga=os.path.join(run, f"{name}.qga"),
            log=os.path.join(state, "logs", f"{name}.log"),
            console_log=os.path.join(state, "logs", f"{name}.console.log"),
            nvram=os.path.join(state, "nvram", f"{name}_VARS.fd"),
        )

    def channels(self, spec: VMSpec) -> dict[str, str]:
        """Socket of each `unix` channel of `spec`: RUN_DIR/VM.CHANNEL, beside VM.qga."""
        base = self.qmp[: -len(".qmp")]
        return {c.name: f"{base}.{c.name}" for c in spec.channels if c.type == "unix"}


Notify = Callable[["VM", dict[str, Any]], None]


class VM:
    def __init__(self, spec: VMSpec, cfg: Config, persistent: bool, notify: Notify):
        self.spec = spec
        self.live_spec: VMSpec | None = None
        self.cfg = cfg
        self.persistent = persistent
        self.paths = Paths.for_vm(cfg, spec.name)
        self.state = State.DEFINED
        self.reason = ""
        self.monitor: Monitor | None = None
        self.proc: ProcessHandle | None = None
        self.record: runtime.RuntimeRecord | None = None
        self.started_at: float | None = None
        self.graphics: list[dict[str, Any]] = []
        self._notify = notify
        self.on_change: Callable[[VM], None] | None = None  # persist spec changes (manager)
        self._waiters: list[tuple[Callable[[str, dict[str, Any]], bool], asyncio.Future]] = []
        self.device_handlers: list[Callable[[VM, str, dict[str, Any]], None]] = []
        self.removals: dict[str, asyncio.Task] = {}  # device id -> finishing unplug
        self._lock = asyncio.Lock()
        self._changed = asyncio.Event()
        self._shutdown_seen = False
        self._shutdown_info: dict[str, Any] = {}
        self._destroy_requested = False
        self._exit_task: asyncio.Task | None = None
        self._shutdown_task: asyncio.Task | None = None
        self._destroy_reason = "destroyed"
        self._abort_reason: str | None = None  # why an unfinished start was ended (attach)

    @property
    def lock(self) -> asyncio.Lock:
        """Serialises operations that change the VM (lifecycle, hotplug)."""
        return self._lock

    @property
    def name(self) -> str:
        return self.spec.name

    # -- state -----------------------------------------------------------------------

    def _set_state(self, new: State, reason: str = "", force: bool = False) -> None:
        old = self.state
        if not force:
            check_transition(old, new)
        if new == old and reason == self.reason:
            return
        self.state, self.reason = new, reason
        ev, self._changed = self._changed, asyncio.Event()
        ev.set()
        log.info("%s: %s -> %s%s", self.name, old, new, f" ({reason})" if reason else "")
        self._notify(self, {"type": "state", "vm": self.name, "uuid": self.spec.uuid,
                            "state": str(new), "previous": str(old), "reason": reason,
                            "time": time.time()})

    async def wait_state(self, accept: Callable[[State], bool], timeout: float | None) -> bool:
        """Wait until `accept(state)`; False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not accept(self.state):
            ev = self._changed
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return False
            try:
                await asyncio.wait_for(ev.wait(), remaining)
            except asyncio.TimeoutError:
                return accept(self.state)
        return True

    def _require(self, verb: str) -> None:
        if not can(verb, self.state):
            raise WrongState(f"cannot {verb} {self.name!r}: it is {self.state}",
                             {"name": self.name, "state": str(self.state)})

    # -- QMP events and process exit -----------------------------------------------

    def wait_event(self, match: Callable[[str, dict[str, Any]], bool]) -> asyncio.Future:
        """A future resolved with (event, data) for the next QMP event `match` accepts.

        Register it *before* issuing the command that causes the event.
        """
        fut = asyncio.get_running_loop().create_future()
        self._waiters.append((match, fut))
        fut.add_done_callback(lambda f: self._waiters.remove((match, fut)) if (match, fut) in self._waiters else None)
        return fut

    def _on_qmp_event(self, event: str, data: dict[str, Any]) -> None:
        for match, fut in list(self._waiters):
            if not fut.done() and match(event, data):
                fut.set_result((event, data))
        for handler in list(self.device_handlers):
            handler(self, event, data)
        if event == "SHUTDOWN":
            self._shutdown_seen = True
            self._shutdown_info = data
        new = on_event(self.state, event, data)
        if event == "SHUTDOWN" and self._destroy_requested:
            new = self.state  # our own SIGTERM: the exit that follows reports it
        if new != self.state:
            resumed = "booted" if self.state == State.STARTING else "resumed"
            reason = {"STOP": "paused", "RESUME": resumed,
                      "SHUTDOWN": f"shutdown ({data.get('reason', 'unknown')})"}.get(event, event)
            self._set_state(new, reason)
        if event in ("RESET", "POWERDOWN", "DEVICE_DELETED", "GUEST_PANICKED", "BLOCK_IO_ERROR"):
            self._notify(self, {"type": "qmp", "vm": self.name, "uuid": self.spec.uuid,
                                "event": event, "data": data, "time": time.time()})

    async def _on_qmp_lost(self) -> None:
        if self._destroy_requested or self._shutdown_seen:
            return  # QEMU is on its way out; the exit watcher reports it
        proc = self.proc
        if proc is not None and proc.alive:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(proc.exited()), 1.0)
                return  # QEMU ended: the exit watcher reports it
        if self.proc is not None and self.proc.alive and self.monitor is not None:
            log.warning("%s: QMP connection lost while QEMU runs; reconnecting", self.name)
            await self.monitor.close()
            mon = Monitor(self.name, self._on_qmp_event, self._on_qmp_lost, self.cfg.qmp_timeout)
            try:
                await mon.connect(self.paths.qmp, self.cfg.qmp_connect_timeout)
                self.monitor = mon
            except KvmdError as e:
                log.error("%s: QMP reconnect failed: %s", self.name, e)

    async def _watch_exit(self, proc: ProcessHandle) -> None:
        info: ExitInfo = await proc.exited()
        await self._finish(info)

    async def _finish(self, info: ExitInfo) -> None:
        if self.monitor is not None:
            await self.monitor.close()
            self.monitor = None
        self.proc = None
        runtime.remove(self.cfg.run_dir, self.name)
        await cgroups.remove_async(self.record.cgroups if self.record else [])
        ended = self.live_spec or self.spec
        if any(n.no_mac_spoofing for n in ended.nics):
            await asyncio.to_thread(netdev.remove_filters, ended)
        for path in (self.paths.qmp, self.paths.console, self.paths.qga, *self.paths.channels(ended).values()):
            with contextlib.suppress(OSError):
                os.unlink(path)
        if self.state == State.STARTING and self._abort_reason:
            new, reason = State.STOPPED, self._abort_reason
        elif self.state == State.STARTING:
            new, reason = State.STOPPED, f"failed to start: {info.describe()}"
            tail = log_tail(self.paths.log)
            if tail:
                reason += f": {tail}"
        else:
            new = on_exit(self.state, self._shutdown_seen, self._destroy_requested)
            if new == State.CRASHED:
                reason = info.describe()
                tail = log_tail(self.paths.log, 4)
                if tail:
                    reason += f"; last QEMU output: {tail}"
            elif self._destroy_requested:
                reason = self._destroy_reason
            elif self._shutdown_info.get("guest"):
                reason = "guest shut down"
            else:
                reason = f"shutdown ({self._shutdown_info.get('reason', 'host')})"
        self.live_spec = None
        self.graphics = []
        self._set_state(new, reason, force=True)

    # -- lifecycle verbs -------------------------------------------------------------

    async def start(self, paused: bool = False, incoming: str | None = None,
                    spec: VMSpec | None = None) -> None:
        """Launch QEMU. `incoming` (e.g. "defer") waits for a migration stream in state
        migrating-in instead of running; `spec` launches that spec instead of the
        definition (a migration's running spec, a snapshot's)."""
        async with self._lock:
            self._require("start")
            spec = copy.deepcopy(spec or self.spec)
            caps = probe.probe(self.cfg.qemu)
            channels = self.paths.channels(spec)
            sockets = [self.paths.qmp, self.paths.console, self.paths.qga, *channels.values()]
            await hostcheck.check(spec, sockets, cmdline.OVMF_CODE)
            nvram = None
            if spec.boot.firmware == "uefi":
                nvram = spec.boot.nvram or self.paths.nvram
                if not os.path.exists(nvram):
                    os.makedirs(os.path.dirname(nvram), exist_ok=True)
                    shutil.copyfile(cmdline.OVMF_VARS, nvram)
            for path in sockets:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
            taps = netdev.open_taps(spec)
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                listener.bind(self.paths.qmp)
                os.chmod(self.paths.qmp, 0o600)
                listener.listen(4)
                opts = cmdline.LaunchOptions(
                    binary=caps.binary, accels=tuple(self.cfg.accel), qmp_fd=listener.fileno(),
                    serial_socket=self.paths.console, serial_log=self.paths.console_log,
                    qga_socket=self.paths.qga, channel_sockets=channels, nvram=nvram,
                    spice_port=next((ports.free_port(g.listen) for g in spec.graphics
                                     if g.type == "spice" and not g.port), None),
                    sandbox=self.cfg.sandbox and caps.sandbox,
                    run_as=self.cfg.run_as, run_with=caps.run_with, tap_fds=taps, incoming=incoming)
                argv = cmdline.build_argv(spec, opts)
                self._shutdown_seen = self._destroy_requested = False
                self._shutdown_info = {}
                self._set_state(State.STARTING, "starting")
                # The record is written before QEMU exists (pid 0, `starting`), so a kvmd
                # killed at any point from here on leaves a trace for the next one to find
                # the QEMU by (its argv) and end an unfinished start (manager._recover).
                self.started_at = time.time()
                record = runtime.RuntimeRecord(
                    name=self.name, uuid=spec.uuid, pid=0, start_time=None, qmp=self.paths.qmp, argv=argv,
                    spec=to_dict(spec), persistent=self.persistent, started_at=self.started_at, starting=True,
                    migration={"direction": "in"} if incoming else None)
                try:
                    hand_over([self.paths.log, self.paths.console_log, nvram], self.cfg.run_as)
                    runtime.save(self.cfg.run_dir, record)
                    failpoints.hit("start.recorded")
                    popen = spawn(argv, [listener.fileno(), *taps.values()], self.paths.log)
                except (OSError, KvmdError) as e:
                    runtime.remove(self.cfg.run_dir, self.name)
                    self._set_state(State.STOPPED, f"failed to start: {e}")
                    if isinstance(e, KvmdError):
                        raise
                    raise QemuFailure(f"cannot run {caps.binary}: {e}") from None
            finally:
                listener.close()
                for fd in taps.values():
                    os.close(fd)
            failpoints.hit("start.spawned")
            self.proc = ProcessHandle(popen.pid, popen)
            self.live_spec = spec
            self.record = record
            record.pid = popen.pid
            self._exit_task = asyncio.create_task(self._watch_exit(self.proc), name=f"exit-{self.name}")
            try:
                record.cgroups = cgroups.place_vm(self.cfg, self.name, popen.pid, spec)
                runtime.save(self.cfg.run_dir, record)
                failpoints.hit("start.saved")
                self.monitor = Monitor(self.name, self._on_qmp_event, self._on_qmp_lost, self.cfg.qmp_timeout)
                await self.monitor.connect(self.paths.qmp, self.cfg.qmp_connect_timeout)
                await self._post_launch(spec)
                failpoints.hit("start.connected")
                if incoming:
                    self._set_state(State.MIGRATING_IN, "waiting for the incoming migration")
                elif paused:
                    self._set_state(State.PAUSED, "started paused")
                else:
                    await self.monitor.execute("cont")
                    failpoints.hit("start.cont")
                    if self.state == State.STARTING:
                        self._set_state(State.RUNNING, "booted")
                # /proc/<pid>/stat blocks while QEMU is still exec'ing: read it once it talked
                record.start_time = start_time(popen.pid)
                record.starting = False
                runtime.save(self.cfg.run_dir, record)
            except (KvmdError, OSError) as e:
                await self._abort_start()
                msg = self.reason if self.reason.startswith("failed to start") else f"failed to start: {e}"
                raise QemuFailure(f"{self.name}: {msg}") from None

    async def _abort_start(self) -> None:
        proc = self.proc
        if proc is not None:
            proc.send(signal.SIGKILL)
        if self._exit_task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(self._exit_task), 10)

    async def _post_launch(self, spec: VMSpec) -> None:
        """Setup between launch and `cont`: display passwords, actual display ports."""
        assert self.monitor is not None
        for gfx in spec.graphics:
            if gfx.password:
                await self.monitor.execute("set_password", {"protocol": gfx.type, "password": gfx.password})
                if gfx.password_valid_to:
                    when = calendar.timegm(time.strptime(gfx.password_valid_to, "%Y-%m-%dT%H:%M:%S"))
                    await self.monitor.execute("expire_password", {"protocol": gfx.type, "time": str(when)})
        self.graphics = []
        if any(g.type == "vnc" for g in spec.graphics):
            vnc = await self.monitor.execute("query-vnc")
            self.graphics.append({"type": "vnc", "host": vnc.get("host"), "port": int(vnc.get("service", 0))})
        if any(g.type == "spice" for g in spec.graphics):
            sp = await self.monitor.execute("query-spice")
            self.graphics.append({"type": "spice", "host": sp.get("host"), "port": sp.get("port")})

    async def attach(self, record: runtime.RuntimeRecord) -> bool:
        """Re-adopt the QEMU in `record` after a kvmd restart; False if it is gone.

        A start that had not completed (`record.starting`) is finished if QEMU already
        runs the guest, else its QEMU is ended (it never ran the guest) and the VM is
        stopped, as if the start had failed."""
        if record.pid <= 0:
            return False  # never spawned as far as the record knows (manager.end_orphans)
        try:  # pidfd first: then the pid cannot be recycled between check and adoption
            proc = ProcessHandle(record.pid, None)
        except OSError:
            return False
        if not is_vm_process(record.pid, record.uuid, record.start_time):
            proc.close()
            return False
        self.proc, self.record = proc, record
        self.started_at = record.started_at
        # a transient VM's spec was just parsed from this very record: do not parse twice
        self.live_spec = self.spec if not self.persistent else from_dict(record.spec)
        self._exit_task = asyncio.create_task(self._watch_exit(proc), name=f"exit-{self.name}")
        self.monitor = Monitor(self.name, self._on_qmp_event, self._on_qmp_lost, self.cfg.qmp_timeout)
        try:
            await self.monitor.connect(record.qmp, self.cfg.qmp_connect_timeout)
            status = await self.monitor.execute("query-status")
            await self._post_launch_info(self.live_spec)
        except KvmdError as e:
            # QEMU lives but will not talk: keep it, report it, never kill it.
            self._set_state(State.RUNNING, f"re-attached without QMP: {e}", force=True)
            return True
        st = status.get("status")
        if record.starting and not status.get("running"):
            self._abort_reason = ("start interrupted: kvmd stopped before the start completed "
                                  f"(QEMU was {st}); QEMU ended")
            self._set_state(State.STARTING, "ending an unfinished start", force=True)
            await self._abort_start()
            return True
        if record.starting:
            record.starting = False
            record.start_time = record.start_time or start_time(record.pid)
            runtime.save(self.cfg.run_dir, record)
        if status.get("running"):
            self._set_state(State.RUNNING, "re-attached", force=True)
        elif st == "shutdown":
            self._shutdown_seen = True
            self._set_state(State.SHUTTING_DOWN, "re-attached while shutting down", force=True)
        else:
            self._set_state(State.PAUSED, f"re-attached ({st})", force=True)
        return True

    async def _post_launch_info(self, spec: VMSpec) -> None:
        assert self.monitor is not None
        self.graphics = []
        if any(g.type == "vnc" for g in spec.graphics):
            vnc = await self.monitor.execute("query-vnc")
            self.graphics.append({"type": "vnc", "host": vnc.get("host"), "port": int(vnc.get("service", 0))})

    async def qmp(self, cmd: str, args: dict | None = None, timeout: float | None = None) -> Any:
        """Run a QMP command on this active VM (WrongState if it is not running)."""
        if self.state not in ACTIVE or self.state == State.STARTING:
            raise WrongState(f"{self.name!r} is {self.state}", {"name": self.name, "state": str(self.state)})
        if self.monitor is None or not self.monitor.connected:
            raise QemuFailure(f"{self.name}: no QMP connection to QEMU")
        return await self.monitor.execute(cmd, args, timeout)

    def changed(self) -> None:
        """The live spec (and maybe the definition) changed: persist it."""
        if self.record is not None and self.live_spec is not None:
            self.record.spec = to_dict(self.live_spec)
            self.record.spec_revision = ""
            self.record.__post_init__()
            runtime.save(self.cfg.run_dir, self.record)
        if self.on_change is not None:
            self.on_change(self)

    async def _qmp(self, verb: str, cmd: str, args: dict | None = None) -> Any:
        self._require(verb)
        if self.monitor is None or not self.monitor.connected:
            raise QemuFailure(f"{self.name}: no QMP connection to QEMU")
        return await self.monitor.execute(cmd, args)

    async def pause(self) -> None:
        async with self._lock:
            await self._qmp("pause", "stop")
            if self.state == State.RUNNING:
                self._set_state(State.PAUSED, "paused")

    async def resume(self) -> None:
        async with self._lock:
            await self._qmp("resume", "cont")
            if self.state == State.PAUSED:
                self._set_state(State.RUNNING, "resumed")

    async def reset(self) -> None:
        async with self._lock:
            await self._qmp("reset", "system_reset")

    async def shutdown(self, timeout: float | None = None, wait: bool = True, mode: str = "acpi") -> State:
        """ACPI power button (mode "acpi") or the guest agent's guest-shutdown (mode
        "agent", which has no reply); destroy if the guest is still up after `timeout` s."""
        if mode not in ("acpi", "agent"):
            raise InvalidParams(f"shutdown mode must be 'acpi' or 'agent', not {mode!r}", {"param": "mode"})
        timeout = self.cfg.shutdown_timeout if timeout is None else timeout
        async with self._lock:
            if self.state != State.SHUTTING_DOWN and mode == "agent":
                self._require("shutdown")
                await qga.for_vm(self).shutdown(limit=timeout)
                if self.state in (State.RUNNING, State.PAUSED):
                    self._set_state(State.SHUTTING_DOWN, "guest agent shutdown requested")
            elif self.state != State.SHUTTING_DOWN:
                await self._qmp("shutdown", "system_powerdown")
                self._set_state(State.SHUTTING_DOWN, "ACPI shutdown requested")
            if self._shutdown_task is None or self._shutdown_task.done():
                self._shutdown_task = asyncio.create_task(self._shutdown_deadline(timeout))
        if wait:
            await asyncio.shield(self._shutdown_task)
        return self.state

    async def _shutdown_deadline(self, timeout: float) -> None:
        if not await self.wait_state(lambda s: s in INACTIVE, timeout):
            if self.state in ACTIVE:
                await self.destroy(reason=f"guest did not shut down within {timeout:g}s; destroyed")

    async def destroy(self, reason: str = "destroyed") -> None:
        """Power off now: SIGTERM (QEMU exits cleanly), SIGKILL after the grace time."""
        self._require("destroy")
        proc = self.proc
        self._destroy_requested = True
        self._destroy_reason = reason
        if proc is None:
            return
        exited = proc.exited()
        if proc.send(signal.SIGTERM):
            try:
                await asyncio.wait_for(asyncio.shield(exited), self.cfg.destroy_grace)
            except asyncio.TimeoutError:
                proc.send(signal.SIGKILL)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(asyncio.shield(exited), 30)
        if not await self.wait_state(lambda s: s in INACTIVE, 10):
            raise Timeout(f"{self.name}: QEMU did not exit after SIGKILL")

    async def detach(self) -> None:
        """Let go of QEMU (kvmd is stopping): close QMP and the pidfd; QEMU keeps running."""
        if self._exit_task is not None:
            self._exit_task.cancel()
            with contextlib.suppress(BaseException):
                await self._exit_task
        if self.monitor is not None:
            await self.monitor.close()
            self.monitor = None
        if self.proc is not None:
            self.proc.close()

    # -- reporting -------------------------------------------------------------------

    def info(self, with_spec: bool = False) -> dict[str, Any]:
        spec = self.live_spec or self.spec
        out: dict[str, Any] = {
            "name": self.name,
            "uuid": spec.uuid,
            "state": str(self.state),
            "reason": self.reason,
            "persistent": self.persistent,
            "vcpus": spec.cpu.count,
            "memory": spec.memory.size,
            "pid": self.proc.pid if self.proc else None,
            "startedAt": self.started_at if self.state in ACTIVE else None,
            "uptime": round(time.time() - self.started_at, 3) if self.started_at and self.state in ACTIVE else None,
            "console": self.paths.console if self.state in ACTIVE and spec.serial.type == "socket" else None,
            "consoleLog": self.paths.console_log,
            "guestAgent": self.paths.qga if self.state in ACTIVE and spec.guest_agent else None,
            "channels": self.paths.channels(spec) if self.state in ACTIVE else {},
            "graphics": list(self.graphics),
            "log": self.paths.log,
        }
        if with_spec:
            out["spec"] = to_dict(spec)
            if self.live_spec is not None and self.persistent:
                out["definition"] = to_dict(self.spec)
        return out

