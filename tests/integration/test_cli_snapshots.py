"""kvmctl snapshot-* against a real kvmd: create, list, revert, delete."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.conftest import firmware_spec


def kvmctl(daemon, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kvmd.cli.main", "--socket", daemon.socket, *args],
                          capture_output=True, text=True, timeout=120)


def test_snapshot_create_list_revert_delete(daemon, tmpdir_short):
    img = os.path.join(tmpdir_short, "d.qcow2")
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", img, "16M"], check=True)
    c = daemon.client()
    c.call("vm.define", spec=firmware_spec("sn", disks=[{"name": "root", "path": img, "format": "qcow2"}]))
    c.call("vm.start", name="sn")
    out = kvmctl(daemon, "snapshot-create", "sn", "s1")
    assert out.returncode == 0, out.stderr
    assert "snapshot 's1' of 'sn' created" in out.stdout
    listed = kvmctl(daemon, "snapshot-list", "sn")
    assert listed.returncode == 0 and "s1 *" in listed.stdout
    snaps = json.loads(kvmctl(daemon, "snapshot-list", "sn", "--json").stdout)
    assert [s["name"] for s in snaps] == ["s1"] and snaps[0]["current"]
    assert kvmctl(daemon, "snapshot-revert", "sn", "s1").returncode == 0
    assert kvmctl(daemon, "snapshot-delete", "sn", "s1").returncode == 0
    assert json.loads(kvmctl(daemon, "snapshot-list", "sn", "--json").stdout) == []
    bad = kvmctl(daemon, "snapshot-revert", "sn", "nope")
    assert bad.returncode == 1 and bad.stderr.count("\n") == 1 and "nope" in bad.stderr
    c.call("vm.destroy", name="sn")
