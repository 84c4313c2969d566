// The naive page of the benchmark (bench/bench_viewer.py): what browser viewers did in the
// NA-MIC report. It fetches the WHOLE instance (WADO-RS, as stored), keeps it in memory,
// finds each frame's fragment and decodes every frame from it (the same WASM decoders and
// LUT drawing as the viewer), keeping the decoded frames as a whole-volume loader does
// (keep=none: decode for display only). Not linked from the viewer; a baseline.
//
//   naive.html?study=UID&series=UID&sop=UID[&fps=30][&keep=all|none]

import { DicomWeb } from "./dicomweb";
import { FrameCache } from "./cache";
import { FrameLoader } from "./loader";
import { applyLut, buildLut, range } from "./render";
import type { Pixels } from "./types";

const q = new URLSearchParams(location.search);
const web = new DicomWeb(q.get("root") ?? "/dicomweb");
const status = document.getElementById("s")!;
const canvas = document.getElementById("c") as HTMLCanvasElement;

interface NaiveStats {
  firstImageMs: number | null;
  wholeBytes: number;
  downloadMs: number | null;
  displayed: number;
  allShownMs: number | null;
  stalls: number;
  maxGapMs: number;
  error: string;
}
const stats: NaiveStats = { firstImageMs: null, wholeBytes: 0, downloadMs: null, displayed: 0, allShownMs: null, stalls: 0, maxGapMs: 0, error: "" };
let whole: ArrayBuffer | null = null; // held for the whole session: the failure mode
const kept: Pixels[] = []; // every decoded frame (keep=all)
const keepAll = (q.get("keep") ?? "all") !== "none";
(window as unknown as { naive: unknown }).naive = {
  stats: () => ({ ...stats, held: (whole ? whole.byteLength : 0) + kept.reduce((n, p) => n + p.byteLength, 0), kept: kept.length }),
};

function u32(b: Uint8Array, i: number): number {
  return (b[i] | (b[i + 1] << 8) | (b[i + 2] << 16) | (b[i + 3] << 24)) >>> 0;
}

/** [start, end) of each frame's single fragment in an encapsulated Part 10 file. */
function fragments(b: Uint8Array): [number, number][] {
  const sig = [0xe0, 0x7f, 0x10, 0x00, 0x4f, 0x42, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff]; // (7FE0,0010) OB undefined
  let at = -1;
  for (let i = b.indexOf(0xe0, 132); i >= 0; i = b.indexOf(0xe0, i + 1)) {
    let ok = true;
    for (let j = 1; j < sig.length && ok; j++) ok = b[i + j] === sig[j];
    if (ok) { at = i; break; }
  }
  if (at < 0) throw new Error("no encapsulated Pixel Data in the instance");
  let p = at + 12;
  const out: [number, number][] = [];
  let first = true;
  while (p + 8 <= b.length) {
    const group = b[p] | (b[p + 1] << 8), elem = b[p + 2] | (b[p + 3] << 8), len = u32(b, p + 4);
    if (group !== 0xfffe) throw new Error("bad item in Pixel Data");
    if (elem === 0xe0dd) break;
    if (!first) out.push([p + 8, p + 8 + len]);
    first = false; // the Basic Offset Table item
    p += 8 + len;
  }
  return out;
}

async function main(): Promise<void> {
  const study = q.get("study")!, series = q.get("series")!, sop = q.get("sop")!;
  const fps = Number(q.get("fps")) || 30;
  const inst = (await web.instances(study)).find((i) => i.sop === sop);
  if (!inst) throw new Error(`instance ${sop} not found`);
  const t0 = performance.now();
  const r = await fetch(web.instanceUrl({ study, series, sop }), {
    headers: { Accept: 'multipart/related; type="application/dicom"; transfer-syntax=*' },
  });
  if (!r.ok) throw new Error(`whole instance: HTTP ${r.status}`);
  whole = await r.arrayBuffer();
  stats.wholeBytes = whole.byteLength;
  stats.downloadMs = performance.now() - t0;
  const bytes = new Uint8Array(whole);
  const frames = fragments(bytes);
  status.textContent = `whole instance: ${(whole.byteLength / 1048576).toFixed(0)} MB, ${frames.length} frames`;
  const loader = new FrameLoader(web, new FrameCache(1), "wasm", 2, new URL("decode-worker.js", location.href).href, true);
  const p = inst.pixel;
  canvas.width = p.columns;
  canvas.height = p.rows;
  const ctx = canvas.getContext("2d")!;
  const img = ctx.createImageData(p.columns, p.rows);
  const out = new Uint32Array(img.data.buffer);
  const colour = p.samplesPerPixel === 3;
  let lut = null as ReturnType<typeof buildLut> | null;
  const draw = (px: Pixels) => {
    if (!lut) {
      let [c, w] = colour ? [128, 256] : inst.window ?? [0, 0];
      if (!inst.window && !colour) {
        const [lo, hi] = range(px);
        c = (lo + hi) / 2; w = hi - lo + 1;
      }
      lut = buildLut(p, c, w, inst.slope, inst.intercept, colour);
    }
    applyLut(px, p, lut, out);
    ctx.putImageData(img, 0, 0);
  };
  const decode = (i: number) => loader.decode(whole!.slice(frames[i][0], frames[i][1]), inst);
  // Cine through every frame at ``fps``, decoding a few ahead (no cache: it holds the file).
  const ahead: Promise<Pixels>[] = [];
  const n = frames.length;
  for (let i = 0; i < Math.min(4, n); i++) ahead.push(decode(i));
  const interval = 1000 / fps;
  let start = 0, last = 0, due = 0;
  for (let i = 0; i < n; i++) {
    const px = await ahead.shift()!;
    if (keepAll) kept.push(px);
    if (i + 4 < n) ahead.push(decode(i + 4));
    const now0 = performance.now();
    if (due > now0) await new Promise((res) => setTimeout(res, due - now0));
    const now = performance.now();
    draw(px);
    stats.displayed++;
    if (i === 0) {
      stats.firstImageMs = now;
      start = now;
    } else {
      const gap = now - last;
      if (now - start > 1000) {
        stats.maxGapMs = Math.max(stats.maxGapMs, gap);
        if (gap > 2 * interval) stats.stalls++;
      }
    }
    last = now;
    due = Math.max(due + interval, now - interval / 2);
    if (i % 10 === 0) {
      const held = whole.byteLength + kept.reduce((m, p) => m + p.byteLength, 0);
      status.textContent = `frame ${i + 1} / ${n} (in memory: ${(held / 1048576).toFixed(0)} MB)`;
    }
  }
  stats.allShownMs = performance.now() - start;
  status.textContent = `done: ${n} frames`;
}

main().catch((err) => {
  stats.error = String(err);
  status.textContent = `error: ${err}`;
});
