"""External snapshots of a VM's disks, optionally with its memory state.

A snapshot freezes each writable disk image where it is and puts a new qcow2 overlay
on top (`qemu-img create -b`), which takes every later write. On a running VM the
overlays are attached with `blockdev-add` and switched in with one QMP `transaction` of
`blockdev-snapshot` actions, so all disks are cut at the same instant; with
`quiesce` the guest agent freezes the guest's filesystems around it. With `memory`
the vCPUs are stopped first, the disks cut, and the memory state written to a file
(`migrate fd:` — QEMU 7.2 has no `file:` URI and the sandbox forbids `exec:`), then the
guest continues: the memory file and the frozen images describe the very same instant.
An inactive VM gets disk-only snapshots made with qemu-img alone.

    base.raw  <-  base.s1.qcow2  <-  base.s2.qcow2 (active)
    (frozen by s1)  (frozen by s2)

Revert puts a fresh overlay on the snapshot's frozen images (they never change, so a
snapshot can be reverted to again and again) and restarts QEMU on it: from its memory
file through `-incoming` when it has one (the guest continues where it was), else with
a fresh boot. The VM's spec becomes the one recorded with the snapshot. Overlays no
snapshot and no active chain needs any more are deleted.

Delete merges the layer above the snapshot's frozen image into it, so chains stay short:
`block-commit` when QEMU has the layer open (an active commit, completed with a pivot,
when it is the top), else `qemu-img commit` plus `qemu-img rebase -u` of the layer
above. A frozen image with two layers on it (a revert left a branch another snapshot
still needs) is refused until that snapshot is deleted.

The metadata (snapshots, the overlays kvmd made and what backs each, each disk's
original image) lives in `STATE_DIR/snapshots/NAME.json`, written atomically. The
running spec and the definition always name the active top of each chain. kvmd only
ever deletes images it created.

A caller may choose which disks a snapshot covers (`disks`), where their overlays go
(`overlays`: paths kvmd creates, or with `reuse` qcow2 files the caller already made on
the disks' current images — recorded as the caller's, so kvmd never deletes them) and
where the memory state goes (`memory_file`): what libvirt's snapshot XML and VDSM's
pre-created volumes need (compat's shim maps `snapshotCreateXML` onto this).
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import re
import time
from typing import TYPE_CHECKING, Any

from kvmd import runtime, store
from kvmd.errors import (
    AlreadyExists,
    InvalidParams,
    KvmdError,
    NotSupported,
    QemuFailure,
    StorageFailure,
    WrongState,
)
from kvmd.migration import qemu
from kvmd.qemu import cmdline
from kvmd.spec import VMSpec, from_dict, to_dict
from kvmd.spec.model import Disk
from kvmd.states import ACTIVE, INACTIVE, State, can
from kvmd.storage import _qemu_img, create_image

if TYPE_CHECKING:
    from kvmd.config import Config
    from kvmd.manager import Manager
    from kvmd.vm import VM

log = logging.getLogger(__name__)

VERSION = 1
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,63}$")

# -- metadata ----------------------------------------------------------------------------


def _path(cfg: Config, name: str) -> str:
    return os.path.join(cfg.state_dir, "snapshots", f"{name}.json")


def load(cfg: Config, name: str) -> dict[str, Any]:
    try:
        meta = store.read_json(_path(cfg, name))
    except FileNotFoundError:
        meta = {}
    meta.setdefault("version", VERSION)
    meta.setdefault("vm", name)
    for key, empty in (("snapshots", []), ("overlays", {}), ("origins", {}), ("seq", 0), ("current", None)):
        meta.setdefault(key, copy.deepcopy(empty))
    return meta


def save(cfg: Config, name: str, meta: dict[str, Any]) -> None:
    os.makedirs(os.path.dirname(_path(cfg, name)), mode=0o700, exist_ok=True)
    store.write_json(_path(cfg, name), meta)


def export_metadata(cfg: Config, name: str) -> dict[str, Any] | None:
    """What a migration carries to the destination (None: nothing to carry)."""
    meta = load(cfg, name)
    return meta if meta["snapshots"] or meta["overlays"] else None


def import_metadata(cfg: Config, name: str, meta: dict[str, Any]) -> None:
    save(cfg, name, meta)


def drop_metadata(cfg: Config, name: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(_path(cfg, name))


def has_snapshots(cfg: Config, name: str) -> bool:
    return bool(load(cfg, name)["snapshots"])


def _find(meta: dict[str, Any], vm: VM, snap: str) -> dict[str, Any]:
    for entry in meta["snapshots"]:
        if entry["name"] == snap:
            return entry
    raise InvalidParams(f"{vm.name!r} has no snapshot named {snap!r}", {"param": "snap", "name": vm.name})


def _describe(entry: dict[str, Any], current: str | None) -> dict[str, Any]:
    return {"name": entry["name"], "createdAt": entry["createdAt"], "vmState": entry["vmState"],
            "parent": entry.get("parent"), "memory": bool(entry.get("memory")), "memoryFile": entry.get("memory"),
            "quiesced": entry.get("quiesced", False), "current": entry["name"] == current,
            "disks": {d: {"frozen": p["frozen"], "overlay": p["overlay"]} for d, p in entry["disks"].items()}}


# -- images ------------------------------------------------------------------------------


def _snapshottable(disk: Disk) -> bool:
    return bool(disk.path) and not disk.readonly and disk.media == "disk"


async def _new_overlay(meta: dict[str, Any], disk: str, snap: str, backing: str, fmt: str,
                       path: str | None = None) -> str:
    """Create `path`, or `ORIGIN_DIR/STEM.SNAP[.N].qcow2`, on `backing`; record it as ours."""
    if path is not None:
        await create_image(path, "qcow2", None, backing=backing, backing_fmt=fmt)
        meta["overlays"][path] = {"backing": backing, "backingFormat": fmt, "disk": disk}
        return path
    origin = meta["origins"].get(disk, backing)
    stem = os.path.splitext(os.path.basename(origin))[0]
    base = os.path.join(os.path.dirname(origin), f"{stem}.{snap}")
    for n in range(1, 100):
        path = f"{base}.qcow2" if n == 1 else f"{base}.{n}.qcow2"
        if path in meta["overlays"]:
            continue
        try:
            await create_image(path, "qcow2", None, backing=backing, backing_fmt=fmt)
        except StorageFailure as e:
            if "already exists" in e.message:
                continue
            raise
        meta["overlays"][path] = {"backing": backing, "backingFormat": fmt, "disk": disk}
        return path
    raise StorageFailure(f"no free overlay name for {base}.N.qcow2")


async def _reuse_overlay(meta: dict[str, Any], disk: str, path: str, backing: str, fmt: str) -> str:
    """Take the caller's existing qcow2 `path`, whose backing file must be `backing`."""
    from kvmd.storage import image_info

    try:
        info = await image_info(path)
    except StorageFailure as e:
        raise StorageFailure(f"overlay for disk {disk!r}: {e.message}", {"path": path}) from None
    linked = info.get("backingFile") or ""
    if linked and not os.path.isabs(linked):
        linked = os.path.join(os.path.dirname(path), linked)
    if info.get("format") != "qcow2" or os.path.realpath(linked) != os.path.realpath(backing):
        raise InvalidParams(f"overlay {path} must be a qcow2 image backed by {backing} (it is "
                            f"{info.get('format')} on {info.get('backingFile')})", {"param": "overlays"})
    meta["overlays"][path] = {"backing": backing, "backingFormat": fmt, "disk": disk, "external": True}
    return path


