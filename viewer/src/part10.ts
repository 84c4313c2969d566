// A DICOM Part 10 header parsed from ranged reads, up to Pixel Data: the pixel attributes
// the viewer needs and where each frame's bytes are (PS3.5 A.4). The first read is 64 KiB;
// more is read only where the header is longer, and long values that are not needed
// (private blobs, defined-length sequences) are jumped over without being read.
//
// Frame locations: native pixels by arithmetic; encapsulated by the Extended Offset Table,
// else the Basic Offset Table, else by walking the item headers with small reads.

import { readRange, type FileRef } from "./ranged";
import type { PixelInfo } from "./types";
import type { InstanceInfo } from "./dicomweb";

const FIRST_READ = 64 << 10;
const EXPLICIT_LE = "1.2.840.10008.1.2.1";
const IMPLICIT_LE = "1.2.840.10008.1.2";
const BIG_ENDIAN = "1.2.840.10008.1.2.2";
const DEFLATED = ["1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.8.1"];

/** Where one frame's bytes are. ``items``: the range holds encapsulation items (their
 *  8-byte headers are stripped after reading); else it is exactly the frame's bytes. */
export interface FrameSpans {
  offsets: number[];
  lengths: number[];
  items: boolean;
}

/** What the page needs of a file: the fields of a QIDO-RS instance (dicomweb.ts), plus where
 * its frames are and what building this cost. */
export interface FileHeader extends InstanceInfo {
  spans: FrameSpans;
  size: number | null;
  headerBytes: number; // bytes read to build this (header + offset tables + item headers)
  requests: number;
}

export class Part10Error extends Error {
  name = "Part10Error";
}

/** A sliding window over the file: bytes are read in chunks as the parser moves. */
class Window {
  base = 0;
  buf = new Uint8Array(0);
  size: number | null = null;
  bytesRead = 0;
  requests = 0;

  constructor(public file: FileRef) {}

  /** Make [pos, pos + n) available; returns false at the end of the file. */
  async need(pos: number, n: number): Promise<boolean> {
    if (pos >= this.base && pos + n <= this.base + this.buf.length) return true;
    if (this.size !== null && pos + n > this.size) return false;
    const want = Math.max(n, this.requests === 0 ? FIRST_READ : Math.min(FIRST_READ * 4, Math.max(FIRST_READ, this.buf.length)));
    let start = pos;
    let keep = new Uint8Array(0);
    if (pos >= this.base && pos < this.base + this.buf.length) {
      // Extend: keep what we have from pos on.
      keep = this.buf.subarray(pos - this.base);
      start = this.base + this.buf.length;
    }
    const r = await readRange(this.file, start, start + want - keep.length);
    this.requests++;
    this.bytesRead += r.bytes.length;
    if (r.total !== null) this.size = r.total;
    const joined = new Uint8Array(keep.length + r.bytes.length);
    joined.set(keep);
    joined.set(r.bytes, keep.length);
    this.base = pos;
    this.buf = joined;
    return pos + n <= this.base + this.buf.length;
  }

  view(pos: number, n: number): DataView {
    return new DataView(this.buf.buffer, this.buf.byteOffset + pos - this.base, n);
  }

  bytes(pos: number, n: number): Uint8Array {
    return this.buf.subarray(pos - this.base, pos - this.base + n);
  }
}

const ASCII = new TextDecoder("latin1");
const tagOf = (g: number, e: number) => ((g << 16) | e) >>> 0;
const LONG_VRS = new Set(["OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"]);

// Values read from the dataset (top level only): text or binary by tag.
const WANTED: Record<number, "str" | "us" | "ov"> = {
  [tagOf(0x0008, 0x0018)]: "str", [tagOf(0x0008, 0x0060)]: "str", [tagOf(0x0008, 0x1030)]: "str",
  [tagOf(0x0008, 0x103e)]: "str", [tagOf(0x0010, 0x0010)]: "str", [tagOf(0x0010, 0x0020)]: "str",
  [tagOf(0x0018, 0x0040)]: "str", [tagOf(0x0018, 0x1063)]: "str",
  [tagOf(0x0020, 0x000d)]: "str", [tagOf(0x0020, 0x000e)]: "str", [tagOf(0x0020, 0x0011)]: "str", [tagOf(0x0020, 0x0013)]: "str",
  [tagOf(0x0028, 0x0002)]: "us", [tagOf(0x0028, 0x0004)]: "str", [tagOf(0x0028, 0x0006)]: "us", [tagOf(0x0028, 0x0008)]: "str",
  [tagOf(0x0028, 0x0010)]: "us", [tagOf(0x0028, 0x0011)]: "us", [tagOf(0x0028, 0x0100)]: "us", [tagOf(0x0028, 0x0101)]: "us",
  [tagOf(0x0028, 0x0103)]: "us", [tagOf(0x0028, 0x1050)]: "str", [tagOf(0x0028, 0x1051)]: "str",
  [tagOf(0x0028, 0x1052)]: "str", [tagOf(0x0028, 0x1053)]: "str", [tagOf(0x0028, 0x1054)]: "str",
  [tagOf(0x7fe0, 0x0001)]: "ov", [tagOf(0x7fe0, 0x0002)]: "ov",
};
const MAX_VALUE = 16 << 20; // an offset table of 2M frames; anything larger is not a header

