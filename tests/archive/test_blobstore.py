"""Blob store conformance: every backend subclasses BlobStoreTests (the zarr StoreTests pattern)."""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest

from dcmstream.archive.blobstore import (
    BlobExistsError,
    BlobNotFoundError,
    BlobStore,
    FilesystemBlobStore,
    InvalidKeyError,
    validate_key,
)


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

    def test_exclusive_put_of_a_new_key(self, store: BlobStore, tmp_path) -> None:
        assert store.put_bytes("x/new", b"first", exclusive=True) == 5
        src = tmp_path / "f.bin"
        src.write_bytes(b"file")
        assert store.put_file("x/file", src, exclusive=True) == 4
        assert store.read_range("x/new") == b"first" and store.read_range("x/file") == b"file"

    def test_exclusive_put_refuses_an_existing_key(self, store: BlobStore) -> None:
        store.put_bytes("x/k", b"first writer")
        with pytest.raises(BlobExistsError) as info:
            store.put_bytes("x/k", b"second writer", exclusive=True)
        assert isinstance(info.value, FileExistsError) and info.value.key == "x/k"
        assert "x/k" in str(info.value)
        src = store.staging_path()
        src.write_bytes(b"second writer, moved")
        with pytest.raises(BlobExistsError):
            store.put_file("x/k", src, move=True, exclusive=True)
        assert src.read_bytes() == b"second writer, moved"  # a failed put leaves the file
        src.unlink()
        assert store.read_range("x/k") == b"first writer"
        assert list(store.keys("x/")) == ["x/k"]

    def test_concurrent_exclusive_puts_keep_one_winner_intact(self, store: BlobStore) -> None:
        payloads = [bytes([i]) * 100_000 for i in range(8)]
        won: list[bytes] = []
        lost: list[BaseException] = []

        def put(data: bytes) -> None:
            try:
                store.put_bytes("c/x", data, exclusive=True)
                won.append(data)
            except BaseException as exc:
                lost.append(exc)

        threads = [threading.Thread(target=put, args=(p,)) for p in payloads]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert won and all(isinstance(exc, BlobExistsError) for exc in lost), lost
        assert len(won) + len(lost) == len(payloads)
        assert store.read_range("c/x") in won
        assert list(store.keys("c/")) == ["c/x"]


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

    def test_exactly_one_exclusive_writer_wins(self, store: FilesystemBlobStore) -> None:
        # A hard link is atomic: of concurrent exclusive puts, one and only one succeeds.
        results: list[bool] = []

        def put(i: int) -> None:
            try:
                store.put_bytes("r/k", bytes([i]) * 50_000, exclusive=True)
                results.append(True)
            except BlobExistsError:
                results.append(False)

        threads = [threading.Thread(target=put, args=(i,)) for i in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(results) == [False] * 15 + [True]
        assert [p for p in store.objects.rglob("*") if p.name.startswith(".")] == []


def test_validate_key_accepts_uid_paths() -> None:
    assert validate_key("1.2.840.1/1.2.3/1.2.3.4.dcm") == "1.2.840.1/1.2.3/1.2.3.4.dcm"


def test_local_path_of_the_filesystem_store(tmp_path) -> None:
    from dcmstream.archive import FilesystemBlobStore

    store = FilesystemBlobStore(tmp_path)
    store.put_bytes("a/b.dcm", b"data")
    assert store.local_path("a/b.dcm").read_bytes() == b"data"
    with pytest.raises(BlobNotFoundError):
        store.local_path("a/missing.dcm")


# -- S3: the same conformance on a real S3-protocol server, plus what only ranges can show --------

_MIB = 1 << 20


@pytest.fixture(scope="session", params=["swift", "moto"])
def s3_server(request, tmp_path_factory):
    """OpenStack Swift with s3api (skipped where its Debian packages are missing) and moto."""
    from ..s3_util import moto_server, swift_available, swift_server

    if request.param == "swift":
        if not swift_available():
            pytest.skip("OpenStack Swift is not installed (Debian swift-proxy, swift-account, swift-container, swift-object)")
        with swift_server(tmp_path_factory.mktemp("swift")) as server:
            yield server
    else:
        with moto_server() as server:
            yield server


@pytest.fixture
def s3_bucket(s3_server, monkeypatch):
    """A fresh bucket per test; credentials in the standard AWS_* variables."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_REGION"):
        monkeypatch.delenv(name, raising=False)
    for name, value in s3_server.env.items():
        monkeypatch.setenv(name, value)
    bucket = s3_server.make_bucket()
    yield bucket
    s3_server.drop_bucket(bucket)


def _s3_store(server, bucket, tmp_path, **options):
    from dcmstream.archive.s3store import S3BlobStore

    options.setdefault("multipart_threshold", 6 * _MIB)
    options.setdefault("multipart_chunksize", 5 * _MIB)
    options.setdefault("backoff", 0.0)
    return S3BlobStore(bucket, "archive", endpoint_url=server.endpoint_url, staging_dir=tmp_path / "staging", **options)


class TestS3BlobStore(BlobStoreTests):
    @pytest.fixture
    def store(self, s3_server, s3_bucket, tmp_path) -> BlobStore:
        return _s3_store(s3_server, s3_bucket, tmp_path)

    def test_keys_live_under_the_prefix(self, store, s3_server, s3_bucket) -> None:
        store.put_bytes("1.2/3.dcm", b"abc")
        listed = s3_server.client().list_objects_v2(Bucket=s3_bucket)["Contents"]
        assert [o["Key"] for o in listed] == ["archive/1.2/3.dcm"]
        assert not store.supports_rename and store.local_path("1.2/3.dcm") is None

    def test_ranged_reads_fetch_only_what_they_must(self, store) -> None:
        data = os.urandom(1 * _MIB)
        store.put_bytes("r/big", data)
        stats = store.fetch_stats
        with store.open("r/big") as src:
            stats.reset()
            # A frame-sized read: one request of exactly its bytes.
            assert src.read_exact(300_000, 200_000) == data[300_000:500_000]
            assert (stats.requests, stats.bytes) == (1, 200_000)
            # A frame payload read (read_writable) never reads ahead, whatever its size.
            stats.reset()
            assert src.read_writable(10_000, 5_000) == data[10_000:15_000]
            assert (stats.requests, stats.bytes) == (1, 5_000)
            # Small reads (a header walk): one block of 64 KiB serves them all.
            stats.reset()
            walked = b"".join(src.read_at(600_000 + i * 100, 100) for i in range(600))
            assert walked == data[600_000:660_000]
            assert (stats.requests, stats.bytes) == (1, 64 * 1024)
            # The block is clamped at the end of the object.
            stats.reset()
            assert src.read_at(len(data) - 10, 100) == data[-10:]
            assert (stats.requests, stats.bytes) == (1, 10)
        assert src.fetched.requests == 4

    def test_header_and_frames_of_a_1000_frame_jpeg_ls_ct(self, store, tmp_path) -> None:
        import dcmstream
        from dcmstream.samples import write_multiframe

        path = write_multiframe(tmp_path / "ct.dcm", frames=1000, syntax="jpeg-ls", kind="ct", rows=64, columns=64)
        store.put_file("ct/jpegls.dcm", path)
        local = dcmstream.open(path, cache=False)
        stats = store.fetch_stats
        stats.reset()
        remote = dcmstream.open(store.open("ct/jpegls.dcm"), cache=False)
        header_requests, header_bytes = stats.requests, stats.bytes
        pixel_offset = local.frame_index.span(0)[0]  # where the first frame item starts
        # The header walk is O(header): the bytes before the pixel data (the per-frame
        # functional groups of 1,000 frames make them ~282 KiB), the Basic Offset Table
        # and the last items, each rounded up by at most one 64 KiB read-ahead block.
        assert header_bytes <= pixel_offset + 2 * 64 * 1024, (header_requests, header_bytes, pixel_offset)
        assert header_requests <= -(-pixel_offset // (64 * 1024)) + 3, (header_requests, header_bytes, pixel_offset)
        assert header_bytes < path.stat().st_size / 5
        for i in (0, 500, 999):
            stats.reset()
            offset, length = local.frame_index.span(i)
            assert np.array_equal(remote.frame(i), local.frame(i))
            # One frame: its item header reads ahead one block that holds the frame.
            assert stats.requests == 1 and length <= stats.bytes <= length + 64 * 1024, (i, stats, length)
        remote.close()
        local.close()

    def test_a_large_compressed_frame_costs_its_bytes(self, store, tmp_path) -> None:
        import dcmstream
        from dcmstream.samples import write_multiframe

        path = write_multiframe(tmp_path / "big.dcm", frames=3, syntax="jpeg-ls", kind="ct", rows=512, columns=512)
        store.put_file("ct/big.dcm", path)
        local = dcmstream.open(path, cache=False)
        with dcmstream.open(store.open("ct/big.dcm"), cache=False) as remote:
            store.fetch_stats.reset()
            assert np.array_equal(remote.frame(1), local.frame(1))
            _, length = local.frame_index.span(1)
            assert length > 64 * 1024
            # A remote source reads the item (header + codestream) in one request of
            # exactly its bytes: one round trip a frame, not one byte more.
            assert (store.fetch_stats.requests, store.fetch_stats.bytes) == (1, length)
        local.close()

    def test_native_frame_is_one_exact_request(self, store, tmp_path) -> None:
        import dcmstream
        from dcmstream.samples import write_multiframe

        path = write_multiframe(tmp_path / "n.dcm", frames=50, syntax="explicit", kind="ct", rows=64, columns=64)
        store.put_file("ct/native.dcm", path)
        local = dcmstream.open(path, cache=False)
        with dcmstream.open(store.open("ct/native.dcm"), cache=False) as remote:
            store.fetch_stats.reset()
            assert np.array_equal(remote.frame(7), local.frame(7))
            assert (store.fetch_stats.requests, store.fetch_stats.bytes) == (1, 64 * 64 * 2)
        local.close()

    def test_multipart_upload_of_a_big_file(self, store, tmp_path) -> None:
        big = tmp_path / "big.bin"
        data = os.urandom(11 * _MIB + 123)
        big.write_bytes(data)
        assert store.put_file("m/big", big, exclusive=True) == len(data)
        head = store._client.head_object(Bucket=store.bucket, Key="archive/m/big")
        assert head["ETag"].strip('"').endswith("-3")  # three parts of 5, 5 and 1 MiB
        assert b"".join(store.iter_range("m/big")) == data
        # An exclusive multipart upload of a taken key fails and leaves the first object.
        other = tmp_path / "other.bin"
        other.write_bytes(bytes(7 * _MIB))
        store._conditional_put = None
        before = store.size("m/big")
        with pytest.raises(BlobExistsError):
            store._put_multipart("m/big", "archive/m/big", other, 7 * _MIB, True)
        assert store.size("m/big") == before and store.read_range("m/big", 0, 4096) == data[:4096]

    def test_exclusive_put_from_a_second_process_loses(self, store, s3_server, s3_bucket, tmp_path) -> None:
        # Two stores on one bucket stand for two servers: the second writer of a key loses.
        second = _s3_store(s3_server, s3_bucket, tmp_path / "second")
        store.put_bytes("1.2/3/4.dcm", b"first", exclusive=True)
        with pytest.raises(BlobExistsError):
            second.put_bytes("1.2/3/4.dcm", b"second", exclusive=True)
        # Even when the early existence check is passed (the writers raced up to there),
        # the conditional request itself refuses.
        with pytest.raises(BlobExistsError):
            second._put_object("1.2/3/4.dcm", "archive/1.2/3/4.dcm", b"second", 6, True)
        assert store.read_range("1.2/3/4.dcm") == b"first"

    def test_changed_or_truncated_object_is_a_source_error(self, store) -> None:
        from dcmstream.errors import SourceError

        store.put_bytes("t/obj", os.urandom(200_000))
        src = store.open("t/obj")
        store.put_bytes("t/obj", b"short")  # replaced (truncated) after the source opened
        with pytest.raises(SourceError, match="changed|past the object's end|truncated"):
            src.read_at(100_000, 10)
        store.delete("t/obj")
        with pytest.raises(SourceError):
            src.read_exact(150_000, 70_000)
        src.close()

    def test_staging_is_local_and_swept_at_start(self, store, s3_server, s3_bucket, tmp_path) -> None:
        leftover = store.staging_path(".part")
        leftover.write_bytes(b"a killed ingest")
        assert leftover.parent == tmp_path / "staging"
        fresh = _s3_store(s3_server, s3_bucket, tmp_path, clean_staging_older_than=0)
        assert not leftover.exists() and fresh.staging_dir == store.staging_dir


def test_archive_on_s3_serves_frames_like_the_files(s3_server, s3_bucket, tmp_path, testfile) -> None:
    import dcmstream
    from dcmstream.archive import Archive

    store = _s3_store(s3_server, s3_bucket, tmp_path)
    names = ["CT_small.dcm", "MR_small.dcm", "emri_small_jpeg_ls_lossless.dcm",
             "SC_rgb_rle_2frame.dcm"]
    with Archive(tmp_path / "archive", blobs=store, cache=False) as archive:
        for name in names:
            path = testfile(name)
            result = archive.ingest_file(path)
            assert result.status == "stored", (name, result)
            record = archive.record(result.sop_uid)
            assert record is not None and store.exists(record.blob_key)
            assert store.size(record.blob_key) == os.path.getsize(path)
            stored = archive.stored(record)
            assert stored is not None, name
            with dcmstream.open(path, cache=False) as local:
                for i in range(len(local)):
                    assert np.array_equal(stored.frame(i), local.frame(i)), (name, i)
        assert not any((tmp_path / "archive" / "objects").rglob("*.dcm"))  # the bytes are in S3 only
