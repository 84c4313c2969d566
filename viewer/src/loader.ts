// Frame loading: two request queues (interaction first, prefetch at lower priority), each
// with its own concurrency limit, served by a pool of decode workers. Prefetch runs ahead
// in the scroll (or cine) direction and batches neighbouring frames of one instance into
// one frame-level WADO-RS request (frames/a,b,c); nothing ever asks for a whole instance.

import type { FrameCache } from "./cache";
import type { DicomWeb, InstanceInfo } from "./dicomweb";
import type { FrameSpans } from "./part10";
import type { FileRef } from "./ranged";
import { FAMILIES, wasmSupports } from "./syntaxes";
import { fetchFrames, fromNative } from "./frames";
import { mark } from "./timeline";
import { frameBytes, pixelsOf, type DecodeMode, type FetchTask, type Pixels, type WorkerPartial, type WorkerReply, type WorkerTask } from "./types";

/** An instance read from a file outside an archive (``?url=`` or a local file). */
export interface FileInstance extends InstanceInfo {
  file: FileRef;
  spans: FrameSpans;
  size: number | null;
}

export function isFileInstance(inst: InstanceInfo): inst is FileInstance {
  return "file" in inst && "spans" in inst;
}

/** What the page saw of a progressive frame's reduced-resolution decode (tests, benchmark). */
export interface PartialNote {
  key: string;
  width: number;
  height: number;
  level: number;
  bytes: number;
  total: number;
  ms: number; // from navigation start
}

export interface StackEntry {
  inst: InstanceInfo;
  frame: number; // 1-based
  key: string;
}

export function frameKey(sop: string, frame: number): string {
  return `${sop}/${frame}`;
}

interface Pending {
  keys: string[];
  priority: "interaction" | "prefetch";
  worker: number;
  sent: number;
}

export interface LoaderStats {
  requests: number;
  framesLoaded: number;
  bytes: number;
  errors: number;
  lastError: string;
  inflight: number;
  queued: number;
  fetchMs: number; // sums, for averages
  decodeMs: number;
  mode: DecodeMode;
  workers: number;
  partials: PartialNote[]; // the first few (progressive HTJ2K)
}

const MiB = 1 << 20;

export class FrameLoader {
  private workers: Worker[] = [];
  private load: number[] = [];
  private ready: boolean[] = [];
  private pending = new Map<number, Pending>();
  private inflight = new Set<string>();
  private failed = new Map<string, number>(); // key -> time of failure (no hot retry loop)
  private interaction: number[] = [];
  private prefetch: number[] = [];
  private active = { interaction: 0, prefetch: 0 };
  private nextId = 1;
  private stack: StackEntry[] = [];
  private index = new Map<string, number>();
  private keep = new Set<string>();
  private mode: DecodeMode = "server";
  limits = { interaction: 3, prefetch: 2 };
  batchFrames = 4;
  depth = 40;
  stats: LoaderStats;
  /** Buffers of evicted frames, handed back to the workers to be refilled: the memory a
   *  long cine touches stays near the budget instead of waiting for garbage collection. */
  private spare: ArrayBuffer[] = [];
  onFrame: (index: number, key: string) => void = () => {};
  /** A reduced-resolution image of ``key`` (progressive HTJ2K) while its full frame loads. */
  onPartial: (key: string, pixels: Pixels, width: number, height: number) => void = () => {};
  /** Progressive HTJ2K first range in bytes: 0 off, -1 automatic (see progressiveBytes). */
  progressive = -1;
  onError: (message: string) => void = () => {};

  constructor(
    private web: DicomWeb,
    private cache: FrameCache,
    private preferred: DecodeMode | "auto",
    private workerCount: number,
    private workerUrl: string,
    eager = false,
  ) {
    // Workers start after the first frame (or 300 ms): on a busy machine their start-up (an
    // isolate each, module loading, WASM compiling) competes with the first image for CPU,
    // and the first frame does not need them (see send()).
    if (eager) this.startWorkers();
    else setTimeout(() => this.startWorkers(), 300);
    cache.onEvict = (v) => {
      if (this.spare.length < 16 && v.byteOffset === 0 && v.byteLength === v.buffer.byteLength) this.spare.push(v.buffer as ArrayBuffer);
    };
    this.stats = {
      requests: 0, framesLoaded: 0, bytes: 0, errors: 0, lastError: "", inflight: 0, queued: 0,
      fetchMs: 0, decodeMs: 0, mode: "server", workers: this.workerCount, partials: [],
    };
  }

