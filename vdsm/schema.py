"""The endpoint's API schema (vdsm/api/schema.yml): load it, check requests against it.

A request with a missing or mistyped parameter is refused with VDSM's code 11 ("missing
parameter" family) naming the parameter; an unknown parameter is tolerated, as VDSM
does, since engines of different versions send extra keys.
"""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass
from typing import Any

import yaml

SCHEMA_PATH = os.path.join(os.path.dirname(__file__), "api", "schema.yml")
UUID_RE = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")

_CHECKS = {
    "string": lambda v: isinstance(v, str),
    "int": lambda v: isinstance(v, int) and not isinstance(v, bool) or _intlike(v),
    "uint": lambda v: (isinstance(v, int) and not isinstance(v, bool) and v >= 0) or (_intlike(v) and int(v) >= 0),
    "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool) or v in ("true", "false", "True", "False"),
    "uuid": lambda v: isinstance(v, str) and bool(UUID_RE.match(v)),
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "any": lambda v: True,
}


def _intlike(v: Any) -> bool:
    """VDSM's engine sometimes sends numbers as strings ("5")."""
    return isinstance(v, str) and v.lstrip("-").isdigit()


@dataclass(frozen=True)
class Param:
    name: str
    type: str
    optional: bool


@dataclass(frozen=True)
class Verb:
    name: str
    params: tuple[Param, ...]
    doc: str = ""


class ParamError(Exception):
    def __init__(self, message: str, param: str):
        super().__init__(message)
        self.param = param


@functools.lru_cache(maxsize=1)
def load(path: str = SCHEMA_PATH) -> dict[str, Verb]:
    with open(path, encoding="utf-8") as f:
        doc = yaml.safe_load(f)
    verbs = {}
    for name, body in (doc.get("verbs") or {}).items():
        body = body or {}
        params = tuple(Param(p, spec["type"], bool(spec.get("optional", False)))
                       for p, spec in (body.get("params") or {}).items())
        for p in params:
            if p.type not in _CHECKS:
                raise ValueError(f"schema: {name}.{p.name}: unknown type {p.type}")
        verbs[name] = Verb(name, params, body.get("doc", ""))
    return verbs


def check(verb: Verb, params: dict[str, Any]) -> None:
    for p in verb.params:
        if p.name not in params or params[p.name] is None:
            if not p.optional:
                raise ParamError(f"Missing required parameter: {p.name}", p.name)
            continue
        if not _CHECKS[p.type](params[p.name]):
            raise ParamError(f"Invalid parameter {p.name}: expected {p.type}", p.name)