def _drop_overlay(meta: dict[str, Any], path: str) -> None:
    """Forget an overlay; delete its file unless the caller made it (reuse)."""
    info = meta["overlays"].pop(path, None) or {}
    if not info.get("external"):
        with contextlib.suppress(OSError):
            os.unlink(path)


def _chain(meta: dict[str, Any], top: str | None) -> list[str]:
    """`top` and every image below it that kvmd knows of."""
    out: list[str] = []
    while top and top not in out:
        out.append(top)
        top = meta["overlays"].get(top, {}).get("backing")
    return out


def _gc(meta: dict[str, Any], tops: list[str]) -> None:
    """Delete the overlays that neither an active chain nor a snapshot needs."""
    keep: set[str] = set()
    for top in tops:
        keep.update(_chain(meta, top))
    for entry in meta["snapshots"]:
        for p in entry["disks"].values():
            keep.update(_chain(meta, p["frozen"]))
    for path in [p for p in meta["overlays"] if p not in keep]:
        _drop_overlay(meta, path)
        log.info("dropped overlay %s (no longer needed)", path)


def _tops(vm: VM) -> list[str]:
    specs = [s for s in (vm.live_spec, vm.spec) if s is not None]
    return [d.path for s in specs for d in s.disks if d.path]


def _repoint(specs: list[VMSpec | None], old: str, new: str, fmt: str) -> None:
    for spec in specs:
        for disk in spec.disks if spec is not None else []:
            if disk.path == old:
                disk.path, disk.format = new, fmt


