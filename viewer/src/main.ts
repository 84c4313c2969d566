// dcmstream viewer: study list (QIDO-RS) -> series with thumbnails -> a stack viewport.
//
// URL parameters (OHIF's deep-link convention where one exists):
//   StudyInstanceUIDs=UID    open that study, its largest multiframe instance first
//   SeriesInstanceUIDs=UID   ... that series instead
//   cacheMB=128              the decoded-frame budget in the browser (MB)
//   decode=auto|server|wasm  who decodes compressed frames (auto: see FrameLoader.modeFor)
//   workers=N                decode workers (default 2-4)
//   frame=N                  start at this 1-based stack position
//   url=https://host/f.dcm   open one DICOM file by HTTP Range requests, no archive needed
//                            (same origin or CORS allowing Range); the "Open file" button
//                            does the same for a local file
//   progressive=N            progressive HTJ2K: first range of N bytes (0: off; default auto)

import { FrameCache } from "./cache";
import { DicomWeb, instanceInfo, str, num, strs, type DicomJson, type InstanceInfo } from "./dicomweb";
import { FrameLoader, frameKey, type FileInstance, type StackEntry } from "./loader";
import type { FileHeader } from "./part10";
import type { FileRef } from "./ranged";
import { mark, timeline } from "./timeline";
import { StackViewport, type Tool } from "./viewport";
import type { DecodeMode } from "./types";

mark("script-start");
const $ = <T extends HTMLElement = HTMLElement>(id: string) => document.getElementById(id) as T;
const params = new URLSearchParams(location.search);
const MiB = 1 << 20;

const dicomwebRoot = (() => {
  const meta = document.querySelector<HTMLMetaElement>('meta[name="dicomweb-root"]')?.content ?? "";
  return meta && !meta.startsWith("__") ? meta : "/dicomweb";
})();
const cacheMB = Math.max(8, Number(params.get("cacheMB")) || 128);
const decode = (params.get("decode") ?? "auto") as DecodeMode | "auto";
const workerCount = Math.max(1, Math.min(8, Number(params.get("workers")) || Math.min(4, Math.max(2, (navigator.hardwareConcurrency || 2) - 1))));

const web = new DicomWeb(dicomwebRoot);
const cache = new FrameCache(cacheMB * MiB);
// Workers start at once, in parallel with the first QIDO request.
const loader = new FrameLoader(web, cache, decode, workerCount, new URL("decode-worker.js", document.baseURI).href);
let viewport: StackViewport | null = null;
if (params.has("progressive")) loader.progressive = Math.max(0, Number(params.get("progressive")) || 0);

/** One thing to scroll through: a multiframe instance, or a series of single frames. */
interface DisplaySet {
  id: string;
  label: string;
  detail: string;
  series: string;
  instances: InstanceInfo[];
  frames: number;
}

function showError(message: string, sticky = false): void {
  const el = $("error");
  el.textContent = message;
  el.hidden = !message;
  if (message && !sticky) setTimeout(() => { if (el.textContent === message) el.hidden = true; }, 8000);
}

loader.onError = (m) => showError(`frame request failed: ${m}`, /ignores HTTP Range/.test(m));

// -- study list ------------------------------------------------------------------------------
async function showStudies(): Promise<void> {
  $("studies").hidden = false;
  $("study").hidden = true;
  $("tools").hidden = true;
  $("title").textContent = "Studies";
  const tbody = $("study-table").querySelector("tbody")!;
  tbody.innerHTML = "<tr><td colspan=7>loading...</td></tr>";
  let rows: DicomJson[];
  try {
    rows = await web.studies("limit=500");
  } catch (err) {
    tbody.innerHTML = "";
    showError(String(err));
    return;
  }
  const render = () => {
    const f = ($("filter") as HTMLInputElement).value.trim().toLowerCase();
    tbody.innerHTML = "";
    let shown = 0;
    for (const ds of rows) {
      const cells = [
        str(ds, "00100010").replace("^", ", ").replace(/\^/g, " "), str(ds, "00100020"), formatDate(str(ds, "00080020")), str(ds, "00081030"),
        strs(ds, "00080061").join(", "), String(num(ds, "00201206", 0) || ""), String(num(ds, "00201208", 0) || ""),
      ];
      if (f && !cells.join(" ").toLowerCase().includes(f)) continue;
      const tr = document.createElement("tr");
      tr.dataset.study = str(ds, "0020000D");
      for (const c of cells) {
        const td = document.createElement("td");
        td.textContent = c;
        tr.appendChild(td);
      }
      tr.addEventListener("click", () => navigate({ StudyInstanceUIDs: tr.dataset.study! }));
      tbody.appendChild(tr);
      shown++;
    }
    $("count").textContent = `${shown} of ${rows.length} studies`;
  };
  ($("filter") as HTMLInputElement).oninput = render;
  render();
}

