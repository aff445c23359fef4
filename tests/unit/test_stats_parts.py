"""The pure parts of stats, tuning and the stats view: no QEMU, no daemon."""

from __future__ import annotations

import os

from kvmd.cli.statsview import stats_detail, stats_table
from kvmd.spec.model import Disk, Nic, VMSpec
from kvmd.stats import disk_stats, nic_stats, proc_cpu_times
from kvmd.tuning import expire_time


def _stat(tmp_path, comm: str, utime: int, stime: int) -> str:
    fields = ["S", "1", "1", "1", "0", "-1", "0", "0", "0", "0", "0", str(utime), str(stime), "0", "0"]
    path = tmp_path / "stat"
    path.write_text(f"4242 ({comm}) " + " ".join(fields) + "\n")
    return str(path)


def test_cpu_times_survive_a_thread_name_with_spaces_and_parentheses(tmp_path):
    tck = os.sysconf("SC_CLK_TCK")
    assert proc_cpu_times(_stat(tmp_path, "CPU 0/TCG) (x", 3 * tck, tck)) == (3.0, 1.0)
    assert proc_cpu_times(str(tmp_path / "gone")) is None


def test_blockstats_map_back_to_spec_disk_names_by_device_id_or_node_name():
    spec = VMSpec(name="v", uuid="u", disks=[Disk("root", "/r"), Disk("cd", None, media="cdrom"),
                                              Disk("data", "/d")])
    entries = [
        {"qdev": "/machine/peripheral/disk-root/virtio-backend", "node-name": "fmt-root",
         "stats": {"rd_bytes": 4096, "rd_operations": 2, "rd_total_time_ns": 1000,
                   "wr_bytes": 512, "wr_operations": 1, "wr_total_time_ns": 700, "flush_operations": 3}},
        {"qdev": "", "node-name": "fmt-data", "stats": {"rd_bytes": 1, "rd_operations": 1}},
        {"qdev": "/machine/peripheral/other/virtio-backend", "stats": {"rd_bytes": 99}},
    ]
    root, cd, data = disk_stats(spec, entries)
    assert root == {"name": "root", "rd_bytes": 4096, "wr_bytes": 512, "rd_ops": 2, "wr_ops": 1,
                    "rd_latency_ns": 500, "wr_latency_ns": 700, "flush_ops": 3}
    assert cd["name"] == "cd" and cd["rd_bytes"] == 0 and cd["rd_latency_ns"] == 0
    assert data["rd_bytes"] == 1


def test_tap_counters_are_turned_into_the_guests_view():
    base = "/sys/class/net/lo/statistics"
    host_tx = int(open(f"{base}/tx_bytes").read())
    out = nic_stats(Nic("n0", "52:54:00:00:00:01", backend="tap", tap="lo"))
    assert "unavailable" not in out
    assert out["rx_bytes"] >= host_tx  # the host's tx is the guest's rx (lo counts both ways)
    missing = nic_stats(Nic("n0", "52:54:00:00:00:01", backend="tap", tap="kvmd-no-such0"))
    assert missing["rx_bytes"] is None and "kvmd-no-such0" in missing["unavailable"]
    user = nic_stats(Nic("n1", "52:54:00:00:00:02", backend="user"))
    assert user["tx_packets"] is None and "slirp" in user["unavailable"]


def test_ticket_expiry_spellings():
    assert expire_time(None) == "never"
    assert expire_time(0) == "now"
    assert expire_time(-5) == "now"
    assert expire_time(30) == "+30"
    assert expire_time(0.2) == "+1"


def test_stats_view_shows_a_row_per_vm_and_details_with_errors():
    s = {"state": "running", "uptime": 65, "cpu": {"user_s": 1.5, "system_s": 0.5,
                                                   "vcpus": [{"cpu": 0, "thread_id": 7, "user_s": 1.0, "system_s": 0.1}]},
         "memory": {"size": 1 << 28, "actual": 1 << 27, "rss": 3 << 20},
         "disks": [{"name": "d", "rd_bytes": 1 << 20, "wr_bytes": 0, "rd_ops": 4, "wr_ops": 0,
                    "rd_latency_ns": 2000, "wr_latency_ns": 0, "flush_ops": 0}],
         "nics": [{"name": "n", "rx_bytes": None, "tx_bytes": None, "rx_packets": None, "tx_packets": None,
                   "unavailable": "no counters"}]}
    table = stats_table({"b": {"state": "running", "error": "QMP timed out"}, "a": s}).splitlines()
    assert table[0].split()[0] == "NAME"
    assert table[1].split()[:5] == ["a", "running", "1m05s", "2.00s", "3MiB"]
    assert table[2].split()[:2] == ["b", "running"]
    assert table[-1] == "b: QMP timed out"
    detail = stats_detail("a", s)
    assert "vcpu 0 (thread 7)" in detail and "disk d: read 1MiB in 4 ops" in detail
    assert "nic n: counters unavailable (no counters)" in detail
    assert stats_table({}) == "no active VMs"
