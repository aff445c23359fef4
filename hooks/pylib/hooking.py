"""`import hooking` for hook scripts: the runner puts this folder on their PYTHONPATH.

The helpers live in `hooks/hooking.py` (standard library only); this file runs that
module's code as its own, so a script needs neither the kvmd package nor its virtualenv
on its path — any `python3` will do.
"""

import os as _os

_REAL = _os.path.join(_os.path.dirname(_os.path.dirname(_os.path.abspath(__file__))), "hooking.py")
with open(_REAL, encoding="utf-8") as _f:
    exec(compile(_f.read(), _REAL, "exec"))  # noqa: S102 - our own module, by path
del _f
