"""Engine-style domain XML for the parity scenarios (written here, shaped like what the
oVirt engine sends in VM.create: ovirt-vm/ovirt-tune metadata, custom properties)."""

from __future__ import annotations

import shutil
import uuid as uuidlib


def engine_xml(name: str, vm_id: str | None = None, *, kernel: dict | None = None, vnc: bool = False,
               custom: dict[str, str] | None = None, memory_mib: int = 256, extra_devices: str = "") -> tuple[str, str]:
    vm_id = vm_id or str(uuidlib.uuid4())
    emulator = shutil.which("qemu-system-x86_64") or "/usr/bin/qemu-system-x86_64"
    os_boot = "<os><type arch='x86_64' machine='q35'>hvm</type></os>"
    if kernel:
        os_boot = (f"<os><type arch='x86_64' machine='q35'>hvm</type><kernel>{kernel['kernel']}</kernel>"
                   f"<initrd>{kernel['initrd']}</initrd><cmdline>{kernel['cmdline']}</cmdline></os>")
    custom_xml = "".join(f"<ovirt-vm:{k}>{v}</ovirt-vm:{k}>" for k, v in (custom or {}).items())
    # as the engine sends it: a locked display (password expired in 1970) until VM.setTicket
    graphics = ("<graphics type='vnc' port='-1' autoport='yes' listen='127.0.0.1' passwd='*****' "
                "passwdValidTo='1970-01-01T00:00:01'><listen type='address' address='127.0.0.1'/></graphics>"
                if vnc else "")
    serial = "<serial type='pty'><target port='0'/></serial><console type='pty'><target type='serial' port='0'/></console>" if kernel else ""
    xml = f"""<domain type='qemu' xmlns:ovirt-tune='http://ovirt.org/vm/tune/1.0' xmlns:ovirt-vm='http://ovirt.org/vm/1.0'>
  <name>{name}</name>
  <uuid>{vm_id}</uuid>
  <memory unit='MiB'>{memory_mib}</memory>
  <currentMemory unit='MiB'>{memory_mib}</currentMemory>
  <vcpu placement='static'>1</vcpu>
  <metadata>
    <ovirt-tune:qos/>
    <ovirt-vm:vm>
      <ovirt-vm:minGuaranteedMemoryMb type='int'>{memory_mib}</ovirt-vm:minGuaranteedMemoryMb>
      <ovirt-vm:clusterVersion>4.7</ovirt-vm:clusterVersion>
      <ovirt-vm:custom>{custom_xml}</ovirt-vm:custom>
    </ovirt-vm:vm>
  </metadata>
  {os_boot}
  <features><acpi/><apic/></features>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>{emulator}</emulator>
    {serial}
    {graphics}
    {extra_devices}
    <memballoon model='virtio'/>
  </devices>
</domain>
"""
    return vm_id, xml