interface Element {
  tag: number;
  vr: string;
  length: number; // 0xFFFFFFFF: undefined
  value: number; // file offset of the value
}

class Parser {
  constructor(private w: Window, private explicit: boolean) {}

  async element(pos: number): Promise<Element | null> {
    if (!(await this.w.need(pos, 8))) return null;
    const v = this.w.view(pos, 8);
    const tag = tagOf(v.getUint16(0, true), v.getUint16(2, true));
    if (v.getUint16(0, true) === 0xfffe) return { tag, vr: "", length: v.getUint32(4, true), value: pos + 8 };
    if (!this.explicit) return { tag, vr: "", length: v.getUint32(4, true), value: pos + 8 };
    const vr = ASCII.decode(this.w.bytes(pos + 4, 2));
    if (LONG_VRS.has(vr) || !/^[A-Z]{2}$/.test(vr)) {
      if (!(await this.w.need(pos, 12))) return null;
      return { tag, vr, length: this.w.view(pos + 8, 4).getUint32(0, true), value: pos + 12 };
    }
    return { tag, vr, length: v.getUint16(6, true), value: pos + 8 };
  }

  /** Skip an undefined-length value (sequence, item) up to and past its delimiter. */
  async skipUndefined(pos: number, depth = 0): Promise<number> {
    if (depth > 32) throw new Part10Error("sequences nested too deep");
    for (;;) {
      const e = await this.element(pos);
      if (!e) throw new Part10Error("the file ends inside a sequence");
      if (e.tag === 0xfffee0dd || e.tag === 0xfffee00d) return e.value; // delimiters (length 0)
      if (e.length === 0xffffffff) pos = await this.skipUndefined(e.value, depth + 1);
      else pos = e.value + e.length;
    }
  }
}

function str(bytes: Uint8Array): string {
  return ASCII.decode(bytes).replace(/[\0 ]+$/, "").trim();
}

