// Build the viewer into src/dcmstream/web/static/viewer/ (committed; shipped in the wheel).
// Usage: node build.mjs [OUT_DIR]  (or: bash scripts/build-viewer.sh from the repository root)
// OUT_DIR (default: the committed src/dcmstream/web/static/viewer/) lets scripts/check-viewer.sh
// build into a temporary folder and compare it with the committed build.
import { build } from "esbuild";
import { cpSync, mkdirSync, rmSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const out = process.argv[2] ? resolve(process.argv[2]) : resolve(here, "../src/dcmstream/web/static/viewer");
rmSync(out, { recursive: true, force: true });
mkdirSync(join(out, "codecs"), { recursive: true });

// What the viewer needs of each instance: one QIDO-RS instance search per study. index.html
// sends this search from an inline script while viewer.js loads (deep links: first image
// sooner), so the list is defined here and given to both.
const INSTANCE_FIELDS = [
  "0008103E", "00200011", "00200013", // series description and number, instance number
  "00280002", "00280004", "00280006", "00280008", "00280010", "00280011", // pixel geometry
  "00280100", "00280101", "00280103",
  "00281050", "00281051", "00281052", "00281053", "00281054", // window, rescale
  "00083002", // AvailableTransferSyntaxUID (the stored syntax)
  "00181063", "00180040", // FrameTime, CineRate
  "00080060", "00100010", "00100020", "00081030",
].join(",");

const common = {
  bundle: true,
  minify: true,
  sourcemap: false,
  target: ["chrome110", "firefox110", "safari16"],
  legalComments: "none",
  logLevel: "info",
  // The emscripten codec glue has a Node.js branch (require("fs"), ...) that browsers never
  // take; keep those requires out of the bundle.
  external: ["fs", "path", "crypto", "module", "url", "worker_threads", "ws", "perf_hooks"],
  define: { "process.env.NODE_ENV": '"production"', __INSTANCE_FIELDS__: JSON.stringify(INSTANCE_FIELDS) },
};

// Pages: one self-contained module each (no chunk waterfall before the first request).
await build({ ...common, entryPoints: [join(here, "src/main.ts")], outfile: join(out, "viewer.js"), format: "esm" });
await build({ ...common, entryPoints: [join(here, "src/naive.ts")], outfile: join(out, "naive.js"), format: "esm" });
// The Part 10 worker (files outside an archive: header and offset table by ranged reads).
await build({ ...common, entryPoints: [join(here, "src/part10-worker.ts")], outfile: join(out, "part10-worker.js"), format: "esm" });
// The decode worker is a module worker; each WASM codec's glue is a chunk it imports only
// when it first meets that transfer syntax (server-decoded frames never load a codec).
await build({
  ...common,
  entryPoints: { "decode-worker": join(here, "src/decode-worker.ts") },
  outdir: out,
  format: "esm",
  splitting: true,
  chunkNames: "chunks/[name]-[hash]",
});

const wasm = {
  "charlswasm_decode.wasm": "@cornerstonejs/codec-charls/dist/charlswasm_decode.wasm",
  "libjpegturbowasm_decode.wasm": "@cornerstonejs/codec-libjpeg-turbo-8bit/dist/libjpegturbowasm_decode.wasm",
  "openjpegwasm_decode.wasm": "@cornerstonejs/codec-openjpeg/dist/openjpegwasm_decode.wasm",
  "openjphjs.wasm": "@cornerstonejs/codec-openjph/dist/openjphjs.wasm",
};
for (const [name, src] of Object.entries(wasm)) cpSync(join(here, "node_modules", src), join(out, "codecs", name));
for (const name of ["naive.html", "viewer.css"]) cpSync(join(here, "src", name), join(out, name));
writeFileSync(join(out, "index.html"), readFileSync(join(here, "src/index.html"), "utf8").replaceAll("__INSTANCE_FIELDS__", INSTANCE_FIELDS));
const pkg = JSON.parse(readFileSync(join(here, "package.json"), "utf8"));
writeFileSync(join(out, "BUILD.txt"),
  `dcmstream viewer ${pkg.version}, built from viewer/ by scripts/build-viewer.sh\n` +
  `codecs: ${Object.keys(pkg.dependencies).map((d) => `${d}@${pkg.dependencies[d]}`).join(", ")}\n`);
