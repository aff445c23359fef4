"""`kvmctl`, kvmd's command-line client (like `virsh`, for kvmd).

`main` parses the command line and calls the API through `kvmd.client`; `output` turns
results into tables, key/value lines or JSON (pure functions, unit-tested); `console`
attaches a terminal or a pipe to a VM's serial console socket.
"""