/** Parse the header of ``file`` and locate its frames. */
export async function readHeader(file: FileRef): Promise<FileHeader> {
  const w = new Window(file);
  if (!(await w.need(0, 132))) throw new Part10Error(`${file.name}: too short to be a DICOM file`);
  let pos = ASCII.decode(w.bytes(128, 4)) === "DICM" ? 132 : 0;
  // File meta information: always explicit VR little endian.
  let ts = "";
  const meta = new Parser(w, true);
  for (;;) {
    if (!(await w.need(pos, 8))) break;
    if (w.view(pos, 2).getUint16(0, true) !== 0x0002) break;
    const e = await meta.element(pos);
    if (!e) break;
    if (e.tag === tagOf(0x0002, 0x0010)) {
      await w.need(e.value, e.length);
      ts = str(w.bytes(e.value, e.length));
    }
    pos = e.value + e.length;
  }
  if (!ts) {
    if (pos === 0) ts = IMPLICIT_LE; // no preamble, no meta: a bare implicit VR dataset
    else throw new Part10Error(`${file.name}: no Transfer Syntax UID in the file meta information`);
  }
  if (DEFLATED.includes(ts)) throw new Part10Error(`${file.name}: deflated transfer syntax ${ts} cannot be read by ranges (open it through an archive)`);
  if (ts === BIG_ENDIAN) throw new Part10Error(`${file.name}: big endian transfer syntax ${ts} is not supported here (open it through an archive)`);
  const p = new Parser(w, ts !== IMPLICIT_LE);
  const values = new Map<number, string | number | Uint8Array>();
  let pixel: Element | null = null;
  for (;;) {
    const e = await p.element(pos);
    if (!e) break;
    if (e.tag === tagOf(0x7fe0, 0x0010)) {
      pixel = e;
      break;
    }
    const kind = WANTED[e.tag];
    if (kind && e.length !== 0xffffffff) {
      if (e.length > MAX_VALUE) throw new Part10Error(`${file.name}: element ${e.tag.toString(16)} of ${e.length} bytes`);
      if (!(await w.need(e.value, e.length))) throw new Part10Error(`${file.name}: truncated header`);
      const b = w.bytes(e.value, e.length);
      if (kind === "str") values.set(e.tag, str(b));
      else if (kind === "us") values.set(e.tag, e.length >= 2 ? w.view(e.value, 2).getUint16(0, true) : 0);
      else values.set(e.tag, b.slice());
    }
    pos = e.length === 0xffffffff ? await p.skipUndefined(e.value) : e.value + e.length;
  }
  if (!pixel) throw new Part10Error(`${file.name}: no Pixel Data`);
  const s = (g: number, el: number, d = "") => { const v = values.get(tagOf(g, el)); return v === undefined ? d : String(v); };
  const n = (g: number, el: number, d: number) => { const v = values.get(tagOf(g, el)); const x = typeof v === "number" ? v : parseFloat(String(v ?? "").split("\\")[0]); return v === undefined || Number.isNaN(x) ? d : x; };
  const info: PixelInfo = {
    rows: n(0x28, 0x10, 0),
    columns: n(0x28, 0x11, 0),
    samplesPerPixel: n(0x28, 0x02, 1),
    bitsAllocated: n(0x28, 0x100, 16),
    bitsStored: n(0x28, 0x101, n(0x28, 0x100, 16)),
    pixelRepresentation: n(0x28, 0x103, 0),
    photometric: s(0x28, 0x04, "MONOCHROME2"),
    planarConfiguration: n(0x28, 0x06, 0),
    transferSyntax: ts,
  };
  if (!info.rows || !info.columns) throw new Part10Error(`${file.name}: no Rows/Columns`);
  const frames = Math.max(1, Math.round(n(0x28, 0x08, 1)));
  const spans = await locateFrames(w, p, pixel, info, frames, values, file.name);
  const wc = n(0x28, 0x1050, NaN), ww = n(0x28, 0x1051, NaN);
  const cine = n(0x18, 0x40, 0), ft = n(0x18, 0x1063, 0);
  return {
    study: s(0x20, 0x0d), series: s(0x20, 0x0e), sop: s(0x08, 0x18) || file.name,
    seriesNumber: n(0x20, 0x11, 0), seriesDescription: s(0x08, 0x103e), modality: s(0x08, 0x60),
    instanceNumber: n(0x20, 0x13, 0), frames, pixel: info,
    window: Number.isFinite(wc) && ww > 0 ? [wc, ww] : null,
    slope: n(0x28, 0x1053, 1) || 1, intercept: n(0x28, 0x1052, 0), units: s(0x28, 0x1054),
    frameTimeMs: ft > 0 ? ft : cine > 0 ? 1000 / cine : null,
    patientName: s(0x10, 0x10).replace(/\^/g, " ").trim(), patientId: s(0x10, 0x20), studyDescription: s(0x08, 0x1030),
    spans, size: w.size, headerBytes: w.bytesRead, requests: w.requests,
  };
}

function u64(b: Uint8Array): number[] {
  const v = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const out: number[] = [];
  for (let i = 0; i + 8 <= b.length; i += 8) out.push(v.getUint32(i, true) + v.getUint32(i + 4, true) * 2 ** 32);
  return out;
}

