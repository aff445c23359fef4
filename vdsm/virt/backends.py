"""The two ways to reach virtualization, behind one libvirt-shaped interface.

`libvirt`: real libvirt-python talking to libvirtd. `kvmd`: compat's libvirt-python
shim talking to kvmd. Each backend gets its module (so constants and libvirtError come
from the right place), one connection, an event-loop thread running the module's
`virEventRunDefaultImpl`, a lifecycle-event callback and a job-completed one (a finished
migration's statistics, its downtime among them). Which backend a VM uses is
the host default unless the VM overrides it (custom property `backend`, or the
endpoint's `vmBackends` map), so VMs can move over one at a time.
"""

from __future__ import annotations

import importlib
import logging
import threading
from collections.abc import Callable
from types import ModuleType
from typing import Any

log = logging.getLogger(__name__)

LifecycleCallback = Callable[[str, str, int, int], None]  # backend, vmId, event, detail
JobCallback = Callable[[str, str, dict], None]  # backend, vmId, the completed job's statistics


def load_module(name: str) -> ModuleType:
    return importlib.import_module("libvirt" if name == "libvirt" else "compat.libvirt")


class Backend:
    def __init__(self, name: str, uri: str, on_lifecycle: LifecycleCallback, on_job: JobCallback | None = None):
        self.name = name
        self.uri = uri
        self.on_lifecycle = on_lifecycle
        self.on_job = on_job
        self.lv: ModuleType = load_module(name)
        self.conn: Any = None
        self._thread: threading.Thread | None = None
        self._running = False
        self._cb_id: int | None = None
        self._job_cb_id: int | None = None

    def open(self) -> None:
        lv = self.lv
        if getattr(lv, "_kvmd_vdsm_event_impl", False) is False:
            lv.virEventRegisterDefaultImpl()
            lv._kvmd_vdsm_event_impl = True
        self._running = True
        self._thread = threading.Thread(target=self._run_events, name=f"events-{self.name}", daemon=True)
        self._thread.start()
        self.conn = lv.open(self.uri)
        self._cb_id = self.conn.domainEventRegisterAny(
            None, lv.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._lifecycle, None)
        if self.on_job is not None:
            self._job_cb_id = self.conn.domainEventRegisterAny(
                None, lv.VIR_DOMAIN_EVENT_ID_JOB_COMPLETED, self._job_completed, None)

    def _run_events(self) -> None:
        while self._running:
            try:
                self.lv.virEventRunDefaultImpl()
            except Exception:  # keep the loop alive; libvirt reports through callbacks
                log.exception("%s: event loop iteration failed", self.name)

    def _lifecycle(self, conn: Any, dom: Any, event: int, detail: int, opaque: Any) -> None:
        try:
            self.on_lifecycle(self.name, dom.UUIDString(), event, detail)
        except Exception:
            log.exception("%s: lifecycle callback failed", self.name)

    def _job_completed(self, conn: Any, dom: Any, params: dict, opaque: Any) -> None:
        try:
            if self.on_job is not None:
                self.on_job(self.name, dom.UUIDString(), dict(params))
        except Exception:
            log.exception("%s: job-completed callback failed", self.name)

    def close(self) -> None:
        self._running = False
        if self.conn is not None:
            try:
                for cb_id in (self._cb_id, self._job_cb_id):
                    if cb_id is not None:
                        self.conn.domainEventDeregisterAny(cb_id)
                self.conn.close()
            except Exception:
                pass
            self.conn = None
