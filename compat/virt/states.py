"""kvmd VM states and reasons -> libvirt's numeric `virDomainState` and reason.

kvmd has one state word and a free-text reason (docs/api.md, VM states); libvirt has a
state number plus a per-state reason number. The mapping, chosen so code written for
libvirt reads the same situation the same way:

    kvmd                                 libvirt [state, reason]
    defined                              SHUTOFF, UNKNOWN
    starting                             PAUSED, STARTING_UP
    running  (booted | resumed | other)  RUNNING, BOOTED | UNPAUSED | UNKNOWN
    paused   (paused, started paused)    PAUSED, USER       (re-attached: UNKNOWN)
    shutting-down, after QEMU's SHUTDOWN SHUTDOWN, USER
    shutting-down, only requested        RUNNING, UNKNOWN   (the guest may ignore the button)
    stopped  (destroyed | shut down |    SHUTOFF, DESTROYED | SHUTDOWN |
              failed to start | other)            FAILED | UNKNOWN
    crashed  (QEMU died on its own)      SHUTOFF, CRASHED   (libvirt's own CRASHED state is
                                                             only for on_crash=preserve)
    migrating-out                        RUNNING, UNKNOWN   (libvirt keeps the running reason
                                                             until the switch-over pauses it)
    migrating-in                         PAUSED, MIGRATION  (an incoming domain, as libvirt's)
    running  (migrated in | reverted …)  RUNNING, MIGRATED | FROM_SNAPSHOT
    stopped  (migrated to …)             SHUTOFF, MIGRATED  (a source kept with keep_source)
"""

from __future__ import annotations

from compat.virt import constants as c

ACTIVE = frozenset({"starting", "running", "paused", "shutting-down", "migrating-out", "migrating-in"})


def to_libvirt(state: str, reason: str) -> tuple[int, int]:
    """[state, reason] as libvirt's virDomainGetState reports them."""
    reason = reason or ""
    if state == "running":
        if reason == "booted":
            return c.VIR_DOMAIN_RUNNING, c.VIR_DOMAIN_RUNNING_BOOTED
        if reason == "resumed":
            return c.VIR_DOMAIN_RUNNING, c.VIR_DOMAIN_RUNNING_UNPAUSED
        if reason == "migrated in":
            return c.VIR_DOMAIN_RUNNING, c.VIR_DOMAIN_RUNNING_MIGRATED
        if reason.startswith("reverted to snapshot"):
            return c.VIR_DOMAIN_RUNNING, c.VIR_DOMAIN_RUNNING_FROM_SNAPSHOT
        return c.VIR_DOMAIN_RUNNING, c.VIR_DOMAIN_RUNNING_UNKNOWN
    if state == "migrating-out":
        return c.VIR_DOMAIN_RUNNING, c.VIR_DOMAIN_RUNNING_UNKNOWN
    if state == "migrating-in":
        return c.VIR_DOMAIN_PAUSED, c.VIR_DOMAIN_PAUSED_MIGRATION
    if state == "paused":
        if reason in ("paused", "started paused"):
            return c.VIR_DOMAIN_PAUSED, c.VIR_DOMAIN_PAUSED_USER
        if "error" in reason.lower():
            return c.VIR_DOMAIN_PAUSED, c.VIR_DOMAIN_PAUSED_IOERROR
        return c.VIR_DOMAIN_PAUSED, c.VIR_DOMAIN_PAUSED_UNKNOWN
    if state == "starting":
        return c.VIR_DOMAIN_PAUSED, c.VIR_DOMAIN_PAUSED_STARTING_UP
    if state == "shutting-down":
        if reason.startswith("shutdown (") or "re-attached while shutting down" in reason:
            return c.VIR_DOMAIN_SHUTDOWN, c.VIR_DOMAIN_SHUTDOWN_USER
        return c.VIR_DOMAIN_RUNNING, c.VIR_DOMAIN_RUNNING_UNKNOWN
    if state == "stopped":
        if reason.endswith("destroyed"):
            return c.VIR_DOMAIN_SHUTOFF, c.VIR_DOMAIN_SHUTOFF_DESTROYED
        if reason.startswith("failed to start"):
            return c.VIR_DOMAIN_SHUTOFF, c.VIR_DOMAIN_SHUTOFF_FAILED
        if reason.startswith("migrated to"):
            return c.VIR_DOMAIN_SHUTOFF, c.VIR_DOMAIN_SHUTOFF_MIGRATED
        if reason == "guest shut down" or reason.startswith("shutdown ("):
            return c.VIR_DOMAIN_SHUTOFF, c.VIR_DOMAIN_SHUTOFF_SHUTDOWN
        return c.VIR_DOMAIN_SHUTOFF, c.VIR_DOMAIN_SHUTOFF_UNKNOWN
    if state == "crashed":
        return c.VIR_DOMAIN_SHUTOFF, c.VIR_DOMAIN_SHUTOFF_CRASHED
    if state == "defined":
        return c.VIR_DOMAIN_SHUTOFF, c.VIR_DOMAIN_SHUTOFF_UNKNOWN
    return c.VIR_DOMAIN_NOSTATE, c.VIR_DOMAIN_NOSTATE_UNKNOWN


