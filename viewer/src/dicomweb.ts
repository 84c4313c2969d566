// The few DICOMweb calls the viewer makes (QIDO-RS searches, rendered/thumbnail URLs) and
// DICOM JSON accessors.

import { authFetch } from "./auth";
import { mark } from "./timeline";
import type { PixelInfo } from "./types";

export type DicomJson = Record<string, { vr: string; Value?: unknown[] }>;

export function value(ds: DicomJson, tag: string): unknown {
  const v = ds[tag]?.Value;
  return v && v.length ? v[0] : undefined;
}

export function str(ds: DicomJson, tag: string, fallback = ""): string {
  const v = value(ds, tag);
  if (v === undefined || v === null) return fallback;
  if (typeof v === "object" && "Alphabetic" in (v as object)) return String((v as { Alphabetic: string }).Alphabetic ?? fallback);
  return String(v);
}

export function num(ds: DicomJson, tag: string, fallback: number): number {
  const v = value(ds, tag);
  const n = typeof v === "number" ? v : Number(v);
  return v === undefined || v === null || Number.isNaN(n) ? fallback : n;
}

export function strs(ds: DicomJson, tag: string): string[] {
  return (ds[tag]?.Value ?? []).map((v) => String(v));
}

declare const __INSTANCE_FIELDS__: string;
/** What the viewer needs of each instance, from one QIDO-RS instance search per study
 *  (the list lives in build.mjs: index.html's inline script sends the same search). */
export const INSTANCE_FIELDS: string = __INSTANCE_FIELDS__;

export interface InstanceInfo {
  study: string;
  series: string;
  sop: string;
  seriesNumber: number;
  seriesDescription: string;
  modality: string;
  instanceNumber: number;
  frames: number;
  pixel: PixelInfo;
  window: [number, number] | null; // center, width (first values)
  slope: number;
  intercept: number;
  units: string;
  frameTimeMs: number | null;
  patientName: string;
  patientId: string;
  studyDescription: string;
}

export function instanceInfo(ds: DicomJson): InstanceInfo {
  const wc = value(ds, "00281050");
  const ww = value(ds, "00281051");
  const cine = num(ds, "00180040", 0);
  const ft = num(ds, "00181063", 0);
  return {
    study: str(ds, "0020000D"),
    series: str(ds, "0020000E"),
    sop: str(ds, "00080018"),
    seriesNumber: num(ds, "00200011", 0),
    seriesDescription: str(ds, "0008103E"),
    modality: str(ds, "00080060"),
    instanceNumber: num(ds, "00200013", 0),
    frames: Math.max(1, num(ds, "00280008", 1)),
    pixel: {
      rows: num(ds, "00280010", 0),
      columns: num(ds, "00280011", 0),
      samplesPerPixel: num(ds, "00280002", 1),
      bitsAllocated: num(ds, "00280100", 16),
      bitsStored: num(ds, "00280101", num(ds, "00280100", 16)),
      pixelRepresentation: num(ds, "00280103", 0),
      photometric: str(ds, "00280004", "MONOCHROME2"),
      planarConfiguration: num(ds, "00280006", 0),
      transferSyntax: str(ds, "00083002", "1.2.840.10008.1.2.1"),
    },
    window: wc !== undefined && ww !== undefined && Number(ww) > 0 ? [Number(wc), Number(ww)] : null,
    slope: num(ds, "00281053", 1) || 1,
    intercept: num(ds, "00281052", 0),
    units: str(ds, "00281054"),
    frameTimeMs: ft > 0 ? ft : cine > 0 ? 1000 / cine : null,
    patientName: str(ds, "00100010"),
    patientId: str(ds, "00100020"),
    studyDescription: str(ds, "00081030"),
  };
}

export class DicomWeb {
  constructor(public root: string) {}

  private async json(path: string, started?: Promise<Response>): Promise<DicomJson[]> {
    const r = await (started ?? authFetch(this.root + path, { headers: { Accept: "application/dicom+json" } }));
    mark("qido-headers");
    if (r.status === 204) return [];
    if (!r.ok) {
      let reason = "";
      try {
        reason = (await r.json()).error ?? "";
      } catch {
        /* not JSON */
      }
      throw new Error(`${path}: HTTP ${r.status} ${reason}`.trim());
    }
    const text = await r.text();
    mark("qido-body");
    return JSON.parse(text) as DicomJson[];
  }

  studies(query = ""): Promise<DicomJson[]> {
    return this.json(`/studies?includefield=00081030,00080061,00201206,00201208${query ? "&" + query : ""}`);
  }

  series(study: string): Promise<DicomJson[]> {
    return this.json(`/studies/${study}/series?includefield=0008103E,00200011,00201209`);
  }

  /** Every instance of a study with what the viewer needs (``started``: the same request, already sent). */
  async instances(study: string, started?: Promise<Response>): Promise<InstanceInfo[]> {
    const hits = await this.json(`/studies/${study}/instances?includefield=${INSTANCE_FIELDS}`, started);
    return hits.map(instanceInfo);
  }

  instanceUrl(i: { study: string; series: string; sop: string }): string {
    return `${this.root}/studies/${i.study}/series/${i.series}/instances/${i.sop}`;
  }

  framesUrl(i: InstanceInfo, frames: number[]): string {
    return `${this.instanceUrl(i)}/frames/${frames.join(",")}`;
  }

  renderedUrl(i: InstanceInfo, frame: number, size: number, quality = 70): string {
    return `${this.instanceUrl(i)}/frames/${frame}/rendered?viewport=${size},${size}&quality=${quality}`;
  }

  seriesThumbnailUrl(study: string, series: string): string {
    return `${this.root}/studies/${study}/series/${series}/thumbnail`;
  }
}
