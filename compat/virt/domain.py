"""`virDomain`: one kvmd VM seen through libvirt-python's domain API.

A virDomain holds the VM's name and uuid, like libvirt's handle; every call asks kvmd
afresh (by name, then checks the uuid, so a handle never silently reaches a different
VM that took the same name). Verbs map onto kvmd's API one to one where kvmd has the
verb; libvirt's behaviour is kept where callers rely on it:

- `shutdown*` only requests (ACPI button or guest agent) and returns; kvmd's forced
  destroy after a deadline is not used, as libvirt has none.
- `suspend` of a paused domain succeeds (libvirt's no-op); `resume` of a running one
  fails with VIR_ERR_OPERATION_INVALID.
- `detachDevice*` returns once QEMU removed the device or, if the guest does not
  acknowledge in time, as libvirt does after its own wait: the removal completes
  whenever the guest acknowledges (VIR_DOMAIN_EVENT_ID_DEVICE_REMOVED tells).
- `migrateToURI3` & co. map onto kvmd's live migration (compat/virt/migration.py),
  `snapshotCreateXML` & co. onto its external snapshots (compat/virt/snapshot.py).
- Calls kvmd cannot do raise VIR_ERR_NO_SUPPORT naming the call (`__getattr__`).
"""

from __future__ import annotations

import uuid as uuidlib
from typing import TYPE_CHECKING, Any

from compat.virt import constants as c
from compat.virt import errors, migration, snapshot, stats, xmlconv
from compat.virt.metadata import get_metadata, set_metadata
from compat.virt.states import ACTIVE, to_libvirt

if TYPE_CHECKING:
    from compat.virt.connection import virConnect

# libvirt waits this long for the guest to acknowledge an unplug (qemuDomainRemoveDeviceWaitTime)
DETACH_WAIT_S = 5.0
# "no deadline": libvirt's shutdown never turns into a destroy
NO_DEADLINE_S = 10.0 * 365 * 24 * 3600


def check_flags(call: str, flags: int, allowed: int) -> None:
    """libvirt's virCheckFlags: unknown flag bits are VIR_ERR_INVALID_ARG."""
    extra = (flags or 0) & ~allowed
    if extra:
        raise errors.make(c.VIR_ERR_INVALID_ARG, f"unsupported flags (0x{extra:x}) in function {call}")


def affected(call: str, flags: int, active: bool, persistent: bool) -> tuple[bool, bool]:
    """(live, config) for VIR_DOMAIN_AFFECT_* flags, with libvirt's refusals."""
    check_flags(call, flags, c.VIR_DOMAIN_AFFECT_LIVE | c.VIR_DOMAIN_AFFECT_CONFIG)
    live, config = bool(flags & c.VIR_DOMAIN_AFFECT_LIVE), bool(flags & c.VIR_DOMAIN_AFFECT_CONFIG)
    if not live and not config:
        live, config = active, not active
    if live and not active:
        raise errors.make(c.VIR_ERR_OPERATION_INVALID, "domain is not running")
    if config and not persistent:
        raise errors.make(c.VIR_ERR_OPERATION_INVALID, "transient domains do not have any persistent config",
                          c.VIR_FROM_DOMAIN)
    return live, config


