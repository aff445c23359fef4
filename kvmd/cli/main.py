"""`kvmctl`: the command line, one subcommand per kvmd API method (plus `console`).

    kvmctl [--socket PATH] COMMAND [ARGS]

Each subcommand makes one API call through `kvmd.client` and prints the result for
people (tables, key/value lines) or, with `--json`, as JSON for scripts. Failures never
show a traceback: one `kvmctl: error: ...` line on stderr (an invalid spec adds one
`path: reason` line per problem) and exit status 1 when the operation failed (API error,
daemon unreachable) or 2 when the command itself was wrong (bad arguments, a spec file
that is missing or not YAML/JSON).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from collections.abc import Callable
from typing import Any, NoReturn

import yaml

from kvmd import __version__
from kvmd.cli import output, snapshots
from kvmd.client import ApiError, AsyncClient, Client, ConnectionLost, default_socket
from kvmd.errors import INVALID_SPEC

PROG = "kvmctl"
EXIT_FAILED = 1
EXIT_USAGE = 2


class CliError(Exception):
    """A failure to report as `kvmctl: error: <message>` (extra lines follow it)."""

    def __init__(self, message: str, status: int = EXIT_FAILED, details: list[str] | None = None):
        super().__init__(message)
        self.message = message
        self.status = status
        self.details = details or []


class Parser(argparse.ArgumentParser):
    """argparse with a one-line usage error: `kvmctl: error: ... (see 'kvmctl X --help')`."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{PROG}: error: {message} (see '{self.prog} --help')\n")


# -- spec files ----------------------------------------------------------------------

def read_spec(path: str) -> dict[str, Any] | str:
    """A spec file (`-` = stdin) checked to be a YAML/JSON mapping.

    Returns the mapping, or the document's text when it holds values JSON cannot carry
    (YAML dates...), for the daemon to parse; the daemon does the real validation.
    """
    where = "stdin" if path == "-" else path
    try:
        if path == "-":
            text = sys.stdin.read()
        else:
            with open(path, encoding="utf-8") as f:
                text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        reason = getattr(e, "strerror", None) or str(e)
        raise CliError(f"cannot read spec file {where}: {reason}", EXIT_USAGE) from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise CliError(f"spec file {where} is not valid YAML/JSON{at}: {problem}", EXIT_USAGE) from None
    if not isinstance(doc, dict):
        got = "an empty document" if doc is None else f"a {type(doc).__name__}"
        raise CliError(f"spec file {where} must hold a mapping (a VM spec), not {got}", EXIT_USAGE)
    try:
        json.dumps(doc)
    except (TypeError, ValueError):
        return text
    return doc


# -- commands ------------------------------------------------------------------------

Handler = Callable[[Client, argparse.Namespace], int]


def emit(text: str) -> None:
    if text:
        print(text, flush=True)


def _state(info: dict[str, Any]) -> str:
    state, reason = info.get("state", "?"), info.get("reason") or ""
    return f"{state}, {reason}" if reason and reason != state else state


def _done(args: argparse.Namespace, info: dict[str, Any], what: str) -> int:
    if getattr(args, "json", False):
        emit(output.to_json(info))
    else:
        emit(f"VM {info.get('name')!r} {what} (state: {_state(info)})")
    return 0


def cmd_define(c: Client, args: argparse.Namespace) -> int:
    info = _call(c, "vm.define", f"cannot define a VM from {_where(args.file)}", spec=args.spec)
    return _done(args, info, f"defined with uuid {info.get('uuid')}")


def cmd_undefine(c: Client, args: argparse.Namespace) -> int:
    _call(c, "vm.undefine", f"cannot undefine {args.name!r}", name=args.name)
    emit(f"VM {args.name!r} undefined")
    return 0


def cmd_create(c: Client, args: argparse.Namespace) -> int:
    info = _call(c, "vm.create", f"cannot create a VM from {_where(args.file)}",
                 spec=args.spec, paused=args.paused)
    return _done(args, info, "created")


def _verb(method: str, what: str, **extra: str) -> Handler:
    def handler(c: Client, args: argparse.Namespace) -> int:
        params: dict[str, Any] = {"name": args.name}
        for param, attr in extra.items():
            params[param] = getattr(args, attr)
        info = _call(c, method, f"cannot {method.split('.')[1]} {args.name!r}", **params)
        return _done(args, info, what)
    return handler


