"""libvirt-API shim and domain XML/OVF <-> kvmd spec translation; built in a later issue."""
