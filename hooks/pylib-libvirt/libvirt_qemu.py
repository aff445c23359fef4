"""`import libvirt_qemu` for hook scripts on the libvirt backend: the real one."""

from _kvmd_hooks_import import load_real

load_real(__name__, __file__)