def _overlay_node(disk: Disk, node: str, path: str) -> dict[str, Any]:
    direct, no_flush, _ = cmdline.CACHE[disk.cache]
    cache = {"direct": direct, "no-flush": no_flush}
    return {"driver": "qcow2", "node-name": node, "cache": cache, "backing": None,
            "file": {"driver": "file", "filename": path, "cache": cache, "aio": disk.aio, "discard": "unmap"}}


def _require(vm: VM, verb: str) -> None:
    if not can(verb, vm.state):
        raise WrongState(f"cannot {verb} {vm.name!r}: it is {vm.state}", {"name": vm.name, "state": str(vm.state)})


# -- create --------------------------------------------------------------------------------


def _check_selection(spec: VMSpec, disks: list[str] | None, overlays: dict[str, str] | None,
                     memory_file: str | None) -> list[Disk]:
    """The disks a snapshot covers: `disks` (names) or every writable disk image."""
    usable = {d.name: d for d in spec.disks if _snapshottable(d)}
    if disks is None:
        chosen = list(usable.values())
    else:
        unknown = [n for n in disks if n not in usable]
        if unknown or not isinstance(disks, list):
            raise InvalidParams(f"disks: {', '.join(map(str, unknown)) or disks!r} is not a writable disk image "
                                f"of the VM (those are: {', '.join(usable) or 'none'})", {"param": "disks"})
        chosen = [usable[n] for n in disks]
    names = {d.name for d in chosen}
    for name, path in (overlays or {}).items():
        if name not in names:
            raise InvalidParams(f"overlays: {name!r} is not among the disks snapshotted", {"param": "overlays"})
        if not isinstance(path, str) or not os.path.isabs(path):
            raise InvalidParams(f"overlays.{name} must be an absolute path", {"param": "overlays"})
    if memory_file is not None and (not os.path.isabs(memory_file) or os.path.exists(memory_file)):
        raise InvalidParams("memory_file must be an absolute path that does not exist yet", {"param": "memory_file"})
    return chosen


