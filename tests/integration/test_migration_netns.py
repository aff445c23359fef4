"""Live migration across a real network path: each kvmd in its own network namespace.

The source kvmd reaches the destination kvmd only through its token-authenticated TCP
API on the far end of a veth pair, and QEMU's migration stream takes the same link.
The namespaces (and the veth pair with them) are deleted at the end, pass or fail,
after every daemon and QEMU inside has been killed.
"""

from __future__ import annotations

import os
import re
import secrets

import pytest

from kvmd import errors
from kvmd.client import ApiError
from tests.integration.test_migration import assert_counter_continues, boot_guest, qemu_pids
from tests.support import netns
from tests.support.daemon import Daemon

pytestmark = pytest.mark.skipif(netns.unavailable_reason() is not None, reason=str(netns.unavailable_reason()))

PORT = 16509


@pytest.fixture
def hosts(tmpdir_short):
    net = netns.NetPair(f"kvt{os.getpid() % 100000}")
    daemons: list[Daemon] = []
    try:
        net.create()
        token = os.path.join(tmpdir_short, "peer.token")
        fd = os.open(token, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.write(fd, secrets.token_hex(32).encode())
        os.close(fd)
        for side in "ab":
            os.mkdir(os.path.join(tmpdir_short, side))
        src = Daemon(os.path.join(tmpdir_short, "a"), wrapper=net.prefix("a"), args=["--peer-token-file", token])
        dst = Daemon(os.path.join(tmpdir_short, "b"), wrapper=net.prefix("b"),
                     args=["--listen-tcp", f"{net.addr['b']}:{PORT}", "--peer-token-file", token])
        daemons += [src, dst]
        src.start()
        dst.start()
        yield net, src, dst
    finally:
        for d in daemons:
            d.cleanup()
        net.close()
        assert not net.exists()


def rx_bytes(net: netns.NetPair, side: str) -> int:
    out = net.run(side, "ip", "-s", "link", "show", f"{net.tag}{side}").stdout
    return int(re.search(r"RX:.*\n\s*(\d+)", out).group(1))


@pytest.mark.slow
def test_migration_between_network_namespaces_crosses_the_veth_link(hosts, guest):
    net, src, dst = hosts
    a, b = src.client(), dst.client()
    info, con = boot_guest(a, guest, "far")
    con.close()
    before = rx_bytes(net, "b")
    status = a.call("vm.migrate", name="far", dest=f"tcp://{net.addr['b']}:{PORT}")
    assert status["state"] == "completed", status
    assert status["dest"] == f"tcp://{net.addr['b']}:{PORT}"
    # the guest's memory went over the veth pair into the destination's namespace
    assert rx_bytes(net, "b") - before >= status["transferred"]
    assert a.call("vm.list") == [] and qemu_pids(src) == []
    there = b.call("vm.info", name="far")
    assert there["state"] == "running" and there["persistent"]
    assert_counter_continues(info["consoleLog"], there["consoleLog"])


def test_tcp_peer_without_the_token_is_refused(hosts, tmpdir_short):
    net, src, dst = hosts
    bad = os.path.join(tmpdir_short, "bad.token")
    fd = os.open(bad, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, b"not-the-shared-secret-at-all")
    os.close(fd)
    outsider = Daemon(os.path.join(tmpdir_short, "c"), wrapper=net.prefix("a"), args=["--peer-token-file", bad])
    os.mkdir(outsider.base)
    try:
        outsider.start()
        c = outsider.client()
        c.call("vm.create", spec={"name": "fw", "memory": {"size": "128MiB"}})
        with pytest.raises(ApiError) as exc:
            c.call("vm.migrate", name="fw", dest=f"tcp://{net.addr['b']}:{PORT}")
        assert exc.value.code == errors.MIGRATION_FAILED and "refused" in exc.value.message
        assert c.call("vm.info", name="fw")["state"] == "running"
        assert dst.client().call("vm.list") == []
    finally:
        outsider.cleanup()
