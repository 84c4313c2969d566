// The stack viewport: one <canvas>, frames drawn through a window LUT, progressive loading
// (a server-rendered low-resolution image first when full quality is not there yet),
// scrolling, window/level, zoom/pan and cine, plus the overlay.

import type { FrameCache } from "./cache";
import type { DicomWeb, InstanceInfo } from "./dicomweb";
import { frameKey, isFileInstance, type FrameLoader, type StackEntry } from "./loader";
import { applyLut, buildLut, range, type Lut } from "./render";
import type { Pixels } from "./types";

export type Tool = "wl" | "pan" | "zoom";

export interface Preset {
  name: string;
  center: number;
  width: number;
}

const CT_PRESETS: Preset[] = [
  { name: "Soft tissue", center: 40, width: 400 },
  { name: "Lung", center: -600, width: 1500 },
  { name: "Bone", center: 300, width: 1500 },
  { name: "Brain", center: 40, width: 80 },
];

const LOWRES_MAX = 64; // low-resolution images kept (ImageBitmaps of <= 256 px)
// Low resolution is asked for only when full quality has not arrived after this long: on a
// fast link (loopback, LAN) the full frame wins and the server is spared a render; on a
// slow one the small JPEG shows first. (Racing both from the start measured slower over
// loopback: the render costs the server more CPU than the frame decode it delays.)
const LOWRES_DELAY_MS = 60;
const FIRST_LOWRES_DELAY_MS = Number(new URLSearchParams(location.search).get("lowresDelay") ?? 100);
const LOWRES_SIZE = 256;

export interface ViewerStats {
  index: number;
  frames: number;
  firstImageMs: number | null; // from navigation start
  firstImageKind: string;
  firstFullMs: number | null;
  displayedFull: number; // distinct stack positions shown at full quality
  displays: number;
  lowresShown: number;
  window: [number, number];
  zoom: number;
  drawMs: { mean: number; max: number; n: number };
  // starved: times cine waited for a frame not yet decoded (the rest of the stalls are the
  // page not getting animation frames: a busy machine)
  cine: { playing: boolean; fps: number; measuredFps: number; allShownMs: number | null; stalls: number; maxGapMs: number; shownInCine: number; starved: number };
}

export class StackViewport {
  readonly canvas: HTMLCanvasElement;
  private ctx: CanvasRenderingContext2D;
  private image: HTMLCanvasElement;
  private imageCtx: CanvasRenderingContext2D;
  private imageData: ImageData | null = null;
  private image32: Uint32Array | null = null;
  private stack: StackEntry[] = [];
  index = 0;
  private shownKey = "";
  private shownKind: "none" | "full" | "low" = "none";
  private lut: Lut | null = null;
  center = 0;
  width = 1;
  private defaultWindow: [number, number] | null = null;
  zoom = 1;
  panX = 0;
  panY = 0;
  tool: Tool = "wl";
  private lowres = new Map<string, ImageBitmap>();
  private lowresKind = new Map<string, string>();
  private lowresInflight = new Set<string>();
  private lowresTimer = 0;
  private redrawPending = false;
  private direction = 1;
  private wheelAcc = 0;
  fps = 30;
  playing = false;
  private cineNext = 0;
  private cineStart = 0;
  private cineShown = new Set<number>();
  private cineLast = 0;
  private cineGaps: number[] = [];
  private cineStats = { allShownMs: null as number | null, stalls: 0, maxGapMs: 0, starved: 0 };
  private cineWaiting = false;
  private displayedFull = new Set<number>();
  private displays = 0;
  private lowresShown = 0;
  firstImageMs: number | null = null;
  firstImageKind = "";
  firstFullMs: number | null = null;
  onChange: () => void = () => {};
  status = "";