async def create(vm: VM, snap: str, memory: bool = False, quiesce: bool = False, disks: list[str] | None = None,
                 overlays: dict[str, str] | None = None, memory_file: str | None = None,
                 reuse: bool = False) -> dict[str, Any]:
    """Snapshot `disks` (default: every writable disk image), each onto a new overlay:
    `overlays[disk]` (a path kvmd creates; with `reuse`, the caller's existing qcow2 on the
    disk's current image) or kvmd's own name; `memory_file` for the memory state."""
    if not NAME_RE.match(snap):
        raise InvalidParams("snap must be 1-64 letters, digits, '_', '.', '+', '-'", {"param": "snap"})
    if memory and quiesce:
        raise InvalidParams("quiesce is for disk-only snapshots (a memory snapshot is consistent as it is; "
                            "its guest would come back frozen)", {"param": "quiesce"})
    async with vm.lock:
        _require(vm, "snapshot")
        meta = load(vm.cfg, vm.name)
        if any(e["name"] == snap for e in meta["snapshots"]):
            raise AlreadyExists(f"{vm.name!r} already has a snapshot named {snap!r}", {"name": vm.name})
        active = vm.state in ACTIVE
        if (memory or quiesce) and not active:
            raise InvalidParams(f"{'memory' if memory else 'quiesce'} needs a running VM; {vm.name!r} is "
                                f"{vm.state}", {"param": "memory" if memory else "quiesce"})
        if quiesce and vm.state != State.RUNNING:
            raise InvalidParams("quiesce needs a running guest (its agent must answer)", {"param": "quiesce"})
        spec = vm.live_spec if active else vm.spec
        assert spec is not None
        chosen = _check_selection(spec, disks, overlays, memory_file)
        if not chosen and not memory:
            raise NotSupported(f"{vm.name!r} has no writable disk image to snapshot")
        taken = to_dict(spec)
        vm_state = str(vm.state)
        meta["seq"] += 1
        plan: dict[str, dict[str, str]] = {}
        try:
            for disk in chosen:
                meta["origins"].setdefault(disk.name, disk.path)
                wanted = (overlays or {}).get(disk.name)
                if wanted is not None and reuse:
                    overlay = await _reuse_overlay(meta, disk.name, wanted, disk.path or "", disk.format)
                else:
                    overlay = await _new_overlay(meta, disk.name, snap, disk.path or "", disk.format, wanted)
                plan[disk.name] = {"frozen": disk.path or "", "format": disk.format, "overlay": overlay}
            mem_path = (memory_file or _memory_path(vm, meta, plan, snap)) if memory else None
            mem_error = await _take_live(vm, meta["seq"], plan, mem_path, quiesce) if active else ""
        except BaseException:
            for p in plan.values():
                _drop_overlay(meta, p["overlay"])
            raise
        for p in plan.values():
            _repoint([vm.live_spec, vm.spec], p["frozen"], p["overlay"], "qcow2")
        entry = {"name": snap, "createdAt": time.time(), "vmState": vm_state, "memory": None if mem_error else mem_path,
                 "quiesced": quiesce, "spec": taken, "disks": plan, "parent": meta["current"]}
        meta["snapshots"].append(entry)
        meta["current"] = snap
        save(vm.cfg, vm.name, meta)
        vm.changed()
        log.info("%s: snapshot %s taken (%d disks%s)", vm.name, snap, len(plan), ", memory" if memory else "")
        if mem_error:
            raise QemuFailure(f"{vm.name}: snapshot {snap!r} kept as disk-only: {mem_error}", {"name": vm.name})
        return _describe(entry, snap)


def _memory_path(vm: VM, meta: dict[str, Any], plan: dict[str, dict[str, str]], snap: str) -> str:
    """Next to the first overlay (VM storage, shared when the disks are), else the state dir."""
    if plan:
        first = next(iter(plan.values()))["overlay"]
        return os.path.splitext(first)[0] + ".mem"
    directory = os.path.join(vm.cfg.state_dir, "snapshots")
    os.makedirs(directory, mode=0o700, exist_ok=True)
    return os.path.join(directory, f"{vm.name}.{snap}.{meta['seq']}.mem")


