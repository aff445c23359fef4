"""kvmctl subcommands for libvirt domain XML and OVF, registered as a kvmctl plugin.

    kvmctl import-xml FILE [--define] [--network NAME=BRIDGE]...   domain XML -> spec (YAML)
    kvmctl dumpxml NAME                                            a VM as domain XML
    kvmctl import-ovf FILE [--define]                              oVirt OVF -> spec (YAML)
    kvmctl export-ovf NAME                                         a VM as an OVF envelope

kvmd must not import compat (the layering contract), so kvmctl finds these through the
`kvmctl.commands` entry point group (setup.cfg): `register(add)` below adds them to its
parser. Input that cannot be converted ends with one `kvmctl: error: ...` line naming
the element, and exit status 1; a file that cannot be read, status 2.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from compat.domxml import spec_to_xml, xml_to_spec
from compat.errors import ConversionError
from compat.ovf import ovf_to_spec, spec_to_ovf
from kvmd.cli import output
from kvmd.cli.main import EXIT_USAGE, CliError, call, connect, emit


def _read(path: str) -> str:
    where = "stdin" if path == "-" else path
    try:
        if path == "-":
            return sys.stdin.read()
        with open(path, encoding="utf-8") as f:
            return f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise CliError(f"cannot read {where}: {getattr(e, 'strerror', None) or e}", EXIT_USAGE) from None


def _networks(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        name, sep, bridge = pair.partition("=")
        if not sep or not name or not bridge:
            raise CliError(f"--network wants NAME=BRIDGE, not {pair!r}", EXIT_USAGE)
        out[name] = bridge
    return out


def _convert(what: str, path: str, fn: Callable[[str], dict[str, Any]]) -> dict[str, Any]:
    text = _read(path)
    try:
        return fn(text)
    except ConversionError as e:
        raise CliError(f"cannot convert {what} {'stdin' if path == '-' else path}: {e}") from None


def _print_or_define(args: argparse.Namespace, spec: dict[str, Any], source: str) -> int:
    if not args.define:
        emit(output.to_json(spec) if args.json else output.to_yaml(spec))
        return 0
    client = connect(args.socket)
    try:
        info = call(client, "vm.define", f"cannot define a VM from {source}", spec=spec)
    finally:
        client.close()
    if args.json:
        emit(output.to_json(info))
    else:
        emit(f"VM {info.get('name')!r} defined with uuid {info.get('uuid')} from {source}")
    return 0


def cmd_import_xml(_c: Any, args: argparse.Namespace) -> int:
    networks = _networks(args.network or [])
    spec = _convert("domain XML", args.file, lambda text: xml_to_spec(text, networks=networks))
    return _print_or_define(args, spec, args.file)


def cmd_import_ovf(_c: Any, args: argparse.Namespace) -> int:
    spec = _convert("OVF", args.file, ovf_to_spec)
    return _print_or_define(args, spec, args.file)


def _export(args: argparse.Namespace, fn: Callable[[dict[str, Any]], str], what: str) -> int:
    client = connect(args.socket)
    try:
        info = call(client, "vm.info", f"cannot get the spec of {args.name!r}", name=args.name, spec=True)
    finally:
        client.close()
    try:
        text = fn(info.get("spec") or {})
    except ConversionError as e:
        raise CliError(f"cannot write {args.name!r} as {what}: {e}") from None
    sys.stdout.write(text)
    sys.stdout.flush()
    return 0


def cmd_dumpxml(_c: Any, args: argparse.Namespace) -> int:
    return _export(args, spec_to_xml, "domain XML")


def cmd_export_ovf(_c: Any, args: argparse.Namespace) -> int:
    return _export(args, spec_to_ovf, "OVF")


def register(add: Callable[..., argparse.ArgumentParser]) -> None:
    """Add the compat subcommands to kvmctl's parser (the `kvmctl.commands` entry point)."""
    sp = add("import-xml", cmd_import_xml, "print the kvmd spec of a libvirt domain XML file (or define it)")
    sp.add_argument("file", metavar="FILE", help="domain XML file, '-' for stdin")
    sp.add_argument("--define", action="store_true", help="define the VM in kvmd instead of printing")
    sp.add_argument("--network", action="append", metavar="NAME=BRIDGE",
                    help="run libvirt network NAME's interfaces on host bridge BRIDGE (repeatable)")
    sp.set_defaults(connect=False)
    sp = add("dumpxml", cmd_dumpxml, "print a VM as libvirt domain XML", json=False)
    sp.add_argument("name", metavar="NAME")
    sp.set_defaults(connect=False)
    sp = add("import-ovf", cmd_import_ovf, "print the kvmd spec of an oVirt OVF file (or define it)")
    sp.add_argument("file", metavar="FILE", help="OVF file, '-' for stdin")
    sp.add_argument("--define", action="store_true", help="define the VM in kvmd instead of printing")
    sp.set_defaults(connect=False)
    sp = add("export-ovf", cmd_export_ovf, "print a VM as an oVirt OVF envelope", json=False)
    sp.add_argument("name", metavar="NAME")
    sp.set_defaults(connect=False)
