"""The one transfer-syntax table (dcmstream.codecs.syntaxes) and what derives from it."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from pydicom.uid import UID

from dcmstream.codecs import ENCAPSULATED_UNCOMPRESSED, NATIVE_SYNTAXES
from dcmstream.codecs.syntaxes import LOSSY_METHODS, SYNTAXES, by_name, media_type, syntax, uid_of

REPO = Path(__file__).resolve().parent.parent


def _generator():
    spec = importlib.util.spec_from_file_location("gen_viewer_syntaxes", REPO / "scripts" / "gen_viewer_syntaxes.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def test_committed_viewer_table_is_generated_from_the_python_one() -> None:
    gen = _generator()
    committed = (REPO / "viewer" / "src" / "syntaxes.ts").read_text(encoding="utf-8")
    assert committed == gen.render(), "viewer/src/syntaxes.ts is stale: run python3 scripts/gen_viewer_syntaxes.py"
    for s in SYNTAXES:
        assert (f'"{s.uid}"' in committed) == s.wasm, s.name


def test_rows_are_unique_and_agree_with_pydicom() -> None:
    assert len({s.uid for s in SYNTAXES}) == len({s.name for s in SYNTAXES}) == len(SYNTAXES)
    for s in SYNTAXES:
        uid = UID(s.uid)
        if uid.name != s.uid:  # pydicom knows it (not yet JPEG XL): same kind, compression, encoding
            assert uid.is_transfer_syntax, s.uid
            assert uid.is_compressed == s.encapsulated or s.uid == ENCAPSULATED_UNCOMPRESSED, s.name
            if not s.encapsulated:
                assert (uid.is_implicit_VR, uid.is_little_endian, uid.is_deflated) == (
                    not s.explicit_vr, s.little_endian, s.deflated), s.name
        assert s.lossless == (s.lossy_method is None) or s.family == "jxl", s.name
        assert s.fragments in ("frame", "stream", "value") and (s.fragments == "value") == (not s.encapsulated)


def test_derived_sets() -> None:
    assert {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99"} == NATIVE_SYNTAXES
    assert ENCAPSULATED_UNCOMPRESSED == "1.2.840.10008.1.2.1.98"
    assert LOSSY_METHODS["1.2.840.10008.1.2.4.203"] == "ISO_15444_15" and "1.2.840.10008.1.2.4.80" not in LOSSY_METHODS
    assert media_type("1.2.840.10008.1.2.4.80") == "image/jls" and media_type("1.2.3") == "application/octet-stream"
    assert syntax("1.2.3") is None and by_name("htj2k-rpcl").uid == uid_of("htj2k-rpcl") == "1.2.840.10008.1.2.4.202"


def test_every_user_reads_the_table() -> None:
    from dcmstream.compress.encoders import LOSSY_SYNTAXES, TARGETS
    from dcmstream.compress.writer import encoding_for, is_deflated
    from dcmstream.pipeline.sources import _J2K_SYNTAXES
    from dcmstream.samples import SYNTAXES as SAMPLE_SYNTAXES
    from dcmstream.web.media import NATIVE, media_type_for_syntax

    assert LOSSY_SYNTAXES == LOSSY_METHODS and NATIVE == NATIVE_SYNTAXES
    for target in TARGETS.values():
        row = syntax(target.transfer_syntax)
        assert row is not None and (row.lossy_method is not None) == target.lossy, target.name
    for name, uid in SAMPLE_SYNTAXES.items():
        assert by_name(name).uid == uid
    assert {s.uid for s in SYNTAXES if s.family in ("j2k", "htj2k")} == _J2K_SYNTAXES
    for s in SYNTAXES:
        assert media_type_for_syntax(s.uid) == s.media_type
        assert is_deflated(s.uid) == s.deflated
        enc = encoding_for(s.uid)
        assert (enc.implicit, enc.little) == (not s.explicit_vr, s.little_endian)


@pytest.mark.parametrize("uid", ["1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.201"])
def test_media_types_of_dicomweb(uid: str) -> None:
    assert media_type(uid) in ("image/jpeg", "image/jphc")
