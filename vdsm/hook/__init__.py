"""`vdsm.hook`: where VDSM keeps its `hooking` module; here it re-exports `hooks.hooking`."""
