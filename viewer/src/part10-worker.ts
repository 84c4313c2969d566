// The Part 10 worker: reads a file's header and offset table by ranged reads (part10.ts)
// off the main thread and posts back the frame index. It never reads pixel data.

import { readHeader } from "./part10";
import type { FileRef } from "./ranged";

const scope = self as unknown as DedicatedWorkerGlobalScope;

scope.onmessage = async (event: MessageEvent<{ id: number; file: FileRef }>) => {
  const { id, file } = event.data;
  try {
    scope.postMessage({ id, header: await readHeader(file) });
  } catch (err) {
    const e = err as Error;
    scope.postMessage({ id, error: String(e?.message ?? err), kind: e?.name ?? "Error" });
  }
};
