"""Shared fixtures: private short directories, a real kvmd, the real test guest.

Everything a test starts is stopped in a finalizer, pass or fail: the daemon, and every
QEMU whose command line mentions the test's private directory.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile

import pytest

from tests.support.daemon import Daemon

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GUEST_DIR = os.environ.get("GUEST_DIR", os.path.join(ROOT, "build", "guest"))

os.environ.setdefault("KVMD_ACCEL", "tcg")


@pytest.fixture
def tmpdir_short():
    """A short private dir under /tmp (unix socket paths must stay under 108 bytes)."""
    path = tempfile.mkdtemp(prefix="kvt", dir="/tmp")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def daemon(tmpdir_short):
    d = Daemon(tmpdir_short)
    try:
        d.start()
        yield d
    finally:
        d.cleanup()


@pytest.fixture
def client(daemon):
    return daemon.client()


@pytest.fixture(scope="session")
def guest():
    """Paths of the real Linux test guest (kernel, initramfs, cmdline); built if needed."""
    kernel = os.path.join(GUEST_DIR, "vmlinuz")
    if not os.path.exists(kernel):
        subprocess.run([os.path.join(ROOT, "tests", "guest", "build.sh")], check=True)
    with open(os.path.join(GUEST_DIR, "cmdline")) as f:
        cmdline = f.read().strip()
    return {"kernel": kernel, "initrd": os.path.join(GUEST_DIR, "initramfs.img"), "cmdline": cmdline}


def guest_spec(guest: dict, name: str, **extra) -> dict:
    """A spec that boots the real test guest (TCG) with its serial console on a socket."""
    spec = {
        "name": name,
        "memory": {"size": "256MiB"},
        "boot": {"kernel": guest["kernel"], "initrd": guest["initrd"], "cmdline": guest["cmdline"]},
    }
    spec.update(extra)
    return spec


def firmware_spec(name: str, **extra) -> dict:
    """A firmware-only VM: no kernel, no disk (SeaBIOS spins; starts in ~40 ms)."""
    spec = {"name": name, "memory": {"size": "128MiB"}}
    spec.update(extra)
    return spec