async function locateFrames(
  w: Window, p: Parser, pixel: Element, info: PixelInfo, frames: number,
  values: Map<number, string | number | Uint8Array>, name: string,
): Promise<FrameSpans> {
  if (pixel.length !== 0xffffffff) {
    // Native: frames back to back.
    const bits = info.rows * info.columns * info.samplesPerPixel * info.bitsAllocated;
    if (bits % 8) throw new Part10Error(`${name}: bit-packed frames that do not end on a byte`);
    const len = bits / 8;
    if (len * frames > pixel.length) throw new Part10Error(`${name}: Pixel Data holds ${pixel.length} bytes, ${frames} frames need ${len * frames}`);
    const offsets = Array.from({ length: frames }, (_, i) => pixel.value + i * len);
    return { offsets, lengths: offsets.map(() => len), items: false };
  }
  // Encapsulated: the Basic Offset Table item first.
  const bot = await p.element(pixel.value);
  if (!bot || bot.tag !== 0xfffee000) throw new Part10Error(`${name}: encapsulated Pixel Data without its offset table item`);
  const first = bot.value + bot.length; // the first fragment's item tag
  const eot = values.get(tagOf(0x7fe0, 0x0001));
  const eotLengths = values.get(tagOf(0x7fe0, 0x0002));
  if (eot instanceof Uint8Array && eotLengths instanceof Uint8Array && eot.length >= 8 * frames) {
    const offs = u64(eot), lens = u64(eotLengths);
    return { offsets: offs.slice(0, frames).map((o) => first + o + 8), lengths: lens.slice(0, frames), items: false };
  }
  if (bot.length >= 4 * frames) {
    if (!(await w.need(bot.value, bot.length))) throw new Part10Error(`${name}: truncated Basic Offset Table`);
    const v = w.view(bot.value, bot.length);
    const starts = Array.from({ length: frames }, (_, i) => first + v.getUint32(4 * i, true));
    // Each frame runs to the next one's start; the last to the end of the file (its items
    // are read up to the sequence delimiter).
    const ends = starts.slice(1);
    ends.push(w.size ?? Number.MAX_SAFE_INTEGER);
    return { offsets: starts, lengths: starts.map((s, i) => ends[i] - s), items: true };
  }
  // No table: walk the item headers (8 bytes each, plus the first 2 value bytes to see a
  // codec start marker when there are more fragments than frames).
  const frags: [number, number, number][] = []; // value offset, length, first two bytes
  let pos = first;
  for (;;) {
    const r = await readRange(w.file, pos, pos + 10);
    w.requests++;
    w.bytesRead += r.bytes.length;
    if (r.bytes.length < 8) throw new Part10Error(`${name}: the file ends inside Pixel Data`);
    const v = new DataView(r.bytes.buffer, r.bytes.byteOffset, r.bytes.length);
    const tag = tagOf(v.getUint16(0, true), v.getUint16(2, true));
    if (tag === 0xfffee0dd) break;
    if (tag !== 0xfffee000) throw new Part10Error(`${name}: expected an item at ${pos}`);
    const len = v.getUint32(4, true);
    frags.push([pos + 8, len, r.bytes.length >= 10 ? v.getUint16(8, false) : 0]);
    pos += 8 + len;
    if (frags.length > 1 << 22) throw new Part10Error(`${name}: too many fragments`);
  }
  if (frags.length === frames) {
    return { offsets: frags.map((f) => f[0]), lengths: frags.map((f) => f[1]), items: false };
  }
  if (frames !== 1) {
    // Several fragments a frame: a frame starts at a fragment opening with SOI or SOC.
    const starts = frags.filter((f) => f[2] === 0xffd8 || f[2] === 0xff4f);
    if (starts.length !== frames) throw new Part10Error(`${name}: ${frags.length} fragments for ${frames} frames and no offset table`);
  }
  const offsets: number[] = [], lengths: number[] = [];
  for (const f of frags) {
    const start = frames === 1 ? offsets.length === 0 : f[2] === 0xffd8 || f[2] === 0xff4f;
    if (start) {
      offsets.push(f[0] - 8);
      lengths.push(0);
    }
    lengths[lengths.length - 1] = f[0] + f[1] - offsets[offsets.length - 1];
  }
  return { offsets, lengths, items: true };
}

/** The frame's codestream from a range read of a frame span (items: headers stripped). A
 *  ``partial`` read (a first range for progressive decoding) may end inside an item. */
export function unwrapItems(bytes: Uint8Array, partial = false): Uint8Array {
  const parts: Uint8Array[] = [];
  let pos = 0, total = 0;
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  while (pos + 8 <= bytes.length) {
    const tag = tagOf(v.getUint16(pos, true), v.getUint16(pos + 2, true));
    if (tag === 0xfffee0dd) break;
    if (tag !== 0xfffee000) throw new Part10Error(`expected an item in the frame's bytes at ${pos}`);
    const len = v.getUint32(pos + 4, true);
    if (pos + 8 + len > bytes.length && !partial) throw new Part10Error("the frame's last item is truncated");
    const part = bytes.subarray(pos + 8, Math.min(bytes.length, pos + 8 + len));
    parts.push(part);
    total += part.length;
    pos += 8 + len;
  }
  if (parts.length === 1) return parts[0];
  const out = new Uint8Array(total);
  let o = 0;
  for (const part of parts) {
    out.set(part, o);
    o += part.length;
  }
  return out;
}

export { EXPLICIT_LE, IMPLICIT_LE };
