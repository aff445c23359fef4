"""The VDSM endpoint on each backend: `endpoint` is parametrised over kvmd and libvirt.

Every scenario in this folder runs twice, over STOMP with the stomp.py client, against
the real endpoint backed by a real kvmd and by a real (private) libvirtd, and must pass
the same assertions.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid

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


@pytest.fixture(scope="module")
def _libvirtd_peer(request):
    """A second private libvirtd, with a host UUID of its own: libvirt refuses to migrate
    to a daemon with the same host UUID ("the same host")."""
    request.getfixturevalue("libvirtd")  # skips where libvirtd cannot run
    lv = PrivateLibvirtd(host_uuid=str(uuid.uuid4()))
    request.addfinalizer(lv.stop)
    lv.start()
    return lv


@pytest.fixture(params=["kvmd", "libvirt"])
def endpoint_pair(request):
    """Two endpoints on the same kind of backend (two kvmds, or two libvirtds): a source
    and a destination for migrations."""
    base = tempfile.mkdtemp(prefix="kvm", dir="/tmp")
    daemons: list[Daemon] = []
    eps: list[Endpoint] = []
    try:
        for side in ("a", "b"):
            os.mkdir(os.path.join(base, side))
            if request.param == "kvmd":
                daemons.append(Daemon(os.path.join(base, side)).start())
                ep = Endpoint(os.path.join(base, side), "kvmd", kvmd_socket=daemons[-1].socket)
            else:
                lv = request.getfixturevalue("libvirtd" if side == "a" else "_libvirtd_peer")
                ep = Endpoint(os.path.join(base, side), "libvirt", libvirt_uri=lv.uri)
            ep.kind = request.param
            eps.append(ep)
            ep.start()
        yield eps[0], eps[1]
    finally:
        if request.param == "libvirt" and eps:
            for name in ("libvirtd", "_libvirtd_peer")[:len(eps)]:
                try:
                    _destroy_all(request.getfixturevalue(name))
                except Exception:  # its own finalizer stops it anyway
                    pass
        for ep in eps:
            ep.stop()
        for daemon in daemons:
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
