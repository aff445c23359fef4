"""Replace a VM's free-form `metadata`, in its running spec and/or its stored definition.

The spec's `metadata` mapping is where a client keeps its own data with a VM, verbatim
(VDSM writes its per-VM runtime state there, through compat's libvirt `<metadata>`).
Clients change it while the VM runs, and a transient VM has no definition to redefine,
so this is its own verb rather than `vm.define`: `live` replaces it in the running spec
(kept in the runtime record, so a kvmd restart keeps it), `config` in the stored
definition (atomically, as every definition write). Nothing else of the VM changes and
QEMU is not involved.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from kvmd.errors import InvalidParams, WrongState
from kvmd.manager import Manager
from kvmd.vm import VM


def set_metadata(vm: VM, metadata: dict[str, Any], live: bool = True, config: bool = True) -> dict[str, Any]:
    """Replace the metadata; WrongState if `live` on an inactive or `config` on a transient VM."""
    try:
        json.dumps(metadata)
    except (TypeError, ValueError):
        raise InvalidParams("metadata must hold only strings, numbers, booleans, lists and mappings",
                            {"param": "metadata"}) from None
    if not live and not config:
        raise InvalidParams("set at least one of live and config", {"param": "live"})
    if live and vm.live_spec is None:
        raise WrongState(f"cannot set live metadata of {vm.name!r}: it is {vm.state}",
                         {"name": vm.name, "state": str(vm.state)})
    if config and not vm.persistent:
        raise WrongState(f"{vm.name!r} is transient: it has no stored definition",
                         {"name": vm.name, "state": str(vm.state)})
    # no await from here on: the change is atomic for every other API call
    if live and vm.live_spec is not None:
        vm.live_spec.metadata = copy.deepcopy(metadata)
    if config:
        vm.spec.metadata = copy.deepcopy(metadata)
    vm.changed()
    return {"name": vm.name, "metadata": metadata}


def api_methods(m: Manager) -> dict[str, Any]:
    async def set_metadata_(name: str, metadata: dict, live: bool = True, config: bool = True) -> dict:
        return set_metadata(m.get(name), metadata, live, config)

    return {"vm.set_metadata": set_metadata_}