  startWorkers(): void {
    if (this.workers.length) return;
    for (let i = 0; i < this.workerCount; i++) {
      const w = new Worker(this.workerUrl, { type: "module", name: `decode-${i}` });
      const n = i;
      w.onmessage = (e: MessageEvent<WorkerReply>) => {
        if (e.data.type === "ready") {
          this.ready[n] = true;
          this.pump();
        } else this.done(e.data);
      };
      w.onerror = (e) => this.onError(`decode worker failed: ${e.message}`);
      this.workers.push(w);
      this.load.push(0);
      this.ready.push(false);
    }
  }

  /** Server decoding or WASM for this instance (see README: measured, loopback favours server). */
  modeFor(inst: InstanceInfo): DecodeMode {
    if (isFileInstance(inst)) return "wasm"; // no server: native frames or the WASM codecs
    if (this.preferred === "server") return "server";
    if (this.preferred === "wasm") return wasmSupports(inst.pixel.transferSyntax) ? "wasm" : "server";
    // auto: WASM wherever a codec exists. Measured (bench/results/viewer.md), even over
    // loopback: the RGB JPEG cine keeps 30 fps with stored frames (101 MB for 1,000 frames)
    // and drops to ~25 fps with server-decoded ones (1.4 GB through the browser's network
    // stack); the JPEG-LS CT reaches 30 fps either way with 4x fewer bytes as stored. The
    // server decodes what has no WASM codec here (RLE, lossless JPEG, deflate, ...).
    return wasmSupports(inst.pixel.transferSyntax) ? "wasm" : "server";
  }

  setStack(stack: StackEntry[]): void {
    this.stack = stack;
    this.index = new Map(stack.map((e, i) => [e.key, i]));
    this.interaction = [];
    this.prefetch = [];
    this.keep.clear();
    if (stack.length) {
      const p = stack[0].inst.pixel;
      const bytes = frameBytes(p);
      const capacity = Math.floor(this.cache.maxBytes / Math.max(bytes, 1));
      // Run ahead by at most ~60% of what the budget holds, so prefetched frames are not
      // evicted before they are shown; batches of ~2 MB per request.
      this.depth = Math.max(2, Math.min(120, Math.floor(capacity * 0.6)));
      this.batchFrames = Math.max(1, Math.min(8, Math.floor((2 * MiB) / Math.max(bytes, 1))));
      this.mode = this.modeFor(stack[0].inst);
      this.stats.mode = this.mode;
    }
  }

  entry(i: number): StackEntry | undefined {
    return this.stack[i];
  }

  isLoading(i: number): boolean {
    const e = this.stack[i];
    return !!e && this.inflight.has(e.key);
  }

  /** The frame the user looks at: next in line, ahead of every prefetch. */
  request(i: number): void {
    const e = this.stack[i];
    if (!e || this.cache.has(e.key) || this.inflight.has(e.key)) return;
    const failedAt = this.failed.get(e.key);
    if (failedAt !== undefined && performance.now() - failedAt < 2000) return;
    this.interaction = this.interaction.filter((x) => x !== i);
    this.interaction.push(i);
    // Only the newest few: frames scrolled past are not worth a request of their own.
    if (this.interaction.length > 2) this.interaction.splice(0, this.interaction.length - 2);
    this.pump();
  }

