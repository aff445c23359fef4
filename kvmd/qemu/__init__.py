"""Everything that speaks to QEMU: argv generation, capability probing, process
supervision and the QMP monitor session."""
