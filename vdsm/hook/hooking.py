"""`from vdsm.hook import hooking`: the hook helpers of `hooks.hooking`, under VDSM's name.

Hook scripts run by the runner get a standalone copy of this path (hooks/pylib/vdsm);
this module serves code running inside the project (the vdsm endpoint, tests).
"""

from hooks.hooking import *  # noqa: F401,F403 - re-export VDSM's helper names
from hooks.hooking import __all__  # noqa: F401
