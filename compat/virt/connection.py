"""`virConnect`: a libvirt-python connection backed by kvmd's API.

One connection = one kvmd API socket (transport.py), shared by every thread that uses
it. Domains are looked up by kvmd name (libvirt's name) or uuid; a domain's libvirt ID
is its QEMU pid. Lifecycle events come from kvmd's event stream (events.py); kvmd has
no definition events, so DEFINED/UNDEFINED are raised by the shim itself for the
`defineXML`/`undefine` calls made through shim connections of this process.
Read-only connections (`openReadOnly`) refuse every call that changes something with
VIR_ERR_OPERATION_DENIED, as libvirt does.
"""

from __future__ import annotations

import threading
import uuid as uuidlib
import weakref
from collections.abc import Callable
from typing import Any

from compat.virt import caps, errors, events, stats, xmlconv
from compat.virt import constants as c
from compat.virt.domain import check_flags, virDomain
from compat.virt.states import ACTIVE, list_flags_match
from compat.virt.transport import Transport
from compat.virt.uri import resolve

# The libvirt API level the shim follows (its calls, flags and error codes): 9.0.0.
LIB_VERSION = 9_000_000

_OPEN: weakref.WeakSet[virConnect] = weakref.WeakSet()
_OPEN_LOCK = threading.Lock()