  /** Plan prefetch from ``i`` in ``direction`` (+1/-1); ``wrap`` for cine loops. */
  prefetchAround(i: number, direction: number, wrap = false): void {
    const n = this.stack.length;
    const plan: number[] = [];
    const keep = new Set<string>();
    const add = (j: number, planIt: boolean) => {
      if (wrap) j = ((j % n) + n) % n;
      if (j < 0 || j >= n) return;
      const e = this.stack[j];
      keep.add(e.key);
      if (planIt && !this.cache.has(e.key) && !this.inflight.has(e.key)) plan.push(j);
    };
    add(i, false);
    for (let k = 1; k <= Math.min(this.depth, n); k++) add(i + direction * k, true);
    for (let k = 1; k <= 2; k++) add(i - direction * k, true);
    this.keep = keep;
    this.prefetch = plan;
    this.pump();
  }

  keepSet(): Set<string> {
    return this.keep;
  }

  private pickWorker(): number {
    let best = 0;
    for (let w = 1; w < this.workers.length; w++) if (this.load[w] < this.load[best]) best = w;
    return best;
  }

  /** First-range size for a progressive HTJ2K request of ``inst`` (0: load the full frame).
   *  Only frames worth it (>= 2 MiB decoded, e.g. 1024x1024x16 bit: a 512x512 CT frame
   *  arrives whole before a worker could decode a first range, bench/results/progressive.md);
   *  about 1/32 of the decoded size, 16-128 KiB (Cornerstone3D's first range is 128 KB). */
  progressiveBytes(inst: InstanceInfo): number {
    if (this.progressive === 0 || FAMILIES[inst.pixel.transferSyntax] !== "htj2k" || this.modeFor(inst) !== "wasm") return 0;
    if (this.progressive > 0) return this.progressive;
    const decoded = frameBytes(inst.pixel);
    if (decoded < 2 << 20) return 0;
    return Math.max(16 << 10, Math.min(128 << 10, Math.floor(decoded / 32)));
  }

  private send(indices: number[], priority: "interaction" | "prefetch"): void {
    const entries = indices.map((i) => this.stack[i]);
    const inst = entries[0].inst;
    const id = this.nextId++;
    const worker = this.pickWorker();
    const keys = entries.map((e) => e.key);
    for (const k of keys) this.inflight.add(k);
    this.pending.set(id, { keys, priority, worker, sent: performance.now() });
    this.active[priority]++;
    this.load[worker]++;
    this.stats.requests++;
    const frames = entries.map((e) => e.frame);
    const task: FetchTask = {
      type: "fetch", id, url: this.web.framesUrl(inst, frames), frames, info: inst.pixel,
      mode: this.modeFor(inst), low: priority === "prefetch",
    };
    if (isFileInstance(inst)) {
      task.url = inst.file.url ?? inst.file.name;
      task.source = { file: inst.file, spans: frames.map((f) => [inst.spans.offsets[f - 1], inst.spans.lengths[f - 1]]), items: inst.spans.items, size: inst.size };
    }
    const first = priority === "interaction" && frames.length === 1 ? this.progressiveBytes(inst) : 0;
    if (first > 0) task.progressive = first;
    if (priority === "interaction" && !this.ready.some(Boolean) && !task.source && !task.progressive) {
      // The workers are still loading (the first frame of a deep link): fetch this frame
      // here, decoded by the server (it needs no codec, whatever the mode), rather than wait
      // for a worker to start and compile its WASM codec.
      task.mode = "server";
      mark("first-frame-request");
      const early = (window as unknown as { __dcmEarly?: { frameUrl?: string; frame?: Promise<Response> } }).__dcmEarly;
      const started = early?.frameUrl === task.url ? early.frame : undefined;
      if (started && early) delete early.frame;
      fetchFrames(task, (body) => Promise.resolve(fromNative(body, task.info)), started)
        .catch((err): WorkerReply => ({ type: "error", id, message: String(err?.message ?? err) }))
        .then((reply) => this.done(reply));
      return;
    }
    this.startWorkers();
    const want = frameBytes(inst.pixel);
    const spare = this.spare.filter((b) => b.byteLength === want).slice(0, frames.length);
    this.spare = this.spare.filter((b) => !spare.includes(b));
    task.spare = spare;
    this.workers[worker].postMessage(task, spare);
  }