function formatDate(d: string): string {
  return /^\d{8}$/.test(d) ? `${d.slice(0, 4)}-${d.slice(4, 6)}-${d.slice(6)}` : d;
}

// -- one study -------------------------------------------------------------------------------
function displaySets(instances: InstanceInfo[]): DisplaySet[] {
  const bySeries = new Map<string, InstanceInfo[]>();
  for (const i of instances) {
    if (!i.pixel.rows || !i.pixel.columns) continue; // no pixels (SR, presentation states)
    const list = bySeries.get(i.series) ?? [];
    list.push(i);
    bySeries.set(i.series, list);
  }
  const sets: DisplaySet[] = [];
  for (const [series, list] of bySeries) {
    list.sort((a, b) => a.instanceNumber - b.instanceNumber);
    const head = list[0];
    const name = `S${head.seriesNumber} ${head.seriesDescription || head.modality}`.trim();
    const singles = list.filter((i) => i.frames === 1);
    for (const i of list.filter((x) => x.frames > 1)) {
      sets.push({ id: i.sop, label: name, detail: `${i.frames} frames · ${i.pixel.columns}x${i.pixel.rows}`, series, instances: [i], frames: i.frames });
    }
    if (singles.length) {
      // One stack needs one geometry: split single frames by size.
      const bySize = new Map<string, InstanceInfo[]>();
      for (const i of singles) {
        const k = `${i.pixel.columns}x${i.pixel.rows}x${i.pixel.samplesPerPixel}x${i.pixel.bitsAllocated}`;
        bySize.set(k, [...(bySize.get(k) ?? []), i]);
      }
      for (const [size, group] of bySize) {
        sets.push({ id: `${series}:${size}`, label: name, detail: `${group.length} images · ${size.split("x").slice(0, 2).join("x")}`, series, instances: group, frames: group.length });
      }
    }
  }
  return sets;
}

function stackOf(set: DisplaySet): StackEntry[] {
  const out: StackEntry[] = [];
  for (const inst of set.instances) {
    for (let f = 1; f <= inst.frames; f++) out.push({ inst, frame: f, key: frameKey(inst.sop, f) });
  }
  return out;
}

async function showStudy(studyUid: string, seriesUid: string | null): Promise<void> {
  $("studies").hidden = true;
  $("study").hidden = false;
  $("tools").hidden = false;
  if (!viewport) {
    viewport = new StackViewport($("canvas-host"), web, cache, loader);
    bindToolbar(viewport);
    viewport.onChange = scheduleOverlay;
  }
  mark("viewport-ready");
  let instances: InstanceInfo[];
  try {
    // index.html started this search while the script loaded (see its inline script).
    const early = (window as unknown as { __dcmEarly?: { study: string; response?: Promise<Response>; instances?: DicomJson[] } }).__dcmEarly;
    const mine = early && early.study === studyUid ? early : undefined;
    if (mine?.instances) instances = mine.instances.map(instanceInfo);
    else instances = await web.instances(studyUid, mine?.response);
    if (mine) {
      delete mine.instances;
      delete mine.response;
    }
    mark("instances-found");
  } catch (err) {
    showError(String(err));
    return;
  }
  const sets = displaySets(instances);
  if (!sets.length) {
    showError(`study ${studyUid} has no images`);
    return;
  }
  // Deep link: the largest multiframe instance first (the reason this viewer exists), else
  // the first series by number; a SeriesInstanceUIDs parameter wins.
  const bySeriesNumber = [...sets].sort((a, b) => a.instances[0].seriesNumber - b.instances[0].seriesNumber);
  const multi = sets.filter((s) => s.instances.length === 1 && s.frames > 1).sort((a, b) => b.frames - a.frames);
  let first = (seriesUid && sets.find((s) => s.series === seriesUid)) || multi[0] || bySeriesNumber[0];
  const head = instances[0];
  $("title").textContent = [head.patientName, head.patientId, head.studyDescription].filter(Boolean).join(" · ");
  const startFrame = Math.max(1, Number(params.get("frame")) || 1);
  openSet(first, startFrame - 1);
  // index.html may have fetched the first frame as a stored baseline JPEG: the browser's own
  // decoder shows it (full resolution, as stored) while the worker path warms up.
  const preview = (window as unknown as { __dcmEarly?: { previewKey?: string; preview?: Promise<ImageBitmap> } }).__dcmEarly;
  if (preview?.preview && preview.previewKey) {
    const key = preview.previewKey;
    preview.preview.then((bmp) => viewport!.addPlaceholder(key, bmp, "preview")).catch(() => {});
    delete preview.preview;
  }
  renderSeriesList(sets, first, studyUid);
}

