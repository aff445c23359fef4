"""pytest fixture `libvirtd`: a private libvirtd (tests/support/libvirtd.py) per module.

Use it from a test module with

    from tests.support.libvirt_fixture import libvirtd  # noqa: F401  (the fixture)

It skips the test when libvirt-python, libvirtd/virtlogd, root or mount namespaces
are missing, and stops the daemon — destroying every domain and killing every QEMU it
started — in a finalizer, pass or fail.
"""

from __future__ import annotations

import pytest

from tests.support.libvirtd import PrivateLibvirtd, unavailable_reason


@pytest.fixture(scope="module")
def libvirtd(request):
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    lv = PrivateLibvirtd()
    request.addfinalizer(lv.stop)
    lv.start()  # a failure here is a real error, not a missing dependency
    return lv
