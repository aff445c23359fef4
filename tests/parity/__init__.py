"""The parity suite: the same tests against a real libvirtd and against compat.libvirt on kvmd."""