def cmd_shutdown(c: Client, args: argparse.Namespace) -> int:
    params: dict[str, Any] = {"name": args.name, "wait": not args.no_wait}
    if args.timeout is not None:
        params["timeout"] = args.timeout
    if args.mode != "acpi":
        params["mode"] = args.mode
    info = _call(c, "vm.shutdown", f"cannot shut down {args.name!r}", **params)
    return _done(args, info, "shutdown requested" if args.no_wait else "shut down")


def cmd_list(c: Client, args: argparse.Namespace) -> int:
    vms = _call(c, "vm.list", "cannot list VMs")
    emit(output.to_json(vms) if args.json else output.vm_table(vms))
    return 0


def cmd_info(c: Client, args: argparse.Namespace) -> int:
    info = _call(c, "vm.info", f"cannot get info on {args.name!r}", name=args.name, spec=args.spec)
    if args.json:
        emit(output.to_json(info))
    elif args.spec:
        emit(output.to_yaml(info.get("spec", {})))
    else:
        emit(output.vm_info(info))
    return 0


def cmd_stats(c: Client, args: argparse.Namespace) -> int:
    from kvmd.cli import statsview

    params: dict[str, Any] = {"names": [args.name]} if args.name else {}
    stats = _call(c, "vm.stats", f"cannot get stats of {args.name!r}" if args.name else "cannot get stats",
                  **params)
    if args.json:
        emit(output.to_json(stats[args.name] if args.name else stats))
    else:
        emit(statsview.stats_detail(args.name, stats[args.name]) if args.name else statsview.stats_table(stats))
    return 0


def cmd_host_info(c: Client, args: argparse.Namespace) -> int:
    info = _call(c, "host.info", "cannot get host info")
    emit(output.to_json(info) if args.json else output.host_info(info))
    return 0


def cmd_migrate(c: Client, args: argparse.Namespace) -> int:
    from kvmd.cli import migrateview

    params: dict[str, Any] = {"name": args.name, "dest": args.dest, "wait": False, "postcopy": args.postcopy,
                              "auto_converge": args.auto_converge, "copy_storage": args.copy_storage,
                              "keep_source": args.keep_source}
    for key in ("bandwidth", "downtime", "storage_dir"):
        if getattr(args, key) is not None:
            params[key] = getattr(args, key)
    _call(c, "vm.migrate", f"cannot migrate {args.name!r}", **params)
    st = migrateview.follow(c, args.name, show=not args.json and not args.no_progress and sys.stderr.isatty())
    emit(output.to_json(st) if args.json else migrateview.summary(st))
    return 0 if st["state"] == "completed" else EXIT_FAILED


def cmd_console(c: Client, args: argparse.Namespace) -> int:
    from kvmd.cli import console

    info = _call(c, "vm.info", f"cannot attach to the console of {args.name!r}", name=args.name)
    c.close()
    path = info.get("console")
    if not path:
        raise CliError(f"VM {args.name!r} has no console socket to attach to (state: {_state(info)})")
    try:
        return console.attach(path, args.name, linger=args.linger)
    except console.ConsoleError as e:
        raise CliError(str(e)) from None


async def _watch(path: str, as_json: bool, count: int | None, quiet: bool) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(sig, stop.set)
    client = AsyncClient(path)
    try:
        await _connect_async(client)
        await client.call("events.subscribe")
        if not quiet:
            print(f"{PROG}: watching events on {path} (Ctrl-C to stop)", file=sys.stderr, flush=True)
        seen = 0
        stopper = asyncio.create_task(stop.wait())
        while count is None or seen < count:
            getter = asyncio.create_task(client.next_event())
            done, _ = await asyncio.wait({getter, stopper}, return_when=asyncio.FIRST_COMPLETED)
            if getter not in done:
                getter.cancel()
                break
            event = getter.result()
            if event.get("type") == "disconnected":
                raise CliError("connection to kvmd lost")
            emit(json.dumps(event) if as_json else output.event_line(event))
            seen += 1
        stopper.cancel()
        return 0
    finally:
        await client.close()


async def _connect_async(client: AsyncClient) -> None:
    try:
        await client.connect()
    except OSError as e:
        raise _connect_error(client.path, e) from None


