// multipart/related (RFC 2387) as DICOMweb servers send frames: one part per frame.

export interface Part {
  contentType: string;
  body: Uint8Array; // a view into the response buffer
  contentRange?: string; // a ranged frame request's part (bytes a-b/total)
}

const CRLF2 = [13, 10, 13, 10];

export function boundaryOf(contentType: string): string | null {
  const m = /boundary=(?:"([^"]+)"|([^;,\s]+))/i.exec(contentType);
  return m ? m[1] ?? m[2] : null;
}

function indexOfSeq(buf: Uint8Array, seq: Uint8Array, from: number): number {
  const first = seq[0];
  const last = buf.length - seq.length;
  let i = buf.indexOf(first, from); // native scan for the first byte, then compare
  while (i !== -1 && i <= last) {
    let j = 1;
    while (j < seq.length && buf[i + j] === seq[j]) j++;
    if (j === seq.length) return i;
    i = buf.indexOf(first, i + 1);
  }
  return -1;
}

/** The parts of a multipart body (bodies are views, not copies). */
export function parseMultipart(buf: Uint8Array, boundary: string): Part[] {
  const enc = new TextEncoder();
  const delim = enc.encode(`--${boundary}`);
  const next = enc.encode(`\r\n--${boundary}`);
  const parts: Part[] = [];
  let pos = indexOfSeq(buf, delim, 0);
  if (pos < 0) throw new Error("multipart body without its boundary");
  pos += delim.length;
  for (;;) {
    if (buf[pos] === 45 && buf[pos + 1] === 45) break; // "--": closing delimiter
    const headEnd = indexOfSeq(buf, Uint8Array.from(CRLF2), pos);
    if (headEnd < 0) throw new Error("truncated multipart part headers");
    const head = new TextDecoder("latin1").decode(buf.subarray(pos, headEnd));
    const ct = /content-type:\s*([^\r\n]*)/i.exec(head);
    const start = headEnd + 4;
    const end = indexOfSeq(buf, next, start);
    if (end < 0) throw new Error("truncated multipart body");
    const cr = /content-range:\s*([^\r\n]*)/i.exec(head);
    parts.push({ contentType: ct ? ct[1].trim() : "application/octet-stream", body: buf.subarray(start, end), contentRange: cr?.[1].trim() });
    pos = end + next.length;
  }
  return parts;
}