async def _take_live(vm: VM, seq: int, plan: dict[str, dict[str, str]], mem_path: str | None,
                     quiesce: bool) -> str:
    """Cut every disk at once (and save memory); '' or why the memory save failed."""
    from kvmd import agent  # guest agent calls (fsfreeze/thaw)

    assert vm.live_spec is not None
    by_name = {d.name: d for d in vm.live_spec.disks}
    frozen = stopped = False
    added: list[str] = []
    try:
        if quiesce:
            await agent.fsfreeze(vm)
            frozen = True
        if mem_path and vm.state == State.RUNNING:
            await vm.qmp("stop")
            stopped = True
        nodes = await qemu.disk_nodes(vm) if plan else {}
        actions = []
        for name, p in plan.items():
            node = f"ov{seq}-{name}"
            await vm.qmp("blockdev-add", _overlay_node(by_name[name], node, p["overlay"]))
            added.append(node)
            actions.append({"type": "blockdev-snapshot", "data": {"node": nodes[name], "overlay": node}})
        if actions:
            await vm.qmp("transaction", {"actions": actions})
        added = []  # now part of the chains
        if mem_path:
            try:
                await qemu.save_memory(vm, mem_path)
            except KvmdError as e:
                return e.message
        return ""
    finally:
        for node in added:
            with contextlib.suppress(KvmdError):
                await vm.qmp("blockdev-del", {"node-name": node})
        if stopped:
            await vm.qmp("cont")
        if frozen:
            try:
                await agent.fsthaw(vm)
            except KvmdError as e:
                log.error("%s: could not thaw the guest's filesystems: %s", vm.name, e)


# -- revert ------------------------------------------------------------------------------


async def revert(m: Manager, vm: VM, snap: str) -> dict[str, Any]:
    _require(vm, "revert")
    meta = load(vm.cfg, vm.name)
    entry = _find(meta, vm, snap)
    was_active = entry["vmState"] not in (str(s) for s in INACTIVE)
    launch = from_dict(entry["spec"])
    new: dict[str, str] = {}
    for name, p in entry["disks"].items():
        new[name] = await _new_overlay(meta, name, snap, p["frozen"], p["format"])
    for disk in launch.disks:
        if disk.name in new:
            disk.path, disk.format = new[disk.name], "qcow2"
    if vm.state in ACTIVE:
        await vm.destroy(reason=f"reverting to snapshot {snap}")
        m.vms.setdefault(vm.name, vm)  # a transient VM is dropped when it stops: keep it
    for name, path in new.items():
        entry["disks"][name]["overlay"] = path
    vm.spec = copy.deepcopy(launch)
    meta["current"] = snap
    _gc(meta, _tops(vm))
    save(vm.cfg, vm.name, meta)
    vm.changed()
    if was_active:
        m._admit(vm)
        if entry.get("memory"):
            await _restore(vm, entry)
        else:
            await vm.start(paused=entry["vmState"] == str(State.PAUSED))
    log.info("%s: reverted to snapshot %s (%s)", vm.name, snap, vm.state)
    return vm.info()


async def _restore(vm: VM, entry: dict[str, Any]) -> None:
    """Start QEMU waiting for a migration stream and feed it the memory file."""
    await vm.start(incoming="defer")
    try:
        await qemu.load_memory(vm, entry["memory"])
        running = entry["vmState"] == str(State.RUNNING)
        if running:
            await qemu.cont_after_incoming(vm)
        vm._set_state(State.RUNNING if running else State.PAUSED, f"reverted to snapshot {entry['name']}")
        if vm.record is not None and vm.record.migration is not None:
            # loaded: no longer an incoming stream a restarted kvmd would have to end (vm.start)
            vm.record.migration = None
            runtime.save(vm.cfg.run_dir, vm.record)
    except BaseException:
        with contextlib.suppress(KvmdError):
            await vm.destroy(reason=f"could not restore the memory of snapshot {entry['name']}")
        raise


# -- delete ------------------------------------------------------------------------------


