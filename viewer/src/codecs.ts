// WASM decoders (npm @cornerstonejs/codec-*), loaded lazily per transfer syntax inside a
// decode worker. Each returns the frame's samples as bytes in the codec's native layout
// (little-endian 16-bit for > 8 bits, interleaved colour).

import { FAMILIES } from "./syntaxes";
import type { PixelInfo } from "./types";

interface Decoded {
  bytes: Uint8Array; // copy, owned by the caller
  bitsPerSample: number;
  components: number;
  width: number;
  height: number;
  signed: boolean;
}

type Decoder = (data: Uint8Array, info: PixelInfo) => Decoded;

const wasmUrl = (name: string) => new URL(`codecs/${name}`, self.location.href.replace(/[^/]*$/, "")).href;

const loaded = new Map<string, Promise<Decoder>>();

function run(decoder: any, data: Uint8Array, readHeader: boolean): Decoded {
  decoder.getEncodedBuffer(data.length).set(data);
  if (readHeader && decoder.readHeader) decoder.readHeader();
  decoder.decode();
  const fi = decoder.getFrameInfo();
  const out = decoder.getDecodedBuffer() as Uint8Array;
  return {
    bytes: out.slice(), // out of the WASM heap: the next decode reuses that memory
    bitsPerSample: fi.bitsPerSample,
    components: fi.componentCount,
    width: fi.width,
    height: fi.height,
    signed: !!fi.isSigned,
  };
}

async function load(family: string): Promise<Decoder> {
  if (family === "jpegls") {
    const factory = (await import("@cornerstonejs/codec-charls/decodewasmjs")).default;
    const codec = await factory({ locateFile: () => wasmUrl("charlswasm_decode.wasm") });
    const d = new codec.JpegLSDecoder();
    return (data) => run(d, data, false);
  }
  if (family === "jpeg") {
    const factory = (await import("@cornerstonejs/codec-libjpeg-turbo-8bit/decodewasmjs")).default;
    const codec = await factory({ locateFile: () => wasmUrl("libjpegturbowasm_decode.wasm") });
    const d = new codec.JPEGDecoder();
    return (data) => run(d, data, false);
  }
  if (family === "j2k") {
    const factory = (await import("@cornerstonejs/codec-openjpeg/decodewasmjs")).default;
    const codec = await factory({ locateFile: () => wasmUrl("openjpegwasm_decode.wasm") });
    const d = new codec.J2KDecoder();
    return (data) => run(d, data, false);
  }
  if (family === "htj2k") {
    const d = await htj2kDecoder();
    return (data) => run(d, data, true);
  }
  throw new Error(`no WASM decoder for ${family}`);
}

let openjph: Promise<any> | null = null;

function htj2kDecoder(): Promise<any> {
  openjph ??= (async () => {
    const factory = (await import("@cornerstonejs/codec-openjph/wasmjs")).default;
    const codec = await factory({ locateFile: () => wasmUrl("openjphjs.wasm") });
    return new codec.HTJ2KDecoder();
  })();
  return openjph;
}

/** OpenJPH's progression order codes (COD marker): resolution first in RLCP and RPCL. */
const RESOLUTION_FIRST = new Set([1, 2]);

export interface Reduced extends Decoded {
  level: number;
}

/** Progressive HTJ2K: decode the first ``data.length`` bytes of a ``total``-byte codestream
 *  at reduced resolution (1/2^level), or null where that is not possible (not
 *  resolution-progressive, or too few bytes for even the smallest level). The level is
 *  chosen so the bytes at hand cover it: RPCL stores the resolutions smallest first, each
 *  about 4x the bytes of the one below. */
export async function decodeReduced(data: Uint8Array, total: number): Promise<Reduced | null> {
  const d = await htj2kDecoder();
  d.getEncodedBuffer(data.length).set(data);
  d.readHeader();
  if (!RESOLUTION_FIRST.has(d.getProgressionOrder())) return null;
  const levels = d.getNumDecompositions() as number;
  if (levels < 1) return null;
  // Measured on a 1024² CT (OpenJPH RPCL): level k is complete with about 2·total/4^k bytes.
  const level = Math.min(levels, Math.max(1, Math.ceil(Math.log((1.9 * total) / data.length) / Math.log(4))));
  const size = d.calculateSizeAtDecompositionLevel(level);
  d.decodeSubResolution(level, 0);
  const fi = d.getFrameInfo();
  const out = d.getDecodedBuffer() as Uint8Array;
  return {
    bytes: out.slice(), bitsPerSample: fi.bitsPerSample, components: fi.componentCount,
    width: size.width, height: size.height, signed: !!fi.isSigned, level,
  };
}

export async function decoderFor(ts: string): Promise<Decoder> {
  const family = FAMILIES[ts];
  if (!family) throw new Error(`transfer syntax ${ts} has no WASM decoder here`);
  let p = loaded.get(family);
  if (!p) {
    p = load(family);
    loaded.set(family, p);
  }
  return p;
}
