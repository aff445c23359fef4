"""`vdsm.hook` for hook scripts: `from vdsm.hook import hooking` (see ../__init__.py)."""
