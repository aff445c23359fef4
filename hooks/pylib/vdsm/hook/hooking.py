"""`from vdsm.hook import hooking` for hook scripts: the same helpers as `import hooking`."""

from hooking import *  # noqa: F401,F403 - re-export VDSM's helper names
from hooking import __all__  # noqa: F401
