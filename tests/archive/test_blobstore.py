"""Blob store conformance: every backend subclasses BlobStoreTests (the zarr StoreTests pattern)."""

from __future__ import annotations

import os
import threading

import pytest

from dcmstream.archive.blobstore import BlobNotFoundError, BlobStore, FilesystemBlobStore, InvalidKeyError, validate_key


class BlobStoreTests:
    """What any BlobStore must do. Subclasses provide the ``store`` fixture."""

    @pytest.fixture
    def store(self, tmp_path) -> BlobStore:  # pragma: no cover - overridden
        raise NotImplementedError

    def test_put_bytes_and_read_back(self, store: BlobStore) -> None:
        assert store.put_bytes("1.2/3.4/5.6.dcm", b"hello world") == 11
        assert store.exists("1.2/3.4/5.6.dcm")
        assert store.size("1.2/3.4/5.6.dcm") == 11
        assert store.read_range("1.2/3.4/5.6.dcm") == b"hello world"
        assert store.read_range("1.2/3.4/5.6.dcm", 6, 5) == b"world"

    def test_put_chunks(self, store: BlobStore) -> None:
        store.put_bytes("a/b", (bytes([i]) * 1000 for i in range(10)))
        assert store.size("a/b") == 10_000
        assert store.read_range("a/b", 1999, 2) == b"\x01\x02"

    def test_put_file_copy_keeps_source(self, store: BlobStore, tmp_path) -> None:
        src = tmp_path / "in.bin"
        src.write_bytes(b"x" * 5000)
        assert store.put_file("k/copy", src) == 5000
        assert src.exists()
        assert store.read_range("k/copy") == b"x" * 5000

    def test_put_file_move_consumes_source(self, store: BlobStore) -> None:
        src = store.staging_path()
        src.write_bytes(b"moved")
        store.put_file("k/moved", src, move=True)
        assert not src.exists()
        assert store.read_range("k/moved") == b"moved"

    def test_replace_is_atomic_and_complete(self, store: BlobStore) -> None:
        store.put_bytes("k/v", b"old" * 100)
        store.put_bytes("k/v", b"new")
        assert store.read_range("k/v") == b"new"

    def test_open_is_random_access_and_counted(self, store: BlobStore) -> None:
        data = bytes(range(256)) * 64
        store.put_bytes("k/r", data)
        before = store.bytes_read
        with store.open("k/r") as src:
            assert src.size == len(data)
            assert src.read_at(1000, 10) == data[1000:1010]
            assert src.read_at(len(data) - 4, 100) == data[-4:]
            assert src.read_writable(0, 8) == data[:8]  # native frames: preadv, counted too
            out = bytearray(6)
            src.read_into(100, 6, out)  # straight into a cache's frame buffer
            assert out == data[100:106]
        assert store.bytes_read - before == 28

    def test_iter_range_chunks(self, store: BlobStore) -> None:
        data = os.urandom(10_000)
        store.put_bytes("k/i", data)
        chunks = list(store.iter_range("k/i", 100, 9_100, chunk_size=1000))
        assert all(len(c) <= 1000 for c in chunks)
        assert b"".join(chunks) == data[100:9_100]
        assert b"".join(store.iter_range("k/i")) == data

    def test_missing_blob(self, store: BlobStore) -> None:
        assert not store.exists("no/such")
        with pytest.raises(BlobNotFoundError):
            store.open("no/such")
        with pytest.raises(BlobNotFoundError):
            store.size("no/such")
        assert store.delete("no/such") is False

    def test_delete(self, store: BlobStore) -> None:
        store.put_bytes("d/e/f", b"1")
        assert store.delete("d/e/f") is True
        assert not store.exists("d/e/f")

    def test_keys_sorted_with_prefix(self, store: BlobStore) -> None:
        for key in ("b/2", "a/1", "b/1", "c"):
            store.put_bytes(key, b".")
        assert list(store.keys()) == ["a/1", "b/1", "b/2", "c"]
        assert list(store.keys("b/")) == ["b/1", "b/2"]

    @pytest.mark.parametrize(
        "key",
        ["", "/abs", "../escape", "a/../../b", "a//b", ".hidden", "a/.b", "a\\b", "a/b/", "x" * 2000, "a b", "%2e%2e/x", None],
    )
    def test_unsafe_keys_rejected(self, store: BlobStore, key) -> None:
        with pytest.raises(InvalidKeyError):
            store.put_bytes(key, b"x")
        with pytest.raises(InvalidKeyError):
            store.exists(key)

    def test_concurrent_puts_of_one_key_leave_one_complete_blob(self, store: BlobStore) -> None:
        payloads = [bytes([i]) * 100_000 for i in range(8)]
        threads = [threading.Thread(target=store.put_bytes, args=("c/k", p)) for p in payloads]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert store.read_range("c/k") in payloads
        assert list(store.keys("c/")) == ["c/k"]


class TestFilesystemBlobStore(BlobStoreTests):
    @pytest.fixture
    def store(self, tmp_path) -> BlobStore:
        return FilesystemBlobStore(tmp_path / "store")

    def test_layout_and_no_temp_files_left(self, store: FilesystemBlobStore) -> None:
        store.put_bytes("1.2/3.dcm", b"abc")
        assert (store.objects / "1.2" / "3.dcm").read_bytes() == b"abc"
        leftovers = [p for p in store.objects.rglob("*") if p.name.startswith(".")]
        assert leftovers == []

    def test_failed_put_leaves_nothing(self, store: FilesystemBlobStore, tmp_path) -> None:
        with pytest.raises(FileNotFoundError):
            store.put_file("x/y", tmp_path / "does-not-exist")
        assert not store.exists("x/y")
        assert [p for p in store.objects.rglob("*") if p.is_file()] == []

    def test_staging_is_on_the_same_file_system(self, store: FilesystemBlobStore) -> None:
        assert store.supports_rename
        assert os.stat(store.staging_path().parent).st_dev == os.stat(store.objects).st_dev

    def test_clean_staging(self, store: FilesystemBlobStore) -> None:
        store.staging_path().write_bytes(b"crash leftover")
        assert store.clean_staging() == 1


def test_validate_key_accepts_uid_paths() -> None:
    assert validate_key("1.2.840.1/1.2.3/1.2.3.4.dcm") == "1.2.840.1/1.2.3/1.2.3.4.dcm"


def test_local_path_of_the_filesystem_store(tmp_path) -> None:
    from dcmstream.archive import FilesystemBlobStore

    store = FilesystemBlobStore(tmp_path)
    store.put_bytes("a/b.dcm", b"data")
    assert store.local_path("a/b.dcm").read_bytes() == b"data"
    with pytest.raises(BlobNotFoundError):
        store.local_path("a/missing.dcm")
