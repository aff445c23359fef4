"""Test support: real daemons, real QEMU, cleanup that always runs."""
