"""What the QEMU binary on this host can do, probed once per binary and cached.

Options are gated on the real binary (DESIGN.md: `-runas` became `-run-with user=`,
`-sandbox` is optional at build time), never on guesses. The probe runs `-version` and
`-help` (a few ms) and is cached per (path, mtime) for the daemon's lifetime.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
from dataclasses import dataclass


@dataclass(frozen=True)
class QemuCaps:
    binary: str
    version: tuple[int, int, int]
    version_text: str
    sandbox: bool
    spice: bool
    run_with: bool
    runas: bool
    kvm_device: bool

    def to_json(self) -> dict:
        return {
            "binary": self.binary,
            "version": ".".join(map(str, self.version)),
            "versionText": self.version_text,
            "sandbox": self.sandbox,
            "spice": self.spice,
            "kvmDevice": self.kvm_device,
        }


class ProbeError(RuntimeError):
    pass


def find_binary(name: str = "qemu-system-x86_64") -> str:
    path = name if os.path.isabs(name) else shutil.which(name)
    if not path or not os.access(path, os.X_OK):
        raise ProbeError(f"QEMU binary {name!r} not found (install Debian's qemu-system-x86)")
    return path


@functools.lru_cache(maxsize=8)
def _probe(path: str, mtime: float) -> QemuCaps:
    def run(*args: str) -> str:
        try:
            return subprocess.run([path, *args], capture_output=True, text=True, timeout=30,
                                  check=True).stdout
        except (OSError, subprocess.SubprocessError) as e:
            raise ProbeError(f"cannot run {path} {' '.join(args)}: {e}") from e

    vtext = run("-version").splitlines()[0].strip()
    m = re.search(r"version (\d+)\.(\d+)\.(\d+)", vtext)
    version = tuple(int(x) for x in m.groups()) if m else (0, 0, 0)
    help_text = run("-help")
    return QemuCaps(
        binary=path,
        version=version,  # type: ignore[arg-type]
        version_text=vtext,
        sandbox="-sandbox" in help_text,
        spice="-spice" in help_text,
        run_with="-run-with" in help_text,
        runas="-runas" in help_text,
        kvm_device=os.access("/dev/kvm", os.R_OK | os.W_OK),
    )


def probe(name: str = "qemu-system-x86_64") -> QemuCaps:
    path = find_binary(name)
    return _probe(path, os.stat(path).st_mtime)
