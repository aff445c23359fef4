"""Every hook point VDSM defines, as data: what each one carries and whether it can fail.

This table is the contract between the hook runner (`hooks.runner`) and the vdsm endpoint
that calls it (docs/hooks.md says *when* each point runs). It reproduces VDSM's own
`lib/vdsm/common/hooks.py`:

- `payload` is what the scripts get:
  - `domain`: the whole libvirt domain XML, in the file named by `_hook_domxml`;
  - `device`: the XML of one device (a disk, NIC, memory or custom device), also in
    `_hook_domxml` — VDSM hands device-level points only the device's element;
  - `none`: nothing; `_hook_domxml` still names a file, and it is empty (VDSM calls these
    points with no data, e.g. `before_vm_destroy`, `before_set_num_of_cpus`);
  - `json`: a JSON document in the file named by `_hook_json` (stats, capabilities,
    network setup, prepared disk). The `before_get_*` points get `{}`.
- `fails_operation`: whether a failing script makes the operation fail (`HookError`).
  VDSM ignores hook errors at `before_vdsm_start`, `after_vdsm_stop`, `before_vm_destroy`,
  both `vm_set_ticket` points and at every `after_*` point except `after_disk_prepare`;
  the failures there are logged and the operation goes on.
- `params`: the names of the call parameters VDSM exports to the scripts as environment
  variables at this point (besides the VM's custom properties and `vmId`), where VDSM
  documents them. Device-level points get the device's custom properties instead.

There are no snapshot, reset, shutdown or freeze/thaw hook points in VDSM, so there are
none here either.
"""

from __future__ import annotations

from dataclasses import dataclass

DOMAIN = "domain"
DEVICE = "device"
NONE = "none"
JSON = "json"
PAYLOADS = (DOMAIN, DEVICE, NONE, JSON)


@dataclass(frozen=True)
class HookPoint:
    name: str
    payload: str
    fails_operation: bool
    params: tuple[str, ...] = ()

    @property
    def carries_xml(self) -> bool:
        """The point passes XML (or an empty file) in `_hook_domxml`."""
        return self.payload != JSON

    @property
    def carries_json(self) -> bool:
        return self.payload == JSON

    @property
    def env_var(self) -> str:
        """The environment variable naming the data file: `_hook_domxml` or `_hook_json`."""
        return "_hook_json" if self.payload == JSON else "_hook_domxml"


def _pair(
    base: str, payload: str, *, before_fails: bool = True, params: tuple[str, ...] = ()
) -> list[HookPoint]:
    """before_BASE (fails the operation unless told otherwise) and after_BASE (never)."""
    return [
        HookPoint(f"before_{base}", payload, before_fails, params),
        HookPoint(f"after_{base}", payload, False, params),
    ]


_TABLE: list[HookPoint] = [
    # VM lifecycle (whole domain XML)
    *_pair("vm_start", DOMAIN),
    *_pair("vm_cont", DOMAIN),
    *_pair("vm_pause", DOMAIN),
    # VDSM runs before_vm_destroy with no XML and ignores its errors.
    HookPoint("before_vm_destroy", NONE, False),
    HookPoint("after_vm_destroy", DOMAIN, False),
    *_pair("vm_hibernate", DOMAIN),
    *_pair("vm_dehibernate", DOMAIN, params=("FROM_SNAPSHOT",)),
    *_pair("vm_migrate_source", DOMAIN),
    *_pair("vm_migrate_destination", DOMAIN),
    *_pair("vm_set_ticket", DOMAIN, before_fails=False),
    # devices (one device's XML; params are the device's custom properties)
    *_pair("device_create", DEVICE),
    *_pair("device_destroy", DEVICE),
    *_pair("device_migrate_source", DEVICE),
    *_pair("device_migrate_destination", DEVICE),
    *_pair("update_device", DEVICE),
    HookPoint("after_update_device_fail", DEVICE, False),
    *_pair("nic_hotplug", DEVICE),
    HookPoint("after_nic_hotplug_fail", DEVICE, False),
    *_pair("nic_hotunplug", DEVICE),
    HookPoint("after_nic_hotunplug_fail", DEVICE, False),
    *_pair("disk_hotplug", DEVICE),
    *_pair("disk_hotunplug", DEVICE),
    *_pair("memory_hotplug", DEVICE),
    *_pair("set_num_of_cpus", NONE),
    # JSON points: stats, capabilities, storage, network, host devices
    *_pair("get_vm_stats", JSON),
    *_pair("get_all_vm_stats", JSON),
    *_pair("get_caps", JSON),
    *_pair("get_stats", JSON),
    HookPoint("after_disk_prepare", JSON, True),
    *_pair("network_setup", JSON),
    HookPoint("after_network_setup_fail", JSON, False),
    HookPoint("after_hostdev_list_by_caps", JSON, False),
    # the agent itself
    HookPoint("before_vdsm_start", NONE, False),
    HookPoint("after_vdsm_stop", NONE, False),
]

POINTS: dict[str, HookPoint] = {p.name: p for p in _TABLE}
assert len(POINTS) == len(_TABLE), "duplicate hook point"


class UnknownHookPoint(ValueError):
    """A name that is not one of VDSM's hook points (see `POINTS`)."""


def get(name: str) -> HookPoint:
    """The hook point called `name`; UnknownHookPoint (with close matches) if none."""
    try:
        return POINTS[name]
    except KeyError:
        import difflib

        close = difflib.get_close_matches(name, POINTS, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise UnknownHookPoint(f"unknown hook point {name!r}{hint}") from None


def all_points() -> list[HookPoint]:
    """Every hook point, in the order of the table above (lifecycle, devices, JSON, agent)."""
    return list(_TABLE)
