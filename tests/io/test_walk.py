"""dcmstream.io.walk: one folder walk (hidden entries and an archive's tmp/ skipped), used by
import, compress, the pipeline and open_series."""

from __future__ import annotations

from pathlib import Path

import pytest

from dcmstream.io.walk import iter_paths, walk_files


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "in"
    for rel in ("b.dcm", "a.dcm", "sub/c.dcm", "sub/deeper/d.dcm", ".hidden.dcm", ".git/objects/x",
                "sub/.DS_Store", "sub/.out.dcm.0123456789ab.tmp", "archive/catalog.sqlite",
                "archive/objects/1/2/3.dcm", "archive/tmp/upload.part", "other/tmp/kept.dcm"):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    (root / "link-to-sub").symlink_to(root / "sub", target_is_directory=True)
    return root


def _rel(paths, root: Path) -> list[str]:
    return [p.relative_to(root).as_posix() for p in paths]


def test_walk_skips_hidden_entries_and_archive_staging(tree: Path) -> None:
    assert _rel(walk_files(tree), tree) == [
        "a.dcm", "b.dcm",
        "archive/catalog.sqlite", "archive/objects/1/2/3.dcm",  # not archive/tmp/: staging
        "other/tmp/kept.dcm",  # a tmp/ that is not an archive's is ordinary
        "sub/c.dcm", "sub/deeper/d.dcm",  # sorted, depth first; the folder link not followed
    ]


def test_walk_not_recursive(tree: Path) -> None:
    assert _rel(walk_files(tree, recursive=False), tree) == ["a.dcm", "b.dcm"]


def test_iter_paths_gives_relative_paths_and_handles_files(tree: Path) -> None:
    got = list(iter_paths([tree / "sub", tree / "a.dcm", tree / "missing"]))
    assert [(p.name, r.as_posix()) for p, r in got] == [("c.dcm", "c.dcm"), ("d.dcm", "deeper/d.dcm"), ("a.dcm", "a.dcm")]
    with pytest.raises(FileNotFoundError):
        list(iter_paths([tree / "missing"], missing_ok=False))


def test_every_user_of_folders_sees_the_same_files(tree: Path) -> None:
    from dcmstream.archive.ingest import iter_files
    from dcmstream.compress.batch import iter_inputs
    from dcmstream.image.series import _expand
    from dcmstream.pipeline.sources import _walk

    expected = list(walk_files(tree))
    assert list(iter_files([tree])) == expected
    assert [p for p, _ in iter_inputs([tree])] == expected
    assert list(_walk(tree)) == expected
    assert _expand(str(tree), recursive=True) == ([str(p) for p in expected], True)
