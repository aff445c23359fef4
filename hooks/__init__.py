"""VDSM-compatible hook runner and the `hooking` helper module; built in a later issue."""
