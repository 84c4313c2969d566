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
    const factory = (await import("@cornerstonejs/codec-openjph/wasmjs")).default;
    const codec = await factory({ locateFile: () => wasmUrl("openjphjs.wasm") });
    const d = new codec.HTJ2KDecoder();
    return (data) => run(d, data, true);
  }
  throw new Error(`no WASM decoder for ${family}`);
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
