"""The VDSM verbs, implemented over a libvirt-shaped connection (real libvirt-python to
libvirtd, or compat's shim to kvmd): status model, stats, events, recovery."""
