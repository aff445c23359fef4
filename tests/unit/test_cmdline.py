"""Spec -> QEMU argv: representative specs, and real QEMUs (-S, TCG) that must accept the result."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
import subprocess

import pytest
from qemu.qmp import QMPClient

from kvmd.qemu import pci
from kvmd.qemu.cmdline import OVMF_CODE, OVMF_VARS, LaunchOptions, build_argv
from kvmd.spec import from_dict

UUID = "6a1c2f4e-0d5b-4c1e-9f6a-2b3c4d5e6f70"


def make_spec(**extra):
    doc = {"name": "vm1", "uuid": UUID}
    doc.update(extra)
    spec = from_dict(doc)
    pci.assign_slots(spec)
    return spec


def argv_for(opts: LaunchOptions | None = None, **extra) -> list[str]:
    return build_argv(make_spec(**extra), opts or LaunchOptions())


def values(argv: list[str], flag: str) -> list[str]:
    """Every value that follows `flag` in argv, in order."""
    return [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == flag]


def split_opts(text: str) -> list[str]:
    """Split a QEMU option string on single commas (',,' is an escaped comma)."""
    parts, cur, i = [], "", 0
    while i < len(text):
        if text[i] == ",":
            if text[i + 1:i + 2] == ",":
                cur += ","
                i += 2
                continue
            parts.append(cur)
            cur = ""
        else:
            cur += text[i]
        i += 1
    parts.append(cur)
    return parts


def parse_opts(text: str) -> dict[str, str]:
    """'driver,k=v,...' -> {'driver': driver, 'k': 'v', ...} (unescaped)."""
    first, *rest = split_opts(text)
    out = {"driver": first} if "=" not in first else dict([first.split("=", 1)])
    out.update(part.split("=", 1) for part in rest)
    return out


def devices(argv: list[str]) -> dict[str, dict[str, str]]:
    """-device options by id."""
    out = {}
    for value in values(argv, "-device"):
        opts = parse_opts(value)
        out[opts["id"]] = opts
    return out


def blockdevs(argv: list[str]) -> dict[str, dict]:
    return {node["node-name"]: node for node in map(json.loads, values(argv, "-blockdev"))}


# -- basics -------------------------------------------------------------------------


def test_qemu_starts_paused_without_user_config_or_default_devices():
    argv = argv_for()
    assert argv[0] == "qemu-system-x86_64"
    assert {"-S", "-no-user-config", "-nodefaults"} <= set(argv)


def test_binary_comes_from_the_launch_options():
    assert argv_for(LaunchOptions(binary="/opt/qemu/bin/qemu-system-x86_64"))[0] == \
        "/opt/qemu/bin/qemu-system-x86_64"


def test_qmp_monitor_is_a_server_chardev_on_the_inherited_fd():
    argv = argv_for(LaunchOptions(qmp_fd=17))
    assert "socket,id=qmp,fd=17,server=on,wait=off" in values(argv, "-chardev")
    assert values(argv, "-mon") == ["chardev=qmp,mode=control"]


def test_name_and_uuid_identify_the_guest():
    argv = argv_for()
    assert values(argv, "-name") == ["guest=vm1,debug-threads=on"]
    assert values(argv, "-uuid") == [UUID]


@pytest.mark.parametrize("accels", [("kvm", "tcg"), ("tcg",), ("tcg", "kvm")])
def test_accelerators_are_tried_in_the_configured_order(accels):
    assert values(argv_for(LaunchOptions(accels=accels)), "-accel") == list(accels)


def test_machine_type_is_passed_through():
    assert values(argv_for(machine="pc-i440fx-7.2"), "-machine") == ["pc-i440fx-7.2"]


def test_sandbox_is_on_with_every_deny_when_enabled():
    assert values(argv_for(LaunchOptions(sandbox=True)), "-sandbox") == [
        "on,obsolete=deny,spawn=deny,resourcecontrol=deny,elevateprivileges=deny"]


def test_sandbox_is_absent_when_disabled():
    assert "-sandbox" not in argv_for(LaunchOptions(sandbox=False))


def test_run_as_allows_privilege_drop_and_uses_runas_or_run_with():
    argv = argv_for(LaunchOptions(run_as="kvmd-qemu"))
    assert values(argv, "-sandbox") == ["on,obsolete=deny,spawn=deny,resourcecontrol=deny"]
    assert values(argv, "-runas") == ["kvmd-qemu"]
    argv = argv_for(LaunchOptions(run_as="kvmd-qemu", run_with=True))
    assert values(argv, "-run-with") == ["user=kvmd-qemu"] and "-runas" not in argv


def test_cpu_model_and_topology():
    argv = argv_for(cpu={"count": 4, "model": "host", "sockets": 2, "cores": 2, "threads": 1})
    assert values(argv, "-cpu") == ["host"]
    assert values(argv, "-smp") == ["4,sockets=2,cores=2,threads=1"]
    argv = argv_for()
    assert "-cpu" not in argv and values(argv, "-smp") == ["1"]


def test_memory_in_mib_with_optional_hotplug_maximum():
    assert values(argv_for(memory={"size": "1G"}), "-m") == ["1024M"]
    assert values(argv_for(memory={"size": "1G", "max": "4G"}), "-m") == ["size=1024M,slots=8,maxmem=4096M"]
    assert values(argv_for(memory={"size": "1G", "max": "1G"}), "-m") == ["1024M"]


def test_reboot_is_refused_only_when_lifecycle_says_destroy():
    assert "-no-reboot" in argv_for(lifecycle={"onReboot": "destroy"})
    assert "-no-reboot" not in argv_for()


def test_direct_kernel_boot():
    argv = argv_for(boot={"kernel": "/b/vmlinuz", "initrd": "/b/initrd", "cmdline": "console=ttyS0 quiet"})
    assert values(argv, "-kernel") == ["/b/vmlinuz"]
    assert values(argv, "-initrd") == ["/b/initrd"]
    assert values(argv, "-append") == ["console=ttyS0 quiet"]


def test_incoming_migration_is_passed_through():
    assert values(argv_for(LaunchOptions(incoming="defer")), "-incoming") == ["defer"]


# -- disks --------------------------------------------------------------------------


def test_disk_gets_protocol_and_format_nodes_with_stable_names():
    argv = argv_for(disks=[{"name": "root", "path": "/img/root.qcow2", "format": "qcow2"}])
    raw = values(argv, "-blockdev")
    assert [json.loads(r)["node-name"] for r in raw] == ["file-root", "fmt-root"]
    nodes = blockdevs(argv)
    assert nodes["file-root"] == {
        "driver": "file", "node-name": "file-root", "filename": "/img/root.qcow2", "aio": "threads",
        "cache": {"direct": False, "no-flush": False}, "read-only": False, "auto-read-only": True,
        "discard": "unmap"}
    assert nodes["fmt-root"] == {
        "driver": "qcow2", "node-name": "fmt-root", "file": "file-root",
        "cache": {"direct": False, "no-flush": False}, "read-only": False}
    assert devices(argv)["disk-root"]["drive"] == "fmt-root"


def test_block_devices_under_dev_use_the_host_device_driver():
    assert blockdevs(argv_for(disks=[{"name": "lun", "path": "/dev/sdb"}]))["file-lun"]["driver"] == "host_device"


@pytest.mark.parametrize("cache,direct,no_flush,write_cache", [
    ("writeback", False, False, "on"),
    ("none", True, False, "on"),
    ("writethrough", False, False, "off"),
    ("directsync", True, False, "off"),
    ("unsafe", False, True, "on"),
])
def test_cache_mode_maps_to_node_cache_flags_and_device_write_cache(cache, direct, no_flush, write_cache):
    argv = argv_for(disks=[{"name": "d", "path": "/d.img", "cache": cache}])
    nodes = blockdevs(argv)
    assert nodes["file-d"]["cache"] == nodes["fmt-d"]["cache"] == {"direct": direct, "no-flush": no_flush}
    assert devices(argv)["disk-d"]["write-cache"] == write_cache


@pytest.mark.parametrize("aio,cache", [("threads", "writeback"), ("native", "none"), ("io_uring", "directsync")])
def test_aio_mode_is_set_on_the_protocol_node(aio, cache):
    nodes = blockdevs(argv_for(disks=[{"name": "d", "path": "/d.img", "aio": aio, "cache": cache}]))
    assert nodes["file-d"]["aio"] == aio


def test_readonly_disk_has_readonly_nodes():
    nodes = blockdevs(argv_for(disks=[{"name": "d", "path": "/d.img", "readonly": True}]))
    assert nodes["file-d"]["read-only"] is nodes["fmt-d"]["read-only"] is True


def test_virtio_disk_sits_alone_on_its_root_port_on_q35():
    argv = argv_for(disks=[{"name": "a", "path": "/a"}, {"name": "b", "path": "/b", "serial": "SN-B"}])
    devs = devices(argv)
    assert devs["disk-a"]["driver"] == "virtio-blk-pci"
    assert (devs["disk-a"]["bus"], devs["disk-a"]["addr"]) == ("rp0", "0x0")
    assert (devs["disk-b"]["bus"], devs["disk-b"]["addr"]) == ("rp1", "0x0")
    assert devs["disk-b"]["serial"] == "SN-B"


def test_explicit_slot_picks_the_root_port():
    devs = devices(argv_for(disks=[{"name": "a", "path": "/a", "slot": 3}, {"name": "b", "path": "/b"}]))
    assert devs["disk-a"]["bus"] == "rp3"
    assert devs["disk-b"]["bus"] == "rp0"


def test_q35_gets_one_root_port_per_device_plus_spare_hotplug_ports():
    argv = argv_for(disks=[{"path": "/a"}], nics=[{}], hotplugSlots=2)
    ports = [parse_opts(v) for v in values(argv, "-device") if v.startswith("pcie-root-port,")]
    assert [p["id"] for p in ports] == ["rp0", "rp1", "rp2", "rp3"]
    assert [p["addr"] for p in ports] == ["0x10.0", "0x10.1", "0x10.2", "0x10.3"]
    assert [p["chassis"] for p in ports] == ["1", "2", "3", "4"]
    assert ports[0]["multifunction"] == "on" and "multifunction" not in ports[1]
    assert {p["bus"] for p in ports} == {"pcie.0"}


def test_root_ports_beyond_eight_continue_on_the_next_slot():
    argv = argv_for(hotplugSlots=10)
    ports = [parse_opts(v) for v in values(argv, "-device") if v.startswith("pcie-root-port,")]
    assert ports[8]["addr"] == "0x11.0" and ports[8]["multifunction"] == "on"
    assert ports[9]["addr"] == "0x11.1"


def test_virtio_disk_sits_on_a_pci0_slot_on_pc():
    argv = argv_for(machine="pc", disks=[{"name": "a", "path": "/a"}, {"name": "b", "path": "/b", "slot": 4}])
    devs = devices(argv)
    assert (devs["disk-a"]["bus"], devs["disk-a"]["addr"]) == ("pci.0", "0x10")
    assert (devs["disk-b"]["bus"], devs["disk-b"]["addr"]) == ("pci.0", "0x14")
    assert not any(v.startswith("pcie-root-port") for v in values(argv, "-device"))


def test_scsi_disks_share_one_controller_each_on_its_own_lun():
    argv = argv_for(disks=[{"name": "s0", "path": "/s0", "bus": "scsi"},
                           {"name": "v0", "path": "/v0"},
                           {"name": "s1", "path": "/s1", "bus": "scsi", "serial": "S1"},
                           {"name": "cd", "bus": "scsi", "media": "cdrom", "path": "/i.iso"}])
    assert [v for v in values(argv, "-device") if v.startswith("virtio-scsi-pci")] == [
        "virtio-scsi-pci,id=scsi0,bus=pcie.0,addr=0x5"]
    devs = devices(argv)
    for dev_id, model, lun in (("disk-s0", "scsi-hd", "0"), ("disk-s1", "scsi-hd", "1"),
                               ("disk-cd", "scsi-cd", "2")):
        assert devs[dev_id]["driver"] == model
        assert (devs[dev_id]["bus"], devs[dev_id]["scsi-id"], devs[dev_id]["lun"]) == ("scsi0.0", "0", lun)
    assert devs["disk-s1"]["serial"] == "S1"
    assert "write-cache" in devs["disk-s0"] and "write-cache" not in devs["disk-cd"]
    # the controller comes before the disks that plug into it
    assert argv.index("virtio-scsi-pci,id=scsi0,bus=pcie.0,addr=0x5") < min(
        i for i, a in enumerate(argv) if a.startswith("scsi-"))


def test_no_scsi_controller_without_scsi_disks():
    assert not any(v.startswith("virtio-scsi-pci") for v in values(argv_for(disks=[{"path": "/a"}]), "-device"))


def test_empty_sata_cdrom_has_a_device_but_no_nodes():
    argv = argv_for(disks=[{"name": "cd", "media": "cdrom"}])
    assert values(argv, "-blockdev") == []
    assert devices(argv)["disk-cd"] == {"driver": "ide-cd", "bus": "ide.0", "id": "disk-cd", "bootindex": "1"}


def test_sata_disks_take_consecutive_ahci_ports_on_q35():
    devs = devices(argv_for(disks=[{"name": "cd", "media": "cdrom", "path": "/i.iso"},
                                   {"name": "h", "path": "/h", "bus": "sata"}]))
    assert (devs["disk-cd"]["driver"], devs["disk-cd"]["bus"], devs["disk-cd"]["drive"]) == ("ide-cd", "ide.0", "fmt-cd")
    assert (devs["disk-h"]["driver"], devs["disk-h"]["bus"]) == ("ide-hd", "ide.1")
    assert "unit" not in devs["disk-h"]


def test_sata_disks_fill_master_and_slave_on_pc():
    devs = devices(argv_for(machine="pc", disks=[{"name": f"d{i}", "path": f"/d{i}", "bus": "sata"} for i in range(3)]))
    assert [(devs[f"disk-d{i}"]["bus"], devs[f"disk-d{i}"]["unit"]) for i in range(3)] == [
        ("ide.0", "0"), ("ide.0", "1"), ("ide.1", "0")]


# -- NICs ---------------------------------------------------------------------------

MAC = "52:54:00:12:34:56"


def test_user_nic_has_a_user_netdev_and_the_mac():
    argv = argv_for(nics=[{"name": "lan", "mac": MAC}])
    assert values(argv, "-netdev") == ["user,id=netdev-lan"]
    assert devices(argv)["nic-lan"] == {"driver": "virtio-net-pci", "id": "nic-lan", "netdev": "netdev-lan",
                                        "mac": MAC, "bus": "rp0", "addr": "0x0", "bootindex": "1"}


def test_tap_nic_uses_the_fd_kvmd_opened():
    argv = argv_for(LaunchOptions(tap_fds={"lan": 23}), nics=[{"name": "lan", "backend": "tap", "bridge": "br0"}])
    assert values(argv, "-netdev") == ["tap,id=netdev-lan,fd=23"]
    assert devices(argv)["nic-lan"]["netdev"] == "netdev-lan"


def test_tap_nic_without_an_fd_opens_the_named_tap_without_scripts():
    argv = argv_for(nics=[{"name": "lan", "backend": "tap", "tap": "vnet7"}])
    assert values(argv, "-netdev") == ["tap,id=netdev-lan,ifname=vnet7,script=no,downscript=no"]


def test_nic_without_backend_has_no_netdev():
    argv = argv_for(nics=[{"name": "lan", "backend": "none", "mac": MAC}])
    assert values(argv, "-netdev") == []
    dev = devices(argv)["nic-lan"]
    assert "netdev" not in dev and dev["mac"] == MAC


@pytest.mark.parametrize("model,driver", [("virtio", "virtio-net-pci"), ("e1000", "e1000"), ("rtl8139", "rtl8139")])
def test_nic_model_picks_the_device(model, driver):
    assert devices(argv_for(nics=[{"name": "n", "model": model}]))["nic-n"]["driver"] == driver


def test_nics_take_slots_after_virtio_disks():
    devs = devices(argv_for(disks=[{"name": "d", "path": "/d"}], nics=[{"name": "a"}, {"name": "b"}]))
    assert [devs[i]["bus"] for i in ("disk-d", "nic-a", "nic-b")] == ["rp0", "rp1", "rp2"]


# -- boot order ---------------------------------------------------------------------


def test_bootindex_follows_boot_order_first_device_of_each_kind():
    devs = devices(argv_for(boot={"order": ["network", "cdrom", "disk"]},
                            disks=[{"name": "a", "path": "/a"}, {"name": "b", "path": "/b"},
                                   {"name": "cd", "media": "cdrom"}],
                            nics=[{"name": "n0"}, {"name": "n1"}]))
    assert {k: v.get("bootindex") for k, v in devs.items() if k.startswith(("disk-", "nic-"))} == {
        "nic-n0": "1", "disk-cd": "2", "disk-a": "3", "disk-b": None, "nic-n1": None}


def test_boot_order_skips_kinds_without_devices():
    devs = devices(argv_for(boot={"order": ["cdrom", "network", "disk"]}, disks=[{"name": "a", "path": "/a"}]))
    assert devs["disk-a"]["bootindex"] == "1"


def test_explicit_boot_index_replaces_boot_order():
    devs = devices(argv_for(disks=[{"name": "a", "path": "/a"}, {"name": "b", "path": "/b", "bootIndex": 5}],
                            nics=[{"name": "n", "bootIndex": 2}]))
    assert "bootindex" not in devs["disk-a"]
    assert devs["disk-b"]["bootindex"] == "5" and devs["nic-n"]["bootindex"] == "2"


# -- serial, graphics, channels -----------------------------------------------------


def test_serial_socket_logs_to_the_given_file():
    argv = argv_for(LaunchOptions(serial_socket="/run/kvmd/vm1.console", serial_log="/var/log/kvmd/vm1.log"))
    assert "socket,id=serial0,path=/run/kvmd/vm1.console,server=on,wait=off,logfile=/var/log/kvmd/vm1.log,logappend=on" \
        in values(argv, "-chardev")
    assert "isa-serial,chardev=serial0,id=serial0" in values(argv, "-device")


def test_serial_socket_without_log():
    argv = argv_for(LaunchOptions(serial_socket="/run/c.sock"))
    assert "socket,id=serial0,path=/run/c.sock,server=on,wait=off" in values(argv, "-chardev")


def test_serial_file_writes_to_the_spec_path():
    argv = argv_for(serial={"type": "file", "path": "/var/log/vm1.out"})
    assert "file,id=serial0,path=/var/log/vm1.out" in values(argv, "-chardev")


def test_no_serial_when_disabled():
    argv = argv_for(serial={"type": "none"})
    assert not any("serial0" in v for v in values(argv, "-chardev") + values(argv, "-device"))


def test_no_graphics_means_no_display_and_no_vga():
    argv = argv_for()
    assert values(argv, "-display") == ["none"] and values(argv, "-vga") == ["none"]


def test_vnc_without_port_picks_a_free_one():
    argv = argv_for(graphics=[{"type": "vnc"}])
    assert values(argv, "-vnc") == ["127.0.0.1:0,to=99"]
    assert devices(argv)["video0"] == {"driver": "VGA", "id": "video0", "bus": "pcie.0", "addr": "0x1"}
    assert "-display" not in argv


def test_vnc_fixed_port_is_a_display_number_and_password_is_set_later():
    assert values(argv_for(graphics=[{"port": 5901, "password": "s3cret"}]), "-vnc") == ["127.0.0.1:1,password=on"]


def test_vnc_password_is_never_on_the_command_line():
    argv = argv_for(graphics=[{"password": "s3cret"}, {"type": "spice", "password": "s3cret"}])
    assert not any("s3cret" in a for a in argv)


def test_vnc_on_ipv6_brackets_the_address():
    assert values(argv_for(graphics=[{"listen": "::1", "port": 5900}]), "-vnc") == ["[::1]:0"]


def test_spice_without_password_disables_ticketing():
    argv = argv_for(graphics=[{"type": "spice", "port": 5930}])
    assert values(argv, "-spice") == ["port=5930,addr=127.0.0.1,disable-ticketing=on"]
    assert devices(argv)["video0"]["driver"] == "qxl-vga"


def test_spice_with_password_keeps_ticketing():
    assert values(argv_for(graphics=[{"type": "spice", "port": 5930, "password": "x"}]), "-spice") == [
        "port=5930,addr=127.0.0.1"]


def test_guest_agent_channel_is_the_named_virtserialport():
    argv = argv_for(LaunchOptions(qga_socket="/run/kvmd/vm1.qga"), guestAgent=True)
    devs = devices(argv)
    assert devs["vserial0"] == {"driver": "virtio-serial-pci", "id": "vserial0", "bus": "pcie.0", "addr": "0x6"}
    assert "socket,id=qga0,path=/run/kvmd/vm1.qga,server=on,wait=off" in values(argv, "-chardev")
    assert devs["qga0"] == {"driver": "virtserialport", "bus": "vserial0.0", "nr": "1", "chardev": "qga0",
                            "id": "qga0", "name": "org.qemu.guest_agent.0"}


def test_no_guest_agent_channel_by_default():
    argv = argv_for()
    assert "vserial0" not in devices(argv) and "qga0" not in devices(argv)


def test_balloon_by_default_and_not_when_disabled():
    assert devices(argv_for())["balloon0"] == {"driver": "virtio-balloon-pci", "id": "balloon0", "bus": "pcie.0",
                                              "addr": "0x7", "free-page-reporting": "on"}
    assert "balloon0" not in devices(argv_for(memory={"balloon": False}))


def test_rng_device_reads_urandom():
    argv = argv_for(rng=True)
    assert values(argv, "-object") == ["rng-random,id=rng0,filename=/dev/urandom"]
    assert devices(argv)["rng0dev"] == {"driver": "virtio-rng-pci", "id": "rng0dev", "rng": "rng0",
                                        "bus": "pcie.0", "addr": "0x8"}
    assert "rng0dev" not in devices(argv_for())


def test_fixed_devices_use_pci0_on_pc():
    devs = devices(argv_for(machine="pc", rng=True, guestAgent=True, disks=[{"path": "/s", "bus": "scsi"}]))
    assert {devs[i]["bus"] for i in ("balloon0", "rng0dev", "vserial0", "scsi0")} == {"pci.0"}


def test_video_on_pc_avoids_the_piix3_slot():
    """On i440fx, 00:01.0 is the PIIX3 ISA bridge: VGA must sit elsewhere."""
    dev = devices(argv_for(machine="pc", graphics=[{"type": "vnc"}]))["video0"]
    assert dev["bus"] == "pci.0" and int(dev["addr"], 16) != 1


# -- firmware -----------------------------------------------------------------------


def test_uefi_uses_readonly_code_and_writable_vars_pflash():
    argv = argv_for(LaunchOptions(nvram="/var/lib/kvmd/vm1_VARS.fd", ovmf_code="/fw/CODE.fd"),
                    boot={"firmware": "uefi"})
    assert values(argv, "-drive") == ["if=pflash,format=raw,unit=0,readonly=on,file=/fw/CODE.fd",
                                      "if=pflash,format=raw,unit=1,file=/var/lib/kvmd/vm1_VARS.fd"]


def test_bios_has_no_pflash():
    assert "-drive" not in argv_for(LaunchOptions(nvram="/v.fd"))


# -- qemuArgs and escaping ----------------------------------------------------------


def test_qemu_args_come_last():
    argv = argv_for(LaunchOptions(incoming="defer"), qemuArgs=["-global", "kvm-pit.lost_tick_policy=discard"],
                    rng=True, guestAgent=True)
    assert argv[-2:] == ["-global", "kvm-pit.lost_tick_policy=discard"]


def test_commas_in_paths_are_escaped_in_option_strings():
    opts = LaunchOptions(serial_socket="/run/a,b/console", serial_log="/log/a,b.log", qga_socket="/run/a,b/qga",
                         nvram="/n/a,b_VARS.fd", ovmf_code="/fw/a,b_CODE.fd")
    argv = argv_for(opts, boot={"firmware": "uefi"}, guestAgent=True)
    chardevs = values(argv, "-chardev")
    assert "socket,id=serial0,path=/run/a,,b/console,server=on,wait=off,logfile=/log/a,,b.log,logappend=on" in chardevs
    assert "socket,id=qga0,path=/run/a,,b/qga,server=on,wait=off" in chardevs
    assert values(argv, "-drive") == ["if=pflash,format=raw,unit=0,readonly=on,file=/fw/a,,b_CODE.fd",
                                      "if=pflash,format=raw,unit=1,file=/n/a,,b_VARS.fd"]
    argv = argv_for(serial={"type": "file", "path": "/var/log/a,b"})
    assert "file,id=serial0,path=/var/log/a,,b" in values(argv, "-chardev")


def test_commas_in_disk_paths_need_no_escaping_in_blockdev_json():
    nodes = blockdevs(argv_for(disks=[{"name": "d", "path": "/img/a,b=c.raw"}]))
    assert nodes["file-d"]["filename"] == "/img/a,b=c.raw"


def test_build_argv_is_pure_and_repeatable():
    spec = make_spec(disks=[{"path": "/a"}], nics=[{}], graphics=[{}], guestAgent=True, rng=True)
    assert build_argv(spec, LaunchOptions()) == build_argv(spec, LaunchOptions())


# -- real QEMU ----------------------------------------------------------------------

QEMU = shutil.which("qemu-system-x86_64")
QEMU_IMG = shutil.which("qemu-img")
needs_qemu = pytest.mark.skipif(not (QEMU and QEMU_IMG and os.path.exists(OVMF_CODE) and os.path.exists(OVMF_VARS)),
                                reason="needs qemu-system-x86_64, qemu-img and OVMF")


def _qdev_id(qdev: str) -> str:
    """'/machine/peripheral/disk-a/virtio-backend' or 'disk-a' -> 'disk-a'."""
    if qdev.startswith("/machine/peripheral/"):
        return qdev.split("/")[3]
    return qdev


def _image(directory: str, name: str, fmt: str, size: str) -> str:
    path = os.path.join(directory, name)
    subprocess.run([QEMU_IMG, "create", "-q", "-f", fmt, path, size], check=True)
    return path


def run_qemu(spec, directory: str, placed: dict[str, tuple[str, ...]], **launch) -> dict:
    """Launch QEMU (-S, TCG) from build_argv with QMP on an inherited listening socket,
    query it, quit it; the process is always killed and reaped. `placed` names the QOM
    properties to read of each device (where it sits)."""
    lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    qmp_path = os.path.join(directory, "qmp.sock")
    lsock.bind(qmp_path)
    lsock.listen(1)
    opts = LaunchOptions(accels=("tcg",), qmp_fd=lsock.fileno(), serial_socket=os.path.join(directory, "con"),
                         serial_log=os.path.join(directory, "con.log"), qga_socket=os.path.join(directory, "qga"),
                         **launch)
    argv = build_argv(spec, opts)
    proc = subprocess.Popen(argv, pass_fds=[lsock.fileno()], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    lsock.close()  # QEMU holds the listening socket now
    result, error = None, None
    try:
        result = asyncio.run(_query(qmp_path, placed))
    except Exception as e:  # report it with QEMU's own output below
        error = e
    finally:
        proc.kill()
        out = proc.communicate(timeout=10)[0].decode(errors="replace")
    if error is not None:
        raise AssertionError(f"QEMU did not accept {argv}: {error!r}\n{out}")
    return result


async def _query(qmp_path: str, placed: dict[str, tuple[str, ...]]) -> dict:
    client = QMPClient("kvmd-test")
    await asyncio.wait_for(client.connect(qmp_path), 10)
    try:
        async def run(cmd, args=None):
            return await asyncio.wait_for(client.execute(cmd, args), 10)

        result = {"block": await run("query-block"), "pci": await run("query-pci"),
                  "status": await run("query-status"), "placement": {}}
        for dev_id, props in placed.items():
            path = f"/machine/peripheral/{dev_id}"
            result["placement"][dev_id] = tuple([await run("qom-get", {"path": path, "property": prop})
                                                 for prop in props])
        await run("quit")
    finally:
        with contextlib.suppress(EOFError, Exception):
            await client.disconnect()
    return result


@needs_qemu
def test_real_qemu_accepts_the_command_line_of_a_rich_spec(tmpdir_short):
    d = tmpdir_short
    raw = _image(d, "root,1.raw", "raw", "16M")  # a comma in the path, too
    qcow = _image(d, "data.qcow2", "qcow2", "32M")
    scsi = _image(d, "s.raw", "raw", "8M")
    spec = make_spec(
        cpu={"count": 2, "sockets": 1, "cores": 2, "threads": 1},
        memory={"size": "128MiB", "max": "512MiB"},
        disks=[{"name": "root", "path": raw, "cache": "none", "aio": "native"},
               {"name": "data", "path": qcow, "format": "qcow2", "cache": "writethrough", "slot": 5},
               {"name": "lun0", "path": scsi, "bus": "scsi", "serial": "LUN0"},
               {"name": "cd", "media": "cdrom"}],
        nics=[{"name": "lan", "mac": MAC}, {"name": "old", "model": "e1000", "backend": "none"}],
        graphics=[{"type": "vnc", "password": "pw"}],
        guestAgent=True, rng=True, hotplugSlots=2,
        boot={"order": ["cdrom", "disk"], "firmware": "uefi"},
    )
    nvram = os.path.join(d, "VARS.fd")
    shutil.copyfile(OVMF_VARS, nvram)
    r = run_qemu(spec, d, dict.fromkeys(["disk-root", "disk-data", "nic-lan", "nic-old"], ("parent_bus", "addr")),
                 nvram=nvram)
    assert r["status"]["status"] == "prelaunch" and r["status"]["running"] is False

    by_qdev = {_qdev_id(b["qdev"]): b for b in r["block"]}
    assert by_qdev["disk-root"]["inserted"]["node-name"] == "fmt-root"
    assert by_qdev["disk-root"]["inserted"]["file"] == raw
    assert by_qdev["disk-data"]["inserted"]["node-name"] == "fmt-data"
    assert by_qdev["disk-data"]["inserted"]["drv"] == "qcow2"
    assert by_qdev["disk-lun0"]["inserted"]["node-name"] == "fmt-lun0"
    assert "inserted" not in by_qdev["disk-cd"]
    flash = {b["device"]: (b["inserted"]["file"], b["inserted"]["ro"]) for b in r["block"]
             if b["device"].startswith("pflash")}
    assert flash == {"pflash0": (OVMF_CODE, True), "pflash1": (nvram, False)}

    [bus0] = [b for b in r["pci"] if b["bus"] == 0]
    by_id = {dev.get("qdev_id"): dev for dev in bus0["devices"]}
    ports = sorted(k for k in by_id if k.startswith("rp"))
    assert ports == sorted(f"rp{i}" for i in range(8))  # slots 0..5 in use, plus two spare
    for i in range(8):
        assert "pci_bridge" in by_id[f"rp{i}"]
        assert (by_id[f"rp{i}"]["slot"], by_id[f"rp{i}"]["function"]) == (0x10, i)
    # before the firmware runs no bridge has a bus number, so ask QOM where each device sits
    assert r["placement"] == {"disk-root": ("/machine/peripheral/rp0/rp0", 0),
                              "disk-data": ("/machine/peripheral/rp5/rp5", 0),
                              "nic-lan": ("/machine/peripheral/rp1/rp1", 0),
                              "nic-old": ("/machine/peripheral/rp2/rp2", 0)}
    for dev_id, slot in (("video0", pci.video_addr(spec)), ("scsi0", pci.SCSI_ADDR),
                         ("vserial0", pci.VSERIAL_ADDR), ("balloon0", pci.BALLOON_ADDR),
                         ("rng0dev", pci.RNG_ADDR)):
        assert (by_id[dev_id]["slot"], by_id[dev_id]["function"]) == (slot, 0), dev_id


@needs_qemu
def test_real_qemu_accepts_the_command_line_of_a_pc_machine(tmpdir_short):
    d = tmpdir_short
    spec = make_spec(
        machine="pc",
        disks=[{"name": "root", "path": _image(d, "r.qcow2", "qcow2", "16M"), "format": "qcow2", "slot": 2},
               {"name": "cd", "media": "cdrom"},
               {"name": "h", "path": _image(d, "h.raw", "raw", "8M"), "bus": "sata"},
               {"name": "cd2", "media": "cdrom"}],
        nics=[{"name": "lan", "model": "rtl8139"}],
        graphics=[{"type": "spice"}],
        guestAgent=True, rng=True,
    )
    r = run_qemu(spec, d, dict.fromkeys(["disk-cd", "disk-h", "disk-cd2"], ("parent_bus", "unit")))
    buses = {k: (bus.rsplit("/", 1)[-1], unit) for k, (bus, unit) in r["placement"].items()}
    assert buses == {"disk-cd": ("ide.0", 0), "disk-h": ("ide.0", 1), "disk-cd2": ("ide.1", 0)}
    [bus0] = [b for b in r["pci"] if b["bus"] == 0]
    by_id = {dev.get("qdev_id"): dev for dev in bus0["devices"]}
    assert by_id["disk-root"]["slot"] == 0x12 and by_id["nic-lan"]["slot"] == 0x10
    assert by_id["video0"]["slot"] == pci.video_addr(spec) != 1
    assert {k: by_id[k]["slot"] for k in ("vserial0", "balloon0", "rng0dev")} == {
        "vserial0": pci.VSERIAL_ADDR, "balloon0": pci.BALLOON_ADDR, "rng0dev": pci.RNG_ADDR}
    by_qdev = {_qdev_id(b["qdev"]): b for b in r["block"]}
    assert by_qdev["disk-root"]["inserted"]["node-name"] == "fmt-root"
    assert by_qdev["disk-h"]["inserted"]["node-name"] == "fmt-h"
