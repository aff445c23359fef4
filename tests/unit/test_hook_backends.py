"""hooks.backends: a kvmd spec edited by hooks through its domain XML (compat's converters
are pure, so no daemon is needed here; tests/integration/test_hook_examples.py starts VMs)."""

from __future__ import annotations

import asyncio
import os

import pytest

from hooks.backends import (
    HookConversionError,
    run_domxml_hooks_on_spec,
    run_domxml_hooks_on_spec_async,
)
from hooks.runner import HookConfig

pytest.importorskip("compat.domxml", reason="compat.domxml (issue 6) is not there yet")

SPEC = {"apiVersion": "kvmd/v1", "name": "bk", "uuid": "0b6c3c3e-1d2a-4b59-a7a4-5a1f0e9d8c01",
        "memory": {"size": "128MiB"}, "metadata": {"owner": "hooks"}}
ADD_ARG = ("#!/bin/sh\nsed -i 's|</domain>|<qemu:commandline xmlns:qemu=\"http://libvirt.org/schemas/"
           "domain/qemu/1.0\"><qemu:arg value=\"-no-reboot\"/></qemu:commandline></domain>|' "
           "\"$_hook_domxml\"\n")
HUGEPAGES = ("#!/bin/sh\nsed -i 's|</domain>|<memoryBacking><hugepages/></memoryBacking></domain>|' "
             "\"$_hook_domxml\"\n")


def hook(root, point, name, body):
    os.makedirs(root / point, exist_ok=True)
    path = root / point / name
    path.write_text(body)
    path.chmod(0o755)


def test_the_hooks_edit_becomes_the_spec_and_the_rest_survives(tmp_path):
    hook(tmp_path, "before_vm_start", "50_arg", ADD_ARG)
    out = asyncio.run(run_domxml_hooks_on_spec_async(
        "before_vm_start", SPEC, config=HookConfig(root=str(tmp_path), backend="kvmd")))
    assert out["qemuArgs"] == ["-no-reboot"]
    assert out["name"] == "bk" and out["uuid"] == SPEC["uuid"]
    assert out["metadata"]["owner"] == "hooks"


def test_no_script_means_no_conversion_at_all(tmp_path):
    assert run_domxml_hooks_on_spec("before_vm_start", SPEC, config=HookConfig(root=str(tmp_path))) is SPEC


def test_a_conversion_failure_at_an_ignoring_point_keeps_the_spec(tmp_path, caplog):
    hook(tmp_path, "after_vm_start", "60_hugepages", HUGEPAGES)
    out = run_domxml_hooks_on_spec("after_vm_start", SPEC, config=HookConfig(root=str(tmp_path)))
    assert out is SPEC and "cannot be run by kvmd" in caplog.text


def test_a_conversion_failure_names_the_writer_and_the_element(tmp_path):
    hook(tmp_path, "before_vm_start", "50_arg", ADD_ARG)
    hook(tmp_path, "before_vm_start", "60_hugepages", HUGEPAGES)
    with pytest.raises(HookConversionError) as e:
        run_domxml_hooks_on_spec("before_vm_start", SPEC, config=HookConfig(root=str(tmp_path)))
    assert e.value.writers == ["50_arg", "60_hugepages"] and e.value.script == "60_hugepages"
    assert "/domain/memoryBacking" in e.value.reason and "<hugepages/>" in e.value.data


def test_only_domain_xml_points_take_a_spec(tmp_path):
    with pytest.raises(ValueError, match="device"):
        run_domxml_hooks_on_spec("before_disk_hotplug", SPEC, config=HookConfig(root=str(tmp_path)))
