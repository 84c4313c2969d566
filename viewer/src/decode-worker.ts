// A decode worker: fetches frames by frame-level WADO-RS, splits the multipart answer and
// turns each part into native pixels (16-bit stays 16-bit), off the main thread. The
// decoded buffers are transferred (not copied) to the page.
//
// mode "server": Accept octet-stream Explicit VR LE; the server decodes and the worker
//                only copies each part into its own aligned buffer.
// mode "wasm":   Accept transfer-syntax=* (as stored); the worker decodes with the WASM
//                codec of the stored syntax (smaller transfers, more browser CPU).

//
// Frames of a file outside an archive (task.source) come by one Range request each.
// Progressive HTJ2K (task.progressive): a first range of the frame is decoded at reduced
// resolution and posted ("partial"), then the rest of the frame is fetched and decoded.

import { decodeReduced, decoderFor } from "./codecs";
import { AS_STORED, fetchFrames, fixColour, fromNative, kindOf, takeBuffer } from "./frames";
import { boundaryOf, parseMultipart } from "./multipart";
import { unwrapItems } from "./part10";
import { readRange, totalOf } from "./ranged";
import type { DecodedFrame, FetchTask, FileFrameSource, PixelInfo, WorkerPartial, WorkerReply, WorkerTask } from "./types";

const NATIVE = new Set(["1.2.840.10008.1.2", "1.2.840.10008.1.2.1"]);

const scope = self as unknown as DedicatedWorkerGlobalScope;

async function fromStored(body: Uint8Array, contentType: string, info: PixelInfo, spare?: ArrayBuffer[]): Promise<ArrayBuffer> {
  const mt = contentType.split(";")[0].trim().toLowerCase();
  if (mt === "application/octet-stream") return fromNative(body, info, spare); // stored uncompressed
  const decode = await decoderFor(info.transferSyntax);
  const d = decode(body, info);
  if (d.width !== info.columns || d.height !== info.rows) {
    throw new Error(`decoded ${d.width}x${d.height}, expected ${info.columns}x${info.rows}`);
  }
  let bytes = d.bytes;
  if (info.bitsAllocated > 8 && d.bitsPerSample <= 8) {
    // 8-bit codestream in a 16-bit dataset: widen.
    const wide = new Uint16Array(bytes.length);
    wide.set(bytes);
    return wide.buffer;
  }
  if (info.bitsAllocated > 8 && info.pixelRepresentation === 1 && info.bitsStored < 16 && !d.signed) {
    // JPEG-LS carries signed data as unsigned bit patterns: sign-extend from bitsStored.
    const v = new Int16Array(bytes.buffer, bytes.byteOffset, bytes.length >> 1);
    const shift = 16 - info.bitsStored;
    for (let i = 0; i < v.length; i++) v[i] = (v[i] << shift) >> shift;
  }
  if (info.samplesPerPixel === 3 && info.photometric === "YBR_FULL" && !info.transferSyntax.startsWith("1.2.840.10008.1.2.4.5")) {
    bytes = fixColour(bytes, info, false, true);
  }
  const out = new Uint8Array(takeBuffer(bytes.length, spare));
  out.set(bytes);
  return out.buffer;
}

/** A file's frame as stored (native or a codestream) -> native pixels. */
function fromFile(body: Uint8Array, info: PixelInfo, spare?: ArrayBuffer[]): Promise<ArrayBuffer> {
  return fromStored(body, NATIVE.has(info.transferSyntax) ? "application/octet-stream" : "image/x", info, spare);
}

/** [start, end) in the file of the requested frame ``i`` (end undefined: to the end). */
function spanOf(src: FileFrameSource, i: number): [number, number | undefined] {
  const [off, len] = src.spans[i];
  const end = off + len;
  if (src.size !== null) return [off, Math.min(end, src.size)];
  return [off, Number.isSafeInteger(end) && len < 2 ** 52 ? end : undefined];
}

/** Frames of a file: one Range request each (sent together), then decoded in order. */
async function fileFrames(task: FetchTask): Promise<WorkerReply> {
  const src = task.source!;
  const t0 = performance.now();
  const reads = await Promise.all(task.frames.map((_, i) => readRange(src.file, ...spanOf(src, i), task.low)));
  const t1 = performance.now();
  const frames: DecodedFrame[] = [];
  let bytes = 0;
  for (let i = 0; i < reads.length; i++) {
    bytes += reads[i].bytes.length;
    const body = src.items ? unwrapItems(reads[i].bytes) : reads[i].bytes;
    frames.push({ frame: task.frames[i], buffer: await fromFile(body, task.info, task.spare), kind: kindOf(task.info) });
  }
  return { type: "result", id: task.id, frames, bytes, fetchMs: t1 - t0, decodeMs: performance.now() - t1 };
}

interface FirstRange {
  raw: Uint8Array; // what the first request returned (file: may include an item header)
  total: number; // the frame's bytes (raw coordinates)
  contentType: string;
}

