"""[dimse] / [[forward]] configuration, and forwarding rules sending stored instances on."""

from __future__ import annotations

import time
from pathlib import Path

import pydicom
import pytest

from dcmstream.archive import Archive
from dcmstream.config import ConfigError, DimsePeer, ForwardRule, parse_config, parse_peer
from dcmstream.dimse import DimseServer
from dcmstream.dimse.forward import Forwarder
from dcmstream.dimse.scu import file_item, send_items

from .conftest import Storescp, corpus_file, pixel_bytes

BASE = {"catalog": {"url": "sqlite:///c.sqlite"}, "storage": {"hot": {"url": "file:///tmp/x"}}}


def _parse(**tables: object):
    return parse_config({**BASE, **tables}, source="t.toml", base=Path("/tmp"))


def test_dimse_tables() -> None:
    config = _parse(
        dimse={"ae_title": "ARCHIVE", "port": 104, "host": "0.0.0.0", "accepted_calling_ae_titles": ["CT1", "WS"],
               "peers": [{"ae_title": "WS", "host": "10.0.0.5", "port": 11112}]},
        forward=[{"to": "WS", "modality": "CT"}, {"to": "PACS@10.0.0.9:104", "calling_ae_title": "CT1"}],
    )
    assert config.dimse is not None
    assert (config.dimse.ae_title, config.dimse.port, config.dimse.host) == ("ARCHIVE", 104, "0.0.0.0")
    assert config.dimse.accepted_calling_ae_titles == ("CT1", "WS")
    assert config.dimse.peer("WS") == DimsePeer("WS", "10.0.0.5", 11112)
    assert config.forward == (ForwardRule(DimsePeer("WS", "10.0.0.5", 11112), "CT", None),
                              ForwardRule(DimsePeer("PACS", "10.0.0.9", 104), None, "CT1"))
    assert config.forward[0].matches("ct", "ANY") and not config.forward[0].matches("MR", "ANY")
    assert config.forward[1].matches("MR", "CT1") and not config.forward[1].matches("MR", "CT2")
    assert _parse().dimse is None and _parse().forward == ()


@pytest.mark.parametrize(("tables", "message"), [
    ({"dimse": {"ae_title": "A" * 17}}, "not an AE title"),
    ({"dimse": {"port": 70000}}, "TCP port"),
    ({"dimse": {"colour": 1}}, "unknown key"),
    ({"dimse": {"peers": [{"ae_title": "X", "host": "h"}]}}, "needs a 'port'"),
    ({"forward": [{"to": "NOBODY"}]}, "AE@HOST:PORT"),
    ({"forward": [{"to": "A@h:1", "modalty": "CT"}]}, "unknown key"),
])
def test_bad_dimse_tables(tables: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _parse(**tables)


def test_parse_peer() -> None:
    assert parse_peer("PACS@10.0.0.5:104") == DimsePeer("PACS", "10.0.0.5", 104)
    assert parse_peer("PACS@[::1]:104") == DimsePeer("PACS", "::1", 104)
    for bad in ("PACS", "PACS@host", "@h:1", "P@h:x"):
        with pytest.raises(ConfigError):
            parse_peer(bad)


@pytest.mark.slow
def test_forwarding_rules(server: DimseServer, archive: Archive, storescp: Storescp) -> None:
    """A CT received by C-STORE from MODALITY is forwarded to storescp; an MR is not."""
    rules = [ForwardRule(storescp.peer, modality="CT", calling_ae_title="MODALITY")]
    forwarder = Forwarder(archive, rules, retry_delay=0.2).start()
    try:
        ct, mr = corpus_file("CT_small.dcm"), corpus_file("MR_small.dcm")
        peer = DimsePeer("DCMSTREAM", "127.0.0.1", server.port)
        assert all(r.ok for r in send_items([file_item(ct), file_item(mr)], peer, calling_ae="MODALITY"))
        deadline = time.monotonic() + 30
        while forwarder.metrics()["sent"] < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert forwarder.metrics()["sent"] == 1
        files = storescp.files()
        assert [pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID for f in files] == \
            [pydicom.dcmread(ct, stop_before_pixels=True).SOPInstanceUID]
        assert pixel_bytes(files[0]) == pixel_bytes(ct)
        # a peer that is down: retried, then counted as failed
        forwarder.rules = (ForwardRule(DimsePeer("GONE", "127.0.0.1", 1)),)
        assert archive.ingest_file(corpus_file("JPEG2000.dcm")).ok
        deadline = time.monotonic() + 30
        while forwarder.metrics()["failed"] < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert forwarder.metrics()["failed"] == 1
    finally:
        forwarder.stop()
