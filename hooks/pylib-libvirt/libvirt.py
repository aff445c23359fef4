"""`import libvirt` for hook scripts on the libvirt backend: the real libvirt-python.

Found on the script interpreter's own path first, else in the site-packages of the
interpreter running the hooks (see pylib/_kvmd_hooks_import.py).
"""

from _kvmd_hooks_import import load_real

load_real(__name__, __file__)
