// Random access to a file that is not in an archive: an HTTP(S) URL read with Range
// requests, or a local File (Blob.slice gives the same random access). Used by the Part 10
// worker (header and offset table) and by the decode workers (one range per frame).

/** The server answered a Range request with the whole body (200): refused, never downloaded. */
export class RangeIgnoredError extends Error {
  constructor(url: string) {
    super(`${url}: the server ignores HTTP Range requests (it answered 200 with the whole file); ` +
      "this viewer reads remote files frame by frame and will not download the whole file");
    this.name = "RangeIgnoredError";
  }
}

/** Where a file's bytes are: a URL (same origin or CORS with Range allowed) or a Blob. */
export interface FileRef {
  url?: string;
  blob?: Blob;
  name: string;
}

export interface RangeResult {
  bytes: Uint8Array;
  total: number | null; // the file's size when the answer says it
}

/** Bytes [start, end) of the file (fewer at its end). ``end`` undefined: to the end. */
export async function readRange(file: FileRef, start: number, end?: number, low = false): Promise<RangeResult> {
  if (file.blob) {
    const size = file.blob.size;
    const stop = Math.min(end ?? size, size);
    const buf = await file.blob.slice(start, Math.max(start, stop)).arrayBuffer();
    return { bytes: new Uint8Array(buf), total: size };
  }
  const url = file.url!;
  const abort = new AbortController();
  const init: RequestInit & { priority?: string } = {
    headers: { Range: `bytes=${start}-${end === undefined ? "" : end - 1}` },
    signal: abort.signal,
    priority: low ? "low" : "high",
    cache: "no-store",
  };
  const r = await fetch(url, init);
  if (r.status === 200) {
    abort.abort(); // the body is the whole file: stop it here
    throw new RangeIgnoredError(url);
  }
  if (r.status === 416) return { bytes: new Uint8Array(0), total: totalOf(r.headers.get("content-range")) };
  if (r.status !== 206) throw new Error(`${url}: HTTP ${r.status}`);
  const total = totalOf(r.headers.get("content-range"));
  const first = /bytes\s+(\d+)-/.exec(r.headers.get("content-range") ?? "");
  if (first && Number(first[1]) !== start) throw new Error(`${url}: asked for bytes from ${start}, got ${first[1]}`);
  return { bytes: new Uint8Array(await r.arrayBuffer()), total };
}

export function totalOf(contentRange: string | null): number | null {
  const m = /\/(\d+)\s*$/.exec(contentRange ?? "");
  return m ? Number(m[1]) : null;
}
