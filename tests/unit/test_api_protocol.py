"""JSON-RPC 2.0 framing and parameter binding: good requests, every kind of bad one."""

from __future__ import annotations

import asyncio
import json

import pytest

from kvmd import errors
from kvmd.api import protocol
from kvmd.api.methods import Methods, bind
from kvmd.api.protocol import Request, parse_line
from kvmd.errors import InvalidParams, MethodNotFound


def one(line: str | bytes):
    items, is_batch = parse_line(line if isinstance(line, bytes) else line.encode())
    assert not is_batch
    [item] = items
    return item


def error_of(item) -> tuple[object, int, str]:
    assert isinstance(item, dict), item
    assert item["jsonrpc"] == "2.0"
    return item["id"], item["error"]["code"], item["error"]["message"]


# -- parse_line ---------------------------------------------------------------------


def test_request_with_named_params():
    req = one('{"jsonrpc": "2.0", "method": "vm.start", "params": {"name": "a"}, "id": 7}')
    assert req == Request(method="vm.start", params={"name": "a"}, id=7, is_notification=False)


def test_request_with_string_id_and_positional_params():
    req = one('{"jsonrpc": "2.0", "method": "vm.start", "params": ["a", true], "id": "x-1"}')
    assert req == Request(method="vm.start", params=["a", True], id="x-1", is_notification=False)


def test_request_without_params_gets_empty_params():
    assert one('{"jsonrpc": "2.0", "method": "vm.list", "id": 1}').params == {}


def test_request_with_null_id_is_not_a_notification():
    req = one('{"jsonrpc": "2.0", "method": "vm.list", "id": null}')
    assert req.id is None and req.is_notification is False


def test_request_without_id_is_a_notification():
    req = one('{"jsonrpc": "2.0", "method": "vm.list"}')
    assert req.is_notification is True and req.id is None


def test_trailing_newline_and_whitespace_are_fine():
    assert one(b'  {"jsonrpc":"2.0","method":"vm.list","id":1}\r\n').method == "vm.list"


def test_batch_yields_one_item_per_member_in_order():
    items, is_batch = parse_line(json.dumps([
        {"jsonrpc": "2.0", "method": "vm.list", "id": 1},
        {"jsonrpc": "2.0", "method": "vm.info", "params": {"name": "a"}},
        {"jsonrpc": "1.0", "method": "vm.list", "id": 3},
        5,
    ]).encode())
    assert is_batch
    assert items[0] == Request("vm.list", {}, 1, False)
    assert items[1] == Request("vm.info", {"name": "a"}, None, True)
    assert error_of(items[2])[:2] == (3, errors.INVALID_REQUEST)
    assert error_of(items[3]) == (None, errors.INVALID_REQUEST, "invalid request: not an object")


def test_empty_batch_is_a_single_invalid_request():
    items, is_batch = parse_line(b"[]")
    assert not is_batch
    [item] = items
    assert error_of(item) == (None, errors.INVALID_REQUEST, "invalid request: empty batch")


@pytest.mark.parametrize("line", [b"{", b"not json", b'{"jsonrpc": "2.0",}', b"", b"\xff\xfe{}"])
def test_text_that_is_not_json_is_a_parse_error(line):
    id_, code, message = error_of(one(line))
    assert (id_, code) == (None, errors.PARSE_ERROR)
    assert message.startswith("parse error: ")


@pytest.mark.parametrize("obj", ['"hello"', "42", "null", "true"])
def test_json_that_is_not_an_object_is_an_invalid_request(obj):
    assert error_of(one(obj)) == (None, errors.INVALID_REQUEST, "invalid request: not an object")


@pytest.mark.parametrize("version", ['"1.0"', "2.0", "null", None])
def test_wrong_or_missing_jsonrpc_version_is_an_invalid_request(version):
    body = '"method": "vm.list", "id": 9'
    line = "{" + (f'"jsonrpc": {version}, ' if version else "") + body + "}"
    assert error_of(one(line)) == (9, errors.INVALID_REQUEST, 'invalid request: jsonrpc must be "2.0"')


@pytest.mark.parametrize("method", ['""', "5", "null", '["vm.list"]'])
def test_method_must_be_a_non_empty_string(method):
    assert error_of(one(f'{{"jsonrpc": "2.0", "method": {method}, "id": 2}}')) == (
        2, errors.INVALID_REQUEST, "invalid request: method must be a non-empty string")


