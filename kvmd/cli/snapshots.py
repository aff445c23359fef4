"""kvmctl's snapshot subcommands, as virsh names them: snapshot-create, snapshot-list,
snapshot-revert, snapshot-delete (over the API's vm.snapshot_* methods)."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

from kvmd.cli import output


def register(add: Callable[..., argparse.ArgumentParser], call: Callable[..., Any],
             emit: Callable[[str], None]) -> None:
    """Add the subcommands; `call(client, method, what, **params)` and `emit(text)` are
    kvmctl's own helpers (errors become one-line messages and exit statuses there)."""

    def create(c: Any, args: argparse.Namespace) -> int:
        snap = call(c, "vm.snapshot_create", f"cannot snapshot {args.name!r}", name=args.name,
                    snap=args.snap, memory=args.memory, quiesce=args.quiesce)
        if args.json:
            emit(output.to_json(snap))
        else:
            emit(f"snapshot {args.snap!r} of {args.name!r} created"
                 + (" with memory" if args.memory else "") + (" (quiesced)" if args.quiesce else ""))
        return 0

    def list_(c: Any, args: argparse.Namespace) -> int:
        snaps = call(c, "vm.snapshot_list", f"cannot list snapshots of {args.name!r}", name=args.name)
        if args.json:
            emit(output.to_json(snaps))
            return 0
        rows = [(s["name"] + (" *" if s.get("current") else ""),
                 time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(s["createdAt"])),
                 s.get("vmState", ""), "yes" if s.get("memory") else "no", s.get("parent") or "-")
                for s in snaps]
        emit(output.table(("NAME", "CREATED", "VM STATE", "MEMORY", "PARENT"), rows))
        return 0

    def revert(c: Any, args: argparse.Namespace) -> int:
        info = call(c, "vm.snapshot_revert", f"cannot revert {args.name!r}", name=args.name, snap=args.snap)
        emit(output.to_json(info) if args.json else f"{args.name!r} reverted to snapshot {args.snap!r}")
        return 0

    def delete(c: Any, args: argparse.Namespace) -> int:
        call(c, "vm.snapshot_delete", f"cannot delete snapshot {args.snap!r}", name=args.name, snap=args.snap)
        if not args.json:
            emit(f"snapshot {args.snap!r} of {args.name!r} deleted (its layer merged)")
        return 0

    sp = add("snapshot-create", create, "take an external snapshot of every disk (optionally memory)")
    sp.add_argument("name", metavar="NAME")
    sp.add_argument("snap", metavar="SNAPSHOT")
    sp.add_argument("--memory", action="store_true", help="also save the memory state")
    sp.add_argument("--quiesce", action="store_true", help="freeze guest file systems (guest agent) meanwhile")
    sp = add("snapshot-list", list_, "list a VM's snapshots (* marks the current one)")
    sp.add_argument("name", metavar="NAME")
    for verb, handler, help in (("snapshot-revert", revert, "go back to a snapshot (restarts QEMU on it)"),
                                ("snapshot-delete", delete, "delete a snapshot, merging its layer")):
        sp = add(verb, handler, help)
        sp.add_argument("name", metavar="NAME")
        sp.add_argument("snap", metavar="SNAPSHOT")