def list_flags_match(flags: int, info: dict) -> bool:
    """Does a VM (kvmd info) pass listAllDomains' VIR_CONNECT_LIST_DOMAINS_* filters?"""
    state = info.get("state", "")
    active = state in ACTIVE
    persistent = bool(info.get("persistent"))
    groups = [
        (c.VIR_CONNECT_LIST_DOMAINS_ACTIVE | c.VIR_CONNECT_LIST_DOMAINS_INACTIVE,
         c.VIR_CONNECT_LIST_DOMAINS_ACTIVE if active else c.VIR_CONNECT_LIST_DOMAINS_INACTIVE),
        (c.VIR_CONNECT_LIST_DOMAINS_PERSISTENT | c.VIR_CONNECT_LIST_DOMAINS_TRANSIENT,
         c.VIR_CONNECT_LIST_DOMAINS_PERSISTENT if persistent else c.VIR_CONNECT_LIST_DOMAINS_TRANSIENT),
    ]
    lv_state = to_libvirt(state, info.get("reason", ""))[0]
    run_bit = {c.VIR_DOMAIN_RUNNING: c.VIR_CONNECT_LIST_DOMAINS_RUNNING,
               c.VIR_DOMAIN_PAUSED: c.VIR_CONNECT_LIST_DOMAINS_PAUSED,
               c.VIR_DOMAIN_SHUTOFF: c.VIR_CONNECT_LIST_DOMAINS_SHUTOFF}.get(lv_state, c.VIR_CONNECT_LIST_DOMAINS_OTHER)
    groups.append((c.VIR_CONNECT_LIST_DOMAINS_RUNNING | c.VIR_CONNECT_LIST_DOMAINS_PAUSED
                   | c.VIR_CONNECT_LIST_DOMAINS_SHUTOFF | c.VIR_CONNECT_LIST_DOMAINS_OTHER, run_bit))
    # no managed save, no autostart in kvmd; snapshots: listAllDomains fills in hasSnapshot
    groups.append((c.VIR_CONNECT_LIST_DOMAINS_MANAGEDSAVE | c.VIR_CONNECT_LIST_DOMAINS_NO_MANAGEDSAVE,
                   c.VIR_CONNECT_LIST_DOMAINS_NO_MANAGEDSAVE))
    groups.append((c.VIR_CONNECT_LIST_DOMAINS_AUTOSTART | c.VIR_CONNECT_LIST_DOMAINS_NO_AUTOSTART,
                   c.VIR_CONNECT_LIST_DOMAINS_NO_AUTOSTART))
    groups.append((c.VIR_CONNECT_LIST_DOMAINS_HAS_SNAPSHOT | c.VIR_CONNECT_LIST_DOMAINS_NO_SNAPSHOT,
                   c.VIR_CONNECT_LIST_DOMAINS_HAS_SNAPSHOT if info.get("hasSnapshot")
                   else c.VIR_CONNECT_LIST_DOMAINS_NO_SNAPSHOT))
    for mask, have in groups:
        if flags & mask and not flags & have:
            return False
    return True
