"""Fixtures shared by the integration tests that need two kvmd daemons ("hosts")."""

from __future__ import annotations

import os

import pytest

from tests.support.daemon import Daemon


@pytest.fixture
def pair(tmpdir_short):
    """Two real kvmd daemons (source, destination) in private dirs; both cleaned up."""
    for side in "ab":
        os.mkdir(os.path.join(tmpdir_short, side))
    src, dst = Daemon(os.path.join(tmpdir_short, "a")), Daemon(os.path.join(tmpdir_short, "b"))
    try:
        src.start()
        dst.start()
        yield src, dst
    finally:
        src.cleanup()
        dst.cleanup()
