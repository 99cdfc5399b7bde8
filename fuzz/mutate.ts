/**
 * Byte mutations of encoded images: generic ones (flips, interesting values, inserts,
 * deletes, truncation, splices) and format-aware ones that rewrite the declared size and fix
 * PNG checksums, so a mutated header reaches the decoder's deeper code instead of its CRC check.
 */
import { crc32 } from 'node:zlib';
import type { Rng } from './rng';

const INTERESTING_8 = [0x00, 0x01, 0x7f, 0x80, 0xfe, 0xff];
const INTERESTING_32 = [0, 1, 0x7f, 0x80, 0xff, 0x100, 0x3fff, 0x4000, 0x7fff, 0x8000, 0xffff, 0x10000, 0x7fffffff, 0x80000000, 0xffffffff];

function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let off = 0;
  for (const p of parts) {
    out.set(p, off);
    off += p.length;
  }
  return out;
}

/** Recomputes the CRC of every PNG chunk that can still be walked. */
export function fixPngCrcs(b: Uint8Array): void {
  const view = new DataView(b.buffer, b.byteOffset, b.byteLength);
  let off = 8;
  while (off + 12 <= b.length) {
    const len = view.getUint32(off);
    if (off + 12 + len > b.length) break;
    view.setUint32(off + 8 + len, crc32(b.subarray(off + 4, off + 8 + len)) >>> 0);
    off += 12 + len;
  }
}

function findJpegSof(b: Uint8Array): number {
  for (let i = 2; i + 9 < b.length; i++) if (b[i] === 0xff && (b[i + 1] === 0xc0 || b[i + 1] === 0xc2)) return i;
  return -1;
}

/** Rewrites the declared width and height where the format keeps them in a known place. */
function rewriteSize(rng: Rng, b: Uint8Array): string {
  const view = new DataView(b.buffer, b.byteOffset, b.byteLength);
  const w = rng.pick(INTERESTING_32);
  const h = rng.pick(INTERESTING_32);
  if (b.length > 24 && b[0] === 0x89 && b[1] === 0x50) {
    view.setUint32(16, w);
    view.setUint32(20, h);
    fixPngCrcs(b);
    return `png-size ${w}x${h}`;
  }
  if (b.length > 10 && b[0] === 0x47 && b[1] === 0x49) {
    view.setUint16(6, w & 0xffff, true);
    view.setUint16(8, h & 0xffff, true);
    return `gif-size ${w & 0xffff}x${h & 0xffff}`;
  }
  const sof = b[0] === 0xff && b[1] === 0xd8 ? findJpegSof(b) : -1;
  if (sof >= 0) {
    view.setUint16(sof + 5, h & 0xffff);
    view.setUint16(sof + 7, w & 0xffff);
    return `jpeg-size ${w & 0xffff}x${h & 0xffff}`;
  }
  if (b.length > 30 && b[8] === 0x57 && b[12] === 0x56 && b[15] === 0x58) {
    // VP8X canvas: 24-bit little-endian width-1 and height-1
    for (let i = 0; i < 3; i++) {
      b[24 + i] = (w >>> (8 * i)) & 0xff;
      b[27 + i] = (h >>> (8 * i)) & 0xff;
    }
    return `webp-canvas ${w & 0xffffff}x${h & 0xffffff}`;
  }
  return 'size: format not recognised';
}

export interface Mutated {
  bytes: Uint8Array;
  ops: string[];
}

/** 0 to 6 mutations of `src` (a copy); `others` are splice donors. */
export function mutateBytes(rng: Rng, src: Uint8Array, others: readonly Uint8Array[]): Mutated {
  let b: Uint8Array = new Uint8Array(src);
  const ops: string[] = [];
  const count = rng.chance(0.1) ? 0 : rng.int(1, 6);
  for (let k = 0; k < count; k++) {
    const pos = () => rng.int(0, Math.max(0, b.length - 1));
    const op = rng.weighted<string>([
      [4, 'flip'],
      [3, 'set8'],
      [2, 'set32'],
      [2, 'insert'],
      [2, 'delete'],
      [1, 'dup'],
      [2, 'truncate'],
      [1, 'append'],
      [1, 'splice'],
      [2, 'size'],
      [1, 'crc'],
    ]);
    if (b.length === 0 && op !== 'append' && op !== 'insert') continue;
    switch (op) {
      case 'flip': {
        const p = pos();
        b[p] ^= 1 << rng.int(0, 7);
        ops.push(`flip@${p}`);
        break;
      }
      case 'set8': {
        const p = pos();
        b[p] = rng.pick(INTERESTING_8);
        ops.push(`set8@${p}`);
        break;
      }
      case 'set32': {
        if (b.length < 4) break;
        const p = rng.int(0, b.length - 4);
        new DataView(b.buffer).setUint32(p, rng.pick(INTERESTING_32), rng.chance(0.5));
        ops.push(`set32@${p}`);
        break;
      }
      case 'insert': {
        const p = rng.int(0, b.length);
        b = concat(b.subarray(0, p), rng.bytes(rng.int(1, 64)), b.subarray(p));
        ops.push(`insert@${p}`);
        break;
      }
      case 'delete': {
        const p = pos();
        const n = rng.int(1, Math.max(1, Math.min(256, b.length - p)));
        b = concat(b.subarray(0, p), b.subarray(p + n));
        ops.push(`delete@${p}+${n}`);
        break;
      }
      case 'dup': {
        const p = pos();
        const n = rng.int(1, Math.max(1, Math.min(512, b.length - p)));
        b = concat(b.subarray(0, p + n), b.subarray(p, p + n), b.subarray(p + n));
        ops.push(`dup@${p}+${n}`);
        break;
      }
      case 'truncate': {
        const n = rng.pick([0, 1, 8, 16, 33, rng.int(0, b.length)]);
        b = b.slice(0, Math.min(n, b.length));
        ops.push(`truncate@${b.length}`);
        break;
      }
      case 'append':
        b = concat(b, rng.bytes(rng.int(1, 256)));
        ops.push('append');
        break;
      case 'splice': {
        if (others.length === 0) break;
        const donor = rng.pick(others);
        const p = pos();
        const q = rng.int(0, Math.max(0, donor.length - 1));
        b = concat(b.subarray(0, p), donor.subarray(q, q + rng.int(1, 256)), b.subarray(p));
        ops.push(`splice@${p}`);
        break;
      }
      case 'size':
        ops.push(rewriteSize(rng, b));
        break;
      case 'crc':
        if (b.length > 8 && b[0] === 0x89) {
          fixPngCrcs(b);
          ops.push('png-crc');
        }
        break;
    }
  }
  return { bytes: b, ops };
}
