"""A record memoised in one process whose blob another process moved: read again from the
catalog once (Archive.open_blob), so the move is transparent."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from dcmstream.archive import Archive, BlobNotFoundError
from dcmstream.samples import write_multiframe


def test_a_blob_moved_by_another_process_is_found_again(tmp_path) -> None:
    path = write_multiframe(tmp_path / "mf.dcm", frames=4, syntax="jpeg-ls", kind="ct", rows=32, columns=32, seed=2)
    root = tmp_path / "archive"
    with Archive(root, cache=False) as server, Archive(root, cache=False) as mover:
        sop = server.ingest_file(path).sop_uid
        assert sop is not None
        record = server.record(sop)
        assert record is not None
        stored = server.stored(record)
        assert stored is not None
        first = stored.frame(0)  # record and frame reader now memoised in "server"
        # "mover" (another process: a lifecycle move) copies the blob, switches the row, deletes the old copy
        new_key = mover.replacement_key(record)
        mover.blobs.put_bytes(new_key, mover.blobs.read_range(record.blob_key), exclusive=True)
        full = mover.catalog.get(sop, with_dataset=True)
        assert full is not None and mover.catalog.replace_blob(sop, record.blob_key, replace(full, blob_key=new_key))
        mover.blobs.delete(record.blob_key)
        # the memoised reader and a fresh open both read the moved blob
        with mover.open_instance(replace(record, blob_key=new_key)) as moved:
            assert np.array_equal(stored.frame(1), moved.frame(1))
        fresh = server.peek(sop)[0]
        assert fresh is not None and fresh.blob_key == new_key
        with server.open_instance(record) as inst:
            assert np.array_equal(inst.frame(0), first)
        # a blob that is gone for good still says so
        mover.blobs.delete(new_key)
        with pytest.raises(BlobNotFoundError):
            server.open_blob(fresh)
