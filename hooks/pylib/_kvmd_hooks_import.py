"""Import support for the `libvirt` modules the runner gives hook scripts.

Hook scripts may run under a `python3` other than the one running kvmd. The runner passes
the package folders of its own interpreter (the folder holding `compat`, its
site-packages) in `_kvmd_hooks_syspath`; these helpers use them only as a fallback, after
the script interpreter's own `sys.path`.
"""

import importlib.machinery
import importlib.util
import os
import sys

SYSPATH_ENV = "_kvmd_hooks_syspath"


def extra_paths():
    return [p for p in os.environ.get(SYSPATH_ENV, "").split(os.pathsep) if p]


def add_syspath():
    """Append the runner interpreter's package folders to sys.path (lowest priority)."""
    for p in extra_paths():
        if p not in sys.path:
            sys.path.append(p)


def load_real(name, shim_file):
    """Import the real module `name` (e.g. libvirt-python's `libvirt`) in place of the shim.

    Searches this interpreter's sys.path minus the shim's folder, then the runner's
    package folders; the module found replaces the shim in sys.modules.
    """
    here = os.path.dirname(os.path.abspath(shim_file))
    own = [p for p in sys.path if os.path.abspath(p or os.curdir) != here]
    for paths in (own, extra_paths()):
        spec = importlib.machinery.PathFinder.find_spec(name, paths)
        if spec is not None:
            break
    else:
        raise ImportError(f"No module named {name!r} (libvirt-python is not installed "
                          f"for {sys.executable})", name=name)
    folder = os.path.dirname(spec.origin or "")
    if folder and folder not in sys.path:
        sys.path.append(folder)  # libvirt.py imports its C module, libvirtmod, from there
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module