  private pump(): void {
    while (this.active.interaction < this.limits.interaction && this.interaction.length) {
      const i = this.interaction.pop()!;
      const e = this.stack[i];
      if (e && !this.cache.has(e.key) && !this.inflight.has(e.key)) this.send([i], "interaction");
    }
    // Prefetch only while no interactive request waits (they have the connections first),
    // and only through started workers.
    if (!this.workers.length) {
      this.stats.queued = this.interaction.length + this.prefetch.length;
      return;
    }
    while (!this.interaction.length && this.active.prefetch < this.limits.prefetch && this.prefetch.length) {
      const batch: number[] = [];
      let sop = "";
      while (this.prefetch.length && batch.length < this.batchFrames) {
        const i = this.prefetch[0];
        const e = this.stack[i];
        if (this.cache.has(e.key) || this.inflight.has(e.key) || this.failed.has(e.key)) {
          this.prefetch.shift();
          continue;
        }
        if (sop && e.inst.sop !== sop) break; // one instance per request
        sop = e.inst.sop;
        batch.push(i);
        this.prefetch.shift();
      }
      if (!batch.length) break;
      this.send(batch, "prefetch");
    }
    this.stats.inflight = this.inflight.size;
    this.stats.queued = this.interaction.length + this.prefetch.length;
  }

  private partial(reply: WorkerPartial, p: Pending): void {
    const sop = p.keys[0].slice(0, p.keys[0].lastIndexOf("/"));
    const key = frameKey(sop, reply.frame);
    if (this.cache.has(key)) return;
    if (this.stats.partials.length < 64) {
      this.stats.partials.push({ key, width: reply.width, height: reply.height, level: reply.level, bytes: reply.bytes, total: reply.total, ms: Math.round(performance.now()) });
    }
    this.onPartial(key, pixelsOf({ frame: reply.frame, buffer: reply.buffer, kind: reply.kind }), reply.width, reply.height);
  }

  private done(reply: WorkerReply): void {
    if (reply.type === "ready") return;
    const p = this.pending.get(reply.id);
    if (!p) return;
    if (reply.type === "partial") {
      this.partial(reply, p);
      return;
    }
    this.pending.delete(reply.id);
    this.active[p.priority]--;
    this.load[p.worker]--;
    for (const k of p.keys) this.inflight.delete(k);
    if (reply.type === "error") {
      const now = performance.now();
      for (const k of p.keys) this.failed.set(k, now);
      this.stats.errors++;
      this.stats.lastError = reply.message;
      this.onError(reply.message);
    } else {
      mark("first-frame-arrived");
      if (!this.workers.length) setTimeout(() => this.startWorkers(), 0);
      this.stats.bytes += reply.bytes;
      this.stats.fetchMs += reply.fetchMs;
      this.stats.decodeMs += reply.decodeMs;
      const sop = p.keys[0].slice(0, p.keys[0].lastIndexOf("/"));
      for (const f of reply.frames) {
        const key = frameKey(sop, f.frame);
        const pixels: Pixels = pixelsOf(f);
        this.failed.delete(key);
        this.cache.put(key, pixels, this.keep);
        this.stats.framesLoaded++;
        const i = this.index.get(key);
        if (i !== undefined) this.onFrame(i, key);
      }
    }
    this.pump();
  }

  /** Decode one stored frame in a worker (the naive page's path). */
  decode(data: ArrayBuffer, inst: InstanceInfo): Promise<Pixels> {
    this.startWorkers();
    return new Promise((resolve, reject) => {
      const id = this.nextId++;
      const worker = this.pickWorker();
      const w = this.workers[worker];
      const listener = (e: MessageEvent<WorkerReply>) => {
        if (e.data.type === "ready" || e.data.type === "partial" || e.data.id !== id) return;
        w.removeEventListener("message", listener);
        if (e.data.type === "error") reject(new Error(e.data.message));
        else resolve(pixelsOf(e.data.frames[0]));
      };
      w.addEventListener("message", listener);
      w.postMessage({ type: "decode", id, data, info: inst.pixel } satisfies WorkerTask, [data]);
    });
  }

  close(): void {
    for (const w of this.workers) w.terminate();
  }
}