  constructor(
    private host: HTMLElement,
    private web: DicomWeb,
    private cache: FrameCache,
    private loader: FrameLoader,
  ) {
    this.canvas = document.createElement("canvas");
    this.canvas.className = "viewport-canvas";
    this.canvas.tabIndex = 0;
    host.appendChild(this.canvas);
    this.ctx = this.canvas.getContext("2d", { alpha: false })!;
    this.image = document.createElement("canvas");
    this.imageCtx = this.image.getContext("2d", { willReadFrequently: false })!;
    loader.onFrame = (i) => this.frameArrived(i);
    loader.onPartial = (key, px, w, h) => this.addPartial(key, px, w, h);
    new ResizeObserver(() => this.resize()).observe(host);
    this.bindInput();
    this.resize();
  }

  get length(): number {
    return this.stack.length;
  }

  get current(): StackEntry | undefined {
    return this.stack[this.index];
  }

  // -- opening ---------------------------------------------------------------------------
  open(stack: StackEntry[], start = 0): void {
    this.stop();
    this.stack = stack;
    this.loader.setStack(stack);
    this.index = Math.max(0, Math.min(start, stack.length - 1));
    this.shownKey = "";
    this.shownKind = "none";
    this.displayedFull.clear();
    this.lowres.forEach((b) => b.close());
    this.lowres.clear();
    this.lowresKind.clear();
    const inst = stack[0].inst;
    this.image.width = inst.pixel.columns;
    this.image.height = inst.pixel.rows;
    this.imageData = this.imageCtx.createImageData(inst.pixel.columns, inst.pixel.rows);
    this.image32 = new Uint32Array(this.imageData.data.buffer);
    this.defaultWindow = this.isColour ? [128, 256] : inst.window;
    [this.center, this.width] = this.defaultWindow ?? [0, 0]; // [0,0]: from the first frame's range
    this.lut = null;
    this.zoom = 1;
    this.panX = this.panY = 0;
    this.fps = inst.frameTimeMs ? Math.min(60, Math.max(1, Math.round(1000 / inst.frameTimeMs))) : 30;
    // Progressive start: the full frame is asked for first, a low-resolution rendition too
    // when it is late; whichever arrives first is drawn, full quality replaces low resolution.
    this.loader.request(this.index);
    const first = this.index;
    clearTimeout(this.lowresTimer);
    this.lowresTimer = window.setTimeout(() => {
      if (this.index === first && this.shownKindNow() !== "full") this.fetchLowres(first);
    }, FIRST_LOWRES_DELAY_MS);
    this.loader.prefetchAround(this.index, 1);
    this.paintCurrent();
    this.canvas.focus({ preventScroll: true });
  }

  get isColour(): boolean {
    return (this.stack[0]?.inst.pixel.samplesPerPixel ?? 1) === 3;
  }

  presets(): Preset[] {
    const inst = this.stack[0]?.inst;
    const out: Preset[] = [];
    if (this.defaultWindow) out.push({ name: "Default", center: this.defaultWindow[0], width: this.defaultWindow[1] });
    if (!this.isColour && inst && (inst.modality === "CT" || inst.units === "HU")) out.push(...CT_PRESETS);
    out.push({ name: "Full range", center: NaN, width: NaN });
    return out;
  }

  applyPreset(p: Preset): void {
    if (Number.isNaN(p.center)) {
      const px = this.current ? this.cache.peek(this.current.key) : undefined;
      if (!px) return;
      this.windowFromRange(px);
    } else {
      this.setWindow(p.center, p.width);
    }
  }

  setWindow(center: number, width: number): void {
    this.center = center;
    this.width = Math.max(1, width);
    this.requestRedraw();
  }

  private windowFromRange(px: Pixels): void {
    const inst = this.stack[0].inst;
    const [lo, hi] = range(px);
    const a = lo * inst.slope + inst.intercept;
    const b = hi * inst.slope + inst.intercept;
    this.setWindow((a + b) / 2 + 0.5, Math.max(1, b - a + 1));
  }

