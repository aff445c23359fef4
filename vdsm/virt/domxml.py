"""Reading the engine's domain XML on the endpoint side: identity, oVirt metadata.

The XML is untrusted input, parsed with defusedxml (no entity expansion, no network).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from defusedxml import ElementTree as SafeET

from vdsm import errors
from vdsm.errors import VdsmError

OVIRT_VM = "http://ovirt.org/vm/1.0"


@dataclass
class DomainFacts:
    name: str
    uuid: str
    custom: dict[str, str] = field(default_factory=dict)
    launch_paused: bool = False
    memory_kib: int = 0
    vcpus: int = 1


def read(xml: str) -> DomainFacts:
    try:
        root = SafeET.fromstring(xml)
    except Exception as e:  # defusedxml raises its own classes for forbidden constructs
        raise VdsmError(errors.CANNOT_CREATE_VM, f"invalid domain XML: {e}") from None
    if root.tag != "domain":
        raise VdsmError(errors.CANNOT_CREATE_VM, f"invalid domain XML: root element is <{root.tag}>, not <domain>")
    name, uuid = root.findtext("name"), root.findtext("uuid")
    if not name or not uuid:
        raise VdsmError(errors.CANNOT_CREATE_VM, "invalid domain XML: <name> and <uuid> are required")
    facts = DomainFacts(name=name.strip(), uuid=uuid.strip().lower())
    vm = root.find(f"./metadata/{{{OVIRT_VM}}}vm")
    if vm is not None:
        custom = vm.find(f"{{{OVIRT_VM}}}custom")
        if custom is not None:
            for item in custom:
                facts.custom[_local(item.tag)] = (item.text or "").strip()
        facts.launch_paused = (vm.findtext(f"{{{OVIRT_VM}}}launchPaused") or "").strip().lower() == "true"
    mem = root.find("memory")
    if mem is not None and (mem.text or "").strip().isdigit():
        facts.memory_kib = _kib(int(mem.text.strip()), mem.get("unit", "KiB"))
    vcpu = root.findtext("vcpu")
    if vcpu and vcpu.strip().isdigit():
        facts.vcpus = int(vcpu.strip())
    return facts


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _kib(value: int, unit: str) -> int:
    mult = {"b": 1 / 1024, "bytes": 1 / 1024, "k": 1, "kib": 1, "kb": 1000 / 1024, "m": 1024, "mib": 1024,
            "mb": 1e6 / 1024, "g": 1 << 20, "gib": 1 << 20, "gb": 1e9 / 1024}.get(unit.lower(), 1)
    return int(value * mult)


def definition(rec: Any, xml: str) -> dict[str, Any]:
    """A VmDefinition-shaped summary of a VM (what VM.getInfo / create / pause return)."""
    out: dict[str, Any] = {"vmId": rec.vm_id, "vmName": rec.name, "status": rec.status,
                           "statusTime": rec.status_time, "vmType": "kvm", "kvmEnable": "true",
                           "acpiEnable": "true", "custom": dict(rec.custom)}
    if xml:
        try:
            facts = read(xml)
            out.update(memSize=facts.memory_kib // 1024, smp=str(facts.vcpus))
        except VdsmError:
            pass
        out["xml"] = xml
    if rec.status == "Down":
        out.update(exitCode=rec.exit_code, exitMessage=rec.exit_message, exitReason=rec.exit_reason)
    return out