function renderSeriesList(sets: DisplaySet[], current: DisplaySet, study: string): void {
  const host = $("series");
  host.innerHTML = "";
  const thumbs: [HTMLImageElement, string][] = [];
  for (const set of sets) {
    const card = document.createElement("div");
    card.className = "series-card" + (set === current ? " on" : "");
    card.dataset.set = set.id;
    const box = document.createElement("div");
    box.className = "thumb";
    const img = document.createElement("img");
    img.alt = set.label;
    img.decoding = "async";
    box.appendChild(img);
    const inst = set.instances[Math.floor(set.instances.length / 2)];
    thumbs.push([img, set.instances.length === 1 ? `${web.instanceUrl(inst)}/thumbnail` : web.seriesThumbnailUrl(study, set.series)]);
    const label = document.createElement("div");
    label.className = "label";
    label.textContent = set.label;
    const meta = document.createElement("div");
    meta.className = "meta";
    meta.textContent = set.detail;
    card.append(box, label, meta);
    card.addEventListener("click", () => {
      host.querySelectorAll(".series-card.on").forEach((c) => c.classList.remove("on"));
      card.classList.add("on");
      openSet(set, 0);
    });
    host.appendChild(card);
  }
  // Thumbnails cost the server a decode each: load them after the first image is up.
  const start = () => thumbs.forEach(([img, url]) => (img.src = url));
  const wait = () => (viewport?.firstImageMs !== null ? start() : setTimeout(wait, 50));
  wait();
}

function openSet(set: DisplaySet, start: number): void {
  // The cache is not cleared: frames of the previous set age out of the LRU as new ones come.
  viewport!.open(stackOf(set), start);
  const slider = $("slider") as HTMLInputElement;
  slider.max = String(set.frames - 1);
  slider.value = String(start);
  fillPresets();
  ($("fps") as HTMLInputElement).value = String(viewport!.fps);
  $("fpsval").textContent = String(viewport!.fps);
}

// -- a file outside an archive (?url= or a local file) ---------------------------------------
let fileHeader: FileHeader | null = null;
let part10Id = 0;

/** The header and frame index of ``file``, built in the Part 10 worker by ranged reads. */
function readFileHeader(file: FileRef): Promise<FileHeader> {
  const worker = new Worker(new URL("part10-worker.js", document.baseURI).href, { type: "module", name: "part10" });
  const id = ++part10Id;
  return new Promise<FileHeader>((resolve, reject) => {
    worker.onmessage = (e: MessageEvent<{ id: number; header?: FileHeader; error?: string }>) => {
      if (e.data.id !== id) return;
      worker.terminate();
      if (e.data.header) resolve(e.data.header);
      else reject(new Error(e.data.error ?? "unreadable file"));
    };
    worker.onerror = (e) => {
      worker.terminate();
      reject(new Error(`Part 10 worker failed: ${e.message}`));
    };
    worker.postMessage({ id, file });
  }).finally(() => worker.terminate());
}