  // -- navigation --------------------------------------------------------------------------
  go(i: number, fromCine = false): void {
    const n = this.stack.length;
    if (!n) return;
    i = Math.max(0, Math.min(n - 1, i));
    if (fromCine) this.direction = 1;
    else if (i !== this.index) this.direction = i > this.index ? 1 : -1;
    this.index = i;
    if (!fromCine && this.playing) this.stop();
    const e = this.stack[i];
    if (!this.cache.has(e.key)) {
      this.loader.request(i);
      clearTimeout(this.lowresTimer);
      if (!this.lowres.has(e.key)) {
        this.lowresTimer = window.setTimeout(() => {
          if (this.index === i && !this.cache.has(e.key)) this.fetchLowres(i);
        }, LOWRES_DELAY_MS);
      }
    }
    this.loader.prefetchAround(i, this.direction, fromCine);
    this.paintCurrent();
  }

  step(delta: number): void {
    this.go(this.index + delta);
  }

  private frameArrived(i: number): void {
    // Draw when this is the frame the user waits for (or the screen is still empty).
    if ((i === this.index && this.shownKindNow() !== "full") || this.shownKind === "none") this.paintCurrent();
  }

  private fetchLowres(i: number): void {
    const e = this.stack[i];
    if (!e || this.lowres.has(e.key) || this.lowresInflight.has(e.key) || this.lowresInflight.size >= 2) return;
    const inst = e.inst;
    // No server to render a file's frame; progressive HTJ2K brings its own low resolution.
    if (isFileInstance(inst) || this.loader.progressiveBytes(inst) > 0) return;
    const size = Math.min(LOWRES_SIZE, Math.max(inst.pixel.columns, inst.pixel.rows) >> 1 || 1);
    let url = this.web.renderedUrl(inst, e.frame, size);
    if (!this.isColour && this.width > 1) url += `&window=${this.center},${this.width}`;
    this.lowresInflight.add(e.key);
    fetch(url, { headers: { Accept: "image/jpeg" } })
      .then((r) => (r.ok ? r.blob() : Promise.reject(new Error(`rendered: HTTP ${r.status}`))))
      .then((blob) => {
        this.loader.stats.bytes += blob.size;
        return createImageBitmap(blob);
      })
      .then((bmp) => this.addPlaceholder(e.key, bmp, "low-res"))
      .catch(() => {})
      .finally(() => this.lowresInflight.delete(e.key));
  }

  /** An image to show for ``key`` until its full-quality frame is decoded: a low-resolution
   *  rendition, or the browser's own decode of a stored baseline JPEG ("preview"). */
  addPlaceholder(key: string, bmp: ImageBitmap, kind: "low-res" | "preview" | "partial"): void {
    this.lowres.set(key, bmp);
    this.lowresKind.set(key, kind);
    while (this.lowres.size > LOWRES_MAX) {
      const [k, old] = this.lowres.entries().next().value as [string, ImageBitmap];
      old.close();
      this.lowres.delete(k);
      this.lowresKind.delete(k);
    }
    if (this.stack[this.index]?.key === key && this.shownKindNow() !== "full") this.paintCurrent();
  }

  /** A reduced-resolution decode (progressive HTJ2K) of ``key``: windowed like the full
   *  frame will be, shown scaled up until the full frame replaces it. */
  addPartial(key: string, px: Pixels, w: number, h: number): void {
    const inst = this.stack[0]?.inst;
    if (!inst || this.cache.has(key) || px.length < w * h * inst.pixel.samplesPerPixel) return;
    const small = { ...inst.pixel, rows: h, columns: w };
    if (this.width <= 1 && this.center === 0 && !this.isColour) {
      const [lo, hi] = range(px);
      const a = lo * inst.slope + inst.intercept, b = hi * inst.slope + inst.intercept;
      this.center = (a + b) / 2 + 0.5;
      this.width = Math.max(1, b - a + 1);
    }
    const lut = buildLut(inst.pixel, this.center, this.width, inst.slope, inst.intercept, this.isColour);
    const data = new ImageData(w, h);
    applyLut(px, small, lut, new Uint32Array(data.data.buffer));
    createImageBitmap(data).then((bmp) => {
      if (!this.cache.has(key)) this.addPlaceholder(key, bmp, "partial");
      else bmp.close();
    }).catch(() => {});
  }

