"""The out-of-process file worker behind `kvmd.storage` (run as `python -m kvmd.fileworker`).

Reads one JSON request per line on stdin (`{id, op, args}`), answers one JSON line on
stdout (`{id, result}` or `{id, error}`). It imports nothing heavy, so it starts fast,
and it may hang on a dead mount without harming the daemon, which kills it on timeout.
"""

from __future__ import annotations

import json
import os
import stat as statmod
import sys
from collections.abc import Callable
from typing import Any


def check(items: list[list[Any]], access: Callable = os.access, stat: Callable = os.stat) -> list[str | None]:
    """For each [path, need_write]: None when usable, else the reason."""
    out: list[str | None] = []
    for path, need_write in items:
        try:
            st = stat(path)
        except FileNotFoundError:
            out.append(f"no such file: {path}")
            continue
        except OSError as e:
            out.append(f"cannot access {path}: {e.strerror or e}")
            continue
        mode = st.st_mode if hasattr(st, "st_mode") else st[0]
        if statmod.S_ISDIR(mode):
            out.append(f"is a directory: {path}")
        elif not access(path, os.R_OK | (os.W_OK if need_write else 0)):
            out.append(f"not {'writable' if need_write else 'readable'}: {path}")
        else:
            out.append(None)
    return out


def statvfs(path: str, **_: Any) -> dict[str, int]:
    st = os.statvfs(path)
    return {"free": st.f_bavail * st.f_frsize, "total": st.f_blocks * st.f_frsize}


OPS: dict[str, Callable[..., Any]] = {"check": check, "statvfs": statvfs}


def main() -> None:
    for line in sys.stdin:
        try:
            req = json.loads(line)
            result = OPS[req["op"]](req["args"])
            reply = {"id": req.get("id"), "result": result}
        except Exception as e:  # report, keep serving
            reply = {"id": None, "error": f"{type(e).__name__}: {e}"}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
