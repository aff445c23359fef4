"""VDSM's VM status strings and exit reasons, and how libvirt states map onto them."""

from __future__ import annotations

WAIT_FOR_LAUNCH = "WaitForLaunch"
POWERING_UP = "Powering up"
UP = "Up"
PAUSED = "Paused"
POWERING_DOWN = "Powering down"
REBOOT_IN_PROGRESS = "RebootInProgress"
MIGRATION_SOURCE = "Migration Source"
MIGRATION_DESTINATION = "Migration Destination"
SAVING_STATE = "Saving State"
RESTORING_STATE = "Restoring state"
DOWN = "Down"

# exitCode
NORMAL = 0
ERROR = 1

# exitReason (VDSM's vmexitreason values)
SUCCESS = 0
GENERIC_ERROR = 1
LOST_QEMU_CONNECTION = 2
LIBVIRT_START_FAILED = 3
MIGRATION_SUCCEEDED = 4
SAVE_STATE_SUCCEEDED = 5
ADMIN_SHUTDOWN = 6
USER_SHUTDOWN = 7
MIGRATION_FAILED = 8
LIBVIRT_DOMAIN_MISSING = 9
DESTROYED_ON_STARTUP = 10
HOST_SHUTDOWN = 11

EXIT_MESSAGES = {
    SUCCESS: "VM terminated successfully",
    GENERIC_ERROR: "VM terminated with error",
    LOST_QEMU_CONNECTION: "Lost connection with qemu process",
    LIBVIRT_START_FAILED: "Failed to start the VM",
    MIGRATION_SUCCEEDED: "Migration succeeded",
    ADMIN_SHUTDOWN: "Admin shut down from the engine",
    USER_SHUTDOWN: "User shut down from within the guest",
    MIGRATION_FAILED: "VM failed to migrate",
    LIBVIRT_DOMAIN_MISSING: "Failed to find the libvirt domain",
    DESTROYED_ON_STARTUP: "VM destroyed during the startup",
}

# libvirt virDomainState values
VIR_RUNNING, VIR_BLOCKED, VIR_PAUSED, VIR_SHUTDOWN, VIR_SHUTOFF, VIR_CRASHED, VIR_PMSUSPENDED = 1, 2, 3, 4, 5, 6, 7
# libvirt lifecycle events and the details that matter here
EV_STARTED, EV_SUSPENDED, EV_RESUMED, EV_STOPPED, EV_SHUTDOWN, EV_CRASHED = 2, 3, 4, 5, 6, 8
STOPPED_SHUTDOWN, STOPPED_DESTROYED, STOPPED_CRASHED, STOPPED_MIGRATED, STOPPED_FAILED = 0, 1, 2, 3, 5
SUSPENDED_MIGRATED = 1


def from_libvirt_state(state: int) -> str:
    if state in (VIR_RUNNING, VIR_BLOCKED):
        return UP
    if state in (VIR_PAUSED, VIR_PMSUSPENDED):
        return PAUSED
    if state == VIR_SHUTDOWN:
        return POWERING_DOWN
    return DOWN
