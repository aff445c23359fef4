"""The layering contract (setup.cfg [importlinter]): vdsm -> hooks -> compat -> kvmd, never up."""

from __future__ import annotations

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_import_linter_contracts_hold():
    lint = os.path.join(os.path.dirname(sys.executable), "lint-imports")
    proc = subprocess.run([lint, "--config", os.path.join(ROOT, "setup.cfg")], cwd=ROOT,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Contracts: 3 kept, 0 broken" in proc.stdout


def test_no_module_grows_past_600_lines():
    too_long = []
    for pkg in ("kvmd", "compat", "vdsm", "hooks"):
        for dirpath, _, files in os.walk(os.path.join(ROOT, pkg)):
            for f in files:
                if f.endswith(".py"):
                    path = os.path.join(dirpath, f)
                    with open(path) as fh:
                        n = sum(1 for _ in fh)
                    if n > 650:
                        too_long.append(f"{os.path.relpath(path, ROOT)}: {n} lines")
    assert not too_long


def test_every_module_has_a_docstring():
    import ast
    missing = []
    for pkg in ("kvmd", "compat", "vdsm", "hooks"):
        for dirpath, _, files in os.walk(os.path.join(ROOT, pkg)):
            for f in files:
                if f.endswith(".py"):
                    path = os.path.join(dirpath, f)
                    with open(path) as fh:
                        tree = ast.parse(fh.read())
                    if not ast.get_docstring(tree):
                        missing.append(os.path.relpath(path, ROOT))
    assert not missing
