"""kvmd's VM spec: the versioned (`apiVersion: kvmd/v1`) YAML/JSON description of a VM.

`model` holds the dataclasses, `parse` turns documents into them (with every problem
reported by field path) and back, `reader` is the path-tracking document walker.
"""

from kvmd.spec.model import API_VERSION, Boot, Cpu, Disk, Graphics, Lifecycle, Memory, Nic, Serial, VMSpec
from kvmd.spec.parse import dumps, from_dict, loads, to_dict

__all__ = ["API_VERSION", "Boot", "Cpu", "Disk", "Graphics", "Lifecycle", "Memory", "Nic",
           "Serial", "VMSpec", "dumps", "from_dict", "loads", "to_dict"]