  // -- drawing -------------------------------------------------------------------------------
  /** Draw the current position: full quality if cached, else its low-res image, else keep. */
  paintCurrent(): void {
    const e = this.stack[this.index];
    if (!e) return;
    const px = this.cache.get(e.key);
    if (px) {
      this.drawFull(px);
      this.shownKey = e.key;
      this.shownKind = "full";
      this.displayedFull.add(this.index);
      this.noteShown("full");
      this.status = "";
    } else {
      const bmp = this.lowres.get(e.key);
      if (bmp) {
        this.imageCtx.imageSmoothingEnabled = true;
        this.imageCtx.drawImage(bmp, 0, 0, this.image.width, this.image.height);
        this.shownKey = e.key;
        this.shownKind = "low";
        this.lowresShown++;
        const kind = this.lowresKind.get(e.key) ?? "low-res";
        this.noteShown(kind);
        this.status = kind === "preview" ? "" : kind === "partial" ? "reduced resolution" : "low resolution";
      } else {
        this.status = this.shownKind === "none" ? "loading" : "loading frame";
      }
    }
    this.composite();
    this.onChange();
  }

  private noteShown(kind: string): void {
    this.displays++;
    const now = performance.now();
    if (this.firstImageMs === null) {
      this.firstImageMs = now;
      this.firstImageKind = kind;
    }
    if (kind === "full" && this.firstFullMs === null) this.firstFullMs = now;
  }

  private drawMs = { sum: 0, n: 0, max: 0 };

  private drawFull(px: Pixels): void {
    const t0 = performance.now();
    this.drawFullInner(px);
    const ms = performance.now() - t0;
    this.drawMs.sum += ms;
    this.drawMs.n++;
    this.drawMs.max = Math.max(this.drawMs.max, ms);
  }

  private drawFullInner(px: Pixels): void {
    const inst = this.stack[0].inst;
    if (this.width <= 1 && this.center === 0 && !this.isColour) this.windowFromRange(px);
    const key = `${this.center}/${this.width}`;
    if (!this.lut || !this.lut.key.startsWith(key + "/")) {
      this.lut = buildLut(inst.pixel, this.center, this.width, inst.slope, inst.intercept, this.isColour);
    }
    applyLut(px, inst.pixel, this.lut, this.image32!);
    this.imageCtx.putImageData(this.imageData!, 0, 0);
  }

  requestRedraw(): void {
    if (this.redrawPending) return;
    this.redrawPending = true;
    requestAnimationFrame(() => {
      this.redrawPending = false;
      const e = this.stack[this.index];
      const px = e ? this.cache.peek(e.key) : undefined;
      if (px) {
        this.drawFull(px);
        this.shownKey = e.key;
        this.shownKind = "full";
      }
      this.composite();
      this.onChange();
    });
  }

  private resize(): void {
    const dpr = window.devicePixelRatio || 1;
    const w = Math.max(1, Math.round(this.host.clientWidth * dpr));
    const h = Math.max(1, Math.round(this.host.clientHeight * dpr));
    if (this.canvas.width !== w || this.canvas.height !== h) {
      this.canvas.width = w;
      this.canvas.height = h;
      this.composite();
    }
  }

  private composite(): void {
    const c = this.ctx;
    c.setTransform(1, 0, 0, 1, 0, 0);
    c.fillStyle = "#000";
    c.fillRect(0, 0, this.canvas.width, this.canvas.height);
    if (this.shownKind === "none") return;
    const dpr = window.devicePixelRatio || 1;
    const fit = Math.min(this.canvas.width / this.image.width, this.canvas.height / this.image.height);
    const s = fit * this.zoom;
    c.setTransform(s, 0, 0, s, this.canvas.width / 2 + this.panX * dpr - (this.image.width * s) / 2, this.canvas.height / 2 + this.panY * dpr - (this.image.height * s) / 2);
    c.imageSmoothingEnabled = s < 4;
    c.drawImage(this.image, 0, 0);
    c.setTransform(1, 0, 0, 1, 0, 0);
  }