def test_missing_method_is_an_invalid_request():
    assert error_of(one('{"jsonrpc": "2.0", "id": 2}'))[:2] == (2, errors.INVALID_REQUEST)


@pytest.mark.parametrize("bad_id", ["true", "[1]", '{"a": 1}'])
def test_id_of_the_wrong_type_is_an_invalid_request_answered_with_null_id(bad_id):
    assert error_of(one(f'{{"jsonrpc": "2.0", "method": "vm.list", "id": {bad_id}}}')) == (
        None, errors.INVALID_REQUEST, "invalid request: id must be a string, number or null")


@pytest.mark.parametrize("bad_id", ["[1]", '{"a": 1}'])
def test_an_invalid_id_is_never_echoed_back(bad_id):
    for body in (f'{{"jsonrpc": "1.0", "method": "vm.list", "id": {bad_id}}}',
                 f'{{"jsonrpc": "2.0", "id": {bad_id}}}',
                 f'{{"jsonrpc": "2.0", "method": "vm.list", "params": 3, "id": {bad_id}}}'):
        assert error_of(one(body))[:2] == (None, errors.INVALID_REQUEST), body


@pytest.mark.parametrize("params", ['"name"', "5", "true", "null"])
def test_params_must_be_an_object_or_array(params):
    assert error_of(one(f'{{"jsonrpc": "2.0", "method": "vm.info", "params": {params}, "id": 4}}')) == (
        4, errors.INVALID_REQUEST, "invalid request: params must be an object or array")


def test_encode_is_one_compact_line():
    data = protocol.encode(protocol.result_response(1, {"a": [1, 2]}))
    assert data == b'{"jsonrpc":"2.0","id":1,"result":{"a":[1,2]}}\n'
    assert protocol.encode(protocol.notification("event", {"x": 1})) == \
        b'{"jsonrpc":"2.0","method":"event","params":{"x":1}}\n'


def test_error_response_carries_data_only_when_given():
    assert protocol.error_response(1, -1, "m") == {"jsonrpc": "2.0", "id": 1, "error": {"code": -1, "message": "m"}}
    assert protocol.error_response(1, -1, "m", {"k": 1})["error"]["data"] == {"k": 1}


# -- methods.bind -------------------------------------------------------------------
# Handlers with the shapes of the real ones, so these tests do not move when methods are added.


async def h_start(name: str, paused: bool = False) -> dict:
    return {}


async def h_shutdown(name: str, timeout: float | None = None, wait: bool = True) -> dict:
    return {}


async def h_define(spec: dict | str) -> dict:
    return {}


async def h_list() -> list:
    return []


def test_named_params_bind_as_given():
    assert bind(h_start, "vm.start", {"name": "a", "paused": True}) == {"name": "a", "paused": True}
    assert bind(h_start, "vm.start", {"name": "a"}) == {"name": "a"}


def test_missing_param_is_reported_by_name():
    with pytest.raises(InvalidParams) as exc:
        bind(h_start, "vm.start", {"paused": True})
    assert exc.value.code == errors.INVALID_PARAMS
    assert exc.value.message == "vm.start: missing parameter 'name'"
    assert exc.value.data == {"param": "name"}


def test_unknown_param_is_reported_by_name():
    with pytest.raises(InvalidParams) as exc:
        bind(h_start, "vm.start", {"name": "a", "force": True})
    assert exc.value.message == "vm.start: unknown parameter 'force'"
    assert exc.value.data == {"param": "force"}


def test_bool_where_str_expected_is_refused():
    with pytest.raises(InvalidParams) as exc:
        bind(h_start, "vm.start", {"name": True})
    assert exc.value.message == "vm.start: parameter 'name' must be str"
    assert exc.value.data == {"param": "name"}


@pytest.mark.parametrize("value", ["yes", "true", 1, 0, None])
def test_non_bool_where_bool_expected_is_refused(value):
    with pytest.raises(InvalidParams, match=r"^vm.start: parameter 'paused' must be bool$"):
        bind(h_start, "vm.start", {"name": "a", "paused": value})


