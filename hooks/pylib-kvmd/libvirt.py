"""`import libvirt` for hook scripts on the kvmd backend: the compat shim (`compat.libvirt`).

A hook written against libvirt-python (`libvirt.open()`, `lookupByUUIDString`,
`libvirtError`, the `VIR_*` constants) then talks to kvmd. The runner sets `KVMD_SOCKET`
to the socket of the kvmd that runs the VM, so `libvirt.open()` and
`libvirt.open("qemu:///system")` reach it.
"""

import importlib
import sys

from _kvmd_hooks_import import add_syspath

add_syspath()
sys.modules[__name__] = importlib.import_module("compat.libvirt")
