// Shared types of the viewer (main thread and decode workers).

/** What a decoder needs to know about one instance's pixels. */
export interface PixelInfo {
  rows: number;
  columns: number;
  samplesPerPixel: number;
  bitsAllocated: number;
  bitsStored: number;
  pixelRepresentation: number; // 0 unsigned, 1 signed
  photometric: string;
  planarConfiguration: number;
  transferSyntax: string; // as stored
}

/** How frames travel: decoded by the server (octet-stream) or as stored, decoded by WASM. */
export type DecodeMode = "server" | "wasm";

/** Decoded pixels in their native form: 16-bit stays 16-bit, windowing happens per draw. */
export type Pixels = Uint16Array | Int16Array | Uint8Array | Uint32Array | Int32Array;

/** Bytes one decoded frame takes in the browser (1-bit data is unpacked to a byte a pixel). */
export function frameBytes(p: PixelInfo): number {
  const sample = p.bitsAllocated > 16 ? 4 : p.bitsAllocated > 8 ? 2 : 1;
  return p.rows * p.columns * p.samplesPerPixel * sample;
}

export interface FetchTask {
  type: "fetch";
  id: number;
  url: string; // .../frames/1,2,3
  frames: number[]; // 1-based, in the order requested
  info: PixelInfo;
  mode: DecodeMode;
  low: boolean; // lower fetch priority (prefetch)
  spare?: ArrayBuffer[]; // evicted frames' buffers, refilled instead of allocating
}

export interface DecodeTask {
  type: "decode";
  id: number;
  data: ArrayBuffer; // one frame as stored
  info: PixelInfo;
}

export type WorkerTask = FetchTask | DecodeTask;

export interface DecodedFrame {
  frame: number; // 1-based
  buffer: ArrayBuffer;
  kind: "u16" | "s16" | "u8" | "u32" | "s32";
}

export interface WorkerResult {
  type: "result";
  id: number;
  frames: DecodedFrame[];
  bytes: number; // response body bytes (what crossed the network)
  fetchMs: number;
  decodeMs: number;
}

export interface WorkerError {
  type: "error";
  id: number;
  message: string;
  status?: number;
}

export interface WorkerReady {
  type: "ready";
  id?: undefined;
}

export type WorkerReply = WorkerResult | WorkerError | WorkerReady;

export function pixelsOf(frame: DecodedFrame): Pixels {
  if (frame.kind === "u16") return new Uint16Array(frame.buffer);
  if (frame.kind === "s16") return new Int16Array(frame.buffer);
  if (frame.kind === "u32") return new Uint32Array(frame.buffer);
  if (frame.kind === "s32") return new Int32Array(frame.buffer);
  return new Uint8Array(frame.buffer);
}
