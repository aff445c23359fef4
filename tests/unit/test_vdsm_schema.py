"""The endpoint's own schema uses VDSM's verb and parameter names, exactly."""

from __future__ import annotations

import os

import pytest
import yaml

from vdsm import schema

REFERENCE = "/work/shared/reference/vdsm-api.yml"


@pytest.fixture(scope="module")
def upstream():
    if not os.path.exists(REFERENCE):
        pytest.skip("VDSM's reference schema is not on this machine")
    with open(REFERENCE) as f:
        return yaml.safe_load(f)


def test_every_verb_and_parameter_name_exists_upstream(upstream):
    ours = schema.load()
    assert len(ours) >= 30
    for name, verb in ours.items():
        assert name in upstream, f"{name} is not a VDSM verb"
        theirs = {p["name"]: p for p in upstream[name].get("params") or []}
        for p in verb.params:
            assert p.name in theirs, f"{name}: VDSM has no parameter {p.name!r}"


def test_required_parameters_are_required_upstream_too(upstream):
    for name, verb in schema.load().items():
        theirs = {p["name"]: p for p in upstream[name].get("params") or []}
        for p in verb.params:
            if not p.optional:
                assert "defaultvalue" not in theirs[p.name], f"{name}.{p.name} is optional in VDSM"


def test_the_verbs_the_engine_needs_are_all_declared():
    needed = """Host.getCapabilities Host.getStats Host.getAllVmStats Host.getVMList Host.getVMFullList
    Host.dumpxmls Host.ping2 Host.echo Host.getHardwareInfo Host.getJobs VM.create VM.destroy VM.shutdown
    VM.reset VM.pause VM.cont VM.getStats VM.getInfo VM.setTicket VM.hotplugDisk VM.hotunplugDisk
    VM.hotplugNic VM.hotunplugNic VM.updateDevice VM.setBalloonTarget VM.migrate VM.migrationCreate
    VM.getMigrationStatus VM.migrateCancel VM.snapshot VM.freeze VM.thaw""".split()
    assert sorted(set(needed) - set(schema.load())) == []


@pytest.mark.parametrize("ptype, good, bad", [
    ("uuid", "6f6c2a5e-6f4a-4bd4-9e0f-0d4b5b1f6b0a", "not-a-uuid"),
    ("uint", 5, -1),
    ("int", "7", "seven"),
    ("boolean", "true", "yes"),
    ("object", {}, []),
    ("array", [], {}),
])
def test_parameter_types_are_checked(ptype, good, bad):
    verb = schema.Verb("X.y", (schema.Param("p", ptype, False),))
    schema.check(verb, {"p": good})
    with pytest.raises(schema.ParamError) as exc:
        schema.check(verb, {"p": bad})
    assert exc.value.param == "p"
    with pytest.raises(schema.ParamError, match="Missing required parameter: p"):
        schema.check(verb, {})
