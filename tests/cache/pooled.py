"""The frame readers' intended use of a cache's buffer pool, for tests (not a test module).

Until ``image.FrameReader`` calls :meth:`FrameCache.decode_pooled` itself, these tests
go the same way by hand: encoded bytes -> decoder with ``out=`` -> ``finish_frame`` ->
the cache. Only public names of the instance are used.
"""

from __future__ import annotations

import numpy as np
from pydicom.uid import ExplicitVRBigEndian

from dcmstream.cache import FrameCache
from dcmstream.codecs import ENCAPSULATED_UNCOMPRESSED, decode_native, decoder_for
from dcmstream.codecs.base import Decoded
from dcmstream.image.postprocess import finish_frame


def decode_into(inst, data: bytes, j: int, out: np.ndarray | None) -> np.ndarray:
    """Frame ``j`` of ``inst`` from its encoded ``data``, decoded into ``out`` where it can be."""
    spec, ts = inst.pixel_spec, inst.transfer_syntax
    decoded: Decoded
    if inst.frame_index.kind == "native":
        bits = inst.frame_index.bit_offsets
        offset = 0 if bits is None else int(bits[j])
        decoded = decode_native(data, spec, ts != ExplicitVRBigEndian, offset, out=out)
    elif ts == ENCAPSULATED_UNCOMPRESSED:
        decoded = decode_native(data, spec, True, out=out)
    else:
        decoded = decoder_for(ts).decode_frame(data, spec, 0, out=out)
    assert decoded.array.shape == spec.shape
    return finish_frame(decoded, spec, ts)


def pooled_frame(inst, cache: FrameCache, j: int) -> np.ndarray:
    """``inst.frame(j)`` through ``cache`` (both tiers), decoded into the cache's recycled buffers."""
    spec = inst.pixel_spec

    def load() -> np.ndarray:
        data = cache.get_or_load((inst.cache_key, j, "encoded"), lambda: inst.encoded_frame(j), "encoded")
        return cache.decode_pooled(spec.shape, spec.dtype, lambda out: decode_into(inst, data, j, out))

    return cache.get_or_load((inst.cache_key, j, "full"), load)
