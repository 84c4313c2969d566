"""The header of a transcoded instance: what changes with the transfer syntax and, for lossy
results, with the derivation (PS3.3 C.7.6.1 General Image, C.7.6.1.1.5 Lossy Image
Compression; PS3.5 8.2 photometric rules per codec).

Lossless transcoding keeps the SOP Instance UID (the pixels are the same image).
Lossy results get, like DCMTK's ``dcmcjpeg``/``dcmcjpls`` do:

* a new SOP Instance UID (and Media Storage SOP Instance UID),
* Lossy Image Compression "01"; Ratio and Method *appended* to any values already there,
* Image Type value 1 DERIVED,
* Derivation Description (appended), Derivation Code Sequence item
  (113040, DCM, "Lossy Compression") from CID 7203,
* a Source Image Sequence item referencing the original, purpose of reference
  (121320, DCM, "Uncompressed predecessor") from CID 7202 - or
  (121322, DCM, "Source image for image processing operation") when the source was
  already lossy.

The lossy compression ratio is only known once every frame is written, so its value is
reserved as fixed-width text and patched in place (:func:`ratio_placeholder` /
:func:`format_ratio`).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import BinaryIO

import numpy as np
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import UID, generate_uid

__all__ = [
    "IMPLEMENTATION_CLASS_UID",
    "append_lossy_derivation",
    "format_ratio",
    "patch_ratio",
    "new_file_meta",
    "output_dataset",
    "ratio_placeholder",
]

IMPLEMENTATION_CLASS_UID = generate_uid(entropy_srcs=["dcmstream", "implementation"])
IMPLEMENTATION_VERSION = "DCMSTREAM"

# Elements that describe the stored encoding of the source, not the image: they must not
# survive into a differently encoded file.
_DROPPED = (
    0x7FE00001,  # Extended Offset Table
    0x7FE00002,  # Extended Offset Table Lengths
    0x7FE00003,  # Encapsulated Pixel Data Value Total Length
    0x00287FE0,  # Pixel Data Provider URL
    0xFFFCFFFC,  # Data Set Trailing Padding (would sort after Pixel Data)
)
_SWAP_SIZES = {"OW": 2, "OF": 4, "OL": 4, "OD": 8, "OV": 8}

RATIO_WIDTH = 10  # characters reserved for the ratio written by this step


def ratio_placeholder() -> str:
    """Fixed-width, valid DS text reserved for the ratio of this compression step.

    All digits (pydicom keeps a DS string as given, but strips padding spaces)."""
    return "1." + "0" * (RATIO_WIDTH - 2)


def format_ratio(ratio: float) -> bytes:
    """The ratio as DS text of exactly :data:`RATIO_WIDTH` bytes (space padded)."""
    for digits in (2, 1, 0):
        text = f"{ratio:.{digits}f}"
        if len(text) <= RATIO_WIDTH:
            return text.ljust(RATIO_WIDTH).encode("ascii")
    return f"{ratio:.3g}"[:RATIO_WIDTH].ljust(RATIO_WIDTH).encode("ascii")


def patch_ratio(fh: BinaryIO, at: int, ratio: float) -> None:
    """Overwrite the reserved ratio text at file offset ``at`` (same width: nothing else
    moves) once the ratio is known, and come back to where writing was."""
    end = fh.tell()
    fh.seek(at)
    fh.write(format_ratio(ratio))
    fh.seek(end)


def _swap_big_endian(ds: Dataset) -> None:
    """Byte-swap the raw OW/OF/OL/OD/OV values of a dataset read as big endian.

    pydicom writes such values as the bytes it read, so a big endian source would otherwise
    come out with swapped palettes, LUTs and overlays in a little endian file.
    """
    for elem in ds.iterall():
        size = _SWAP_SIZES.get(str(elem.VR))
        if size and isinstance(elem.value, (bytes, bytearray)) and len(elem.value) % size == 0:
            elem.value = np.frombuffer(elem.value, f">u{size}").astype(f"<u{size}").tobytes()
        elif str(elem.VR) in ("US or OW", "US or SS or OW") and isinstance(
                elem.value, (bytes, bytearray)) and len(elem.value) % 2 == 0:
            elem.value = np.frombuffer(elem.value, ">u2").astype("<u2").tobytes()


def output_dataset(source: Dataset, *, photometric: str, samples: int,
                   big_endian_source: bool) -> Dataset:
    """A copy of the source header (no pixel data) with the pixel encoding updated.

    Nothing the caller changes reaches the source's dataset: elements not parsed yet (raw,
    immutable tuples) are shared, parsed ones deep-copied. When every raw element is stored
    as every output is written (explicit VR little endian, as most sources), the copy says
    so (its original encoding), and the writer copies those elements as stored (see
    ``writer.Encoding.dataset``): parsing and re-encoding them all cost more than encoding
    and verifying a 512 x 512 frame.
    Otherwise (implicit VR, big endian, or a body that contradicts its transfer syntax)
    pydicom parses and re-encodes everything, ambiguous VRs resolved.
    """
    # Element by element into a plain Dataset: deep-copying the FileDataset would try to copy
    # the file handle it was read from.
    ds = Dataset()
    as_output = True
    for elem in source.elements():
        if isinstance(elem, RawDataElement):
            as_output = as_output and elem.VR is not None and not elem.is_implicit_VR \
                and elem.is_little_endian
            ds[elem.tag] = elem
        else:
            ds[elem.tag] = copy.deepcopy(elem)
    if as_output:
        ds.set_original_encoding(False, True, source.original_character_set)
    for tag in _DROPPED:
        if tag in ds:
            del ds[tag]
    if big_endian_source:
        _swap_big_endian(ds)
    ds.PhotometricInterpretation = photometric
    if samples > 1:
        # dcmstream hands over frames as (rows, columns, samples): colour-by-pixel.
        ds.PlanarConfiguration = 0
    # Pixel statistics refer to stored values, which lossless coding keeps; nothing to do.
    return ds


def new_file_meta(ds: Dataset, transfer_syntax: str, source_meta: Dataset | None) -> FileMetaDataset:
    """File Meta Information for ``ds`` written in ``transfer_syntax``."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = UID(transfer_syntax)
    meta.ImplementationClassUID = IMPLEMENTATION_CLASS_UID
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION
    if source_meta is not None:
        for keyword in ("SourceApplicationEntityTitle",):
            if keyword in source_meta:
                setattr(meta, keyword, source_meta[keyword].value)
    return meta


