"""The pieces of `compat.libvirt`, the libvirt-python API served by kvmd.

    constants   VIR_* numbers (libvirt's own values)
    errors      libvirtError, kvmd -> libvirt error codes, registerErrorHandler
    uri         kvmd:/// (and, with KVMD_SOCKET, qemu:///) URIs -> kvmd sockets
    transport   the thread-safe kvmd API connection under each virConnect
    connection  virConnect
    domain      virDomain
    states      kvmd states/reasons -> libvirt state/reason numbers
    events      kvmd events -> libvirt domain events; libvirt's default event loop
    xmlconv     glue to compat.domxml (domain XML <-> spec) and device lookups
    metadata    metadata()/setMetadata() on domain XML
    stats       vm.stats -> blockStats/interfaceStats/memoryStats/getAllDomainStats
    caps        getCapabilities()/getInfo() from host.info

Import `compat.libvirt`, not these: that module is the public surface.
"""