class virDomain:  # noqa: N801  (libvirt's name)
    def __init__(self, conn: virConnect, name: str, uuid: str):
        self._conn = conn
        self._name = name
        self._uuid = uuid

    def __repr__(self) -> str:
        return f"<compat.libvirt.virDomain {self._name} {self._uuid}>"

    # -- plumbing --------------------------------------------------------------------

    def _call(self, method: str, **params: Any) -> Any:
        return self._conn._call(method, **params)

    def _write(self, call: str) -> None:
        self._conn._check_writable(f"virDomain{call[:1].upper()}{call[1:]}")

    def _info(self, spec: bool = False) -> dict[str, Any]:
        info = self._call("vm.info", name=self._name, spec=spec)
        if info.get("uuid") != self._uuid:
            raise errors.make(c.VIR_ERR_NO_DOMAIN, f"no domain with matching uuid '{self._uuid}' ({self._name})")
        return info

    def _active(self) -> tuple[dict[str, Any], bool]:
        info = self._info()
        return info, info.get("state") in ACTIVE

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)

        def unsupported(*_args: Any, **_kwargs: Any) -> Any:
            raise errors.unsupported(f"virDomain.{name}", "kvmd's libvirt shim does not provide it")

        return unsupported

    # -- identity ----------------------------------------------------------------------

    def connect(self) -> virConnect:
        return self._conn

    def name(self) -> str:
        return self._name

    def UUIDString(self) -> str:  # noqa: N802
        return self._uuid

    def UUID(self) -> bytes:  # noqa: N802
        return uuidlib.UUID(self._uuid).bytes

    def ID(self) -> int:  # noqa: N802
        """The QEMU pid while active (unique, positive, like libvirt's ids), else -1."""
        info = self._info()
        return int(info["pid"]) if info.get("state") in ACTIVE and info.get("pid") else -1

    def OSType(self) -> str:  # noqa: N802
        self._info()
        return "hvm"

    # -- state -------------------------------------------------------------------------

    def state(self, flags: int = 0) -> list[int]:
        check_flags("virDomainGetState", flags, 0)
        info = self._info()
        return list(to_libvirt(info["state"], info.get("reason", "")))

    def info(self) -> list[int]:
        """[state, maxMem KiB, memory KiB, vcpus, cpu time ns]."""
        info = self._info()
        st = to_libvirt(info["state"], info.get("reason", ""))[0]
        max_kib = int(info.get("memory") or 0) // 1024
        mem_kib, cpu_ns = max_kib, 0
        if info.get("state") in ACTIVE:
            s = self._stats()
            mem_kib = stats.balloon_kib(s, max_kib)
            cpu_ns = stats.cpu_ns(s)
        return [st, max_kib, mem_kib, int(info.get("vcpus") or 1), cpu_ns]

    def maxMemory(self) -> int:  # noqa: N802
        return int(self._info().get("memory") or 0) // 1024

    def isActive(self) -> int:  # noqa: N802
        return int(self._info().get("state") in ACTIVE)

    def isPersistent(self) -> int:  # noqa: N802
        return int(bool(self._info().get("persistent")))

    def hasManagedSaveImage(self, flags: int = 0) -> int:  # noqa: N802
        self._info()
        return 0

    def autostart(self) -> int:
        self._info()
        return 0

    # -- lifecycle -----------------------------------------------------------------------

    def create(self) -> int:
        return self.createWithFlags(0)

    def createWithFlags(self, flags: int = 0) -> int:  # noqa: N802
        self._write("create")
        check_flags("virDomainCreateWithFlags", flags, c.VIR_DOMAIN_START_PAUSED | c.VIR_DOMAIN_START_BYPASS_CACHE
                    | c.VIR_DOMAIN_START_FORCE_BOOT | c.VIR_DOMAIN_START_VALIDATE)
        info, active = self._active()
        if active:
            raise errors.make(c.VIR_ERR_OPERATION_INVALID, "domain is already running")
        self._call("vm.start", name=self._name, paused=bool(flags & c.VIR_DOMAIN_START_PAUSED))
        return 0

    def suspend(self) -> int:
        self._write("suspend")
        info = self._info()
        if info["state"] == "paused":
            return 0  # libvirt: suspending a paused domain is a no-op
        if info["state"] not in ACTIVE:
            raise errors.make(c.VIR_ERR_OPERATION_INVALID, "domain is not running")
        self._call("vm.pause", name=self._name)
        return 0

    def resume(self) -> int:
        self._write("resume")
        info = self._info()
        if info["state"] == "running":
            raise errors.make(c.VIR_ERR_OPERATION_INVALID, "domain is already running")
        if info["state"] not in ACTIVE:
            raise errors.make(c.VIR_ERR_OPERATION_INVALID, "domain is not running")
        self._call("vm.resume", name=self._name)
        return 0

    def shutdown(self) -> int:
        return self.shutdownFlags(0)

    def shutdownFlags(self, flags: int = 0) -> int:  # noqa: N802
        """ACPI power button (default) or guest agent; with both, the agent first."""
        self._write("shutdownFlags")
        check_flags("virDomainShutdownFlags", flags,
                    c.VIR_DOMAIN_SHUTDOWN_ACPI_POWER_BTN | c.VIR_DOMAIN_SHUTDOWN_GUEST_AGENT)
        info = self._info(spec=True)
        if info.get("state") not in ACTIVE:
            raise errors.make(c.VIR_ERR_OPERATION_INVALID, "domain is not running")
        agent = bool(info["spec"].get("guestAgent"))
        if flags & c.VIR_DOMAIN_SHUTDOWN_GUEST_AGENT and not agent and not flags & c.VIR_DOMAIN_SHUTDOWN_ACPI_POWER_BTN:
            raise errors.make(c.VIR_ERR_ARGUMENT_UNSUPPORTED, "QEMU guest agent is not configured")
        if flags & c.VIR_DOMAIN_SHUTDOWN_GUEST_AGENT and agent:
            try:
                self._call("vm.shutdown", name=self._name, timeout=NO_DEADLINE_S, wait=False, mode="agent")
                return 0
            except errors.libvirtError:
                if not flags & c.VIR_DOMAIN_SHUTDOWN_ACPI_POWER_BTN:
                    raise
        self._call("vm.shutdown", name=self._name, timeout=NO_DEADLINE_S, wait=False, mode="acpi")
        return 0

    def reboot(self, flags: int = 0) -> int:
        raise errors.unsupported("virDomain.reboot", "kvmd has no guest-cooperative reboot; "
                                 "use reset() for a hard reset, or shutdown() and create()")

    def reset(self, flags: int = 0) -> int:
        self._write("reset")
        check_flags("virDomainReset", flags, 0)
        self._call("vm.reset", name=self._name)
        return 0

    def destroy(self) -> int:
        return self.destroyFlags(0)

    def destroyFlags(self, flags: int = 0) -> int:  # noqa: N802
        """SIGTERM, then SIGKILL after kvmd's grace time (GRACEFUL is accepted, same thing)."""
        self._write("destroyFlags")
        check_flags("virDomainDestroyFlags", flags, c.VIR_DOMAIN_DESTROY_GRACEFUL)
        self._call("vm.destroy", name=self._name)
        return 0

    def undefine(self) -> int:
        return self.undefineFlags(0)

    def undefineFlags(self, flags: int = 0) -> int:  # noqa: N802
        """kvmd has no managed save, snapshot or checkpoint metadata: those flags are no-ops."""
        self._write("undefineFlags")
        check_flags("virDomainUndefineFlags", flags,
                    c.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE | c.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
                    | c.VIR_DOMAIN_UNDEFINE_NVRAM | c.VIR_DOMAIN_UNDEFINE_KEEP_NVRAM
                    | c.VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA)
        info = self._info()
        if not info.get("persistent"):
            raise errors.make(c.VIR_ERR_OPERATION_INVALID, "cannot undefine transient domain")
        self._call("vm.undefine", name=self._name)
        self._conn._local_event(self, c.VIR_DOMAIN_EVENT_UNDEFINED, c.VIR_DOMAIN_EVENT_UNDEFINED_REMOVED)
        return 0

    # -- XML and metadata ------------------------------------------------------------------

    def XMLDesc(self, flags: int = 0) -> str:  # noqa: N802
        check_flags("virDomainGetXMLDesc", flags, c.VIR_DOMAIN_XML_SECURE | c.VIR_DOMAIN_XML_INACTIVE
                    | c.VIR_DOMAIN_XML_UPDATE_CPU | c.VIR_DOMAIN_XML_MIGRATABLE)
        info = self._info(spec=True)
        inactive = bool(flags & c.VIR_DOMAIN_XML_INACTIVE)
        spec = info.get("definition") if inactive and info.get("definition") else info["spec"]
        runtime = info.get("state") in ACTIVE and not flags & (c.VIR_DOMAIN_XML_INACTIVE | c.VIR_DOMAIN_XML_MIGRATABLE)
        dom_id = info.get("pid") if runtime else None
        return xmlconv.to_xml(spec, dom_id=dom_id, secure=bool(flags & c.VIR_DOMAIN_XML_SECURE),
                              graphics=info.get("graphics") if runtime else None)

    def metadata(self, type: int, uri: str | None, flags: int = 0) -> str:  # noqa: A002
        info = self._info(spec=True)
        live, _config = affected("virDomainGetMetadata", flags, info.get("state") in ACTIVE,
                                 bool(info.get("persistent")))
        spec = info["spec"] if live or not info.get("definition") else info["definition"]
        return get_metadata(xmlconv.to_xml(spec), type, uri)

    def setMetadata(self, type: int, metadata: str | None, key: str | None, uri: str | None,  # noqa: N802, A002
                    flags: int = 0) -> int:
        self._write("setMetadata")
        info = self._info(spec=True)
        live, config = affected("virDomainSetMetadata", flags, info.get("state") in ACTIVE,
                                bool(info.get("persistent")))
        for which, spec in (("live", info["spec"] if live else None),
                            ("config", (info.get("definition") or info["spec"]) if config else None)):
            if spec is None:
                continue
            edited = set_metadata(xmlconv.to_xml(spec), type, metadata, key, uri)
            merged = xmlconv.merge_libvirt_metadata(spec.get("metadata") or {},
                                                    reparsed=xmlconv.to_spec(edited).get("metadata") or {})
            self._call("vm.set_metadata", name=self._name, metadata=merged,
                       live=which == "live", config=which == "config")
        return 0

    def _device_alias(self, device: str) -> str:
        """The libvirt alias of kvmd device `device` (`disk-NAME`), from the XML record."""
        from compat.virt.events import default_alias, device_key

        key = device_key(device)
        try:
            spec = self._info(spec=True)["spec"] if key else None
        except errors.libvirtError:
            spec = None
        alias = xmlconv.recorded_alias(spec, *key) if spec and key else None
        return alias or default_alias(device)

    def _add_device_records(self, devices: dict[str, Any]) -> None:
        """Add device records to the converter's record, live and (if persistent) config."""
        fresh = self._info(spec=True)
        self._call("vm.set_metadata", name=self._name, live=fresh.get("state") in ACTIVE, config=False,
                   metadata=xmlconv.merge_libvirt_metadata(fresh["spec"].get("metadata") or {}, devices=devices))
        if fresh.get("persistent") and fresh.get("definition"):
            self._call("vm.set_metadata", name=self._name, live=False, config=True,
                       metadata=xmlconv.merge_libvirt_metadata(fresh["definition"].get("metadata") or {},
                                                               devices=devices))

    # -- devices -------------------------------------------------------------------------------

    def attachDevice(self, xml: str) -> int:  # noqa: N802
        return self.attachDeviceFlags(xml, c.VIR_DOMAIN_AFFECT_LIVE)

    def attachDeviceFlags(self, xml: str, flags: int = 0) -> int:  # noqa: N802
        """A `<disk>` or `<interface>`: hot-plugged (live), or added to the definition (config)."""
        self._write("attachDeviceFlags")
        info = self._info(spec=True)
        live, config = affected("virDomainAttachDeviceFlags", flags, info.get("state") in ACTIVE,
                                bool(info.get("persistent")))
        kind, doc, record = xmlconv.device_doc(xml, info["spec"])
        if live:
            # kvmd records a hot-plugged device in the definition of a persistent VM too
            if kind == "disks":
                self._call("vm.hotplug_disk", name=self._name, disk=doc)
            else:
                self._call("vm.hotplug_nic", name=self._name, nic=doc)
            if (info["spec"].get("metadata") or {}).get(xmlconv.LIBVIRT_KEY) is not None:
                self._add_device_records(record)  # its alias and leftovers, for XMLDesc
        elif config:
            spec = dict(info.get("definition") or info["spec"])
            spec[kind] = list(spec.get(kind) or []) + [doc]
            spec["metadata"] = xmlconv.merge_libvirt_metadata(spec.get("metadata") or {}, devices=record)
            self._call("vm.define", spec=spec)
        return 0

    def detachDevice(self, xml: str) -> int:  # noqa: N802
        return self.detachDeviceFlags(xml, c.VIR_DOMAIN_AFFECT_LIVE)

    def detachDeviceFlags(self, xml: str, flags: int = 0) -> int:  # noqa: N802
        """The disk with this target dev / the NIC with this MAC."""
        self._write("detachDeviceFlags")
        info = self._info(spec=True)
        live, config = affected("virDomainDetachDeviceFlags", flags, info.get("state") in ACTIVE,
                                bool(info.get("persistent")))
        spec = info["spec"] if live else (info.get("definition") or info["spec"])
        kind, name = xmlconv.find_device(xml, spec)
        if live:
            method = "vm.hotunplug_disk" if kind == "disks" else "vm.hotunplug_nic"
            try:
                self._call(method, name=self._name, timeout=DETACH_WAIT_S,
                           **{"disk" if kind == "disks" else "nic": name})
            except errors.libvirtError as e:
                if e.get_error_code() != c.VIR_ERR_OPERATION_TIMEOUT:
                    raise
                # libvirt too returns after its wait; the unplug completes when the guest acks
        elif config:
            new = dict(spec)
            new[kind] = [d for d in spec.get(kind) or [] if d.get("name") != name]
            self._call("vm.define", spec=new)
        return 0

    def updateDeviceFlags(self, xml: str, flags: int = 0) -> int:  # noqa: N802
        """Change the medium of a CD-ROM (`<disk device='cdrom'>`, no `<source>` = eject), or a
        display's password (`<graphics type=.. passwd=.. passwdValidTo=..>` -> vm.set_ticket)."""
        self._write("updateDeviceFlags")
        info = self._info(spec=True)
        live, _config = affected("virDomainUpdateDeviceFlags", flags, info.get("state") in ACTIVE,
                                 bool(info.get("persistent")))
        ticket = xmlconv.graphics_ticket(xml)
        if ticket is not None:
            if not live:
                raise errors.unsupported("virDomain.updateDeviceFlags", "kvmd sets tickets on running VMs only")
            protocol, password, expires = ticket
            self._call("vm.set_ticket", name=self._name, password=password, expires_s=expires, protocol=protocol)
            return 0
        name, path, fmt = xmlconv.cdrom_change(xml, info["spec"])
        if not live:
            raise errors.unsupported("virDomain.updateDeviceFlags", "kvmd changes media of running VMs only")
        if "vm.change_media" not in self._conn._methods():
            raise errors.unsupported("virDomain.updateDeviceFlags", "this kvmd has no vm.change_media")
        self._call("vm.change_media", name=self._name, disk=name, path=path, format=fmt)
        return 0

    # -- memory and stats --------------------------------------------------------------------

    def setMemory(self, memory: int) -> int:  # noqa: N802
        return self.setMemoryFlags(memory, c.VIR_DOMAIN_AFFECT_LIVE)

    def setMemoryFlags(self, memory: int, flags: int = 0) -> int:  # noqa: N802
        """The balloon target, KiB (live only: kvmd has no separate config balloon size)."""
        self._write("setMemoryFlags")
        info = self._info(spec=True)
        live, config = affected("virDomainSetMemoryFlags", flags & ~c.VIR_DOMAIN_MEM_MAXIMUM,
                                info.get("state") in ACTIVE, bool(info.get("persistent")))
        if config or flags & c.VIR_DOMAIN_MEM_MAXIMUM:
            raise errors.unsupported("virDomain.setMemoryFlags", "only the live balloon target can change")
        if not (info["spec"].get("memory") or {}).get("balloon", True):
            raise errors.make(c.VIR_ERR_OPERATION_INVALID, "Unable to change memory of active domain "
                              "without the balloon device and guest OS balloon driver")
        self._call("vm.set_balloon", name=self._name, size=int(memory) * 1024)
        return 0

    def _stats(self) -> dict[str, Any]:
        return self._call("vm.stats", names=[self._name]).get(self._name, {})

    def _running_stats(self) -> tuple[dict[str, Any], dict[str, Any]]:
        info = self._info(spec=True)
        if info.get("state") not in ACTIVE:
            raise errors.make(c.VIR_ERR_OPERATION_INVALID, "domain is not running")
        return info, self._stats()

    def blockStats(self, path: str) -> tuple[int, int, int, int, int]:  # noqa: N802
        """(rd_req, rd_bytes, wr_req, wr_bytes, errs) of a disk by target dev or source path."""
        info, s = self._running_stats()
        name = xmlconv.disk_by_path(info["spec"], path)
        return stats.block_tuple(s, name)

    def interfaceStats(self, path: str) -> tuple[int, ...]:  # noqa: N802
        """(rx_bytes, rx_packets, rx_errs, rx_drop, tx_bytes, tx_packets, tx_errs, tx_drop)."""
        info, s = self._running_stats()
        name = xmlconv.nic_by_path(info["spec"], path)
        return stats.interface_tuple(s, name)

    def memoryStats(self) -> dict[str, int]:  # noqa: N802
        _info, s = self._running_stats()
        return stats.memory_dict(s)

    # -- migration (compat/virt/migration.py) ---------------------------------------------------

    def migrateToURI3(self, dconnuri: str, params: dict | None = None, flags: int = 0) -> int:  # noqa: N802
        """Live-migrate to the kvmd `dconnuri` names (vm.migrate); returns once it ended."""
        self._write("migrateToURI3")
        dest = migration.destination(dconnuri)
        info = self._info()
        opts = migration.options(self, info, params, flags)
        if info.get("state") not in ("running", "paused"):
            raise errors.make(c.VIR_ERR_OPERATION_INVALID, "domain is not running")
        try:
            status = self._call("vm.migrate", name=self._name, dest=dest, **opts)
        except errors.libvirtError as e:
            if e.get_error_code() == c.VIR_ERR_OPERATION_FAILED and self._migration_status().get("state") == "cancelled":
                raise migration.aborted() from None
            raise
        self._conn._local_emit(self, c.VIR_DOMAIN_EVENT_ID_JOB_COMPLETED, (migration.completed_event(status),))
        return 0

    def migrateToURI(self, duri: str, flags: int = 0, dname: str | None = None, bandwidth: int = 0) -> int:  # noqa: N802
        """The older call: peer-to-peer with `duri` as the destination URI."""
        params: dict[str, Any] = {c.VIR_MIGRATE_PARAM_BANDWIDTH: bandwidth} if bandwidth else {}
        if dname:
            params[c.VIR_MIGRATE_PARAM_DEST_NAME] = dname
        return self.migrateToURI3(duri, params, flags)

    def _migration_status(self) -> dict[str, Any]:
        try:
            return self._call("vm.migrate_status", name=self._name)
        except errors.libvirtError as e:
            if e.get_error_code() == c.VIR_ERR_OPERATION_INVALID:  # none known
                return {}
            raise

    def migrateStartPostCopy(self, flags: int = 0) -> int:  # noqa: N802
        self._write("migrateStartPostCopy")
        check_flags("virDomainMigrateStartPostCopy", flags, 0)
        self._info()
        status = self._migration_status()
        if status.get("direction") != "out" or status.get("state") in migration.DONE:
            raise errors.make(c.VIR_ERR_OPERATION_INVALID,
                              "post-copy can only be started while outgoing migration is in progress")
        if not (status.get("options") or {}).get("postcopy"):
            raise errors.make(c.VIR_ERR_OPERATION_INVALID,
                              "switching to post-copy requires migration to be started with VIR_MIGRATE_POSTCOPY flag")
        self._call("vm.migrate_postcopy", name=self._name)
        return 0

    def abortJob(self) -> int:  # noqa: N802
        """Cancel the outgoing migration (vm.migrate_cancel): the VM keeps running here."""
        self._write("abortJob")
        self._info()
        status = self._migration_status()
        if status.get("direction") != "out" or status.get("state") in migration.DONE:
            raise errors.make(c.VIR_ERR_OPERATION_INVALID, "no job is active on the domain")
        if status.get("postcopy"):
            raise errors.make(c.VIR_ERR_OPERATION_INVALID, "cannot abort migration in post-copy mode")
        self._call("vm.migrate_cancel", name=self._name)
        return 0

    def jobStats(self, flags: int = 0) -> dict[str, Any]:  # noqa: N802
        check_flags("virDomainGetJobStats", flags, c.VIR_DOMAIN_JOB_STATS_COMPLETED
                    | c.VIR_DOMAIN_JOB_STATS_KEEP_COMPLETED)
        info = self._info()
        if info.get("state") not in ACTIVE and not flags & c.VIR_DOMAIN_JOB_STATS_COMPLETED:
            raise errors.make(c.VIR_ERR_OPERATION_INVALID, "domain is not running")
        return migration.job_stats(self._migration_status(), flags)

    def jobInfo(self) -> list[int]:  # noqa: N802
        return migration.job_info(self.jobStats(0))

    # -- snapshots (compat/virt/snapshot.py) -----------------------------------------------------

    def _snapshots(self) -> list[dict[str, Any]]:
        return self._call("vm.snapshot_list", name=self._name)

    def snapshotCreateXML(self, xmlDesc: str, flags: int = 0) -> snapshot.virDomainSnapshot:  # noqa: N802, N803
        """An external snapshot (vm.snapshot_create) described by libvirt's snapshot XML."""
        self._write("snapshotCreateXML")
        info = self._info(spec=True)
        name, kwargs = snapshot.parse_create(xmlDesc, info, flags)
        if any(e["name"] == name for e in self._snapshots()):
            raise errors.make(c.VIR_ERR_OPERATION_INVALID, f"domain snapshot '{name}' already exists")
        self._call("vm.snapshot_create", name=self._name, **kwargs)
        return snapshot.virDomainSnapshot(self, name)

    def _listed(self, call: str, flags: int) -> list[dict[str, Any]]:
        check_flags(call, flags, snapshot.LIST_FLAGS)
        self._info()
        entries = self._snapshots()
        return [e for e in entries if snapshot.matches(e, entries, flags)]

    def listAllSnapshots(self, flags: int = 0) -> list[snapshot.virDomainSnapshot]:  # noqa: N802
        return [snapshot.virDomainSnapshot(self, e["name"]) for e in self._listed("virDomainListAllSnapshots", flags)]

    def snapshotListNames(self, flags: int = 0) -> list[str]:  # noqa: N802
        return [e["name"] for e in self._listed("virDomainSnapshotListNames", flags)]

    def snapshotNum(self, flags: int = 0) -> int:  # noqa: N802
        return len(self._listed("virDomainSnapshotNum", flags))

    def snapshotLookupByName(self, name: str, flags: int = 0) -> snapshot.virDomainSnapshot:  # noqa: N802
        check_flags("virDomainSnapshotLookupByName", flags, 0)
        self._info()
        if not any(e["name"] == name for e in self._snapshots()):
            raise snapshot.not_found(name)
        return snapshot.virDomainSnapshot(self, name)

    def hasCurrentSnapshot(self, flags: int = 0) -> int:  # noqa: N802
        check_flags("virDomainHasCurrentSnapshot", flags, 0)
        self._info()
        return int(any(e.get("current") for e in self._snapshots()))

    def snapshotCurrent(self, flags: int = 0) -> snapshot.virDomainSnapshot:  # noqa: N802
        check_flags("virDomainSnapshotCurrent", flags, 0)
        self._info()
        for e in self._snapshots():
            if e.get("current"):
                return snapshot.virDomainSnapshot(self, e["name"])
        raise errors.make(c.VIR_ERR_NO_DOMAIN_SNAPSHOT, "the domain does not have a current snapshot")

    def revertToSnapshot(self, snap: snapshot.virDomainSnapshot, flags: int = 0) -> int:  # noqa: N802
        """vm.snapshot_revert: the VM restarts from the snapshot, in the state it was taken in."""
        self._write("revertToSnapshot")
        check_flags("virDomainRevertToSnapshot", flags, c.VIR_DOMAIN_SNAPSHOT_REVERT_RUNNING
                    | c.VIR_DOMAIN_SNAPSHOT_REVERT_PAUSED | c.VIR_DOMAIN_SNAPSHOT_REVERT_FORCE
                    | c.VIR_DOMAIN_SNAPSHOT_REVERT_RESET_NVRAM)
        if flags & (c.VIR_DOMAIN_SNAPSHOT_REVERT_RUNNING | c.VIR_DOMAIN_SNAPSHOT_REVERT_PAUSED
                    | c.VIR_DOMAIN_SNAPSHOT_REVERT_RESET_NVRAM):
            raise errors.unsupported("virDomain.revertToSnapshot flags",
                                     "kvmd restores the state the snapshot was taken in")
        self.snapshotLookupByName(snap.getName())
        self._call("vm.snapshot_revert", name=self._name, snap=snap.getName())
        return 0
