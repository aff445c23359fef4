"""The hook point table matches VDSM's lib/vdsm/common/hooks.py point for point."""

from __future__ import annotations

import pytest

from hooks import points

# Where VDSM calls _runHooksDir with raiseError=False (failures logged, operation goes on).
VDSM_IGNORES = {
    "before_vdsm_start", "after_vdsm_stop", "before_vm_destroy", "before_vm_set_ticket",
    "after_vm_start", "after_vm_cont", "after_vm_pause", "after_vm_destroy",
    "after_vm_hibernate", "after_vm_dehibernate", "after_vm_migrate_source",
    "after_vm_migrate_destination", "after_vm_set_ticket", "after_device_create",
    "after_device_destroy", "after_device_migrate_source", "after_device_migrate_destination",
    "after_update_device", "after_update_device_fail", "after_nic_hotplug", "after_nic_hotunplug",
    "after_nic_hotplug_fail", "after_nic_hotunplug_fail", "after_disk_hotplug",
    "after_disk_hotunplug", "after_memory_hotplug", "after_set_num_of_cpus",
    "after_get_vm_stats", "after_get_all_vm_stats", "after_get_caps", "after_get_stats",
    "after_network_setup", "after_network_setup_fail", "after_hostdev_list_by_caps",
}
VDSM_JSON = {
    "after_disk_prepare", "before_network_setup", "after_network_setup", "after_network_setup_fail",
    "before_get_vm_stats", "after_get_vm_stats", "before_get_all_vm_stats", "after_get_all_vm_stats",
    "before_get_caps", "after_get_caps", "before_get_stats", "after_get_stats",
    "after_hostdev_list_by_caps",
}
VDSM_NO_DATA = {"before_vm_destroy", "before_set_num_of_cpus", "after_set_num_of_cpus",
                "before_vdsm_start", "after_vdsm_stop"}


def test_every_vdsm_hook_point_exists_once():
    assert len(points.POINTS) == 58
    assert len(points.all_points()) == 58


def test_failures_are_ignored_exactly_where_vdsm_ignores_them():
    ignored = {p.name for p in points.all_points() if not p.fails_operation}
    assert ignored == VDSM_IGNORES


def test_json_points_use_hook_json_and_the_others_hook_domxml():
    assert {p.name for p in points.all_points() if p.carries_json} == VDSM_JSON
    for p in points.all_points():
        assert p.env_var == ("_hook_json" if p.name in VDSM_JSON else "_hook_domxml")


def test_points_without_data_are_the_ones_vdsm_calls_with_none():
    assert {p.name for p in points.all_points() if p.payload == points.NONE} == VDSM_NO_DATA


@pytest.mark.parametrize("name, payload", [
    ("before_vm_start", "domain"), ("before_vm_migrate_destination", "domain"),
    ("before_disk_hotplug", "device"), ("before_nic_hotunplug", "device"),
    ("after_update_device_fail", "device"), ("before_memory_hotplug", "device"),
    ("after_get_all_vm_stats", "json"),
])
def test_payload_of_a_few_points(name, payload):
    assert points.get(name).payload == payload


def test_unknown_names_suggest_the_close_ones():
    with pytest.raises(points.UnknownHookPoint, match="before_nic_hotplug"):
        points.get("before_nic_hotplg")
