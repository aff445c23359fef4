"""The endpoint's calls into the hook framework (`hooks.runner`), VDSM's way.

Domain-XML points get the XML and return the (possibly edited) XML; JSON points get and
return data; `after_*` notification points see the VM's current XML and never fail the
operation. Scripts see the VM's custom properties and the call's params as environment
variables, `vmId`, and a `libvirt` module matching the VM's backend.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from hooks.runner import HookConfig, HookError, run_hooks_async
from vdsm import errors
from vdsm.config import Config
from vdsm.errors import VdsmError

if TYPE_CHECKING:
    from vdsm.virt.vmrecord import VmRecord

log = logging.getLogger(__name__)


class HookCalls:
    def __init__(self, cfg: Config):
        self.cfg = cfg

    def config(self, backend: str) -> HookConfig:
        uri = f"kvmd:///?socket={self.cfg.kvmd_socket}" if backend == "kvmd" else self.cfg.libvirt_uri
        return HookConfig(root=self.cfg.hooks_dir, timeout=self.cfg.hook_timeout, backend=backend, uri=uri)

    async def domxml(self, point: str, xml: str, rec: VmRecord, params: dict[str, Any] | None = None,
                     code: int = errors.UNEXPECTED) -> str:
        try:
            result = await run_hooks_async(point, xml, config=self.config(rec.backend), vm_id=rec.vm_id,
                                           custom=rec.custom, params=params)
        except HookError as e:
            raise VdsmError(code, e.reason) from None
        return result.data

    async def json(self, point: str, data: Any, rec: VmRecord | None = None) -> Any:
        backend = rec.backend if rec else self.cfg.backend
        try:
            result = await run_hooks_async(point, data, config=self.config(backend),
                                           vm_id=rec.vm_id if rec else None, custom=rec.custom if rec else None)
        except HookError as e:
            log.warning("hook %s failed: %s", point, e)
            return data
        return result.data

    async def notify(self, point: str, rec: VmRecord, params: dict[str, Any] | None = None,
                     xml: str | None = None) -> None:
        """An after_* point: errors are logged, never raised."""
        try:
            await run_hooks_async(point, xml if xml is not None else rec.xml, config=self.config(rec.backend),
                                  vm_id=rec.vm_id, custom=rec.custom, params=params, raise_errors=False)
        except Exception as e:
            log.warning("hook %s failed (ignored): %s", point, e)
