"""Hypothesis strategies shared by the fuzz tests: hostile values and document mutations."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import strategies as st

# text that may carry what parsers trip over: newlines (a trailing one slips past `$`),
# NULs, non-ASCII digits and spaces, right-to-left marks, lone surrogates
nasty_chars = st.characters(codec=None) | st.sampled_from(
    ["\n", "\r", "\0", "\t", " ", "\ud800", "\u00b2", "\u0663", "\u2007", "\u202e", "\ufeff", "\\", ":", ",", "=",
     "&", "<", "'", '"', "%", "{", "["])
nasty_text = st.text(nasty_chars, max_size=24)
suffixed = st.tuples(st.sampled_from(["web", "disk0", "512MiB", "52:54:00:12:34:56", "q35",
                                      "6c1d7b4e-0d0b-4b53-9d7b-1f2a3b4c5d01", "virtio", "/x"]),
                     st.sampled_from(["\n", " ", "\0", "\u00b2", "x", ""])).map("".join)
huge_ints = st.integers(-(2**70), 2**70) | st.sampled_from([2**63, 2**64, -(2**63) - 1, 10**30, 10**300])
scalars = st.none() | st.booleans() | st.integers() | huge_ints | st.floats() | nasty_text | suffixed
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(nasty_text | st.sampled_from(["name", "size", "path"]), inner, max_size=4),
                      max_leaves=10)


def locations(doc: Any, path: tuple = ()) -> list[tuple]:
    """Every path to a value inside `doc` (keys and list indexes), the root included."""
    out = [path]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += locations(v, path + (k,))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += locations(v, path + (i,))
    return out


def _set(doc: Any, path: tuple, value: Any) -> Any:
    if not path:
        return value
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = value
    return doc


@st.composite
def mutated(draw, base: st.SearchStrategy, max_mutations: int = 4) -> Any:
    """`base` documents with 1..max_mutations random changes: a value replaced by a hostile
    one, a key dropped, an unknown key added, a value wrapped in a list, or a mapping
    flattened to a scalar."""
    doc = json.loads(json.dumps(draw(base)))  # a private deep copy
    for _ in range(draw(st.integers(1, max_mutations))):
        path = draw(st.sampled_from(locations(doc)))
        target = doc
        for key in path:
            target = target[key]
        action = draw(st.sampled_from(["replace", "replace", "drop", "add", "wrap"]))
        if action == "replace" or (action in ("drop", "add") and not path and not isinstance(target, dict)):
            doc = _set(doc, path, draw(values))
        elif action == "drop" and path:
            parent = doc
            for key in path[:-1]:
                parent = parent[key]
            del parent[path[-1]]
        elif action == "add" and isinstance(target, dict):
            target[draw(nasty_text | st.sampled_from(["name", "slot", "bus", "extra"]))] = draw(values)
        else:
            doc = _set(doc, path, [target])
    return doc


def json_safe(doc: Any) -> bool:
    """Whether `doc` survives strict JSON (what a client can send to a daemon)."""
    try:
        json.dumps(doc, allow_nan=False)
        return True
    except (TypeError, ValueError):
        return False