  resetView(): void {
    this.zoom = 1;
    this.panX = this.panY = 0;
    if (this.defaultWindow) [this.center, this.width] = this.defaultWindow;
    else {
      const px = this.current ? this.cache.peek(this.current.key) : undefined;
      if (px) this.windowFromRange(px);
    }
    this.requestRedraw();
  }

  setZoom(z: number): void {
    this.zoom = Math.max(0.1, Math.min(32, z));
    this.requestRedraw();
  }

  // -- cine ----------------------------------------------------------------------------------
  play(fps?: number): void {
    if (fps) this.fps = fps;
    if (this.playing || this.stack.length < 2) return;
    this.playing = true;
    this.cineStart = performance.now();
    this.cineNext = this.cineStart;
    this.cineLast = 0;
    this.cineShown = new Set([this.index]);
    this.cineGaps = [];
    this.cineStats = { allShownMs: null, stalls: 0, maxGapMs: 0, starved: 0 };
    this.loader.prefetchAround(this.index, 1, true);
    requestAnimationFrame(this.tick);
    this.onChange();
  }

  stop(): void {
    if (!this.playing) return;
    this.playing = false;
    this.onChange();
  }

  toggleCine(): void {
    if (this.playing) this.stop();
    else this.play();
  }

  private tick = (now: number): void => {
    if (!this.playing) return;
    requestAnimationFrame(this.tick);
    if (now < this.cineNext) return;
    const interval = 1000 / this.fps;
    const next = (this.index + 1) % this.stack.length;
    if (!this.cache.has(this.stack[next].key)) {
      this.loader.request(next); // stalled: the frame is not there yet
      if (!this.cineWaiting && now - this.cineStart > 1000) this.cineStats.starved++;
      this.cineWaiting = true;
      return;
    }
    this.cineWaiting = false;
    this.go(next, true);
    if (this.cineLast) {
      const gap = now - this.cineLast;
      this.cineGaps.push(gap);
      if (this.cineGaps.length > 120) this.cineGaps.shift();
      if (now - this.cineStart > 1000) {
        this.cineStats.maxGapMs = Math.max(this.cineStats.maxGapMs, gap);
        if (gap > interval * 2) this.cineStats.stalls++;
      }
    }
    this.cineLast = now;
    this.cineShown.add(next);
    if (this.cineStats.allShownMs === null && this.cineShown.size === this.stack.length) {
      this.cineStats.allShownMs = now - this.cineStart;
    }
    // Keep the cadence; after a stall start afresh rather than racing to catch up.
    this.cineNext = Math.max(this.cineNext + interval, now - interval / 2);
  };

