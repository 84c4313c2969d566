// Fetching frames by frame-level WADO-RS and turning octet-stream parts into native pixels.
// Used by the decode workers, and by the page itself for the very first frame while the
// workers are still starting (server-decoded frames need no codec).

import { authFetch } from "./auth";
import { mark } from "./timeline";
import { boundaryOf, parseMultipart } from "./multipart";
import { frameBytes, type DecodedFrame, type FetchTask, type PixelInfo, type WorkerReply } from "./types";

const OCTET = 'multipart/related; type="application/octet-stream"; transfer-syntax=1.2.840.10008.1.2.1';
export const AS_STORED = 'multipart/related; type="application/octet-stream"; transfer-syntax=*';

export function kindOf(info: PixelInfo): DecodedFrame["kind"] {
  if (info.bitsAllocated > 16) return info.pixelRepresentation === 1 ? "s32" : "u32";
  if (info.bitsAllocated > 8) return info.pixelRepresentation === 1 ? "s16" : "u16";
  return "u8";
}

/** Interleave planar colour (PlanarConfiguration 1) and convert YBR_FULL to RGB. */
export function fixColour(bytes: Uint8Array, info: PixelInfo, planar: boolean, ybr: boolean): Uint8Array {
  const n = info.rows * info.columns;
  let out = bytes;
  if (planar) {
    out = new Uint8Array(n * 3);
    for (let i = 0; i < n; i++) {
      out[3 * i] = bytes[i];
      out[3 * i + 1] = bytes[n + i];
      out[3 * i + 2] = bytes[2 * n + i];
    }
  }
  if (ybr) {
    for (let i = 0; i < n * 3; i += 3) {
      const y = out[i], cb = out[i + 1] - 128, cr = out[i + 2] - 128;
      out[i] = Math.max(0, Math.min(255, y + 1.402 * cr));
      out[i + 1] = Math.max(0, Math.min(255, y - 0.344136 * cb - 0.714136 * cr));
      out[i + 2] = Math.max(0, Math.min(255, y + 1.772 * cb));
    }
  }
  return out;
}


/** A buffer of exactly ``size`` bytes: a recycled one when there is one, else a new one. */
export function takeBuffer(size: number, spare?: ArrayBuffer[]): ArrayBuffer {
  if (spare) {
    const i = spare.findIndex((b) => b.byteLength === size);
    if (i >= 0) return spare.splice(i, 1)[0];
  }
  return new ArrayBuffer(size);
}

/** Native (uncompressed little-endian) bytes of one frame -> an owned buffer. */
export function fromNative(body: Uint8Array, info: PixelInfo, spare?: ArrayBuffer[]): ArrayBuffer {
  const want = frameBytes(info);
  if (info.bitsAllocated === 1) {
    // Bit-packed (segmentations): little-endian bit order, unpacked to one byte a pixel.
    const n = info.rows * info.columns;
    if (body.length * 8 < n) throw new Error(`frame has ${body.length} bytes, expected ${Math.ceil(n / 8)}`);
    const out = new Uint8Array(takeBuffer(want, spare));
    for (let i = 0; i < n; i++) out[i] = (body[i >> 3] >> (i & 7)) & 1;
    return out.buffer as ArrayBuffer;
  }
  if (body.length < want) throw new Error(`frame has ${body.length} bytes, expected ${want}`);
  let bytes: Uint8Array = new Uint8Array(takeBuffer(want, spare)); // aligned copy of exactly one frame
  bytes.set(body.subarray(0, want));
  if (info.samplesPerPixel === 3) {
    const ybr = info.photometric === "YBR_FULL"; // the server sends YBR_FULL_422 decoded as RGB
    if (info.planarConfiguration === 1 || ybr) bytes = fixColour(bytes, info, info.planarConfiguration === 1, ybr);
  }
  return bytes.buffer as ArrayBuffer;
}

export async function fetchFrames(
  task: FetchTask,
  convert: (body: Uint8Array, contentType: string) => Promise<ArrayBuffer>,
  started?: Promise<Response>, // the same request, already sent (index.html's early fetch)
): Promise<WorkerReply> {
  const t0 = performance.now();
  const init: RequestInit & { priority?: string } = {
    headers: { Accept: task.mode === "server" ? OCTET : AS_STORED },
    priority: task.low ? "low" : "high",
  };
  const response = await (started ?? authFetch(task.url, init));
  if (!response.ok) {
    let detail = "";
    try {
      detail = (await response.json()).error ?? "";
    } catch {
      /* not JSON */
    }
    return { type: "error", id: task.id, status: response.status, message: `HTTP ${response.status} ${detail}`.trim() };
  }
  const ct = response.headers.get("content-type") ?? "";
  mark("frame-headers");
  const body = new Uint8Array(await response.arrayBuffer());
  mark("frame-body");
  const t1 = performance.now();
  const boundary = boundaryOf(ct);
  const parts = boundary ? parseMultipart(body, boundary) : [{ contentType: ct, body }];
  if (parts.length !== task.frames.length) {
    throw new Error(`asked for ${task.frames.length} frames, got ${parts.length} parts`);
  }
  const frames: DecodedFrame[] = [];
  for (let i = 0; i < parts.length; i++) {
    frames.push({ frame: task.frames[i], buffer: await convert(parts[i].body, parts[i].contentType), kind: kindOf(task.info) });
  }
  return { type: "result", id: task.id, frames, bytes: body.length, fetchMs: t1 - t0, decodeMs: performance.now() - t1 };
}
