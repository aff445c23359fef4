"""The shim's migration and snapshot mapping, without a kvmd: destination URIs, flags and
parameters onto vm.migrate options, job statistics in libvirt's fields, snapshot XML onto
vm.snapshot_create arguments and back, the states and events of migrating VMs."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

import compat.libvirt as lv
from compat.virt import events, migration, snapshot, states, xmlconv

pytest.importorskip("compat.domxml")

P2P = lv.VIR_MIGRATE_LIVE | lv.VIR_MIGRATE_PEER2PEER
DOM_XML = """<domain type='qemu'><name>vm</name><uuid>6f2c7d1e-6a1b-4b51-9a55-2d5e4f6d9c01</uuid>
  <memory unit='MiB'>256</memory><vcpu>1</vcpu><os><type arch='x86_64' machine='q35'>hvm</type></os>
  <devices>
    <disk type='file' device='disk'><driver name='qemu' type='qcow2'/><source file='/img/root.qcow2'/>
      <target dev='vda' bus='virtio'/></disk>
    <disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='/img/data.raw'/>
      <target dev='vdb' bus='virtio'/></disk>
    <disk type='file' device='cdrom'><driver name='qemu' type='raw'/><source file='/img/cd.iso'/>
      <target dev='sda' bus='sata'/><readonly/></disk>
  </devices></domain>"""


class FakeDomain:
    def __init__(self, spec):
        self.spec = spec

    def name(self) -> str:
        return "vm"

    def _info(self, spec: bool = False):
        return {"spec": self.spec}


@pytest.fixture(scope="module")
def spec():
    return xmlconv.to_spec(DOM_XML)


def code_of(fn, *args) -> int:
    with pytest.raises(lv.libvirtError) as exc:
        fn(*args)
    return exc.value.get_error_code()


# -- migration -----------------------------------------------------------------------------

@pytest.mark.parametrize("uri,dest", [
    ("kvmd:///?socket=/run/b/kvmd.sock", "/run/b/kvmd.sock"),
    ("kvmd+unix:///system?socket=/run/b/kvmd.sock", "/run/b/kvmd.sock"),
    ("kvmd:///system", "/run/kvmd/kvmd.sock"),
    ("kvmd+tcp://host-b:16509", "tcp://host-b:16509"),
    ("kvmd+tcp://[fd00::2]:16509/", "tcp://[fd00::2]:16509"),
])
def test_destination_uris_name_a_kvmd(uri, dest):
    assert migration.destination(uri) == dest


@pytest.mark.parametrize("uri", ["qemu+tcp://host-b/system", "kvmd+tcp://host-b", "kvmd://host-b/system", "", "/x"])
def test_other_destination_uris_are_invalid_arguments(uri):
    assert code_of(migration.destination, uri) == lv.VIR_ERR_INVALID_ARG


def test_flags_and_parameters_become_vm_migrate_options(spec):
    dom = FakeDomain(spec)
    opts = migration.options(dom, {"persistent": False}, {lv.VIR_MIGRATE_PARAM_BANDWIDTH: 8,
                                                          lv.VIR_MIGRATE_PARAM_URI: "tcp://10.0.0.2"},
                             P2P | lv.VIR_MIGRATE_AUTO_CONVERGE | lv.VIR_MIGRATE_UNSAFE)
    assert opts == {"auto_converge": True, "postcopy": False, "copy_storage": False, "keep_source": False,
                    "bandwidth": 8 * 1024 * 1024, "address": "10.0.0.2"}
    kept = migration.options(dom, {"persistent": True}, {}, P2P | lv.VIR_MIGRATE_PERSIST_DEST)
    assert kept["keep_source"] is True
    gone = migration.options(dom, {"persistent": True}, {}, P2P | lv.VIR_MIGRATE_UNDEFINE_SOURCE)
    assert gone["keep_source"] is False
    copy = migration.options(dom, {}, {lv.VIR_MIGRATE_PARAM_MIGRATE_DISKS: ["vda", "vdb"]},
                             P2P | lv.VIR_MIGRATE_NON_SHARED_DISK | lv.VIR_MIGRATE_POSTCOPY)
    assert copy["copy_storage"] and copy["postcopy"]
    assert migration.options(dom, {}, {lv.VIR_MIGRATE_PARAM_URI: "tcp://[fd00::2]"}, P2P)["address"] == "fd00::2"


@pytest.mark.parametrize("params,flags,code", [
    ({}, lv.VIR_MIGRATE_LIVE, lv.VIR_ERR_ARGUMENT_UNSUPPORTED),
    ({}, P2P | (1 << 29), lv.VIR_ERR_INVALID_ARG),
    ({}, P2P | lv.VIR_MIGRATE_OFFLINE, lv.VIR_ERR_NO_SUPPORT),
    ({}, P2P | lv.VIR_MIGRATE_NON_SHARED_INC, lv.VIR_ERR_NO_SUPPORT),
    ({}, P2P | lv.VIR_MIGRATE_PERSIST_DEST, lv.VIR_ERR_NO_SUPPORT),
    ({"no_such_param": 1}, P2P, lv.VIR_ERR_INVALID_ARG),
    ({lv.VIR_MIGRATE_PARAM_GRAPHICS_URI: "spice://h"}, P2P, lv.VIR_ERR_NO_SUPPORT),
    ({lv.VIR_MIGRATE_PARAM_DEST_NAME: "other"}, P2P, lv.VIR_ERR_NO_SUPPORT),
    ({lv.VIR_MIGRATE_PARAM_URI: "tcp://h:49152"}, P2P, lv.VIR_ERR_NO_SUPPORT),
    ({lv.VIR_MIGRATE_PARAM_MIGRATE_DISKS: ["vda"]}, P2P, lv.VIR_ERR_INVALID_ARG),
    ({lv.VIR_MIGRATE_PARAM_MIGRATE_DISKS: ["vda"]}, P2P | lv.VIR_MIGRATE_NON_SHARED_DISK, lv.VIR_ERR_NO_SUPPORT),
])
def test_what_kvmd_cannot_do_is_refused_as_libvirt_would(spec, params, flags, code):
    assert code_of(migration.options, FakeDomain(spec), {"persistent": False}, params, flags) == code


def test_job_statistics_have_libvirts_fields_and_units():
    active = {"direction": "out", "state": "active", "phase": "memory", "total": 1000, "remaining": 400,
              "transferred": 600, "speed": 1048576, "expectedDowntime": 300, "setupTime": 2,
              "startedAt": 100.0, "finishedAt": None, "totalTime": None}
    stats = migration.job_stats(active)
    assert stats["type"] == lv.VIR_DOMAIN_JOB_UNBOUNDED
    assert stats["operation"] == lv.VIR_DOMAIN_JOB_OPERATION_MIGRATION_OUT
    assert (stats["data_total"], stats["data_processed"], stats["data_remaining"]) == (1000, 600, 400)
    assert stats["memory_bps"] == 1048576 and stats["downtime"] == 300 and stats["disk_total"] == 0
    assert migration.job_info(stats)[:6] == [lv.VIR_DOMAIN_JOB_UNBOUNDED, stats["time_elapsed"], 0, 1000, 600, 400]
    assert migration.job_stats(active, lv.VIR_DOMAIN_JOB_STATS_COMPLETED) == {"type": lv.VIR_DOMAIN_JOB_NONE}

    storage = dict(active, state="storage", phase="storage", speed=10)
    assert (migration.job_stats(storage)["disk_remaining"], migration.job_stats(storage)["memory_total"]) == (400, 0)

    done = dict(active, state="completed", remaining=0, downtime=12, totalTime=345)
    assert migration.job_stats(done) == {"type": lv.VIR_DOMAIN_JOB_NONE}
    completed = migration.job_stats(done, lv.VIR_DOMAIN_JOB_STATS_COMPLETED)
    assert completed["type"] == lv.VIR_DOMAIN_JOB_COMPLETED
    assert (completed["downtime"], completed["time_elapsed"]) == (12, 345)
    event = migration.completed_event(done)
    assert "type" not in event and event["downtime_net"] == 12
    for st in ("failed", "cancelled"):
        assert migration.job_stats(dict(active, state=st), lv.VIR_DOMAIN_JOB_STATS_COMPLETED)["type"] == 0
    assert migration.job_stats(None) == {"type": lv.VIR_DOMAIN_JOB_NONE}
    incoming = migration.job_stats({"direction": "in", "state": "active"})
    assert incoming["operation"] == lv.VIR_DOMAIN_JOB_OPERATION_MIGRATION_IN


def test_migrating_vms_have_libvirts_states_and_events():
    E = lv  # noqa: N806
    assert states.to_libvirt("migrating-out", "migrating to /x") == (E.VIR_DOMAIN_RUNNING, E.VIR_DOMAIN_RUNNING_UNKNOWN)
    assert states.to_libvirt("migrating-in", "") == (E.VIR_DOMAIN_PAUSED, E.VIR_DOMAIN_PAUSED_MIGRATION)
    assert states.to_libvirt("running", "migrated in") == (E.VIR_DOMAIN_RUNNING, E.VIR_DOMAIN_RUNNING_MIGRATED)
    assert states.to_libvirt("stopped", "migrated to /x") == (E.VIR_DOMAIN_SHUTOFF, E.VIR_DOMAIN_SHUTOFF_MIGRATED)
    assert {"migrating-out", "migrating-in"} <= states.ACTIVE
    assert events.lifecycle("migrating-out", "running", "migrating to /x") == []
    assert events.lifecycle("stopped", "migrating-out", "migrated to /x") == [
        (E.VIR_DOMAIN_EVENT_SUSPENDED, E.VIR_DOMAIN_EVENT_SUSPENDED_MIGRATED),
        (E.VIR_DOMAIN_EVENT_STOPPED, E.VIR_DOMAIN_EVENT_STOPPED_MIGRATED)]
    assert events.lifecycle("running", "migrating-out", "migration cancelled: on request") == []
    assert events.lifecycle("migrating-in", "starting", "waiting for the incoming migration") == [
        (E.VIR_DOMAIN_EVENT_STARTED, E.VIR_DOMAIN_EVENT_STARTED_MIGRATED)]
    assert events.lifecycle("running", "migrating-in", "migrated in") == [
        (E.VIR_DOMAIN_EVENT_RESUMED, E.VIR_DOMAIN_EVENT_RESUMED_MIGRATED)]
    assert events.lifecycle("stopped", "migrating-in", "incoming migration cancelled by the source") == [
        (E.VIR_DOMAIN_EVENT_STOPPED, E.VIR_DOMAIN_EVENT_STOPPED_FAILED)]


# -- snapshots ------------------------------------------------------------------------------

@pytest.mark.parametrize("source,overlay", [
    ("/img/root.qcow2", "/img/root.s1"), ("/img/data", "/img/data.s1"), ("/img.d/data", "/img.d/data.s1")])
def test_unnamed_overlays_get_libvirts_names(source, overlay):
    assert snapshot.default_overlay(source, "s1") == overlay


def test_snapshot_xml_becomes_vm_snapshot_create_arguments(spec):
    info = {"spec": spec, "state": "running"}
    xml = ("<domainsnapshot><name>s1</name><disks><disk name='vda' snapshot='external'>"
           "<source file='/img/ov.qcow2'/></disk><disk name='vdb' snapshot='no'/></disks></domainsnapshot>")
    name, kwargs = snapshot.parse_create(xml, info, lv.VIR_DOMAIN_SNAPSHOT_CREATE_DISK_ONLY
                                         | lv.VIR_DOMAIN_SNAPSHOT_CREATE_ATOMIC)
    assert name == "s1"
    disks = {d["dev"]: d["name"] for d in snapshot.writable_disks(spec)}
    assert sorted(disks) == ["vda", "vdb"]  # never the CD-ROM
    assert kwargs == {"snap": "s1", "disks": [disks["vda"]], "overlays": {disks["vda"]: "/img/ov.qcow2"},
                      "memory": False, "quiesce": False, "reuse": False}
    name, kwargs = snapshot.parse_create("<domainsnapshot><memory snapshot='external' file='/img/m'/>"
                                         "</domainsnapshot>", info, 0)
    assert name.isdigit() and kwargs["memory"] and kwargs["memory_file"] == "/img/m"
    assert kwargs["overlays"] == {disks["vda"]: f"/img/root.{name}", disks["vdb"]: f"/img/data.{name}"}
    _, kwargs = snapshot.parse_create("<domainsnapshot/>", info, lv.VIR_DOMAIN_SNAPSHOT_CREATE_DISK_ONLY
                                      | lv.VIR_DOMAIN_SNAPSHOT_CREATE_REUSE_EXT)
    assert kwargs["reuse"] is True and len(kwargs["disks"]) == 2


@pytest.mark.parametrize("xml,flags,code", [
    ("<domainsnapshot", lv.VIR_DOMAIN_SNAPSHOT_CREATE_DISK_ONLY, lv.VIR_ERR_XML_DETAIL),
    ("<snap/>", lv.VIR_DOMAIN_SNAPSHOT_CREATE_DISK_ONLY, lv.VIR_ERR_XML_ERROR),
    ("<domainsnapshot/>", 0, lv.VIR_ERR_CONFIG_UNSUPPORTED),
    ("<domainsnapshot><memory snapshot='internal'/></domainsnapshot>", 0, lv.VIR_ERR_CONFIG_UNSUPPORTED),
    ("<domainsnapshot><memory snapshot='external'/></domainsnapshot>", 0, lv.VIR_ERR_XML_ERROR),
    ("<domainsnapshot><disks><disk name='sda'/></disks></domainsnapshot>",
     lv.VIR_DOMAIN_SNAPSHOT_CREATE_DISK_ONLY, lv.VIR_ERR_CONFIG_UNSUPPORTED),
    ("<domainsnapshot><disks><disk name='vda' snapshot='internal'/></disks></domainsnapshot>",
     lv.VIR_DOMAIN_SNAPSHOT_CREATE_DISK_ONLY, lv.VIR_ERR_CONFIG_UNSUPPORTED),
    ("<domainsnapshot><disks><disk name='vda'><driver type='raw'/></disk></disks></domainsnapshot>",
     lv.VIR_DOMAIN_SNAPSHOT_CREATE_DISK_ONLY, lv.VIR_ERR_CONFIG_UNSUPPORTED),
    ("<domainsnapshot/>", lv.VIR_DOMAIN_SNAPSHOT_CREATE_DISK_ONLY | lv.VIR_DOMAIN_SNAPSHOT_CREATE_HALT,
     lv.VIR_ERR_NO_SUPPORT),
    ("<domainsnapshot/>", lv.VIR_DOMAIN_SNAPSHOT_CREATE_DISK_ONLY | lv.VIR_DOMAIN_SNAPSHOT_CREATE_QUIESCE,
     lv.VIR_ERR_ARGUMENT_UNSUPPORTED),
    ("<domainsnapshot/>", lv.VIR_DOMAIN_SNAPSHOT_CREATE_DISK_ONLY | (1 << 20), lv.VIR_ERR_INVALID_ARG),
])
def test_snapshot_requests_kvmd_cannot_honour_are_refused(spec, xml, flags, code):
    assert code_of(snapshot.parse_create, xml, {"spec": spec, "state": "running"}, flags) == code


def test_snapshot_descriptions_have_libvirts_shape(spec):
    disks = {d["dev"]: d["name"] for d in snapshot.writable_disks(spec)}
    entry = {"name": "s2", "createdAt": 1700000000.5, "vmState": "running", "parent": "s1", "memory": False,
             "memoryFile": None, "current": True,
             "disks": {disks["vda"]: {"frozen": "/img/root.qcow2", "overlay": "/img/root.s2"}}}
    root = ET.fromstring(snapshot.describe(entry, spec))
    assert (root.findtext("name"), root.findtext("state"), root.findtext("creationTime")) == (
        "s2", "disk-snapshot", "1700000000")
    assert root.findtext("parent/name") == "s1" and root.find("memory").get("snapshot") == "no"
    assert [(d.get("name"), d.get("snapshot")) for d in root.iterfind("disks/disk")] == [
        ("vda", "external"), ("vdb", "no")]
    assert root.find("disks/disk/source").get("file") == "/img/root.s2"
    mem = ET.fromstring(snapshot.describe(dict(entry, memory=True, memoryFile="/img/m", vmState="paused"), spec))
    assert mem.findtext("state") == "paused" and mem.find("memory").get("file") == "/img/m"


def test_snapshot_list_filters_follow_libvirts_groups():
    entries = [{"name": "a", "parent": None, "vmState": "running", "memory": False},
               {"name": "b", "parent": "a", "vmState": "running", "memory": True},
               {"name": "c", "parent": None, "vmState": "stopped", "memory": False}]
    L = lv  # noqa: N806

    def names(flags):
        return [e["name"] for e in entries if snapshot.matches(e, entries, flags)]
    assert names(0) == ["a", "b", "c"]
    assert names(L.VIR_DOMAIN_SNAPSHOT_LIST_ROOTS) == ["a", "c"]
    assert names(L.VIR_DOMAIN_SNAPSHOT_LIST_LEAVES) == ["b", "c"]
    assert names(L.VIR_DOMAIN_SNAPSHOT_LIST_NO_LEAVES) == ["a"]
    assert names(L.VIR_DOMAIN_SNAPSHOT_LIST_ACTIVE) == ["b"]
    assert names(L.VIR_DOMAIN_SNAPSHOT_LIST_INACTIVE | L.VIR_DOMAIN_SNAPSHOT_LIST_DISK_ONLY) == ["a", "c"]
    assert names(L.VIR_DOMAIN_SNAPSHOT_LIST_INTERNAL) == [] and names(L.VIR_DOMAIN_SNAPSHOT_LIST_NO_METADATA) == []
