"""The parity suite's fixture: one test, two backends.

`virt` is parametrised over
  - "libvirt": real libvirt-python talking to a private libvirtd (tests/support/libvirtd.py,
    one for the whole suite), marked `libvirt` and skipped where libvirtd cannot run;
  - "kvmd": `compat.libvirt` talking to a real kvmd (the `daemon` fixture).
Each test body uses only `virt.lv` (the libvirt module of its backend: constants,
libvirtError) and `virt.conn`, so the very same code runs against both, and asserts
what both must agree on. Where they legitimately differ, the test says so with
`virt.is_kvmd` and docs/compat.md lists the difference.

Both libvirt modules' default event loops run in background threads for the whole
session (registered before any connection opens, as libvirt requires); every domain a
test creates is destroyed and undefined in a finalizer, and libvirtd, kvmd and every
QEMU they started are gone when the suite ends.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

import compat.libvirt as shim
from tests.support.libvirtd import PrivateLibvirtd, firmware_domain_xml, unavailable_reason

_names = itertools.count(1)


class EventLoops:
    """libvirt-python's and the shim's default event loops, each run by a thread."""

    def __init__(self) -> None:
        self.modules: list[Any] = [shim]
        try:
            import libvirt
            self.modules.append(libvirt)
        except ImportError:
            pass
        self._stop = False
        self._threads = []
        for mod in self.modules:
            mod.virEventRegisterDefaultImpl()
            t = threading.Thread(target=self._run, args=(mod,), name=f"events-{mod.__name__}", daemon=True)
            t.start()
            self._threads.append(t)

    def _run(self, mod: Any) -> None:
        while not self._stop:
            mod.virEventRunDefaultImpl()

    def stop(self) -> None:
        self._stop = True
        for mod, t in zip(self.modules, self._threads, strict=True):
            timer = mod.virEventAddTimeout(0, lambda _t, _o: None, None)  # wakes the loop
            t.join(5)
            mod.virEventRemoveTimeout(timer)


@pytest.fixture(scope="session")
def event_loops():
    loops = EventLoops()
    yield loops
    loops.stop()


@pytest.fixture(scope="session")
def parity_libvirtd(event_loops):
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    lv = PrivateLibvirtd()
    try:
        lv.start()
        yield lv
    finally:
        lv.stop()


@dataclass
class EventLog:
    """Lifecycle events (domain name, event, detail) seen by one connection."""

    seen: list[tuple[str, int, int]] = field(default_factory=list)
    cond: threading.Condition = field(default_factory=threading.Condition)

    def callback(self, _conn: Any, dom: Any, event: int, detail: int, _opaque: Any) -> None:
        with self.cond:
            self.seen.append((dom.name(), event, detail))
            self.cond.notify_all()

    def of(self, name: str) -> list[tuple[int, int]]:
        with self.cond:
            return [(e, d) for n, e, d in self.seen if n == name]

    def wait_for(self, name: str, pred: Callable[[list[tuple[int, int]]], bool], timeout: float = 10) -> list:
        deadline = time.monotonic() + timeout
        with self.cond:
            while not pred([(e, d) for n, e, d in self.seen if n == name]):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.cond.wait(left)
        return self.of(name)


@dataclass
class Virt:
    backend: str
    lv: Any
    conn: Any
    workdir: str
    _names: list[str] = field(default_factory=list)

    @property
    def is_kvmd(self) -> bool:
        return self.backend == "kvmd"

    def name(self, what: str) -> str:
        """A fresh domain name, destroyed/undefined when the test ends."""
        name = f"par{next(_names)}-{what}"
        self._names.append(name)
        return name

    def firmware_xml(self, name: str, memory_mib: int = 128) -> str:
        return firmware_domain_xml(name, memory_mib)

    def image(self, name: str, size: str = "16M") -> str:
        path = os.path.join(self.workdir, name)
        subprocess.run(["qemu-img", "create", "-q", "-f", "raw", path, size], check=True)
        return path

    def events(self) -> EventLog:
        log = EventLog()
        self.conn.domainEventRegisterAny(None, self.lv.VIR_DOMAIN_EVENT_ID_LIFECYCLE, log.callback, None)
        return log

    def error(self, fn: Callable[..., Any], *args: Any) -> Any:
        """The libvirtError `fn(*args)` raises (fails the test if it does not)."""
        with pytest.raises(self.lv.libvirtError) as exc:
            fn(*args)
        return exc.value

    def cleanup(self) -> None:
        for name in self._names:
            try:
                dom = self.conn.lookupByName(name)
            except self.lv.libvirtError:
                continue
            for step in (dom.destroy, dom.undefine):
                try:
                    step()
                except self.lv.libvirtError:
                    pass


@pytest.fixture(params=[pytest.param("libvirt", marks=pytest.mark.libvirt), "kvmd"])
def virt(request, event_loops):
    workdir = tempfile.mkdtemp(prefix="par", dir="/tmp")
    if request.param == "libvirt":
        import libvirt

        lvd = request.getfixturevalue("parity_libvirtd")
        v = Virt("libvirt", libvirt, libvirt.open(lvd.uri), workdir)
    else:
        daemon = request.getfixturevalue("daemon")
        v = Virt("kvmd", shim, shim.open(f"kvmd:///?socket={daemon.socket}"), workdir)
    try:
        yield v
    finally:
        v.cleanup()
        try:
            v.conn.close()
        except Exception:
            pass
        shutil.rmtree(workdir, ignore_errors=True)
