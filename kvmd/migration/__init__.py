"""Live migration of a VM between two kvmd daemons (two hosts, or two instances on one).

The source kvmd drives everything (`outgoing`); the destination kvmd answers a few
calls (`incoming`); `peer` says how one reaches the other (unix socket, or TCP with a
shared token, served by `listener`); `qemu` holds the QMP steps shared with snapshots.

API (docs/api.md): on the source `vm.migrate`, `vm.migrate_status`,
`vm.migrate_cancel`, `vm.migrate_postcopy`; on the destination, called by the source,
`vm.migrate_incoming`, `vm.migrate_finish`, `vm.migrate_abort` (and `vm.migrate_status`).

Submodules are imported inside `api_methods`, not here: `kvmd.snapshot` uses
`kvmd.migration.qemu` and is used by `outgoing`, so this package must stay light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kvmd.manager import Manager


async def recover_interrupted(m: Manager, vm: Any, info: dict[str, Any]) -> None:
    """A restarted kvmd found `vm` in a migration (its runtime record's `migration`)."""
    from kvmd.migration import incoming, outgoing

    if info.get("direction") == "in":
        await incoming.recover(m, vm, info)
    else:
        await outgoing.recover(m, vm, info)


def api_methods(m: Manager) -> dict[str, Any]:
    from kvmd.errors import InvalidParams, WrongState
    from kvmd.migration import incoming, outgoing
    from kvmd.units import parse_size

    async def migrate(name: str, dest: str, bandwidth: str | int | None = None, downtime: int | None = None,
                      auto_converge: bool = False, postcopy: bool = False, copy_storage: bool = False,
                      storage_dir: str | None = None, keep_source: bool = False, address: str | None = None,
                      wait: bool = True) -> dict:
        try:
            bps = None if bandwidth is None else parse_size(bandwidth)
        except ValueError as e:
            raise InvalidParams(f"bandwidth (bytes per second): {e}", {"param": "bandwidth"}) from None
        if bps == 0:
            raise InvalidParams("bandwidth must be positive (leave it out for no limit)", {"param": "bandwidth"})
        if downtime is not None and not 1 <= downtime <= 2_000_000:
            raise InvalidParams("downtime must be 1..2000000 ms", {"param": "downtime"})
        opts = outgoing.Options(bandwidth=bps, downtime=downtime, auto_converge=auto_converge, postcopy=postcopy,
                                copy_storage=copy_storage, storage_dir=storage_dir, keep_source=keep_source,
                                address=address)
        return await outgoing.migrate(m, name, dest, opts, wait=wait)

    async def migrate_status(name: str) -> dict:
        st = outgoing.status(m, name) or incoming.status(m, name)
        if st is None:
            raise WrongState(f"no migration of {name!r} is known here", {"name": name, "state": "none"})
        return st

    async def migrate_cancel(name: str) -> dict:
        return await outgoing.cancel(m, name)

    async def migrate_postcopy(name: str) -> dict:
        return await outgoing.start_postcopy(m, name)

    async def migrate_incoming(spec: dict | str, listen: str = "127.0.0.1", definition: dict | None = None,
                               persistent: bool = False, resume: bool = True, postcopy: bool = False,
                               disks: dict | None = None, storage_dir: str | None = None,
                               snapshots: dict | None = None) -> dict:
        return await incoming.prepare(m, spec, listen=listen, definition=definition, persistent=persistent,
                                      resume=resume, postcopy=postcopy, disks=disks, storage_dir=storage_dir,
                                      snapshots=snapshots)

    async def migrate_finish(name: str, timeout: float = incoming.FINISH_TIMEOUT) -> dict:
        return await incoming.finish(m, name, timeout)

    async def migrate_abort(name: str) -> dict:
        return await incoming.abort(m, name)

    return {"vm.migrate": migrate, "vm.migrate_status": migrate_status, "vm.migrate_cancel": migrate_cancel,
            "vm.migrate_postcopy": migrate_postcopy, "vm.migrate_incoming": migrate_incoming,
            "vm.migrate_finish": migrate_finish, "vm.migrate_abort": migrate_abort}
