// A decode worker: fetches frames by frame-level WADO-RS, splits the multipart answer and
// turns each part into native pixels (16-bit stays 16-bit), off the main thread. The
// decoded buffers are transferred (not copied) to the page.
//
// mode "server": Accept octet-stream Explicit VR LE; the server decodes and the worker
//                only copies each part into its own aligned buffer.
// mode "wasm":   Accept transfer-syntax=* (as stored); the worker decodes with the WASM
//                codec of the stored syntax (smaller transfers, more browser CPU).

import { decoderFor } from "./codecs";
import { fetchFrames, fixColour, fromNative, kindOf, takeBuffer } from "./frames";
import type { PixelInfo, WorkerReply, WorkerTask } from "./types";

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

async function handle(task: WorkerTask): Promise<WorkerReply> {
  if (task.type === "decode") {
    const t0 = performance.now();
    const buffer = await fromStored(new Uint8Array(task.data), "image/x", task.info);
    return { type: "result", id: task.id, frames: [{ frame: 1, buffer, kind: kindOf(task.info) }], bytes: 0, fetchMs: 0, decodeMs: performance.now() - t0 };
  }
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