def _values(ds: Dataset, keyword: str) -> list[str]:
    if keyword not in ds or ds[keyword].value in (None, ""):
        return []
    value = ds[keyword].value
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        return [str(value)]
    return [str(v) for v in value]


def _code(value: str, designator: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = designator
    item.CodeMeaning = meaning
    return item


def append_lossy_derivation(ds: Dataset, *, method: str, description: str,
                            source_lossy: bool, source_sop_class: str,
                            source_sop_instance: str, new_sop_instance: str | None = None,
                            ratio: str | None = None) -> str:
    """Mark ``ds`` as the lossy derivative of the source; returns the new SOP Instance UID.

    ``ratio`` is this step's ratio as text (defaults to :func:`ratio_placeholder`, to be
    patched once known). Existing ratio/method values are kept and the new ones appended;
    when the source was lossy but its method was never recorded, the lists are left as
    they are apart from the append (their multiplicities may then differ, as in the input).
    """
    ds.LossyImageCompression = "01"
    # Appending keeps the value multiplicities of ratio and method in step, as PS3.3 asks.
    ratios: list[object] = []
    if ds.get("LossyImageCompressionRatio") not in (None, ""):
        old = ds.LossyImageCompressionRatio
        ratios = list(old) if isinstance(old, Iterable) and not isinstance(old, str) else [old]
    ratios.append(ratio if ratio is not None else ratio_placeholder())
    ds.LossyImageCompressionRatio = ratios if len(ratios) > 1 else ratios[0]
    methods = _values(ds, "LossyImageCompressionMethod") + [method]
    ds.LossyImageCompressionMethod = methods if len(methods) > 1 else methods[0]

    image_type = _values(ds, "ImageType")
    if image_type:
        image_type[0] = "DERIVED"
        ds.ImageType = image_type

    previous = ds.get("DerivationDescription", "")
    text = f"{previous}; {description}" if previous else description
    ds.DerivationDescription = text[:1024]
    codes = list(ds.get("DerivationCodeSequence", []))
    codes.append(_code("113040", "DCM", "Lossy Compression"))
    ds.DerivationCodeSequence = Sequence(codes)

    reference = Dataset()
    reference.ReferencedSOPClassUID = source_sop_class
    reference.ReferencedSOPInstanceUID = source_sop_instance
    reference.PurposeOfReferenceCodeSequence = Sequence([
        _code("121322", "DCM", "Source image for image processing operation") if source_lossy
        else _code("121320", "DCM", "Uncompressed predecessor")])
    sources = list(ds.get("SourceImageSequence", []))
    sources.append(reference)
    ds.SourceImageSequence = Sequence(sources)

    uid = new_sop_instance or generate_uid()
    ds.SOPInstanceUID = uid
    return uid
