"""dcmstream.io.atomic: the one atomic-write mechanism (temp sibling, fsync, rename, folder fsync)."""

from __future__ import annotations

import os

import pytest

from dcmstream.io import atomic
from dcmstream.io.atomic import AtomicFile, atomic_copy, atomic_write, commit_file, fsync_dir, temp_sibling


def _leftovers(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_commit_publishes_the_whole_file(tmp_path) -> None:
    dest = tmp_path / "out.bin"
    with AtomicFile(dest) as out:
        out.fh.write(b"x" * 1000)
        out.write_behind()
        out.fh.write(b"y")
        assert not dest.exists()  # nothing visible before the commit
        assert out.commit() == dest
    assert dest.read_bytes() == b"x" * 1000 + b"y"
    assert _leftovers(tmp_path) == []


def test_a_crash_before_commit_keeps_the_old_file_and_no_temp(tmp_path) -> None:
    dest = tmp_path / "report.html"
    dest.write_bytes(b"old")
    with pytest.raises(RuntimeError), AtomicFile(dest) as out:
        out.fh.write(b"new, half written")
        raise RuntimeError("crash before commit")
    assert dest.read_bytes() == b"old"
    assert _leftovers(tmp_path) == []

    def failing_writer(fh) -> None:
        fh.write(b"partial")
        raise OSError("disk full")

    with pytest.raises(OSError):
        atomic_write(dest, failing_writer)
    assert dest.read_bytes() == b"old"
    assert _leftovers(tmp_path) == []


def test_atomic_write_and_copy_replace_whole(tmp_path) -> None:
    dest = tmp_path / "a.json"
    atomic_write(dest, "é\n")
    assert dest.read_text(encoding="utf-8") == "é\n"
    atomic_write(dest, b"\x00\x01", fsync=False)
    assert dest.read_bytes() == b"\x00\x01"
    copy = atomic_copy(dest, tmp_path / "b.json")
    assert copy.read_bytes() == b"\x00\x01"
    assert os.stat(copy).st_mode & 0o777 != 0o600  # not tempfile's private mode
    assert _leftovers(tmp_path) == []


def test_commit_file_renames_a_finished_temp(tmp_path) -> None:
    dest = tmp_path / "blob"
    tmp = temp_sibling(dest)
    assert tmp.parent == tmp_path and tmp.name.startswith(".blob.") and tmp.name.endswith(".tmp")
    assert temp_sibling(dest) != tmp  # unique per writer
    tmp.write_bytes(b"data")
    commit_file(tmp, dest)
    assert dest.read_bytes() == b"data" and not tmp.exists()


def test_fsync_dir_is_best_effort(tmp_path) -> None:
    fsync_dir(tmp_path)
    fsync_dir(tmp_path / "missing")  # no error: nothing to flush


def test_write_behind_is_only_a_hint(tmp_path, monkeypatch) -> None:
    calls = []
    monkeypatch.setattr(atomic, "_start_writeback", lambda fd: calls.append(fd))
    with AtomicFile(tmp_path / "f") as out:
        out.fh.write(b"abc")
        out.write_behind()
        out.commit()
    assert len(calls) == 1 and (tmp_path / "f").read_bytes() == b"abc"
