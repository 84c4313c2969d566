// Shared types of the viewer (main thread and decode workers).

import type { FileRef } from "./ranged";

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

/** Frames of a file outside an archive (``?url=`` or a local file): one range each. */
export interface FileFrameSource {
  file: FileRef;
  spans: [number, number][]; // [offset, length] of each requested frame, in order
  items: boolean; // the spans hold encapsulation items (headers stripped after reading)
  size: number | null;
}

export interface FetchTask {
  type: "fetch";
  id: number;
  url: string; // .../frames/1,2,3 (DICOMweb), or the file's URL / name
  frames: number[]; // 1-based, in the order requested
  info: PixelInfo;
  mode: DecodeMode;
  low: boolean; // lower fetch priority (prefetch)
  spare?: ArrayBuffer[]; // evicted frames' buffers, refilled instead of allocating
  source?: FileFrameSource; // absent: DICOMweb frames at ``url``
  /** Progressive HTJ2K: bytes of the first range (decoded at reduced resolution first). */
  progressive?: number;
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

/** A reduced-resolution decode of a partial codestream (progressive HTJ2K), before the full frame. */
export interface WorkerPartial {
  type: "partial";
  id: number;
  frame: number;
  buffer: ArrayBuffer;
  kind: DecodedFrame["kind"];
  width: number;
  height: number;
  bytes: number; // bytes of the first range
  total: number; // the frame's bytes
  level: number; // resolution reduction (1/2^level)
}

export type WorkerReply = WorkerResult | WorkerError | WorkerReady | WorkerPartial;

export function pixelsOf(frame: DecodedFrame): Pixels {
  if (frame.kind === "u16") return new Uint16Array(frame.buffer);
  if (frame.kind === "s16") return new Int16Array(frame.buffer);
  if (frame.kind === "u32") return new Uint32Array(frame.buffer);
  if (frame.kind === "s32") return new Int32Array(frame.buffer);
  return new Uint8Array(frame.buffer);
}
