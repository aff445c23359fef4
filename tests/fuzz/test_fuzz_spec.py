"""Fuzzing VM spec documents: the parser, and a live daemon's `vm.define`.

`kvmd.spec.from_dict` must return a spec or raise SpecError whose every (path, reason)
names a place in the document; nothing else may come out, whatever the document holds
(wrong types, unknown keys, huge numbers, any unicode). YAML text goes through `loads`
the same way, YAML bombs included. A live daemon given the same documents answers each
with a result or a JSON-RPC error (never an internal error), keeps serving, and stores
only what loads back after a restart.
"""

from __future__ import annotations

import re
import time

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kvmd import errors
from kvmd.client import ApiError
from kvmd.errors import SpecError
from kvmd.spec import from_dict, loads, to_dict
from tests.fuzz.strategies import json_safe, mutated, values
from tests.unit.test_spec_roundtrip import spec_documents

FUZZ = settings(max_examples=150, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.filter_too_much])

documents = st.one_of(mutated(spec_documents()), mutated(spec_documents()), spec_documents(), values)

_STEP = re.compile(r"\[(\d+)\]")


def resolves(doc, path: str) -> bool:
    """Whether `path` (`disks[1].format`, `cpu`, `(document)`) points into `doc`: every step
    but the last must exist (the last may be a missing required key of an existing mapping).
    Keys may themselves hold '.' or '[', so every split is tried."""
    if path == "(document)":
        return True
    if not path:
        return False
    if doc is None:  # an absent section: read as an empty mapping
        doc = {}
    if isinstance(doc, list):
        m = _STEP.match(path)
        if not m or int(m.group(1)) >= len(doc):
            return False
        rest = path[m.end():]
        return not rest or resolves(doc[int(m.group(1))], rest[1:] if rest.startswith(".") else rest)
    if not isinstance(doc, dict):
        return False
    for key in doc:
        for k in {str(key), repr(key)}:  # odd keys are quoted in paths
            if path == k:
                return True
            if path.startswith(k) and path[len(k)] in ".[":
                rest = path[len(k):]
                if resolves(doc[key], rest[1:] if rest[0] == "." else rest):
                    return True
    # a key that is absent: fine as the last step only ("is required")
    return not any(c in path for c in ".[")


def check_parse(doc) -> None:
    try:
        spec = from_dict(doc)
    except SpecError as e:
        assert e.problems, "a SpecError lists its problems"
        for path, reason in e.problems:
            assert isinstance(path, str) and isinstance(reason, str) and reason
            assert resolves(doc, path), f"problem path {path!r} ({reason}) is not in the document {doc!r}"
        return
    # what parses dumps back to something that parses equal (the definition store relies on it)
    assert from_dict(to_dict(spec)) == spec


@FUZZ
@given(documents)
def test_from_dict_returns_a_spec_or_spec_errors_that_point_into_the_document(doc):
    check_parse(doc)


@FUZZ
@given(documents, st.sampled_from(["json", "yaml", "flow"]))
def test_loads_of_any_text_returns_a_spec_or_a_spec_error(doc, style):
    try:
        if style == "json":
            import json
            text = json.dumps(doc)
        else:
            text = yaml.safe_dump(doc, default_flow_style=style == "flow", allow_unicode=True)
    except (TypeError, ValueError, yaml.YAMLError):
        return
    try:
        loads(text)
    except SpecError:
        pass


BOMB = """name: bomb
metadata:
  a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]
  b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]
  c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]
  d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]
  e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]
  f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]
  g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f, *f]
  h: &h [*g, *g, *g, *g, *g, *g, *g, *g, *g, *g]
  i: &i [*h, *h, *h, *h, *h, *h, *h, *h, *h, *h]
"""


def test_yaml_bombs_deep_nesting_and_giant_numbers_are_refused_quickly():
    cases = {
        BOMB: "metadata: too large",
        "name: a\nmetadata: " + "[" * 3000 + "]" * 3000: "nested too deeply",
        "name: a\nmetadata: {x: " + "1" * 5000 + "}": "(document): not valid YAML/JSON",
        "name: a\nmemory: {size: 0x" + "f" * 4000 + "}": "memory.size: must be at most",
        "name: a\nmemory: {size: '" + "9" * 4000 + "MiB'}": "memory.size: is too large",
        "name: a\ncpu: {count: 2, sockets: 0x" + "f" * 400 + "}": "cpu.sockets: must be at most",
        'name: "a\\n"': "name: must be",
        'name: a\nuuid: "6c1d7b4e-0d0b-4b53-9d7b-1f2a3b4c5d01\\n"': "uuid: must be a UUID",
        'name: a\nnics: [{mac: "52:54:00:12:34:56\\n"}]': "nics[0].mac: must be",
        "name: a\nmemory: {size: 1\u0663MiB}": "memory.size:",
    }
    for text, words in cases.items():
        started = time.monotonic()
        try:
            loads(text)
            raise AssertionError(f"accepted: {text[:80]!r}")
        except SpecError as e:
            assert words in str(e), (text[:80], str(e)[:300])
        assert time.monotonic() - started < 5, f"took {time.monotonic() - started:.1f}s: {text[:80]!r}"


def test_fuzzed_specs_sent_to_a_live_daemon_get_answers_and_it_keeps_serving(daemon):
    c = daemon.client()
    defined: dict[str, dict] = {}
    codes: dict[int, int] = {}

    @settings(FUZZ, max_examples=100)
    @given(documents, st.booleans())
    def define(doc, as_text):
        if not json_safe(doc):
            return
        spec = yaml.safe_dump(doc, allow_unicode=True) if as_text and isinstance(doc, dict) else doc
        try:
            info = c.call("vm.define", spec=spec)
        except ApiError as e:
            codes[e.code] = codes.get(e.code, 0) + 1
            assert e.code in (errors.INVALID_SPEC, errors.ALREADY_EXISTS, errors.INVALID_PARAMS), \
                f"{e.code}: {e.message[:300]} for {doc!r:.300}"
            return
        defined[info["name"]] = info

    define()
    define_bomb = None
    try:
        c.call("vm.define", spec=BOMB)
    except ApiError as e:
        define_bomb = e.code
    assert define_bomb == errors.INVALID_SPEC
    assert daemon.proc.poll() is None, daemon.log()
    listed = {vm["name"]: vm["uuid"] for vm in c.call("vm.list")}
    assert listed == {n: i["uuid"] for n, i in defined.items()}
    assert "Traceback" not in daemon.log() and "internal error" not in daemon.log()
    # everything stored loads back after a restart
    daemon.restart()
    c = daemon.client()
    assert {vm["name"]: vm["uuid"] for vm in c.call("vm.list")} == listed
    assert c.call("host.info")["loadProblems"] == []
