// Transfer syntaxes the WASM decoders handle (the rest is decoded by the server).

export const FAMILIES: Record<string, string> = {
  "1.2.840.10008.1.2.4.50": "jpeg", // baseline 8-bit
  "1.2.840.10008.1.2.4.80": "jpegls",
  "1.2.840.10008.1.2.4.81": "jpegls",
  "1.2.840.10008.1.2.4.90": "j2k",
  "1.2.840.10008.1.2.4.91": "j2k",
  "1.2.840.10008.1.2.4.201": "htj2k",
  "1.2.840.10008.1.2.4.202": "htj2k",
  "1.2.840.10008.1.2.4.203": "htj2k",
};

export function wasmSupports(ts: string): boolean {
  return ts in FAMILIES;
}