async function showFile(file: FileRef): Promise<void> {
  $("studies").hidden = true;
  $("study").hidden = false;
  $("tools").hidden = false;
  $("series").innerHTML = "";
  $("title").textContent = file.name;
  if (!viewport) {
    viewport = new StackViewport($("canvas-host"), web, cache, loader);
    bindToolbar(viewport);
    viewport.onChange = scheduleOverlay;
  }
  loader.startWorkers(); // their start-up (module, WASM) overlaps the header reads
  let header: FileHeader;
  try {
    header = await readFileHeader(file);
  } catch (err) {
    showError(String((err as Error).message ?? err), true);
    return;
  }
  mark("file-header");
  fileHeader = header;
  const inst: FileInstance = { ...header, file, size: header.size };
  const set: DisplaySet = {
    id: `file:${file.name}`, label: file.name, detail: `${header.frames} frames · ${header.pixel.columns}x${header.pixel.rows}`,
    series: header.series, instances: [inst], frames: header.frames,
  };
  $("title").textContent = [header.patientName, header.patientId, header.studyDescription, file.name].filter(Boolean).join(" · ");
  const startFrame = Math.max(1, Number(new URLSearchParams(location.search).get("frame")) || 1);
  openSet(set, Math.min(set.frames, startFrame) - 1);
}

function bindFilePicker(): void {
  const input = $("file-input") as HTMLInputElement;
  input.addEventListener("change", () => {
    const f = input.files?.[0];
    if (!f) return;
    history.pushState(null, "", `${location.pathname}?file=${encodeURIComponent(f.name)}`);
    void showFile({ blob: f, name: f.name });
    input.value = "";
  });
  const form = $("url-form") as HTMLFormElement;
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const u = ($("url-input") as HTMLInputElement).value.trim();
    if (u) navigate({ url: u });
  });
}
bindFilePicker();

// -- toolbar and overlay ---------------------------------------------------------------------
function fillPresets(): void {
  const sel = $("preset") as HTMLSelectElement;
  sel.innerHTML = "";
  const head = document.createElement("option");
  head.textContent = "Window presets";
  head.value = "";
  sel.appendChild(head);
  viewport!.presets().forEach((p, i) => {
    const o = document.createElement("option");
    o.value = String(i);
    o.textContent = `${i + 1}. ${p.name}${Number.isNaN(p.center) ? "" : ` (${p.center}/${p.width})`}`;
    sel.appendChild(o);
  });
}

function bindToolbar(v: StackViewport): void {
  document.querySelectorAll<HTMLButtonElement>("[data-tool]").forEach((b) =>
    b.addEventListener("click", () => {
      v.tool = b.dataset.tool as Tool;
      document.querySelectorAll("[data-tool]").forEach((x) => x.classList.toggle("on", x === b));
      v.canvas.focus();
    }),
  );
  const sel = $("preset") as HTMLSelectElement;
  sel.addEventListener("change", () => {
    const p = v.presets()[Number(sel.value)];
    if (p) v.applyPreset(p);
    sel.value = "";
    v.canvas.focus();
  });
  $("reset").addEventListener("click", () => v.resetView());
  $("cine").addEventListener("click", () => v.toggleCine());
  const fps = $("fps") as HTMLInputElement;
  fps.addEventListener("input", () => {
    v.fps = Number(fps.value);
    $("fpsval").textContent = fps.value;
  });
  const slider = $("slider") as HTMLInputElement;
  slider.addEventListener("input", () => v.go(Number(slider.value)));
}

let overlayPending = false;
function scheduleOverlay(): void {
  if (overlayPending) return;
  overlayPending = true;
  requestAnimationFrame(() => {
    overlayPending = false;
    updateOverlay();
  });
}

function mb(n: number): string {
  return (n / MiB).toFixed(n < 10 * MiB ? 1 : 0);
}

