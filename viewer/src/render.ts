// Windowing per draw: native pixels -> a lookup table of packed RGBA -> ImageData.
//
// The LUT covers every possible stored value (65,536 entries for 16-bit data, 256 for 8-bit),
// built once per window change; a draw is then one table lookup per pixel, which keeps a
// 512x512 frame around a millisecond and lets the cache hold 2-byte pixels, not 4-byte RGBA.

import type { PixelInfo, Pixels } from "./types";

export interface Lut {
  table: Uint32Array;
  offset: number; // added to a stored value to index the table (signed data)
  key: string;
  // 32-bit data has no table: the window is computed per pixel from these.
  direct?: { center: number; width: number; slope: number; intercept: number; invert: boolean };
}

const LITTLE = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;
const pack = LITTLE
  ? (r: number, g: number, b: number) => (0xff000000 | (b << 16) | (g << 8) | r) >>> 0
  : (r: number, g: number, b: number) => ((r << 24) | (g << 16) | (b << 8) | 0xff) >>> 0;

/** PS3.3 C.11.2.1.2 linear VOI function, modality rescale first, MONOCHROME1 inverted. */
export function buildLut(p: PixelInfo, center: number, width: number, slope: number, intercept: number, colour: boolean): Lut {
  const key = `${center}/${width}/${slope}/${intercept}/${p.bitsAllocated}/${p.pixelRepresentation}/${p.photometric}`;
  if (p.bitsAllocated > 16) {
    return { table: new Uint32Array(0), offset: 0, key, direct: { center, width, slope, intercept, invert: p.photometric === "MONOCHROME1" } };
  }
  const size = p.bitsAllocated > 8 ? 65536 : 256;
  const offset = p.bitsAllocated > 8 && p.pixelRepresentation === 1 ? 32768 : 0;
  const table = new Uint32Array(size);
  const invert = p.photometric === "MONOCHROME1";
  const w1 = Math.max(width - 1, 1e-6);
  const lo = center - 0.5 - w1 / 2;
  const hi = center - 0.5 + w1 / 2;
  const s = colour ? 1 : slope;
  const b = colour ? 0 : intercept;
  for (let i = 0; i < size; i++) {
    const x = (i - offset) * s + b;
    let y: number;
    if (x <= lo) y = 0;
    else if (x > hi) y = 255;
    else y = ((x - (center - 0.5)) / w1 + 0.5) * 255;
    let g = Math.round(y);
    if (invert) g = 255 - g;
    table[i] = colour ? g : pack(g, g, g);
  }
  return { table, offset, key };
}

/** Fill ``out`` (RGBA as Uint32) from native pixels through the LUT. */
export function applyLut(px: Pixels, p: PixelInfo, lut: Lut, out: Uint32Array): void {
  const t = lut.table;
  const n = p.rows * p.columns;
  if (lut.direct) {
    const { center, width, slope, intercept, invert } = lut.direct;
    const w1 = Math.max(width - 1, 1e-6);
    for (let i = 0; i < n; i++) {
      const y = ((px[i] * slope + intercept - (center - 0.5)) / w1 + 0.5) * 255;
      let g = y <= 0 ? 0 : y >= 255 ? 255 : Math.round(y);
      if (invert) g = 255 - g;
      out[i] = pack(g, g, g);
    }
    return;
  }
  if (p.samplesPerPixel === 3) {
    const a = px as Uint8Array;
    for (let i = 0, j = 0; i < n; i++, j += 3) out[i] = pack(t[a[j]], t[a[j + 1]], t[a[j + 2]]);
    return;
  }
  if (lut.offset) {
    for (let i = 0; i < n; i++) out[i] = t[px[i] + 32768];
    return;
  }
  for (let i = 0; i < n; i++) out[i] = t[px[i]];
}

/** Smallest and largest stored value (for a window when the file has none). */
export function range(px: Pixels): [number, number] {
  let lo = Infinity, hi = -Infinity;
  for (let i = 0; i < px.length; i++) {
    const v = px[i];
    if (v < lo) lo = v;
    if (v > hi) hi = v;
  }
  return [lo, hi];
}