async def delete(vm: VM, snap: str) -> dict[str, Any]:
    async with vm.lock:
        active = vm.state in ACTIVE
        if active and vm.state not in (State.RUNNING, State.PAUSED):
            raise WrongState(f"cannot delete a snapshot of {vm.name!r} while it is {vm.state}",
                             {"name": vm.name, "state": str(vm.state)})
        meta = load(vm.cfg, vm.name)
        entry = _find(meta, vm, snap)
        children = {}
        for name, p in entry["disks"].items():
            kids = [o for o, info in meta["overlays"].items() if info["backing"] == p["frozen"]]
            if len(kids) > 1:
                raise NotSupported(f"snapshot {snap!r}: {p['frozen']} has {len(kids)} layers on it (a revert "
                                   "left a branch another snapshot needs); delete that snapshot first",
                                   {"name": vm.name})
            children[name] = kids[0] if kids else None
        meta["snapshots"].remove(entry)
        for name, child in children.items():
            if child is not None:
                await _merge(vm, meta, name, child, entry["disks"][name]["frozen"], entry["disks"][name]["format"])
        if entry.get("memory"):
            with contextlib.suppress(OSError):
                os.unlink(entry["memory"])
        if meta["current"] == snap:
            meta["current"] = None
        _gc(meta, _tops(vm))
        save(vm.cfg, vm.name, meta)
        vm.changed()
        return {"name": vm.name, "deleted": snap}


async def _merge(vm: VM, meta: dict[str, Any], disk: str, child: str, base: str, fmt: str) -> None:
    """Fold overlay `child` into the image below it (`base`), then forget `child`."""
    live = next((d for d in vm.live_spec.disks if d.name == disk), None) if vm.live_spec else None
    chain = _chain(meta, live.path) if live is not None and vm.state in ACTIVE else []
    above = [o for o, info in meta["overlays"].items() if info["backing"] == child]
    if child in chain:
        nodes = await qemu.disk_nodes(vm)
        top, base_node = nodes[disk], await qemu.node_of(vm, base)
        job = {"job-id": f"commit-{disk}", "device": top, "base-node": base_node}
        if chain[0] == child:  # the active layer: commit, then pivot the device onto base
            await qemu.run_job(vm, "block-commit", job, pivot=True)
            for node in (top, f"file-{disk}" if top == f"fmt-{disk}" else ""):
                if node:
                    with contextlib.suppress(KvmdError):
                        await vm.qmp("blockdev-del", {"node-name": node})
        else:  # QEMU rewrites the backing link of the layer above
            job["top-node"] = await qemu.node_of(vm, child)
            await qemu.run_job(vm, "block-commit", job)
    else:
        await _qemu_img("commit", "-q", child)
        for path in above:
            await _qemu_img("rebase", "-u", "-q", "-b", base, "-F", fmt, path)
    for path in above:
        meta["overlays"][path].update(backing=base, backingFormat=fmt)
    for other in meta["snapshots"]:
        p = other["disks"].get(disk)
        if p is not None and p["frozen"] == child:
            p["frozen"], p["format"] = base, fmt
            for d in other["spec"].get("disks", []):
                if d.get("path") == child:
                    d["path"], d["format"] = base, fmt
    _repoint([vm.live_spec, vm.spec], child, base, fmt)
    _drop_overlay(meta, child)
    log.info("%s: merged %s into %s", vm.name, child, base)


# -- API ---------------------------------------------------------------------------------


def list_(vm: VM) -> list[dict[str, Any]]:
    meta = load(vm.cfg, vm.name)
    return [_describe(e, meta["current"]) for e in meta["snapshots"]]


def api_methods(m: Manager) -> dict[str, Any]:
    async def snapshot_create(name: str, snap: str, memory: bool = False, quiesce: bool = False,
                              disks: list[str] | None = None, overlays: dict[str, str] | None = None,
                              memory_file: str | None = None, reuse: bool = False) -> dict:
        return await create(m.get(name), snap, memory=memory, quiesce=quiesce, disks=disks, overlays=overlays,
                            memory_file=memory_file, reuse=reuse)

    async def snapshot_list(name: str) -> list:
        return list_(m.get(name))

    async def snapshot_revert(name: str, snap: str) -> dict:
        return await revert(m, m.get(name), snap)

    async def snapshot_delete(name: str, snap: str) -> dict:
        return await delete(m.get(name), snap)

    return {"vm.snapshot_create": snapshot_create, "vm.snapshot_list": snapshot_list,
            "vm.snapshot_revert": snapshot_revert, "vm.snapshot_delete": snapshot_delete}
