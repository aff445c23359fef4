"""VDSM-compatible hooks: the runner, the hook point table and the `hooking` helpers.

- `hooks.points`: every hook point VDSM defines — what it carries (domain XML, device XML,
  JSON, nothing) and whether a failing script fails the operation.
- `hooks.runner`: runs `<root>/<point>/*` with VDSM's environment and exit-code rules,
  synchronously (`run_hooks`) or from asyncio (`run_hooks_async`), with a per-script
  timeout that kills a hung hook's whole process group.
- `hooks.backends`: on the kvmd backend, a hook edits a kvmd VM spec through its libvirt
  domain XML (compat's converters both ways).
- `hooks.hooking`: the module hook scripts import (`import hooking`,
  `from vdsm.hook import hooking`); standard library only.
- `python -m hooks run POINT ...`: run one hook point offline, for hook authors.

docs/hooks.md is the hook author's guide and the contract the vdsm endpoint follows.
Nothing here imports `compat` until a kvmd-backend conversion is asked for.
"""

from hooks.points import POINTS, HookPoint
from hooks.runner import HookConfig, HookError, HookResult, ScriptResult, run_hooks, run_hooks_async

__all__ = [
    "POINTS",
    "HookPoint",
    "HookConfig",
    "HookError",
    "HookResult",
    "ScriptResult",
    "run_hooks",
    "run_hooks_async",
]
