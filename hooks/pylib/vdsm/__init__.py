"""A stand-in `vdsm` package for hook scripts: only `vdsm.hook.hooking` lives here.

It is on a hook's PYTHONPATH (after any PYTHONPATH the runner inherited, so a real VDSM
installation listed there wins) so that `from vdsm.hook import hooking` works in scripts
run by any `python3`, without the kvmd package or its virtualenv.
"""