class virConnect:  # noqa: N801  (libvirt's name)
    def __init__(self, uri: str | None = None, readonly: bool = False):
        self._socket, self._uri = resolve(uri)
        self._readonly = readonly
        self._transport = Transport(self._socket)
        self._transport.on_lost = self._on_lost
        self._callbacks = events.Callbacks()
        self._dispatcher: events.Dispatcher | None = None
        self._close_cbs: list[tuple[Callable[..., Any], Any]] = []
        self._lock = threading.Lock()
        self._api_methods: set[str] | None = None
        self._disk_dev_cache: dict[tuple[Any, ...], tuple[frozenset, dict[str, str]]] = {}
        with _OPEN_LOCK:
            _OPEN.add(self)

    def __repr__(self) -> str:
        return f"<compat.libvirt.virConnect {self._uri}>"

    # -- plumbing ------------------------------------------------------------------------

    def _call(self, method: str, **params: Any) -> Any:
        return self._transport.call(method, **params)

    def _check_writable(self, call: str) -> None:
        if self._readonly:
            raise errors.make(c.VIR_ERR_OPERATION_DENIED, f"read only access prevents {call}", c.VIR_FROM_NONE)

    def _methods(self) -> set[str]:
        if self._api_methods is None:
            self._api_methods = set(self._call("api.methods"))
        return self._api_methods

    def _domain(self, info: dict[str, Any]) -> virDomain:
        return virDomain(self, info["name"], info["uuid"])

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)

        def unsupported(*_args: Any, **_kwargs: Any) -> Any:
            raise errors.unsupported(f"virConnect.{name}", "kvmd's libvirt shim does not provide it")

        return unsupported

    # -- the connection ------------------------------------------------------------------------

    def close(self) -> int:
        self._transport.close()
        if self._dispatcher is not None:
            self._dispatcher.stop()
            self._dispatcher = None
        with _OPEN_LOCK:
            _OPEN.discard(self)
        return 0

    def isAlive(self) -> int:  # noqa: N802
        return int(self._transport.alive)

    def isSecure(self) -> int:  # noqa: N802
        return 1  # a local unix socket

    def isEncrypted(self) -> int:  # noqa: N802
        return 0

    def getURI(self) -> str:  # noqa: N802
        return self._uri

    def getType(self) -> str:  # noqa: N802
        return "QEMU"

    def getHostname(self) -> str:  # noqa: N802
        return self._call("host.info")["hostname"]

    def getVersion(self) -> int:  # noqa: N802
        """The QEMU version, as libvirt's QEMU driver reports it (7.2.0 -> 7002000)."""
        return caps.version_number((self._call("host.info").get("qemu") or {}).get("version"))

    def getLibVersion(self) -> int:  # noqa: N802
        return LIB_VERSION

    def getCapabilities(self) -> str:  # noqa: N802
        return caps.capabilities_xml(self._call("host.info"))

    def getInfo(self) -> list[Any]:  # noqa: N802
        return caps.node_info(self._call("host.info"))

    def setKeepAlive(self, interval: int, count: int) -> int:  # noqa: N802
        return 0  # a local socket: a dead kvmd is seen at once

    def registerCloseCallback(self, cb: Callable[..., Any], opaque: Any) -> int:  # noqa: N802
        """`cb(conn, VIR_CONNECT_CLOSE_REASON_EOF, opaque)` once kvmd's socket closes."""
        self._close_cbs.append((cb, opaque))
        self._transport.subscribe(self._on_kvmd_event)  # the event stream notices the loss
        return 0

    def unregisterCloseCallback(self) -> int:  # noqa: N802
        self._close_cbs.clear()
        return 0

    def _on_lost(self) -> None:
        for cb, opaque in list(self._close_cbs):
            self._deliver(lambda cb=cb, opaque=opaque: cb(self, c.VIR_CONNECT_CLOSE_REASON_EOF, opaque))

    # -- lookups -----------------------------------------------------------------------------

    def lookupByName(self, name: str) -> virDomain:  # noqa: N802
        return self._domain(self._call("vm.info", name=name))

    def lookupByUUIDString(self, uuidstr: str) -> virDomain:  # noqa: N802
        try:
            wanted = str(uuidlib.UUID(uuidstr))
        except (ValueError, TypeError, AttributeError):
            raise errors.make(c.VIR_ERR_INVALID_ARG, f"invalid UUID '{uuidstr}'", c.VIR_FROM_NONE) from None
        for info in self._call("vm.list"):
            if info.get("uuid") == wanted:
                return self._domain(info)
        raise errors.make(c.VIR_ERR_NO_DOMAIN, f"no domain with matching uuid '{wanted}'")

    def lookupByUUID(self, uuid: bytes) -> virDomain:  # noqa: N802
        return self.lookupByUUIDString(str(uuidlib.UUID(bytes=bytes(uuid))))

    def lookupByID(self, id: int) -> virDomain:  # noqa: N802, A002
        for info in self._call("vm.list"):
            if info.get("state") in ACTIVE and info.get("pid") == id:
                return self._domain(info)
        raise errors.make(c.VIR_ERR_NO_DOMAIN, f"no domain with matching id {id}")

    def listAllDomains(self, flags: int = 0) -> list[virDomain]:  # noqa: N802
        infos = self._call("vm.list")
        if (flags or 0) & (c.VIR_CONNECT_LIST_DOMAINS_HAS_SNAPSHOT | c.VIR_CONNECT_LIST_DOMAINS_NO_SNAPSHOT):
            for info in infos:  # only asked for when the filter needs it: one call per VM
                info["hasSnapshot"] = bool(self._call("vm.snapshot_list", name=info["name"]))
        return [self._domain(i) for i in infos if list_flags_match(flags or 0, i)]

    def listDomainsID(self) -> list[int]:  # noqa: N802
        return [int(i["pid"]) for i in self._call("vm.list") if i.get("state") in ACTIVE and i.get("pid")]

    def listDefinedDomains(self) -> list[str]:  # noqa: N802
        return [i["name"] for i in self._call("vm.list") if i.get("state") not in ACTIVE and i.get("persistent")]

    def numOfDomains(self) -> int:  # noqa: N802
        return len(self.listDomainsID())

    def numOfDefinedDomains(self) -> int:  # noqa: N802
        return len(self.listDefinedDomains())

    # -- define and create -------------------------------------------------------------------

    def defineXML(self, xml: str) -> virDomain:  # noqa: N802
        return self.defineXMLFlags(xml, 0)

    def defineXMLFlags(self, xml: str, flags: int = 0) -> virDomain:  # noqa: N802
        self._check_writable("virDomainDefineXML")
        check_flags("virDomainDefineXMLFlags", flags, c.VIR_DOMAIN_DEFINE_VALIDATE)
        spec = xmlconv.to_spec(xml)
        existing = {i["name"]: i for i in self._call("vm.list")}.get(spec["name"])
        if existing is not None and "<uuid>" not in xml and "<uuid " not in xml:
            spec["uuid"] = existing["uuid"]  # libvirt keeps the uuid of the domain it redefines
        if existing is not None and existing.get("uuid") != spec["uuid"]:
            raise errors.make(c.VIR_ERR_OPERATION_FAILED,
                              f"domain '{spec['name']}' already exists with uuid {existing['uuid']}",
                              c.VIR_FROM_DOMAIN)
        info = self._call("vm.define", spec=spec)
        dom = self._domain(info)
        detail = c.VIR_DOMAIN_EVENT_DEFINED_UPDATED if existing else c.VIR_DOMAIN_EVENT_DEFINED_ADDED
        self._local_event(dom, c.VIR_DOMAIN_EVENT_DEFINED, detail)
        return dom

    def createXML(self, xmlDesc: str, flags: int = 0) -> virDomain:  # noqa: N802, N803
        self._check_writable("virDomainCreateXML")
        check_flags("virDomainCreateXML", flags, c.VIR_DOMAIN_START_PAUSED | c.VIR_DOMAIN_START_VALIDATE
                    | c.VIR_DOMAIN_START_BYPASS_CACHE | c.VIR_DOMAIN_START_FORCE_BOOT)
        spec = xmlconv.to_spec(xmlDesc)
        info = self._call("vm.create", spec=spec, paused=bool(flags & c.VIR_DOMAIN_START_PAUSED))
        return self._domain(info)

    # -- stats ---------------------------------------------------------------------------------

    def getAllDomainStats(self, stats: int = 0, flags: int = 0) -> list[tuple[virDomain, dict[str, Any]]]:  # noqa: N802
        list_flags = flags & 0xFF  # the ACTIVE/INACTIVE/... filters mirror VIR_CONNECT_LIST_DOMAINS_*
        infos = [i for i in self._call("vm.list") if list_flags_match(list_flags, i)]
        return self._stats_of(infos, stats)

    def domainListGetStats(self, doms: list[virDomain], stats: int = 0, flags: int = 0,  # noqa: N802
                           ) -> list[tuple[virDomain, dict[str, Any]]]:
        by_name = {i["name"]: i for i in self._call("vm.list")}
        infos = []
        for d in doms:
            info = by_name.get(d.name())
            if info is None or info.get("uuid") != d.UUIDString():
                raise errors.make(c.VIR_ERR_NO_DOMAIN, f"no domain with matching uuid '{d.UUIDString()}' ({d.name()})")
            infos.append(info)
        return self._stats_of(infos, stats)

    def _stats_of(self, infos: list[dict[str, Any]], groups: int) -> list[tuple[virDomain, dict[str, Any]]]:
        active = [i["name"] for i in infos if i.get("state") in ACTIVE]
        all_stats = self._call("vm.stats", names=active) if active else {}
        block = not groups or groups & c.VIR_DOMAIN_STATS_BLOCK
        out = []
        for i in infos:
            s = all_stats.get(i["name"], {})
            devs = self._disk_devs(i, s) if block and s.get("disks") else None
            out.append((self._domain(i), stats.record(i, s, groups, devs)))
        return out

    def _disk_devs(self, info: dict[str, Any], s: dict[str, Any]) -> dict[str, str]:
        """kvmd disk name -> target dev, as libvirt names `block.N.name`: read from the spec
        once per QEMU (name, uuid, pid) and again when the VM's set of disks changes."""
        names = frozenset(d.get("name") for d in s["disks"])
        key = (info["name"], info.get("uuid"), info.get("pid"))
        hit = self._disk_dev_cache.get(key)
        if hit is not None and hit[0] == names:
            return hit[1]
        try:
            spec = self._call("vm.info", name=info["name"], spec=True)["spec"]
        except errors.libvirtError:  # gone meanwhile: kvmd's own names
            return {}
        devs = {d["name"]: d["dev"] for d in xmlconv._spec_disks(spec) if d["name"] and d["dev"]}
        if len(self._disk_dev_cache) > 4096:  # VMs come and go: forget the old ones now and then
            self._disk_dev_cache.clear()
        self._disk_dev_cache[key] = (names, devs)
        return devs

    # -- events ----------------------------------------------------------------------------------

    def domainEventRegisterAny(self, dom: virDomain | None, eventID: int, cb: Callable[..., Any],  # noqa: N802, N803
                               opaque: Any) -> int:
        callback_id = self._callbacks.add(eventID, dom.UUIDString() if dom is not None else None, cb, opaque)
        try:
            self._transport.subscribe(self._on_kvmd_event)
        except errors.libvirtError:
            self._callbacks.remove(callback_id)
            raise
        return callback_id

    def domainEventDeregisterAny(self, callbackID: int) -> int:  # noqa: N802, N803
        self._callbacks.remove(callbackID)
        return 0

    def _deliver(self, fn: events.Dispatch) -> None:
        if events.LOOP.registered:
            events.LOOP.post(fn)
            return
        with self._lock:
            if self._dispatcher is None:
                self._dispatcher = events.Dispatcher(f"kvmd-shim-events:{self._socket}")
        self._dispatcher.post(fn)

    def _emit(self, name: str, uuid: str, event_id: int, args: tuple[Any, ...]) -> None:
        for reg in self._callbacks.matching(event_id, uuid):
            dom = virDomain(self, name, uuid)

            def call(reg: events.Registration = reg, dom: virDomain = dom) -> None:
                out = list(args)
                if event_id in events.ALIAS_ARG:  # resolved here: this thread may call kvmd
                    i = events.ALIAS_ARG[event_id]
                    out[i] = dom._device_alias(out[i])
                reg.cb(self, dom, *out, reg.opaque)

            self._deliver(call)

    def _on_kvmd_event(self, event: dict[str, Any]) -> None:
        """Called on the transport's loop thread: translate and hand over, never block."""
        name, uuid = event.get("vm"), event.get("uuid")
        if not name or not uuid:
            return
        for event_id, args in events.translate(event):
            self._emit(name, uuid, event_id, args)

    def _local_event(self, dom: virDomain, event: int, detail: int) -> None:
        """DEFINED/UNDEFINED (kvmd does not send these): to every shim connection on this kvmd."""
        self._local_emit(dom, c.VIR_DOMAIN_EVENT_ID_LIFECYCLE, (event, detail))

    def _local_emit(self, dom: virDomain, event_id: int, args: tuple[Any, ...]) -> None:
        """An event the shim raises itself (kvmd sends none like it), to every shim
        connection on this kvmd: DEFINED/UNDEFINED, a migration's JOB_COMPLETED."""
        with _OPEN_LOCK:
            conns = [conn for conn in _OPEN if conn._socket == self._socket and conn._callbacks]
        for conn in conns:
            conn._emit(dom.name(), dom.UUIDString(), event_id, args)
