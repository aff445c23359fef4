"""Storage helpers that never block the daemon: out-of-process file checks, qemu-img.

A hung NFS mount must not freeze kvmd's event loop, so file system calls on VM storage
(exists, access, stat) run in a separate process with a timeout: VDSM's `ioprocess`
when it is importable, else kvmd's own worker (`python -m kvmd.fileworker`, line-framed
JSON over pipes). A call that times out kills the worker (a fresh one starts on the next
call) and fails with StorageFailure naming the path. Image creation and inspection run
`qemu-img` as an asyncio subprocess, also with timeouts.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import sys
from typing import Any

from kvmd.errors import StorageFailure, Timeout

try:  # VDSM's out-of-process file I/O, when installed
    from ioprocess import IOProcess  # type: ignore[import-not-found]
except ImportError:  # pragma: no cover - not on PyPI; the fallback below is used
    IOProcess = None

DEFAULT_TIMEOUT = 10.0
QEMU_IMG_TIMEOUT = 300.0


class FileWorker:
    """One long-lived helper process doing file system calls on kvmd's behalf."""

    def __init__(self, timeout: float = DEFAULT_TIMEOUT):
        self.timeout = timeout
        self._proc: asyncio.subprocess.Process | None = None
        self._lock = asyncio.Lock()
        self._ids = itertools.count(1)

    async def _ensure(self) -> asyncio.subprocess.Process:
        if self._proc is None or self._proc.returncode is not None:
            self._proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "kvmd.fileworker",
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.DEVNULL, start_new_session=True)
        return self._proc

    async def call(self, op: str, args: Any, timeout: float | None = None) -> Any:
        timeout = self.timeout if timeout is None else timeout
        async with self._lock:
            proc = await self._ensure()
            assert proc.stdin is not None and proc.stdout is not None
            req = {"id": next(self._ids), "op": op, "args": args}
            try:
                proc.stdin.write(json.dumps(req).encode() + b"\n")
                await proc.stdin.drain()
                line = await asyncio.wait_for(proc.stdout.readline(), timeout)
            except asyncio.TimeoutError:
                self.kill()
                raise Timeout(f"storage: {op} on {args!r} did not finish within {timeout:g}s "
                              "(hung storage?); the worker was restarted") from None
            except (ConnectionError, OSError) as e:
                self.kill()
                raise StorageFailure(f"storage worker failed: {e}") from None
            if not line:
                self.kill()
                raise StorageFailure("storage worker exited unexpectedly")
            reply = json.loads(line)
            if "error" in reply:
                raise StorageFailure(reply["error"])
            return reply["result"]

    def kill(self) -> None:
        if self._proc is not None and self._proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self._proc.kill()
        self._proc = None

    async def close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(proc.wait(), 2)


class IOProcessFiles:
    """The same calls through VDSM's ioprocess (used when it is installed)."""

    def __init__(self, timeout: float = DEFAULT_TIMEOUT):
        self._io = IOProcess(timeout=timeout)

    async def call(self, op: str, args: Any, timeout: float | None = None) -> Any:
        from kvmd import fileworker

        def run() -> Any:
            return fileworker.OPS[op](args, access=self._io.access, stat=self._io.stat)
        try:
            return await asyncio.get_running_loop().run_in_executor(None, run)
        except Exception as e:
            raise StorageFailure(f"storage: {op} failed: {e}") from None

    async def close(self) -> None:
        self._io.close()


_files: FileWorker | IOProcessFiles | None = None


def files() -> FileWorker | IOProcessFiles:
    global _files
    if _files is None:
        _files = IOProcessFiles() if IOProcess is not None else FileWorker()
    return _files


async def close() -> None:
    global _files
    if _files is not None:
        await _files.close()
        _files = None


async def check_paths(items: list[tuple[str, str, bool]]) -> list[tuple[str, str]]:
    """[(field, path, need_write)] -> [(field, reason)] for each path that is unusable."""
    if not items:
        return []
    results = await files().call("check", [[p, w] for _, p, w in items])
    return [(field, reason) for (field, _, _), reason in zip(items, results) if reason]


async def _qemu_img(*args: str, timeout: float = QEMU_IMG_TIMEOUT) -> str:
    proc = await asyncio.create_subprocess_exec(
        "qemu-img", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()
        raise Timeout(f"qemu-img {args[0]} timed out after {timeout:g}s") from None
    if proc.returncode != 0:
        raise StorageFailure(f"qemu-img {args[0]} failed: {err.decode(errors='replace').strip()}")
    return out.decode()


async def create_image(path: str, fmt: str, size: int | None, backing: str | None = None,
                       backing_fmt: str | None = None) -> dict[str, Any]:
    """Create an image file with qemu-img; refuse to overwrite an existing file."""
    if fmt not in ("qcow2", "raw"):
        raise StorageFailure(f"format must be qcow2 or raw, not {fmt!r}")
    exists = await files().call("check", [[path, False]])
    if exists[0] is None:
        raise StorageFailure(f"{path} already exists", {"path": path})
    args = ["create", "-q", "-f", fmt]
    if backing:
        args += ["-b", backing, "-F", backing_fmt or "qcow2"]
    args.append(path)
    if size is not None:
        args.append(str(size))
    await _qemu_img(*args)
    return await image_info(path)


async def image_info(path: str) -> dict[str, Any]:
    """`qemu-img info` of an image (format, virtual and actual size, backing file)."""
    info = json.loads(await _qemu_img("info", "--output=json", "-U", path, timeout=DEFAULT_TIMEOUT))
    return {"path": path, "format": info.get("format"), "virtualSize": info.get("virtual-size"),
            "actualSize": info.get("actual-size"), "backingFile": info.get("backing-filename"),
            "dirty": info.get("dirty-flag", False)}


def api_methods(m: Any) -> dict[str, Any]:
    from kvmd.units import parse_size

    async def create(path: str, format: str = "qcow2", size: str | int | None = None,
                     backing: str | None = None) -> dict:
        if not os.path.isabs(path):
            raise StorageFailure("path must be absolute", {"path": path})
        try:
            nbytes = None if size is None else parse_size(size)
        except ValueError as e:
            raise StorageFailure(f"size: {e}") from None
        if nbytes is None and not backing:
            raise StorageFailure("size is required unless a backing file is given")
        return await create_image(path, format, nbytes, backing)

    async def info(path: str) -> dict:
        return await image_info(path)

    return {"storage.create": create, "storage.info": info}
