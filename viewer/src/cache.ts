// The browser's memory budget: decoded frames in an LRU bounded in bytes.
//
// A Map keeps insertion order, so "touch" = delete + set and the eviction victim is the
// first key. Frames are stored in their native form (Uint16Array / Int16Array for 16-bit
// data, Uint8Array for 8-bit and RGB): 2 bytes a pixel for CT instead of 4 for RGBA.

import type { Pixels } from "./types";

export interface CacheStats {
  bytes: number;
  maxBytes: number;
  frames: number;
  hits: number;
  misses: number;
  evictions: number;
  hitRate: number;
}

export class FrameCache {
  private items = new Map<string, Pixels>();
  bytes = 0;
  hits = 0;
  misses = 0;
  evictions = 0;

  /** Called with each evicted frame (the loader recycles its buffer for the next fetch). */
  onEvict: (value: Pixels) => void = () => {};

  constructor(public maxBytes: number) {}

  /** Look up for display: counts a hit or a miss and makes the frame most recent. */
  get(key: string): Pixels | undefined {
    const value = this.items.get(key);
    if (value === undefined) {
      this.misses++;
      return undefined;
    }
    this.hits++;
    this.items.delete(key);
    this.items.set(key, value);
    return value;
  }

  /** Look up without touching order or counters (prefetch planning, redraws). */
  peek(key: string): Pixels | undefined {
    return this.items.get(key);
  }

  has(key: string): boolean {
    return this.items.has(key);
  }

  /** Insert; evicts least recently used frames (never ``keep``) until within budget. */
  put(key: string, value: Pixels, keep?: Set<string>): void {
    if (value.byteLength > this.maxBytes) return; // one frame larger than the whole budget
    const old = this.items.get(key);
    if (old !== undefined) {
      this.bytes -= old.byteLength;
      this.items.delete(key);
    }
    this.items.set(key, value);
    this.bytes += value.byteLength;
    if (this.bytes <= this.maxBytes) return;
    for (const [k, v] of this.items) {
      if (this.bytes <= this.maxBytes) break;
      if (k === key || keep?.has(k)) continue;
      this.items.delete(k);
      this.bytes -= v.byteLength;
      this.evictions++;
      this.onEvict(v);
    }
  }

  clear(): void {
    this.items.clear();
    this.bytes = 0;
  }

  get size(): number {
    return this.items.size;
  }

  stats(): CacheStats {
    const lookups = this.hits + this.misses;
    return {
      bytes: this.bytes,
      maxBytes: this.maxBytes,
      frames: this.items.size,
      hits: this.hits,
      misses: this.misses,
      evictions: this.evictions,
      hitRate: lookups ? this.hits / lookups : 0,
    };
  }
}
