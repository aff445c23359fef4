"""kvmd: a KVM mid-layer daemon that launches QEMU itself and drives it over QMP.

The package never imports vdsm, compat or hooks (an import-linter contract keeps it so):
its VM spec and its JSON-RPC API are the stable, host-level interface everything above
is built on.
"""

__version__ = "0.1.0"
