"""Multi-frame sample files: :func:`write_multiframe` and its cached form :func:`ensure_sample`.

It *streams*: frames are generated, encoded and written one at a time, so memory stays
bounded to a few frames whatever the number of frames. pydicom encodes the header; the
Pixel Data element (native or encapsulated, with Basic or Extended Offset Table) and the
per-frame functional groups are streamed by the compressor's writer
(:func:`dcmstream.compress.write_encapsulated` and friends), the one the transcoder uses.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.tag import Tag
from pydicom.uid import (
    EnhancedCTImageStorage,
    MultiFrameGrayscaleWordSecondaryCaptureImageStorage,
    UltrasoundMultiFrameImageStorage,
)

from ..compress import (
    AtomicFile,
    DeflateWriter,
    Encoding,
    encoding_for,
    file_meta_bytes,
    patch_ratio,
    ratio_placeholder,
    write_encapsulated,
    write_native,
    write_sequence,
)
from ..errors import InvalidArgumentError
from .common import IMPLEMENTATION_CLASS_UID, add_equipment, make_uid
from .enhanced_ct import add_enhanced_ct, ct_frame_groups
from .mr_us import add_secondary_capture, add_ultrasound
from .pixels import CT_INTERCEPT_UNSIGNED, KINDS, synthetic_frames
from .syntaxes import OFFSET_TABLES, SYNTAXES, Codec, Encoder, Layout, codec_for, layout_for

__all__ = ["ensure_sample", "write_multiframe"]

PER_FRAME_GROUPS = Tag("PerFrameFunctionalGroupsSequence")

def _encoding(syntax: str) -> Encoding:
    return encoding_for(SYNTAXES[syntax])


class _SizeCounter:
    """An encoder that also sums the sizes of the codestreams it returns."""

    def __init__(self, encode: Encoder) -> None:
        self._encode = encode
        self.total = 0

    def __call__(self, frame: np.ndarray) -> bytes:
        data = self._encode(frame)
        self.total += len(data)
        return data


def _ratio_offset(header: bytes) -> int:
    """Where the reserved Lossy Image Compression Ratio text is in the encoded header
    (explicit VR little endian, as with every encapsulated syntax): found with its element
    header, so no other value can be mistaken for it."""
    placeholder = ratio_placeholder().encode("ascii")
    element = struct.pack("<HH2sH", 0x0028, 0x2112, b"DS", len(placeholder)) + placeholder
    return header.index(element) + len(element) - len(placeholder)


def _write_native(out: BinaryIO | DeflateWriter, enc: Encoding, layout: Layout,
                  frames: Iterator[np.ndarray], count: int, frame_bytes: int) -> None:
    write_native(out, enc, frames, count, frame_bytes=frame_bytes,
                        bits_allocated=layout.bits_allocated, dtype=layout.dtype)


_SOP_CLASSES = {
    "ct": EnhancedCTImageStorage,
    "mr": MultiFrameGrayscaleWordSecondaryCaptureImageStorage,
    "us": UltrasoundMultiFrameImageStorage,
}
_WINDOWS = {"ct": (40, 400), "mr": (1000, 2000)}  # (center, width) in rescaled units


def _build_dataset(*, kind: str, syntax: str, layout: Layout, codec: Codec, frames: int,
                   rows: int, columns: int, seed: int, instance_key: tuple[object, ...]) -> Dataset:
    """Everything but Pixel Data and, for CT, the per-frame functional groups."""
    ds = Dataset()
    sop_class = _SOP_CLASSES[kind]
    sop_instance = make_uid("instance", *instance_key)
    ds.file_meta = meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_instance
    meta.TransferSyntaxUID = SYNTAXES[syntax]
    meta.ImplementationClassUID = IMPLEMENTATION_CLASS_UID
    meta.ImplementationVersionName = "DCMSTREAM"

    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_instance
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = "20240115"
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = "120000"
    ds.AccessionNumber = f"DS{seed:08d}"
    ds.Modality = kind.upper()
    add_equipment(ds)
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = "dcmstream synthetic study"
    ds.SeriesDescription = f"{kind.upper()} {syntax} {frames} frames"
    ds.PatientName = f"Synthetic^Sample{seed}"
    ds.PatientID = f"DCMSTREAM-{seed}"
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.StudyInstanceUID = make_uid("study", seed)
    ds.SeriesInstanceUID = make_uid("series", *instance_key)
    ds.StudyID = "1"
    # Readable and stable: hundreds say the kind, units the syntax.
    ds.SeriesNumber = 100 * (KINDS.index(kind) + 1) + list(SYNTAXES).index(syntax)
    ds.InstanceNumber = 1
    ds.BurnedInAnnotation = "NO"

    ds.SamplesPerPixel = layout.samples
    ds.PhotometricInterpretation = codec.photometric
    if layout.samples > 1:
        ds.PlanarConfiguration = 0
    ds.Rows, ds.Columns = rows, columns
    ds.BitsAllocated = layout.bits_allocated
    ds.BitsStored = layout.bits_stored
    ds.HighBit = layout.bits_stored - 1
    ds.PixelRepresentation = int(layout.signed)
    ds.NumberOfFrames = frames
    if codec.lossy_method:
        ds.LossyImageCompression = "01"
        # Known once every frame is encoded: reserved here, filled in by patch_ratio.
        ds.LossyImageCompressionRatio = ratio_placeholder()
        ds.LossyImageCompressionMethod = codec.lossy_method
    elif kind == "ct":
        ds.LossyImageCompression = "00"  # Enhanced CT requires it (1C) even when lossless
    if kind in _WINDOWS:
        ds.WindowCenter, ds.WindowWidth = _WINDOWS[kind]
        intercept = CT_INTERCEPT_UNSIGNED if kind == "ct" and not layout.signed else 0
        ds.RescaleIntercept, ds.RescaleSlope = intercept, 1
        ds.RescaleType = "HU" if kind == "ct" else "US"
    if kind == "ct":
        add_enhanced_ct(ds, seed=seed, rows=rows, columns=columns, frames=frames,
                         irradiation_event=make_uid("irradiation-event", *instance_key))
    elif kind == "mr":
        add_secondary_capture(ds, frames=frames)
    else:
        add_ultrasound(ds)
    return ds


def write_multiframe(
    path: str | Path,
    *,
    frames: int,
    syntax: str = "explicit",
    kind: str = "ct",
    rows: int = 512,
    columns: int = 512,
    offset_table: str = "bot",
    fragments_per_frame: int = 1,
    signed: bool = False,
    seed: int = 0,
    photometric: str | None = None,
) -> Path:
    """Write a synthetic multi-frame DICOM Part 10 file and return its path.

    Memory stays bounded to a few frames whatever ``frames`` is: the frames are generated,
    encoded and written one by one. ``offset_table`` ("bot", "none" or "eot") and
    ``fragments_per_frame`` apply to encapsulated syntaxes only; "eot" writes an empty Basic
    Offset Table plus the Extended Offset Table and needs one fragment per frame.
    ``photometric`` overrides the default photometric interpretation where the codec allows
    (colour: see ``COLOUR_PHOTOMETRICS``; grey: MONOCHROME2 or MONOCHROME1). The file
    appears atomically (written to a temporary name, then renamed).
    """
    if syntax not in SYNTAXES:
        raise InvalidArgumentError(f"unknown syntax {syntax!r}; expected one of {list(SYNTAXES)}")
    if kind not in KINDS:
        raise InvalidArgumentError(f"unknown kind {kind!r}; expected one of {KINDS}")
    if offset_table not in OFFSET_TABLES:
        raise InvalidArgumentError(f"offset_table must be one of {OFFSET_TABLES}, not {offset_table!r}")
    if frames < 1 or fragments_per_frame < 1:
        raise InvalidArgumentError("frames and fragments_per_frame must be >= 1")
    if signed and kind != "ct":
        raise InvalidArgumentError("signed=True is only supported for kind 'ct'")
    layout = layout_for(kind, signed)
    codec = codec_for(syntax, layout, photometric)
    if codec.encode is not None:
        if offset_table == "eot" and fragments_per_frame != 1:
            raise InvalidArgumentError("the Extended Offset Table requires one fragment per frame")
        if codec.one_fragment_per_frame and fragments_per_frame != 1:
            raise InvalidArgumentError(f"{syntax} requires one fragment per frame (PS3.5 A.4.2)")

    instance_key = (seed, kind, syntax, rows, columns, frames, offset_table,
                    fragments_per_frame, signed, codec.photometric)
    ds = _build_dataset(kind=kind, syntax=syntax, layout=layout, codec=codec, frames=frames,
                        rows=rows, columns=columns, seed=seed, instance_key=instance_key)
    source = synthetic_frames(kind, rows=rows, columns=columns, seed=seed, signed=signed)
    generated = (source(n) for n in range(frames))

    path = Path(path)
    with AtomicFile(path) as out:
        fh = out.fh
        fh.write(file_meta_bytes(ds.file_meta))
        enc = _encoding(syntax)
        body = DeflateWriter(fh) if syntax == "deflated" else fh
        # pydicom encodes the header; every element it writes sorts before the
        # per-frame functional groups (5200,9230) and Pixel Data (7FE0,xxxx).
        header_at = fh.tell()
        header = enc.dataset(ds)
        body.write(header)
        if kind == "ct":
            write_sequence(body, enc, PER_FRAME_GROUPS,
                                  ct_frame_groups(enc, frames, rows, columns))
        if codec.encode is None:
            _write_native(body, enc, layout, generated, frames,
                          layout.frame_bytes(rows, columns))
        else:
            encode = _SizeCounter(codec.encode)
            write_encapsulated(fh, map(encode, generated), frames,
                                      offset_table=offset_table,
                                      fragments_per_frame=fragments_per_frame)
            if codec.lossy_method:
                ratio = frames * layout.frame_bytes(rows, columns) / encode.total
                patch_ratio(fh, header_at + _ratio_offset(header), ratio)
        if isinstance(body, DeflateWriter):
            body.finish()
        out.commit()
    return path


def ensure_sample(path: str | Path, **kwargs: object) -> Path:
    """Write the sample with :func:`write_multiframe` unless ``path`` already exists.

    The cache key is the path alone: callers encode the parameters in the file name.
    """
    path = Path(path)
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_multiframe(path, **kwargs)  # type: ignore[arg-type]