  // -- input ---------------------------------------------------------------------------------
  private bindInput(): void {
    const cv = this.canvas;
    cv.addEventListener("wheel", (ev) => {
      ev.preventDefault();
      if (ev.ctrlKey) {
        this.setZoom(this.zoom * Math.exp(-ev.deltaY / 500));
        return;
      }
      const unit = ev.deltaMode === 1 ? 3 : ev.deltaMode === 2 ? 1 : 100; // lines, pages, pixels
      this.wheelAcc += ev.deltaY / unit;
      const steps = Math.trunc(this.wheelAcc);
      if (steps) {
        this.wheelAcc -= steps;
        this.step(steps);
      }
    }, { passive: false });
    cv.addEventListener("contextmenu", (ev) => ev.preventDefault());
    cv.addEventListener("dblclick", () => this.resetView());
    cv.addEventListener("pointerdown", (ev) => {
      cv.focus({ preventScroll: true });
      cv.setPointerCapture(ev.pointerId);
      const tool: Tool = ev.button === 1 || (ev.button === 0 && ev.shiftKey) ? "pan" : ev.button === 2 ? "zoom" : this.tool;
      let lastX = ev.clientX, lastY = ev.clientY;
      const move = (m: PointerEvent) => {
        const dx = m.clientX - lastX, dy = m.clientY - lastY;
        lastX = m.clientX;
        lastY = m.clientY;
        if (tool === "pan") {
          this.panX += dx;
          this.panY += dy;
          this.requestRedraw();
        } else if (tool === "zoom") {
          this.setZoom(this.zoom * Math.exp(-dy / 200));
        } else {
          const scale = Math.max(this.width, 2) / 256;
          this.setWindow(this.center + dy * scale, Math.max(1, this.width + dx * scale));
        }
      };
      const up = () => {
        cv.removeEventListener("pointermove", move);
        cv.removeEventListener("pointerup", up);
        cv.removeEventListener("pointercancel", up);
      };
      cv.addEventListener("pointermove", move);
      cv.addEventListener("pointerup", up);
      cv.addEventListener("pointercancel", up);
    });
    cv.addEventListener("keydown", (ev) => {
      const presets = this.presets();
      switch (ev.key) {
        case "ArrowDown": case "ArrowRight": case "j": this.step(1); break;
        case "ArrowUp": case "ArrowLeft": case "k": this.step(-1); break;
        case "PageDown": this.step(10); break;
        case "PageUp": this.step(-10); break;
        case "Home": this.go(0); break;
        case "End": this.go(this.stack.length - 1); break;
        case " ": this.toggleCine(); break;
        case "r": this.resetView(); break;
        case "+": case "=": this.setZoom(this.zoom * 1.25); break;
        case "-": this.setZoom(this.zoom / 1.25); break;
        default:
          if (/^[1-9]$/.test(ev.key) && presets[Number(ev.key) - 1]) this.applyPreset(presets[Number(ev.key) - 1]);
          else return;
      }
      ev.preventDefault();
    });
  }

  // -- reporting -----------------------------------------------------------------------------
  stats(): ViewerStats {
    const gaps = this.cineGaps;
    const mean = gaps.length ? gaps.reduce((a, b) => a + b, 0) / gaps.length : 0;
    return {
      index: this.index,
      frames: this.stack.length,
      firstImageMs: this.firstImageMs,
      firstImageKind: this.firstImageKind,
      firstFullMs: this.firstFullMs,
      displayedFull: this.displayedFull.size,
      displays: this.displays,
      lowresShown: this.lowresShown,
      window: [this.center, this.width],
      zoom: this.zoom,
      drawMs: { mean: this.drawMs.n ? this.drawMs.sum / this.drawMs.n : 0, max: this.drawMs.max, n: this.drawMs.n },
      cine: {
        playing: this.playing, fps: this.fps, measuredFps: mean ? 1000 / mean : 0,
        allShownMs: this.cineStats.allShownMs, stalls: this.cineStats.stalls, maxGapMs: this.cineStats.maxGapMs,
        shownInCine: this.cineShown.size, starved: this.cineStats.starved,
      },
    };
  }

  /** What the canvas shows of the current position: "full", "low", or "previous" (a
   *  neighbour kept on screen while the current frame loads) / "none". */
  shownKindNow(): string {
    if (this.shownKind === "none") return "none";
    return this.shownKey === this.stack[this.index]?.key ? this.shownKind : "previous";
  }

  lowresBytes(): number {
    let n = 0;
    this.lowres.forEach((b) => (n += b.width * b.height * 4));
    return n;
  }

  keyOf(i: number): string {
    const e = this.stack[i];
    return e ? frameKey(e.inst.sop, e.frame) : "";
  }

  instance(): InstanceInfo | undefined {
    return this.stack[this.index]?.inst;
  }
}