def test_float_param_takes_ints_floats_and_null_but_not_strings_or_bools():
    for ok in (5, 2.5, None):
        assert bind(h_shutdown, "vm.shutdown", {"name": "a", "timeout": ok})["timeout"] == ok
    for bad in ("5", True):
        with pytest.raises(InvalidParams, match=r"parameter 'timeout' must be float or int or null"):
            bind(h_shutdown, "vm.shutdown", {"name": "a", "timeout": bad})


def test_union_param_takes_either_type():
    assert bind(h_define, "vm.define", {"spec": {"name": "a"}}) == {"spec": {"name": "a"}}
    assert bind(h_define, "vm.define", {"spec": "name: a"}) == {"spec": "name: a"}
    with pytest.raises(InvalidParams, match=r"parameter 'spec' must be dict or str"):
        bind(h_define, "vm.define", {"spec": ["name", "a"]})


def test_positional_params_bind_in_signature_order():
    assert bind(h_start, "vm.start", ["a", True]) == {"name": "a", "paused": True}
    assert bind(h_shutdown, "vm.shutdown", ["a", 30]) == {"name": "a", "timeout": 30}


def test_too_many_positional_params_are_refused():
    with pytest.raises(InvalidParams, match=r"^vm.start: takes at most 2 parameters, got 3$"):
        bind(h_start, "vm.start", ["a", True, "extra"])


def test_positional_params_are_type_checked_and_may_be_missing():
    with pytest.raises(InvalidParams, match=r"parameter 'paused' must be bool"):
        bind(h_start, "vm.start", ["a", "yes"])
    with pytest.raises(InvalidParams, match=r"missing parameter 'name'"):
        bind(h_start, "vm.start", [])


def test_method_without_params_accepts_only_empty_params():
    assert bind(h_list, "vm.list", {}) == {}
    assert bind(h_list, "vm.list", []) == {}
    with pytest.raises(InvalidParams, match="unknown parameter 'x'"):
        bind(h_list, "vm.list", {"x": 1})
    with pytest.raises(InvalidParams, match="takes at most 0 parameters, got 1"):
        bind(h_list, "vm.list", [1])


# -- the real method table ----------------------------------------------------------


class FakeManager:
    def __init__(self):
        self.calls = []

    async def start(self, name, paused=False):
        self.calls.append(("start", name, paused))
        return {"name": name, "state": "paused" if paused else "running"}

    async def pause(self, name):
        self.calls.append(("pause", name))
        return {"name": name, "state": "paused"}


@pytest.fixture
def methods():
    return Methods(FakeManager())  # type: ignore[arg-type]


def test_real_start_method_checks_its_params(methods):
    start = methods.table["vm.start"]
    assert bind(start, "vm.start", ["a", True]) == {"name": "a", "paused": True}
    with pytest.raises(InvalidParams, match="missing parameter 'name'"):
        bind(start, "vm.start", {})
    with pytest.raises(InvalidParams, match="parameter 'paused' must be bool"):
        bind(start, "vm.start", {"name": "a", "paused": "no"})


def test_call_dispatches_bound_params_to_the_manager(methods):
    result = asyncio.run(methods.call("vm.start", {"name": "a", "paused": True}))
    assert result == {"name": "a", "state": "paused"}
    asyncio.run(methods.call("vm.pause", ["b"]))
    assert methods.manager.calls == [("start", "a", True), ("pause", "b")]


def test_call_with_bad_params_never_reaches_the_manager(methods):
    with pytest.raises(InvalidParams):
        asyncio.run(methods.call("vm.start", {"name": 5}))
    assert methods.manager.calls == []


def test_call_of_an_unknown_method_is_method_not_found(methods):
    with pytest.raises(MethodNotFound) as exc:
        asyncio.run(methods.call("vm.explode", {}))
    assert exc.value.code == errors.METHOD_NOT_FOUND
    assert exc.value.data == {"method": "vm.explode"}


def test_method_names_are_sorted_and_include_the_lifecycle_verbs(methods):
    names = methods.names()
    assert names == sorted(names)
    assert {"vm.define", "vm.undefine", "vm.create", "vm.start", "vm.pause", "vm.resume", "vm.reset",
            "vm.shutdown", "vm.destroy", "vm.list", "vm.info", "host.info"} <= set(names)