def cmd_events(c: Client | None, args: argparse.Namespace) -> int:
    try:
        return asyncio.run(_watch(args.socket, args.json, args.count, args.quiet))
    except ApiError as e:
        raise _api_error(e, "cannot subscribe to events") from None


# -- calls and errors ----------------------------------------------------------------

def _where(path: str) -> str:
    return "stdin" if path == "-" else path


def _connect_error(path: str, e: OSError) -> CliError:
    hint = " (is kvmd running?)" if isinstance(e, (FileNotFoundError, ConnectionRefusedError)) else ""
    return CliError(f"cannot connect to kvmd at {path}: {e.strerror or e}{hint}")


def _api_error(e: ApiError, what: str) -> CliError:
    if isinstance(e, ConnectionLost):
        return CliError(f"{what}: connection to kvmd lost")
    if e.code == INVALID_SPEC:
        problems = output.spec_problems(e.data)
        if problems:
            n = len(problems)
            return CliError(f"{what}: invalid spec ({n} problem{'s' if n > 1 else ''}):",
                            details=["  " + p for p in problems])
    return CliError(e.message or f"{what}: error {e.code}")


def _call(c: Client, method: str, what: str, **params: Any) -> Any:
    try:
        return c.call(method, **params)
    except ApiError as e:
        raise _api_error(e, what) from None
    except OSError as e:  # the daemon went away mid-call
        raise CliError(f"{what}: connection to kvmd failed: {e.strerror or e}") from None


# -- the parser ----------------------------------------------------------------------

def build_parser() -> Parser:
    p = Parser(prog=PROG, description="Command-line client of kvmd, the KVM mid-layer daemon.")
    p.add_argument("--socket", metavar="PATH", default=None,
                   help="kvmd's API socket (default: $KVMD_SOCKET, else the per-user or system socket)")
    p.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    js = Parser(add_help=False)
    js.add_argument("--json", action="store_true", help="print the result as JSON")

    def add(name: str, handler: Callable[..., int], help: str, *, json: bool = True) -> Parser:
        sp = sub.add_parser(name, help=help, description=help, parents=[js] if json else [])
        sp.set_defaults(handler=handler)
        return sp

    sp = add("define", cmd_define, "define (or redefine) a persistent VM from a spec file")
    sp.add_argument("file", metavar="FILE", help="YAML or JSON spec file, '-' for stdin")
    sp = add("undefine", cmd_undefine, "forget a VM's definition (a running VM keeps running)", json=False)
    sp.add_argument("name", metavar="NAME")
    sp = add("create", cmd_create, "start a transient VM from a spec file")
    sp.add_argument("file", metavar="FILE", help="YAML or JSON spec file, '-' for stdin")
    sp.add_argument("--paused", action="store_true", help="leave the vCPUs stopped")
    sp = add("start", cmd_start, "start a defined VM")
    sp.add_argument("name", metavar="NAME")
    sp.add_argument("--paused", action="store_true", help="leave the vCPUs stopped")
    for name, handler, help in (("pause", cmd_pause, "stop a VM's vCPUs"),
                                ("resume", cmd_resume, "continue a paused VM"),
                                ("reset", cmd_reset, "hard-reset a VM (like the reset button)"),
                                ("destroy", cmd_destroy, "power a VM off now")):
        add(name, handler, help).add_argument("name", metavar="NAME")
    sp = add("shutdown", cmd_shutdown, "ACPI shutdown; destroy if still running after the timeout")
    sp.add_argument("name", metavar="NAME")
    sp.add_argument("--timeout", type=float, metavar="S", help="seconds before destroy (default: daemon's)")
    sp.add_argument("--no-wait", action="store_true", help="return once the shutdown is requested")
    sp.add_argument("--mode", choices=("acpi", "agent"), default="acpi",
                    help="ACPI power button (default) or the guest agent's guest-shutdown")
    add("list", cmd_list, "list VMs: name, state, uuid, vcpus, memory, pid, uptime")
    sp = add("info", cmd_info, "show one VM")
    sp.add_argument("name", metavar="NAME")
    sp.add_argument("--spec", action="store_true", help="print the VM's spec as YAML")
    add("host-info", cmd_host_info, "show the host and the daemon")
    sp = add("stats", cmd_stats, "runtime statistics (cpu, memory, disks, NICs) of one or all active VMs")
    sp.add_argument("name", metavar="NAME", nargs="?", help="one VM (default: every active VM)")
    sp = add("events", cmd_events, "print VM state changes as they happen, until Ctrl-C")
    sp.add_argument("--count", type=int, metavar="N", help="exit after N events")
    sp.add_argument("-q", "--quiet", action="store_true", help="no 'watching' line on stderr")
    sp = add("console", cmd_console, "attach to a VM's serial console (escape: Ctrl-])", json=False)
    sp.add_argument("name", metavar="NAME")
    sp.add_argument("--linger", type=float, default=0.5, metavar="S",
                    help="without a terminal: after stdin EOF, wait until the guest is quiet for S seconds")
    sp = add("migrate", cmd_migrate, "live-migrate a VM to another kvmd, with a progress bar")
    sp.add_argument("name", metavar="NAME")
    sp.add_argument("dest", metavar="DEST", help="the destination kvmd: its socket path, or tcp://HOST:PORT")
    sp.add_argument("--bandwidth", metavar="SIZE", help="bytes per second, e.g. 500MiB (default: no limit)")
    sp.add_argument("--downtime", type=int, metavar="MS", help="longest acceptable pause (QEMU default 300)")
    sp.add_argument("--postcopy", action="store_true", help="switch to postcopy after the first memory pass")
    sp.add_argument("--auto-converge", action="store_true", help="throttle the vCPUs if memory does not converge")
    sp.add_argument("--copy-storage", action="store_true", help="copy the disks too (no shared storage)")
    sp.add_argument("--storage-dir", metavar="DIR", help="with --copy-storage: where the destination puts them")
    sp.add_argument("--keep-source", action="store_true", help="keep the VM here, stopped, after the migration")
    sp.add_argument("--no-progress", action="store_true", help="no progress bar, only the outcome")
    snapshots.register(add, _call, emit)
    _plugin_commands(add)
    return p


