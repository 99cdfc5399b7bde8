/** Test images made in memory with sharp, including deliberately broken ones. */
import { crc32 } from 'node:zlib';
import sharp from 'sharp';
import { mulberry32 } from '../../src/util/prng';
import type { RawImage } from '../../src/runtime/preprocess';

export function randomRaw(width: number, height: number, channels: RawImage['channels'], seed: number): RawImage {
  const rand = mulberry32(seed);
  const data = new Uint8Array(width * height * channels);
  for (let i = 0; i < data.length; i++) data[i] = Math.floor(rand() * 256);
  return { data, width, height, channels };
}

/** A batch of n normalized model inputs (3 x height x width each), uniform in [-2, 2). */
export function randomBatch(n: number, size: { width: number; height: number }, seed: number): Float32Array {
  const r = mulberry32(seed);
  const out = new Float32Array(n * 3 * size.width * size.height);
  for (let i = 0; i < out.length; i++) out[i] = r() * 4 - 2;
  return out;
}

export function pngOf(raw: RawImage): Promise<Buffer> {
  return sharp(raw.data, { raw: { width: raw.width, height: raw.height, channels: raw.channels } })
    .png()
    .toBuffer();
}

export async function png16(width: number, height: number): Promise<Buffer> {
  const raw = randomRaw(width, height, 3, 5);
  return sharp(raw.data, { raw: { width, height, channels: 3 } })
    .toColourspace('rgb16')
    .png()
    .toBuffer();
}

function chunk(type: string, data: Buffer): Buffer {
  const len = Buffer.alloc(4);
  len.writeUInt32BE(data.length);
  const body = Buffer.concat([Buffer.from(type, 'ascii'), data]);
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(body) >>> 0);
  return Buffer.concat([len, body, crc]);
}

/** A valid PNG header declaring a width x height image, with no real pixel data. */
export function pngDeclaring(width: number, height: number): Buffer {
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr[8] = 8; // bit depth
  ihdr[9] = 2; // RGB
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk('IHDR', ihdr),
    chunk('IDAT', Buffer.alloc(16)),
    chunk('IEND', Buffer.alloc(0)),
  ]);
}
