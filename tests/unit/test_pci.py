"""PCI placement: stable slots, root ports with spare hotplug ports, free slots, a full machine."""

from __future__ import annotations

import pytest

from kvmd.qemu import pci
from kvmd.spec import from_dict


def make_spec(**extra):
    doc = {"name": "vm"}
    doc.update(extra)
    return from_dict(doc)


def slots(spec) -> dict[str, int | None]:
    return {d.name: d.slot for d in [*spec.disks, *spec.nics]}


def test_devices_without_slots_get_the_lowest_free_slots_in_spec_order():
    spec = make_spec(disks=[{"name": "a", "path": "/a"}, {"name": "b", "path": "/b"}],
                     nics=[{"name": "n0"}, {"name": "n1"}])
    pci.assign_slots(spec)
    assert slots(spec) == {"a": 0, "b": 1, "n0": 2, "n1": 3}


def test_explicit_slots_are_kept_and_others_fill_the_gaps():
    spec = make_spec(disks=[{"name": "a", "path": "/a", "slot": 1}, {"name": "b", "path": "/b"}],
                     nics=[{"name": "n0"}, {"name": "n1", "slot": 0}, {"name": "n2"}])
    used = pci.assign_slots(spec)
    assert slots(spec) == {"a": 1, "b": 2, "n0": 3, "n1": 0, "n2": 4}
    assert {slot: dev.name for slot, dev in used.items()} == {0: "n1", 1: "a", 2: "b", 3: "n0", 4: "n2"}


def test_only_virtio_disks_and_nics_take_slots():
    spec = make_spec(disks=[{"name": "s", "path": "/s", "bus": "scsi"}, {"name": "cd", "media": "cdrom"},
                            {"name": "v", "path": "/v"}])
    pci.assign_slots(spec)
    assert slots(spec) == {"s": None, "cd": None, "v": 0}
    assert [d.name for d in pci.hotpluggable(spec)] == ["v"]


def test_assigning_again_changes_nothing():
    spec = make_spec(disks=[{"name": "a", "path": "/a"}], nics=[{"name": "n", "slot": 7}, {"name": "m"}])
    pci.assign_slots(spec)
    first = slots(spec)
    pci.assign_slots(spec)
    assert slots(spec) == first


def test_slots_survive_a_round_trip_and_removing_a_device():
    from kvmd.spec import to_dict

    spec = make_spec(disks=[{"name": "a", "path": "/a"}, {"name": "b", "path": "/b"}, {"name": "c", "path": "/c"}])
    pci.assign_slots(spec)
    doc = to_dict(spec)
    del doc["disks"][1]  # b goes away; a and c keep their slots
    doc["disks"].append({"name": "d", "path": "/d"})  # a new disk takes the freed slot
    again = from_dict(doc)
    pci.assign_slots(again)
    assert slots(again) == {"a": 0, "c": 2, "d": 1}


def test_adding_a_device_at_the_end_does_not_move_the_others():
    spec = make_spec(disks=[{"name": "a", "path": "/a"}], nics=[{"name": "n"}])
    pci.assign_slots(spec)
    before = slots(spec)
    grown = make_spec(disks=[{"name": "a", "path": "/a", "slot": before["a"]}, {"name": "z", "path": "/z"}],
                      nics=[{"name": "n", "slot": before["n"]}])
    pci.assign_slots(grown)
    assert slots(grown) == {**before, "z": 2}


@pytest.mark.parametrize("used,hotplug,expected", [
    ([], 4, 4),
    ([], 0, 0),
    ([0, 1], 4, 6),
    ([0, 1], 0, 2),
    ([5], 4, 10),   # every port up to the highest used slot, plus the spares
    ([0, 2], 1, 4),
])
def test_root_port_count_covers_used_slots_plus_spare_hotplug_ports(used, hotplug, expected):
    spec = make_spec(nics=[{"name": f"n{i}", "slot": s} for i, s in enumerate(used)], hotplugSlots=hotplug)
    assert pci.port_count(spec) == expected
    ports = [a for a in pci.root_port_args(spec) if a.startswith("pcie-root-port,")]
    assert len(ports) == expected


def test_root_port_count_is_capped_by_the_machine():
    spec = make_spec(nics=[{"name": "n", "slot": 119}], hotplugSlots=32)
    assert pci.port_count(spec) == pci.max_slots(spec) == 120


def test_pc_has_no_root_ports():
    spec = make_spec(machine="pc", nics=[{}], hotplugSlots=8)
    pci.assign_slots(spec)
    assert pci.root_port_args(spec) == []
    assert pci.root_bus(spec) == "pci.0"


def test_placement_on_q35_is_a_root_port_and_on_pc_a_pci0_slot():
    assert pci.place(make_spec(), 3) == pci.Placement("rp3", "0x0")
    assert pci.place(make_spec(machine="pc-i440fx-7.2"), 3) == pci.Placement("pci.0", "0x13")
    assert pci.place(make_spec(machine="pc-q35-7.2"), 3) == pci.Placement("rp3", "0x0")


def test_free_slot_is_the_lowest_unused_port():
    spec = make_spec(nics=[{"name": "a", "slot": 0}, {"name": "b", "slot": 2}], hotplugSlots=2)
    assert pci.free_slot(spec) == 1
    spec.nics[1].slot = 1
    assert pci.free_slot(spec) == 2


def test_free_slot_is_none_when_every_port_is_used():
    spec = make_spec(nics=[{"name": "a"}, {"name": "b"}], hotplugSlots=0)
    pci.assign_slots(spec)
    assert pci.port_count(spec) == 2
    assert pci.free_slot(spec) is None


def test_free_slot_on_pc_looks_at_every_pci0_slot():
    spec = make_spec(machine="pc", nics=[{"name": f"n{i}"} for i in range(3)], hotplugSlots=0)
    pci.assign_slots(spec)
    assert pci.free_slot(spec) == 3
    full = make_spec(machine="pc", nics=[{"name": f"n{i}"} for i in range(pci.PC_MAX_SLOTS)])
    pci.assign_slots(full)
    assert pci.free_slot(full) is None


def test_a_full_pc_machine_is_an_error():
    spec = make_spec(machine="pc", nics=[{"name": f"n{i}"} for i in range(pci.PC_MAX_SLOTS + 1)])
    with pytest.raises(ValueError, match=r"no free PCI slot left \(the machine has 15\)"):
        pci.assign_slots(spec)


def test_a_full_q35_machine_is_an_error():
    n = pci.max_slots(make_spec())
    spec = make_spec(nics=[{"name": f"n{i}"} for i in range(n)],
                     disks=[{"name": "last", "path": "/l"}])
    with pytest.raises(ValueError, match=r"no free PCI slot left \(the machine has 120\)"):
        pci.assign_slots(spec)


def test_an_explicit_slot_beyond_the_machine_is_an_error():
    spec = make_spec(machine="pc", disks=[{"name": "a", "path": "/a", "slot": 15}])
    with pytest.raises(ValueError, match=r"slot 15 .*15"):
        pci.assign_slots(spec)
    spec = make_spec(disks=[{"name": "a", "path": "/a", "slot": 200}])
    with pytest.raises(ValueError, match=r"slot 200 .*120"):
        pci.assign_slots(spec)