PLUGIN_GROUP = "kvmctl.commands"


def _plugin_commands(add: Callable[..., Parser]) -> None:
    """Subcommands other packages register (entry point group `kvmctl.commands`).

    Each entry point is a `register(add)` callable; `add(name, handler, help, json=True)`
    is the helper above. A handler that sets `connect=False` (set_defaults) is called with
    no client and connects itself (`connect()`) if it needs to. kvmd imports nothing of
    those packages: they are found at run time (compat's `import-xml`, `dumpxml`... live
    there), and one that fails to load is left out rather than breaking kvmctl.
    """
    from importlib.metadata import entry_points

    for ep in entry_points(group=PLUGIN_GROUP):
        try:
            register = ep.load()
            register(add)
        except Exception:  # a broken plugin must not take kvmctl down
            continue


def connect(path: str) -> Client:
    """A connected client, or CliError (for plugin commands that connect themselves)."""
    client = Client(path)
    try:
        return client.connect()
    except OSError as e:
        raise _connect_error(path, e) from None


call = _call  # public name for plugin commands


cmd_start = _verb("vm.start", "started", paused="paused")
cmd_pause = _verb("vm.pause", "paused")
cmd_resume = _verb("vm.resume", "resumed")
cmd_reset = _verb("vm.reset", "reset")
cmd_destroy = _verb("vm.destroy", "destroyed")


def run(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.socket = args.socket or default_socket()
    if args.command in ("define", "create"):
        args.spec = read_spec(args.file)
    if not getattr(args, "connect", True):
        return args.handler(None, args)
    if args.handler is cmd_events:
        return cmd_events(None, args)
    client = Client(args.socket)
    try:
        try:
            client.connect()
        except OSError as e:
            raise _connect_error(args.socket, e) from None
        return args.handler(client, args)
    finally:
        client.close()


def main(argv: list[str] | None = None) -> int:
    try:
        return run(argv)
    except CliError as e:
        print(f"{PROG}: error: {e.message}", file=sys.stderr)
        for line in e.details:
            print(line, file=sys.stderr)
        return e.status
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # e.g. `kvmctl list | head -1`: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as e:  # a bug: still one line, never a traceback
        print(f"{PROG}: error: internal error: {type(e).__name__}: {e}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
