"""Safe XML parsing and the bookkeeping that makes "never silently dropped" checkable.

Untrusted XML (from the engine, from hooks, from files) is parsed by lxml with entity
resolution, DTD loading and network access off, and any DOCTYPE is refused outright:
libvirt's domain XML never has one, so refusing costs nothing and rules out entity
tricks (billion laughs, external entities) whatever the parser version does.

`Node` wraps one element while a converter reads it. Each attribute, child and text is
either *consumed* (turned into a spec field), *kept* (accepted and carried unchanged for
the round trip), *taken* (consumed by a handler that stores its own leftovers) or
*dropped* (runtime data such as `<address>`, documented). `Node.template()` first checks
that nothing was left unhandled — the first leftover raises `UnsupportedXML` with its
path — then returns what is left of the element: the "template" that `merge()` lays back
over the element the emitter regenerates from the spec.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from typing import Any

from lxml import etree

from compat.errors import MalformedXML, UnsupportedXML

_PARSER_OPTS = dict(resolve_entities=False, no_network=True, load_dtd=False, dtd_validation=False,
                    huge_tree=False, remove_blank_text=False)

# libvirt's memory units (docs: formatdomain "Memory Allocation"); case matters there.
UNITS = {
    "b": 1, "bytes": 1,
    "KB": 10**3, "k": 1 << 10, "KiB": 1 << 10,
    "MB": 10**6, "M": 1 << 20, "MiB": 1 << 20,
    "GB": 10**9, "G": 1 << 30, "GiB": 1 << 30,
    "TB": 10**12, "T": 1 << 40, "TiB": 1 << 40,
    "PB": 10**15, "P": 1 << 50, "PiB": 1 << 50,
    "EB": 10**18, "E": 1 << 60, "EiB": 1 << 60,
}


def parse(text: str | bytes, root: str | None = None) -> etree._Element:
    """Parse untrusted XML safely; refuse DOCTYPEs and entity references."""
    if isinstance(text, str):
        if text.lstrip().startswith("<?xml"):
            text = _strip_decl(text)
        text = text.encode("utf-8")
    parser = etree.XMLParser(**_PARSER_OPTS)
    try:
        tree = etree.fromstring(text, parser).getroottree()
    except etree.XMLSyntaxError as e:
        raise MalformedXML(str(e).splitlines()[0] if str(e) else "not well-formed XML") from None
    if tree.docinfo.doctype or tree.docinfo.internalDTD is not None:
        raise MalformedXML("a DOCTYPE is not allowed (no DTDs, no entities)")
    el = tree.getroot()
    for node in el.iter():
        if isinstance(node, etree._Entity):
            raise MalformedXML(f"entity reference {node.text} is not allowed")
    if root is not None and el.tag != root:
        raise UnsupportedXML("/" + qname(el), f"the document element must be <{root}>")
    return el


def _strip_decl(text: str) -> str:
    """lxml refuses str input with an encoding declaration; the text is already decoded."""
    end = text.find("?>")
    return text[end + 2:] if end >= 0 else text


def qname(el: Any) -> str:
    """`prefix:local` (or `local`) of an element, for messages and paths."""
    q = etree.QName(el)
    return f"{el.prefix}:{q.localname}" if el.prefix else q.localname


def elements(el: etree._Element, tag: str | None = None) -> list[etree._Element]:
    """Child elements (no comments / processing instructions), optionally of one tag."""
    return [c for c in el if isinstance(c.tag, str) and (tag is None or c.tag == tag)]


def to_string(el: etree._Element) -> str:
    el = copy.deepcopy(el)
    etree.cleanup_namespaces(el)
    return etree.tostring(el, encoding="unicode")


def from_string(text: str) -> etree._Element:
    return parse(text)


def memory_bytes(node: Node, default_unit: str = "KiB") -> int:
    """The size of a libvirt memory element (`<memory unit='MiB'>512</memory>`) in bytes."""
    unit = node.attr("unit", default_unit)
    if unit not in UNITS:
        raise UnsupportedXML(node.path, "must be one of " + ", ".join(UNITS), "unit", unit)
    text = node.text()
    if not is_number(text):
        raise UnsupportedXML(node.path, f"{text[:40]!r} is not a whole number of {unit}")
    return int(text) * UNITS[unit]


def is_number(text: str, max_digits: int = 24) -> bool:
    """A plain decimal number: ASCII digits only (str.isdigit() also takes '²', which int()
    refuses), and not so long that int() would be slow or refuse it."""
    return text.isascii() and text.isdigit() and len(text) <= max_digits


CONSUMED, KEPT, TAKEN, DROPPED = "consumed", "kept", "taken", "dropped"


class Node:
    """One element being converted, with what has been done to each of its parts."""

    def __init__(self, el: etree._Element, path: str):
        self.el = el
        self.path = path
        self._attrs: dict[str, str] = {}  # attribute -> CONSUMED | KEPT
        # id(child) -> (state, Node); `_held` keeps each child's lxml proxy alive, so
        # that its id() stays its own (lxml frees and re-creates unreferenced proxies)
        self._kids: dict[int, tuple[str, Node | None]] = {}
        self._held: list[etree._Element] = []
        self._text: str | None = None  # CONSUMED | KEPT

    @classmethod
    def root(cls, el: etree._Element) -> Node:
        return cls(el, "/" + qname(el))

    # -- attributes ------------------------------------------------------------------

    def attr(self, name: str, default: Any = None, choices: Iterable[str] | None = None,
             keep: bool = False) -> Any:
        value = self.el.get(name)
        if value is None:
            return default
        if choices is not None:
            choices = list(choices)
            if value not in choices:
                self.fail_attr(name, "must be one of " + ", ".join(choices))
        self._attrs[name] = KEPT if keep else CONSUMED
        return value

    def int_attr(self, name: str, default: int | None = None, minimum: int | None = None,
                 keep: bool = False) -> int | None:
        value = self.attr(name, None, keep=keep)
        if value is None:
            return default
        try:
            n = int(value, 0)
        except ValueError:
            self.fail_attr(name, "must be an integer")
        if minimum is not None and n < minimum:
            self.fail_attr(name, f"must be at least {minimum}")
        return n

    def keep(self, *names: str, choices: Iterable[str] | None = None) -> None:
        """Accept these attributes (any value, or one of `choices`) and carry them."""
        for name in names:
            self.attr(name, choices=choices, keep=True)

    def fail_attr(self, name: str, reason: str) -> None:
        raise UnsupportedXML(self.path, reason, name, self.el.get(name))

    def fail(self, reason: str) -> None:
        raise UnsupportedXML(self.path, reason)

    # -- text ------------------------------------------------------------------------

    def text(self, keep: bool = False) -> str:
        self._text = KEPT if keep else CONSUMED
        return (self.el.text or "").strip()

    # -- children --------------------------------------------------------------------

    def _mark(self, child: etree._Element, state: str, node: Node | None) -> None:
        self._held.append(child)
        self._kids[id(child)] = (state, node)

    def _child_path(self, child: etree._Element) -> str:
        same = elements(self.el, child.tag)
        name = qname(child)
        return f"{self.path}/{name}[{same.index(child) + 1}]" if len(same) > 1 else f"{self.path}/{name}"

    def children(self, tag: str) -> list[Node]:
        out = []
        for c in elements(self.el, tag):
            node = Node(c, self._child_path(c))
            self._mark(c, CONSUMED, node)
            out.append(node)
        return out

    def child(self, tag: str) -> Node | None:
        """The one child `tag` (None if absent); a second one is refused."""
        found = elements(self.el, tag)
        if len(found) > 1:
            raise UnsupportedXML(self._child_path(found[1]), "only one is supported")
        return self.children(tag)[0] if found else None

    def take(self, node: Node) -> None:
        """`node` (a child) stores its own template: leave it out of ours entirely."""
        self._mark(node.el, TAKEN, node)

    def keep_children(self, tag: str, check: Callable[[Node], None] | None = None) -> list[Node]:
        """Accept children `tag` verbatim (after `check`, which may raise)."""
        out = []
        for c in elements(self.el, tag):
            node = Node(c, self._child_path(c))
            if check is not None:
                check(node)
            self._mark(c, KEPT, node)
            out.append(node)
        return out

    def drop(self, *tags: str) -> None:
        """Forget children `tag` (runtime data the converter documents as ignored)."""
        for tag in tags:
            for c in elements(self.el, tag):
                self._mark(c, DROPPED, None)

    def unknown(self) -> list[etree._Element]:
        return [c for c in elements(self.el) if id(c) not in self._kids]

    # -- the check and the leftovers -------------------------------------------------

    def check(self) -> None:
        """Raise UnsupportedXML for the first attribute, child or text nobody handled."""
        for name, value in self.el.attrib.items():
            if name not in self._attrs:
                raise UnsupportedXML(self.path, "kvmd has no equivalent of this attribute",
                                     _attr_name(self.el, name), value)
        if self._text is None and (self.el.text or "").strip():
            raise UnsupportedXML(self.path, f"unexpected text {self.el.text.strip()[:40]!r}")
        for c in elements(self.el):
            state, node = self._kids.get(id(c), (None, None))
            if state is None:
                raise UnsupportedXML(self._child_path(c), "kvmd has no equivalent of this element")
            if state == CONSUMED and node is not None:
                node.check()

    def template(self) -> etree._Element | None:
        """Check, then return the leftovers (kept parts), or None when nothing is left."""
        self.check()
        return self._leftovers()

    def _leftovers(self) -> etree._Element | None:
        out = etree.Element(self.el.tag, nsmap=self.el.nsmap)
        for name, value in self.el.attrib.items():
            if self._attrs.get(name) == KEPT:
                out.set(name, value)
        if self._text == KEPT:
            out.text = self.el.text
        for c in self.el:
            if not isinstance(c.tag, str):
                continue
            state, node = self._kids[id(c)]
            if state == KEPT:
                kept = copy.deepcopy(c)
                _strip_addresses(kept)
                kept.tail = None
                out.append(kept)
            elif state == CONSUMED and node is not None:
                left = node._leftovers()
                if left is not None:
                    out.append(left)
        if not out.attrib and not len(out) and not (out.text or "").strip():
            return None
        return out


def _attr_name(el: etree._Element, name: str) -> str:
    if name.startswith("{"):
        q = etree.QName(name)
        for prefix, uri in el.nsmap.items():
            if uri == q.namespace and prefix:
                return f"{prefix}:{q.localname}"
        return q.localname
    return name


def _strip_addresses(el: etree._Element) -> None:
    for a in el.iter("address"):
        parent = a.getparent()
        if parent is not None:
            parent.remove(a)


def merge(gen: etree._Element, tpl: etree._Element | None, append_only: Iterable[str] = ()) -> None:
    """Lay the template `tpl` over the generated element `gen` (in place).

    Attributes and text of the template fill what `gen` lacks; a template child merges
    into the first unmatched `gen` child of the same tag, else is appended. Template
    children of an element whose tag is in `append_only` (lists such as `<devices>`) are
    always appended.
    """
    if tpl is None:
        return
    append_only = set(append_only)
    append_all = gen.tag in append_only
    for name, value in tpl.attrib.items():
        if name not in gen.attrib:
            gen.set(name, value)
    if (tpl.text or "").strip() and not (gen.text or "").strip():
        gen.text = tpl.text
    used: list[etree._Element] = []
    for tc in elements(tpl):
        match = None
        if not append_all:
            match = next((g for g in elements(gen, tc.tag) if not any(g is u for u in used)), None)
        if match is None:
            gen.append(copy.deepcopy(tc))
        else:
            used.append(match)
            merge(match, tc, append_only)
