"""Storage helpers: qemu-img through the API, and file checks that survive hung storage."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from kvmd import errors, storage
from kvmd.client import ApiError


def test_storage_create_and_info_through_the_api(client, tmpdir_short):
    path = os.path.join(tmpdir_short, "a.qcow2")
    info = client.call("storage.create", path=path, format="qcow2", size="64MiB")
    assert info["format"] == "qcow2" and info["virtualSize"] == 64 << 20
    overlay = os.path.join(tmpdir_short, "b.qcow2")
    info = client.call("storage.create", path=overlay, backing=path)
    assert info["backingFile"] == path and info["virtualSize"] == 64 << 20
    with pytest.raises(ApiError) as exc:
        client.call("storage.create", path=path, size="1G")
    assert exc.value.code == errors.STORAGE_FAILURE and "already exists" in exc.value.message
    with pytest.raises(ApiError) as exc:
        client.call("storage.create", path=os.path.join(tmpdir_short, "c.img"), size="lots")
    assert "size" in exc.value.message


def test_a_hung_file_worker_times_out_and_is_replaced(tmpdir_short):
    async def scenario():
        worker = storage.FileWorker(timeout=0.5)
        try:
            path = os.path.join(tmpdir_short, "x")
            open(path, "w").close()
            assert await worker.call("check", [[path, True]]) == [None]
            hung = worker._proc
            os.kill(hung.pid, signal.SIGSTOP)  # what a dead NFS mount looks like from here
            with pytest.raises(errors.Timeout):
                await worker.call("check", [[path, True]])
            os.kill(hung.pid, signal.SIGCONT)
            await hung.wait()
            # a fresh worker answers the next call
            assert await worker.call("check", [[path, False], ["/nonexistent/y", False]]) == [None, "no such file: /nonexistent/y"]
            assert worker._proc is not hung
        finally:
            await worker.close()

    asyncio.run(scenario())
