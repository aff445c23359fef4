"""The VDSM endpoint on each backend: `endpoint` is parametrised over kvmd and libvirt.

Every scenario in this folder runs twice, over STOMP with the stomp.py client, against
the real endpoint backed by a real kvmd and by a real (private) libvirtd, and must pass
the same assertions.
"""

from __future__ import annotations

import shutil
import tempfile

import pytest

from tests.support.daemon import Daemon
from tests.support.libvirt_fixture import libvirtd  # noqa: F401  (the fixture)
from tests.support.libvirtd import PrivateLibvirtd
from tests.support.procs import kill_all, pids_mentioning
from tests.support.vdsm_endpoint import Endpoint


@pytest.fixture(params=["kvmd", "libvirt"])
def endpoint(request):
    base = tempfile.mkdtemp(prefix="kvp", dir="/tmp")
    daemon = ep = None
    try:
        if request.param == "kvmd":
            daemon = Daemon(base).start()
            ep = Endpoint(base, "kvmd", kvmd_socket=daemon.socket)
        else:
            lv = request.getfixturevalue("libvirtd")
            ep = Endpoint(base, "libvirt", libvirt_uri=lv.uri)
        ep.start()
        ep.kind = request.param
        ep.daemon = daemon
        yield ep
    finally:
        if ep is not None:
            if request.param == "libvirt":
                _destroy_all(request.getfixturevalue("libvirtd"))
            ep.stop()
        if daemon is not None:
            daemon.cleanup()
        kill_all(pids_mentioning(base))
        shutil.rmtree(base, ignore_errors=True)


def _destroy_all(lv: PrivateLibvirtd) -> None:
    conn = lv.connect()
    try:
        for dom in conn.listAllDomains(0):
            try:
                if dom.isActive():
                    dom.destroy()
                if dom.isPersistent():
                    dom.undefine()
            except Exception:
                pass
    finally:
        conn.close()
