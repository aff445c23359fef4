"""`python -m hooks`: run a hook point offline, the way the vdsm endpoint runs it.

    python -m hooks run POINT --hooks-dir DIR --domxml FILE [--json FILE] [--spec FILE]
                    [-e KEY=VALUE ...] [-p KEY=VALUE ...] [--vm-id ID]
                    [--backend kvmd|libvirt] [--timeout S] [--uri URI] [--kvmd-socket PATH]
                    [--print-spec]
    python -m hooks points          # every hook point: payload, whether failures count
    python -m hooks list [--hooks-dir DIR]

`run` prints the resulting XML (or JSON) on stdout, and on stderr each script's exit
status, duration, whether it changed the data, and its stderr — as the runner saw them.
The exit status is 1 when the point failed the operation (nothing on stdout then), 2 for
bad input, 0 otherwise (failures at points where VDSM ignores them are reported, not
fatal). With `--backend kvmd` a domain-XML point runs exactly as on a kvmd host: the
input (a domain XML file, or a kvmd spec with `--spec`) becomes a kvmd spec, the hooks
see the XML compat produces from it, and what they write must convert back.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from hooks import points as _points
from hooks.runner import (
    BACKENDS,
    DEFAULT_ROOT,
    DEFAULT_TIMEOUT,
    HookConfig,
    HookError,
    HookResult,
    ScriptResult,
    installed,
    run_hooks,
)


def _pairs(values: list[str], flag: str) -> dict[str, str]:
    out = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"hooks: error: {flag} takes KEY=VALUE, not {item!r}")
        out[key] = value
    return out


def _read(path: str) -> str:
    if path == "-":
        return sys.stdin.read()
    with open(path, encoding="utf-8") as f:
        return f.read()


def _report(point: str, results: list[ScriptResult]) -> None:
    err = sys.stderr
    if not results:
        err.write(f"hooks: {point}: no executable script\n")
    for r in results:
        status = r.describe()
        changed = ", changed the data" if r.changed else ""
        err.write(f"hooks: {point}/{r.script}: {status} in {r.duration:.2f}s{changed}\n")
        for line in r.stderr.rstrip("\n").splitlines():
            err.write(f"    | {line}\n")


def _load_spec(path: str) -> dict:
    text = _read(path)
    try:
        doc = json.loads(text)
    except ValueError:
        import yaml  # type: ignore[import-untyped]  # noqa: PLC0415 - specs are usually YAML

        doc = yaml.safe_load(text)
    if not isinstance(doc, dict):
        raise SystemExit(f"hooks: error: {path}: not a kvmd spec document")
    return doc


def _run(args: argparse.Namespace) -> int:
    try:
        hp = _points.get(args.point)
    except _points.UnknownHookPoint as e:
        print(f"hooks: error: {e}", file=sys.stderr)
        return 2
    custom = _pairs(args.env, "-e")
    params = _pairs(args.param, "-p")
    config = HookConfig(root=args.hooks_dir, timeout=args.timeout or None, backend=args.backend,
                        uri=args.uri, kvmd_socket=args.kvmd_socket)
    kw: dict[str, Any] = dict(config=config, vm_id=args.vm_id, custom=custom, params=params)
    if hp.payload == _points.DOMAIN and args.backend == "kvmd":
        return _run_on_spec(hp, args, kw)
    if hp.carries_json:
        data: Any = json.loads(_read(args.json)) if args.json else {}
    elif hp.payload == _points.NONE:
        data = None
    else:
        if not args.domxml:
            print(f"hooks: error: {hp.name} carries {hp.payload} XML: give --domxml FILE",
                  file=sys.stderr)
            return 2
        data = _read(args.domxml)
    try:
        result = run_hooks(hp, data, **kw)
    except HookError as e:
        return _failed(hp, e)
    _finish_report(hp, result)
    if hp.carries_json:
        print(json.dumps(result.data, indent=2))
    elif result.data:
        sys.stdout.write(result.data if result.data.endswith("\n") else result.data + "\n")
    return 0


def _run_on_spec(hp: _points.HookPoint, args: argparse.Namespace, kw: dict[str, Any]) -> int:
    from hooks.backends import run_domxml_hooks_on_spec  # noqa: PLC0415 - needs compat

    try:
        from compat import domxml  # noqa: PLC0415
    except ImportError as e:
        print(f"hooks: error: the kvmd backend needs compat.domxml ({e}); "
              "use --backend libvirt", file=sys.stderr)
        return 2
    if args.spec:
        spec = _load_spec(args.spec)
    elif args.domxml:
        try:
            spec = domxml.xml_to_spec(_read(args.domxml))
        except Exception as e:
            print(f"hooks: error: {args.domxml}: kvmd cannot run this domain XML: {e}",
                  file=sys.stderr)
            return 2
    else:
        print(f"hooks: error: {hp.name}: give --domxml FILE or --spec FILE", file=sys.stderr)
        return 2
    captured: list[HookResult] = []
    try:
        new_spec = run_domxml_hooks_on_spec(hp, spec, on_result=captured.append, **kw)
    except HookError as e:
        return _failed(hp, e)
    if captured:
        _finish_report(hp, captured[-1])
    else:
        _report(hp.name, [])
    if args.print_spec:
        print(json.dumps(new_spec, indent=2))
    else:
        xml = domxml.spec_to_xml(new_spec)
        sys.stdout.write(xml if xml.endswith("\n") else xml + "\n")
    return 0


def _finish_report(hp: _points.HookPoint, result: HookResult) -> None:
    _report(hp.name, result.scripts)
    if result.failures:
        print(f"hooks: {hp.name}: {len(result.failures)} script(s) failed; VDSM ignores "
              "failures at this point, the operation would go on", file=sys.stderr)


def _failed(hp: _points.HookPoint, e: HookError) -> int:
    _report(hp.name, e.results)
    print(f"hooks: {hp.name} FAILED, the operation would fail with: {e.reason}", file=sys.stderr)
    return 1


def _points_table(_args: argparse.Namespace) -> int:
    print(f"{'hook point':36} {'payload':8} failures")
    for p in _points.all_points():
        print(f"{p.name:36} {p.payload:8} {'fail the operation' if p.fails_operation else 'ignored'}")
    return 0


def _list(args: argparse.Namespace) -> int:
    found = installed(args.hooks_dir)
    if not found:
        print(f"no hook script under {args.hooks_dir}", file=sys.stderr)
    for folder, scripts in found.items():
        mark = "" if folder in _points.POINTS else "   (not a VDSM hook point: never runs)"
        print(f"{folder}:{mark}")
        for s in scripts:
            print(f"    {s}")
    return 0


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m hooks", description="VDSM-compatible hooks")
    sub = ap.add_subparsers(dest="command", required=True)
    default_root = os.environ.get("KVMD_HOOKS_DIR", DEFAULT_ROOT)

    run = sub.add_parser("run", help="run one hook point over a domain XML / JSON file")
    run.add_argument("point", help="hook point, e.g. before_vm_start")
    run.add_argument("--hooks-dir", default=default_root, help=f"hooks root (default {default_root})")
    run.add_argument("--domxml", help="domain (or device) XML file, '-' for stdin")
    run.add_argument("--json", help="JSON file for JSON points (default: {})")
    run.add_argument("--spec", help="kvmd spec (YAML/JSON) instead of --domxml, kvmd backend")
    run.add_argument("-e", "--env", action="append", default=[], metavar="KEY=VALUE",
                     help="a VM custom property (an environment variable of the scripts)")
    run.add_argument("-p", "--param", action="append", default=[], metavar="KEY=VALUE",
                     help="a call parameter (an environment variable; -e wins on a clash)")
    run.add_argument("--vm-id", help="the vmId the scripts see")
    run.add_argument("--backend", choices=BACKENDS, default="kvmd")
    run.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT,
                     help=f"seconds per script, 0 for none (default {DEFAULT_TIMEOUT:g})")
    run.add_argument("--uri", help="LIBVIRT_DEFAULT_URI for scripts that import libvirt")
    run.add_argument("--kvmd-socket", default=os.environ.get("KVMD_SOCKET"),
                     help="kvmd backend: the kvmd socket `libvirt.open()` in scripts reaches")
    run.add_argument("--print-spec", action="store_true",
                     help="kvmd backend: print the resulting kvmd spec (JSON), not XML")
    run.set_defaults(func=_run)

    pts = sub.add_parser("points", help="list every hook point")
    pts.set_defaults(func=_points_table)

    lst = sub.add_parser("list", help="list the installed hook scripts")
    lst.add_argument("--hooks-dir", default=default_root)
    lst.set_defaults(func=_list)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except (OSError, ValueError) as e:
        print(f"hooks: error: {e}", file=sys.stderr)
        return 2
