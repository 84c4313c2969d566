"""Planning one file: the output header, the encoder for its pixel layout, the frame job,
the offset table and how many frames are in flight.

:func:`prepare` decides what the output is - the photometric interpretation the frames are
encoded in (and whether native YBR_FULL samples are kept as stored), the encoder (a ratio
goal calibrated on the first, middle and last frames), the header (with the lossy
derivation attributes, or the record that the pixels already went through lossy
compression) - and returns it as a :class:`FilePlan`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from pydicom.dataset import Dataset

from .. import __version__
from ..image import Instance
from . import header as hdr
from .encoders import LOSSY_SYNTAXES, EncodePlan, Target, UnsupportedTarget
from .frames import FrameTransform, raw_frame
from .metrics import window_from_dataset
from .options import QualityOptions, Rendition
from .worker import FrameJob

__all__ = [
    "FilePlan",
    "estimate_offset_table",
    "frame_photometric",
    "in_flight",
    "prepare",
    "source_is_lossy",
]

_EXPANSION_MARGIN = 1.05  # lossless codecs can expand noise a little; estimate above that


def source_is_lossy(inst: Instance) -> bool:
    """Whether the source's pixels already went through lossy compression."""
    return (str(inst.header_dataset.get("LossyImageCompression", "")).strip() == "01"
            or str(inst.transfer_syntax) in LOSSY_SYNTAXES)


def frame_photometric(inst: Instance) -> tuple[str, bool]:
    """Photometric of the frames handed to the encoder, and whether they are raw samples."""
    spec = inst.pixel_spec
    photometric = spec.photometric_interpretation
    if spec.samples_per_pixel == 1:
        return photometric, False
    if photometric in ("YBR_FULL", "YBR_FULL_422") and inst.frame_index.kind == "native" \
            and spec.bits_allocated == 8:
        return "YBR_FULL", True  # keep the stored samples: YCbCr -> RGB would round
    if photometric in ("RGB", "YBR_RCT", "YBR_ICT"):
        return "RGB", False
    if photometric in ("YBR_FULL", "YBR_FULL_422") and source_is_lossy(inst):
        return "RGB", False  # decoded pixels of a lossy source: RGB is what there is
    raise UnsupportedTarget(f"colour frames in {photometric} ({inst.transfer_syntax.name}) "
                            "cannot be transcoded exactly")


def _calibration_frames(inst: Instance, raw: bool,
                        transform: FrameTransform | None) -> list[np.ndarray]:
    n = len(inst)
    frames = []
    for i in sorted({0, n // 2, n - 1}):
        frame = raw_frame(inst, i) if raw else inst.frame(i)
        frames.append(transform(frame) if transform is not None else frame)
    return frames


@dataclass
class FilePlan:
    """A file ready to be written: its header, its frames and how to check them."""

    job: FrameJob
    dataset: Dataset  # the output's header (no pixel data)
    target: Target
    count: int
    native_estimate: int  # bytes of all frames uncompressed
    raw_groups: bytes | None = None  # the source's per-frame groups as stored, copied as is


def estimate_offset_table(plan: FilePlan, eot_threshold: int) -> str:
    """"eot" when the Pixel Data may reach ``eot_threshold`` bytes, else "bot"."""
    estimate = plan.native_estimate * _EXPANSION_MARGIN + 16 * plan.count
    return "eot" if estimate >= eot_threshold else "bot"


def in_flight(plan: FilePlan, workers: int) -> tuple[int, int]:
    """(frames in flight, frames per task) for ``workers``: tasks of about 1 MiB of raw
    frames (a 512 x 512 x 16-bit frame goes in pairs: 2-3 % faster with two threads than one
    task per frame), two tasks queued per worker, never fewer than 4 frames per worker."""
    frame_bytes = max(plan.native_estimate // max(plan.count, 1), 1)
    chunk = max(1, min(_MAX_TASK_FRAMES, -(-_TASK_BYTES // frame_bytes)))
    return max(4 * workers, 2 * workers * chunk), chunk


#: Raw bytes, and most frames, one pool task transcodes (see :func:`in_flight`).
_TASK_BYTES = 1 << 20
_MAX_TASK_FRAMES = 16


def prepare(inst: Instance, source: str, target: Target, quality: QualityOptions,
            rendition: Rendition | None = None) -> tuple[FilePlan, EncodePlan]:
    """Plan the output of ``inst`` (opened from ``source``) in ``target``: header, encoder,
    frame job; ``rendition`` makes it a derived rendition (see :class:`~.options.Rendition`)."""
    rendition = rendition or Rendition()
    transform, edit = rendition.transform, rendition.edit
    spec = inst.pixel_spec
    photometric, raw = frame_photometric(inst)
    if transform is not None and transform.factor > 1:
        spec = replace(spec, rows=spec.rows // transform.factor,
                       columns=spec.columns // transform.factor)
    if spec.samples_per_pixel > 1 and spec.photometric_interpretation != photometric:
        spec = replace(spec, photometric_interpretation=photometric, planar_configuration=0)
    encode_plan = target.plan(spec, photometric)
    if encode_plan.needs_calibration:
        encode_plan = encode_plan.calibrate(_calibration_frames(inst, raw, transform))
    source_lossy = source_is_lossy(inst)
    # Without edits, the per-frame functional groups are copied as stored (when the source
    # allows): parsing and re-encoding them cost 0.3 s per 1,000 frames.
    source_ds, raw_groups = (inst.dataset, None) if edit is not None else inst.dataset_and_raw_frame_groups()
    ds = hdr.output_dataset(source_ds, photometric=encode_plan.photometric,
                            samples=spec.samples_per_pixel,
                            big_endian_source=str(inst.transfer_syntax) == "1.2.840.10008.1.2.2")
    if transform is not None and transform.factor > 1:
        ds.Rows, ds.Columns = spec.rows, spec.columns
    if source_lossy and not target.lossy:
        # Keep (or add) the record that these pixels went through lossy compression.
        ds.LossyImageCompression = "01"
        if "LossyImageCompressionMethod" not in ds and str(inst.transfer_syntax) in LOSSY_SYNTAXES:
            ds.LossyImageCompressionMethod = LOSSY_SYNTAXES[str(inst.transfer_syntax)]
    if target.lossy:
        sop_class = str(source_ds.get("SOPClassUID", ""))
        sop_instance = str(source_ds.get("SOPInstanceUID", ""))
        description = (f"Lossy compression {target.label} ({target.method}) by dcmstream "
                       f"{__version__}{rendition.description}")
        hdr.append_lossy_derivation(ds, method=target.method or "", description=description,
                                    source_lossy=source_lossy, source_sop_class=sop_class,
                                    source_sop_instance=sop_instance)
    if edit is not None:
        edit(ds)
    ds.file_meta = hdr.new_file_meta(ds, target.transfer_syntax,
                                     getattr(source_ds, "file_meta", None))
    window = window_from_dataset(source_ds) if spec.samples_per_pixel == 1 and \
        spec.photometric_interpretation.startswith("MONOCHROME") else None
    job = FrameJob(path=source, raw=raw, encoder=encode_plan.encoder, native=target.native,
                   lossy=target.lossy, syntax=target.transfer_syntax, spec=encode_plan.spec,
                   window=window, quality=quality, transform=transform)
    count = len(inst)
    native_estimate = encode_plan.spec.pixels_per_frame * max(
        encode_plan.spec.bits_allocated // 8, 1) * count
    return FilePlan(job, ds, target, count, native_estimate, raw_groups), encode_plan

