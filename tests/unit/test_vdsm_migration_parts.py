"""The endpoint's migration and snapshot verbs, their pure parts: VDSM's `dst`, the backend
URI a destination hands out, progress, migrate params onto migrateToURI3 flags and
parameters, and snapDrives onto a `<domainsnapshot>`."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from types import SimpleNamespace

import pytest

import compat.libvirt as lv
from vdsm.config import Config
from vdsm.errors import VdsmError
from vdsm.virt import migration_verbs as mv
from vdsm.virt import snapshot_verbs as sv


@pytest.mark.parametrize("dst,host_port", [
    ("host-b", ("host-b", 54321)), ("host-b:4000", ("host-b", 4000)), ("10.0.0.2:54321", ("10.0.0.2", 54321)),
    ("[fd00::2]:4000", ("fd00::2", 4000)), ("[fd00::2]", ("fd00::2", 54321)), ("fd00::2", ("fd00::2", 54321)),
])
def test_dst_is_vdsms_host_and_optional_port(dst, host_port):
    assert mv.split_dst(dst) == host_port


def test_a_bad_dst_is_a_migration_error():
    with pytest.raises(VdsmError) as exc:
        mv.split_dst("host:port")
    assert exc.value.code == 12


def test_the_destination_hands_out_its_backend_uri():
    def svc(**cfg):
        return SimpleNamespace(cfg=Config(kvmd_socket="/run/b/kvmd.sock", **cfg))
    assert mv.backend_uri(svc(), "kvmd") == "kvmd:///?socket=/run/b/kvmd.sock"
    private = svc(libvirt_uri="qemu:///system?socket=/tmp/lv/sock")
    assert mv.backend_uri(private, "libvirt") == "qemu+unix:///system?socket=/tmp/lv/sock"
    assert mv.backend_uri(svc(libvirt_uri="qemu+tls://host-b/system"), "libvirt") == "qemu+tls://host-b/system"
    configured = svc(migration_uris={"kvmd": "kvmd+tcp://host-b:16509"})
    assert mv.backend_uri(configured, "kvmd") == "kvmd+tcp://host-b:16509"


def test_progress_is_vdsms_percentage():
    assert mv.percentage({}) == 0
    assert mv.percentage({"data_total": 1000, "data_remaining": 1000}) == 0
    assert mv.percentage({"data_total": 1000, "data_remaining": 250}) == 75
    assert mv.percentage({"data_total": 1000, "data_remaining": 0}) == 99  # 100 once it is done


def test_migrate_params_become_migrate_to_uri3_flags_and_parameters():
    job = mv.Outgoing("id", "host-b", 54321, {"dst": "host-b", "maxBandwidth": 32, "autoConverge": "true",
                                              "compressed": False, "enablePostcopy": True})
    flags, params = mv.flags_and_params(lv, job)
    assert flags == lv.VIR_MIGRATE_LIVE | lv.VIR_MIGRATE_PEER2PEER | lv.VIR_MIGRATE_AUTO_CONVERGE | lv.VIR_MIGRATE_POSTCOPY
    assert params == {lv.VIR_MIGRATE_PARAM_URI: "tcp://host-b", lv.VIR_MIGRATE_PARAM_BANDWIDTH: 32}
    job = mv.Outgoing("id", "host-b", 54321, {"dstqemu": "fd00::9", "migrateDisks": ["vda"], "tunneled": False})
    flags, params = mv.flags_and_params(lv, job)
    assert flags & lv.VIR_MIGRATE_NON_SHARED_DISK
    assert params == {lv.VIR_MIGRATE_PARAM_URI: "tcp://[fd00::9]", lv.VIR_MIGRATE_PARAM_MIGRATE_DISKS: ["vda"]}
    flags, params = mv.flags_and_params(lv, mv.Outgoing("id", "h", 1, {"tunneled": "true", "encrypted": True}))
    assert flags & lv.VIR_MIGRATE_TUNNELLED and flags & lv.VIR_MIGRATE_TLS and params == {}


def test_convergence_schedule_gives_postcopy_and_the_initial_downtime():
    schedule = {"init": [{"name": "setDowntime", "params": ["100"]}],
                "stalling": [{"limit": 1, "action": {"name": "setDowntime", "params": ["200"]}},
                             {"limit": 3, "action": {"name": "postcopy"}}]}
    assert mv.wants_postcopy({"convergenceSchedule": schedule}) is True
    assert mv.initial_downtime({"convergenceSchedule": schedule}) == 100
    assert mv.wants_postcopy({}) is False and mv.initial_downtime({"downtime": "500"}) == 500
    assert mv.initial_downtime({}) is None


def test_migration_status_is_vdsms_record():
    job = mv.Outgoing("id", "h", 1, {})
    assert job.stats() == {"vmId": "id", "status": {"code": 0, "message": "Migration in progress"}, "progress": 0}
    job.progress, job.downtime, job.message = 100, 7, "Migration done"
    assert job.stats()["downtime"] == 7 and job.event() == {"progress": 100, "postcopy": False, "downtime": 7}


# -- snapshots ------------------------------------------------------------------------------

DOMAIN = """<domain><devices>
  <disk device='disk'><source file='/img/root.qcow2'/><target dev='vda'/><serial>IMG-1</serial></disk>
  <disk device='disk'><source file='/img/data.raw'/><target dev='vdb'/></disk>
  <disk device='cdrom'><source file='/img/cd.iso'/><target dev='sda'/><readonly/></disk>
</devices></domain>"""


def test_snap_drives_name_disks_by_target_or_image_id():
    disks = sv.vm_disks(DOMAIN)
    assert sv.plan(disks, [{"name": "vda", "newVolume": "/img/ov.qcow2"}]) == {"vda": "/img/ov.qcow2"}
    assert sv.plan(disks, [{"imageID": "IMG-1"}, {"name": "vdb", "path": "/img/d2"}]) == {"vda": None, "vdb": "/img/d2"}
    assert sv.plan(disks, [{"name": "vda", "newVolume": "/img/root.qcow2"}]) == {}  # already in use: skipped


@pytest.mark.parametrize("drive", [
    {"name": "vdz"}, {"imageID": "nope"}, {"name": "sda"}, {"name": "vda", "newVolume": "ov.qcow2"},
    {"name": "vda", "domainID": "d", "imageID": "i", "volumeID": "v"}, "vda",
])
def test_snap_drives_the_endpoint_cannot_serve_are_snapshot_errors(drive):
    with pytest.raises(VdsmError) as exc:
        sv.plan(sv.vm_disks(DOMAIN), [drive])
    assert exc.value.code == 48


def test_the_snapshot_xml_lists_every_writable_disk():
    disks = sv.vm_disks(DOMAIN)
    root = ET.fromstring(sv.snapshot_xml("job-1", disks, {"vda": "/img/ov.qcow2"}, "/img/mem"))
    assert root.findtext("name") == "job-1"
    assert (root.find("memory").get("snapshot"), root.find("memory").get("file")) == ("external", "/img/mem")
    assert [(d.get("name"), d.get("snapshot")) for d in root.iterfind("disks/disk")] == [
        ("vda", "external"), ("vdb", "no")]
    assert root.find("disks/disk/source").get("file") == "/img/ov.qcow2"
    unnamed = ET.fromstring(sv.snapshot_xml("s", disks, {"vdb": None}, None))
    assert unnamed.find("memory") is None and unnamed.find("disks/disk[@name='vdb']/source") is None