function updateOverlay(): void {
  const v = viewport;
  if (!v) return;
  const inst = v.instance();
  const s = v.stats();
  const c = cache.stats();
  const l = loader.stats;
  if (inst) {
    $("ov-tl").textContent = `${inst.patientName}\n${inst.patientId}\n${inst.studyDescription}`;
    $("ov-tr").textContent = `S${inst.seriesNumber} ${inst.seriesDescription}\n${inst.modality} · ${inst.pixel.columns}x${inst.pixel.rows}` +
      ` · ${inst.pixel.bitsStored} bit${inst.pixel.samplesPerPixel === 3 ? " RGB" : ""}\nTS ${inst.pixel.transferSyntax}`;
  }
  $("ov-bl").textContent =
    `Frame ${s.index + 1} / ${s.frames}\n` +
    `W ${Math.round(s.window[1])}  L ${Math.round(s.window[0])}\n` +
    `Zoom ${s.zoom.toFixed(2)}` + (v.playing ? `\nCine ${s.cine.fps} fps (${s.cine.measuredFps.toFixed(1)})` : "");
  $("ov-br").textContent =
    `cache ${mb(c.bytes)} / ${mb(c.maxBytes)} MB · ${c.frames} fr\n` +
    `hit rate ${(c.hitRate * 100).toFixed(1)}% (${c.hits}/${c.hits + c.misses})\n` +
    `net ${mb(l.bytes)} MB · ${l.requests} req · ${l.mode} decode · ${l.workers} workers`;
  $("ov-status").textContent = v.status;
  ($("slider") as HTMLInputElement).value = String(s.index);
  const cine = $("cine");
  cine.classList.toggle("on", v.playing);
  cine.innerHTML = v.playing ? "&#10073;&#10073; Stop" : "&#9654; Cine";
}
setInterval(scheduleOverlay, 250); // cache and network figures change between draws too

// -- routing ---------------------------------------------------------------------------------
function navigate(query: Record<string, string>): void {
  const keep = new URLSearchParams();
  for (const k of ["cacheMB", "decode", "workers"]) if (params.get(k)) keep.set(k, params.get(k)!);
  for (const [k, val] of Object.entries(query)) keep.set(k, val);
  history.pushState(null, "", `${location.pathname}?${keep}`);
  route();
}

function route(): void {
  const q = new URLSearchParams(location.search);
  const url = q.get("url");
  if (url) {
    const abs = new URL(url, location.href).href;
    void showFile({ url: abs, name: decodeURIComponent(abs.replace(/[?#].*$/, "").split("/").pop() || abs) });
    return;
  }
  const study = q.get("StudyInstanceUIDs")?.split(",")[0];
  if (study) void showStudy(study, q.get("SeriesInstanceUIDs")?.split(",")[0] ?? null);
  else {
    viewport?.stop();
    void showStudies();
  }
}
window.addEventListener("popstate", route);
$("home").addEventListener("click", (ev) => {
  ev.preventDefault();
  navigate({});
});

// For tests and benchmarks (Playwright reads these; nothing in the UI depends on them).
(window as unknown as { dcmviewer: unknown }).dcmviewer = {
  stats: () => ({
    ...(viewport?.stats() ?? {}),
    cache: cache.stats(),
    loader: { ...loader.stats },
    lowresBytes: viewport?.lowresBytes() ?? 0,
    shown: viewport?.shownKindNow() ?? "none",
    cacheMB,
    timeline,
    file: fileHeader && { headerBytes: fileHeader.headerBytes, requests: fileHeader.requests, size: fileHeader.size, frames: fileHeader.frames, transferSyntax: fileHeader.pixel.transferSyntax, items: fileHeader.spans.items },
    error: $("error").hidden ? "" : $("error").textContent,
  }),
  go: (i: number) => viewport?.go(i),
  setWindow: (c: number, w: number) => viewport?.setWindow(c, w),
  play: (fps?: number) => viewport?.play(fps),
  stop: () => viewport?.stop(),
  cached: (i: number) => !!viewport && cache.has(viewport.keyOf(i)),
  /** Every ``step``-th decoded sample of stack position ``i`` (null when not cached). */
  sample: (i: number, step = 97) => {
    const px = viewport ? cache.peek(viewport.keyOf(i)) : undefined;
    if (!px) return null;
    const out: number[] = [];
    for (let j = 0; j < px.length; j += step) out.push(px[j]);
    return { length: px.length, type: px.constructor.name, values: out };
  },
};

route();