/** The first ``n`` bytes of the frame (DICOMweb: Range on the frame URL; file: a range of its span). */
async function firstRange(task: FetchTask, n: number): Promise<FirstRange | WorkerReply> {
  if (task.source) {
    const [start, end] = spanOf(task.source, 0);
    const stop = end === undefined ? start + n : Math.min(start + n, end);
    const r = await readRange(task.source.file, start, stop);
    const total = end === undefined ? (r.total ?? stop) - start : end - start;
    return { raw: r.bytes, total, contentType: "image/x" };
  }
  const init: RequestInit & { priority?: string } = { headers: { Accept: AS_STORED, Range: `bytes=0-${n - 1}` }, priority: "high" };
  const response = await fetch(task.url, init);
  if (!response.ok) return { type: "error", id: task.id, status: response.status, message: `HTTP ${response.status}` };
  const ct = response.headers.get("content-type") ?? "";
  const body = new Uint8Array(await response.arrayBuffer());
  const boundary = boundaryOf(ct);
  const part = boundary ? parseMultipart(body, boundary)[0] : { contentType: ct, body, contentRange: undefined };
  if (!part) throw new Error("empty multipart answer");
  const whole = response.status === 200; // the server ignored the range: this is the frame
  const total = whole ? part.body.length : totalOf(part.contentRange ?? response.headers.get("content-range")) ?? part.body.length;
  return { raw: part.body, total, contentType: part.contentType };
}

/** One frame, progressively: a reduced-resolution decode of its first bytes, then all of it. */
async function progressive(task: FetchTask, post: (p: WorkerPartial) => void): Promise<WorkerReply> {
  const t0 = performance.now();
  const first = await firstRange(task, task.progressive!);
  if ("type" in first) return first;
  let fetchMs = performance.now() - t0;
  let decodeMs = 0;
  const src = task.source;
  let raw = first.raw;
  if (raw.length < first.total) {
    const t1 = performance.now();
    let reduced = null;
    try {
      const codestream = src?.items ? unwrapItems(raw, true) : raw;
      reduced = await decodeReduced(codestream, first.total);
    } catch {
      reduced = null; // not decodable in part: the full frame follows anyway
    }
    if (reduced) {
      let buffer = reduced.bytes.buffer as ArrayBuffer;
      if (task.info.bitsAllocated > 8 && reduced.bitsPerSample <= 8) buffer = Uint16Array.from(reduced.bytes).buffer;
      post({
        type: "partial", id: task.id, frame: task.frames[0], buffer, kind: kindOf(task.info),
        width: reduced.width, height: reduced.height, bytes: raw.length, total: first.total, level: reduced.level,
      });
    }
    decodeMs += performance.now() - t1;
    // The rest of the frame: one more range.
    const t2 = performance.now();
    let rest: Uint8Array;
    if (src) {
      const [start, end] = spanOf(src, 0);
      rest = (await readRange(src.file, start + raw.length, end)).bytes;
    } else {
      const init: RequestInit & { priority?: string } = { headers: { Accept: AS_STORED, Range: `bytes=${raw.length}-` }, priority: "high" };
      const response = await fetch(task.url, init);
      if (response.status !== 206) return { type: "error", id: task.id, status: response.status, message: `rest of the frame: HTTP ${response.status}` };
      const ct = response.headers.get("content-type") ?? "";
      const body = new Uint8Array(await response.arrayBuffer());
      const boundary = boundaryOf(ct);
      rest = boundary ? parseMultipart(body, boundary)[0].body : body;
    }
    const joined = new Uint8Array(raw.length + rest.length);
    joined.set(raw);
    joined.set(rest, raw.length);
    raw = joined;
    fetchMs += performance.now() - t2;
  }
  const t3 = performance.now();
  const body = src?.items ? unwrapItems(raw) : raw;
  const buffer = src ? await fromFile(body, task.info, task.spare) : await fromStored(body, first.contentType, task.info, task.spare);
  decodeMs += performance.now() - t3;
  return { type: "result", id: task.id, frames: [{ frame: task.frames[0], buffer, kind: kindOf(task.info) }], bytes: raw.length, fetchMs, decodeMs };
}

async function handle(task: WorkerTask): Promise<WorkerReply> {
  if (task.type === "decode") {
    const t0 = performance.now();
    const buffer = await fromStored(new Uint8Array(task.data), "image/x", task.info);
    return { type: "result", id: task.id, frames: [{ frame: 1, buffer, kind: kindOf(task.info) }], bytes: 0, fetchMs: 0, decodeMs: performance.now() - t0 };
  }
  if (task.progressive && task.frames.length === 1) {
    return progressive(task, (p) => scope.postMessage(p, [p.buffer]));
  }
  if (task.source) return fileFrames(task);
  return fetchFrames(task, (body, contentType) =>
    task.mode === "server" ? Promise.resolve(fromNative(body, task.info, task.spare)) : fromStored(body, contentType, task.info, task.spare));
}

scope.postMessage({ type: "ready" });

scope.onmessage = async (event: MessageEvent<WorkerTask>) => {
  const task = event.data;
  let reply: WorkerReply;
  try {
    reply = await handle(task);
  } catch (err) {
    reply = { type: "error", id: task.id, message: String((err as Error)?.message ?? err) };
  }
  const transfer = reply.type === "result" ? reply.frames.map((f) => f.buffer) : [];
  scope.postMessage(reply, transfer);
};
