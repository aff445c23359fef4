"""Durable files: atomic writes that never tear, and the stored VM definitions."""

from __future__ import annotations

import errno
import os
import stat

import pytest

from kvmd import store
from kvmd.errors import STORAGE_FAILURE, StorageFailure
from kvmd.spec import from_dict
from kvmd.store import DefinitionStore, atomic_write, read_json, write_json


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def test_atomic_write_creates_the_file_with_private_mode(tmp_path):
    path = str(tmp_path / "f.json")
    atomic_write(path, b"hello")
    assert open(path, "rb").read() == b"hello"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert os.listdir(tmp_path) == ["f.json"]


def test_atomic_write_replaces_old_content(tmp_path):
    path = str(tmp_path / "f")
    atomic_write(path, b"old")
    atomic_write(path, b"new" * 100000, mode=0o644)
    assert open(path, "rb").read() == b"new" * 100000
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
    assert os.listdir(tmp_path) == ["f"]


def test_full_disk_leaves_old_content_and_no_temp_file(tmp_path, monkeypatch):
    path = str(tmp_path / "vm.yaml")
    atomic_write(path, b"old content")
    fds = open_fds()

    def enospc(fd, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(store.os, "write", enospc)
    with pytest.raises(StorageFailure) as exc:
        atomic_write(path, b"new content")
    monkeypatch.undo()
    err = exc.value
    assert err.code == STORAGE_FAILURE
    assert err.message == f"cannot write {path}: no space left on device"
    assert err.data == {"path": path, "errno": errno.ENOSPC}
    assert open(path, "rb").read() == b"old content"
    assert os.listdir(tmp_path) == ["vm.yaml"]
    assert open_fds() == fds


def test_a_short_write_is_finished_not_torn(tmp_path, monkeypatch):
    real_write = os.write

    def trickle(fd, data):
        return real_write(fd, bytes(data[:3]))

    monkeypatch.setattr(store.os, "write", trickle)
    path = str(tmp_path / "f")
    atomic_write(path, b"0123456789")
    monkeypatch.undo()
    assert open(path, "rb").read() == b"0123456789"


def test_failing_rename_reports_the_reason_and_cleans_up(tmp_path, monkeypatch):
    path = str(tmp_path / "f")
    atomic_write(path, b"old")

    def erofs(src, dst):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(store.os, "rename", erofs)
    with pytest.raises(StorageFailure, match=r"cannot write .*/f: Read-only file system"):
        atomic_write(path, b"new")
    monkeypatch.undo()
    assert open(path, "rb").read() == b"old"
    assert os.listdir(tmp_path) == ["f"]


def test_missing_directory_is_a_storage_failure(tmp_path):
    path = str(tmp_path / "no" / "f")
    with pytest.raises(StorageFailure) as exc:
        atomic_write(path, b"x")
    assert exc.value.data["path"] == path and exc.value.data["errno"] == errno.ENOENT


def test_json_round_trip(tmp_path):
    path = str(tmp_path / "r.json")
    write_json(path, {"b": [1, 2], "a": None})
    assert read_json(path) == {"a": None, "b": [1, 2]}


# -- DefinitionStore ----------------------------------------------------------------


def make_spec(name: str, **extra):
    doc = {"name": name, "disks": [{"path": f"/img/{name}.raw"}], "nics": [{}]}
    doc.update(extra)
    return from_dict(doc)


def test_store_creates_its_private_directory(tmp_path):
    d = tmp_path / "state" / "vms"
    DefinitionStore(str(d))
    assert stat.S_IMODE(os.stat(d).st_mode) == 0o700


def test_saved_definitions_load_back_equal(tmp_path):
    st = DefinitionStore(str(tmp_path))
    a, b = make_spec("a", metadata={"k": [1, "x"]}), make_spec("b", cpu={"count": 2})
    st.save(b)
    st.save(a)
    specs, bad = st.load_all()
    assert specs == [a, b] and bad == []
    assert sorted(os.listdir(tmp_path)) == ["a.yaml", "b.yaml"]


def test_saving_again_replaces_the_definition(tmp_path):
    st = DefinitionStore(str(tmp_path))
    s = make_spec("a")
    st.save(s)
    s.cpu.count = 8
    st.save(s)
    specs, _ = st.load_all()
    assert [x.cpu.count for x in specs] == [8]


def test_delete_removes_the_definition_and_tolerates_a_missing_one(tmp_path):
    st = DefinitionStore(str(tmp_path))
    st.save(make_spec("a"))
    st.save(make_spec("b"))
    st.delete("a")
    st.delete("a")
    st.delete("never-was")
    specs, bad = st.load_all()
    assert [s.name for s in specs] == ["b"] and bad == []


def test_corrupt_files_are_reported_without_hiding_the_good_ones(tmp_path):
    st = DefinitionStore(str(tmp_path))
    good = [make_spec("a"), make_spec("c")]
    for s in good:
        st.save(s)
    (tmp_path / "b.yaml").write_text("name: b\ndisks: [\n")           # not YAML
    (tmp_path / "d.yaml").write_text("name: d\ncpu: {count: 0}\n")     # invalid spec
    (tmp_path / "e.yaml").write_bytes(b"name: \xff\xfe\n")             # not UTF-8
    specs, bad = st.load_all()
    assert specs == good
    assert [os.path.basename(p) for p, _ in bad] == ["b.yaml", "d.yaml", "e.yaml"]
    reasons = dict((os.path.basename(p), r) for p, r in bad)
    assert "not valid YAML/JSON at line" in reasons["b.yaml"]
    assert "cpu.count: must be at least 1" in reasons["d.yaml"]
    assert reasons["e.yaml"]


def test_unreadable_entry_is_reported(tmp_path):
    st = DefinitionStore(str(tmp_path))
    os.mkdir(tmp_path / "dir.yaml")
    specs, bad = st.load_all()
    assert specs == [] and [p for p, _ in bad] == [str(tmp_path / "dir.yaml")]


def test_temp_files_and_other_files_are_ignored(tmp_path):
    st = DefinitionStore(str(tmp_path))
    st.save(make_spec("a"))
    (tmp_path / ".tmp-abc123").write_text("half a spec")
    (tmp_path / ".hidden.yaml").write_text("garbage: [")
    (tmp_path / "notes.txt").write_text("hello")
    specs, bad = st.load_all()
    assert [s.name for s in specs] == ["a"] and bad == []


def test_save_on_a_full_disk_keeps_the_previous_definition(tmp_path, monkeypatch):
    st = DefinitionStore(str(tmp_path))
    s = make_spec("a")
    st.save(s)

    def enospc(fd, data):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(store.os, "write", enospc)
    changed = make_spec("a", cpu={"count": 4})
    with pytest.raises(StorageFailure, match="no space left on device"):
        st.save(changed)
    monkeypatch.undo()
    specs, bad = st.load_all()
    assert specs == [s] and bad == []
