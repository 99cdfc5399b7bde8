/**
 * Benchmark inputs, in the two forms an application hands over: encoded images
 * (PNG/JPEG bytes in memory, so decoding is measured but disk reads are not) and
 * raw frames (8-bit interleaved pixels, as a line camera delivers them).
 */
import { readFile } from 'node:fs/promises';
import sharp from 'sharp';
import { expandImagePaths } from '../../util/image-files';
import { InvalidArgumentError } from '../../util/errors';
import { mulberry32 } from '../../util/prng';
import type { RawImage } from '../../runtime/preprocess';

export type InputKind = 'raw' | 'encoded';
export const INPUT_KINDS: readonly InputKind[] = ['raw', 'encoded'];

export interface BenchImages {
  /** where the images came from */
  source: string;
  width: number;
  height: number;
  raw: RawImage[];
  encoded: Uint8Array[];
  /** mean encoded size in bytes */
  encodedBytes: number;
}

/**
 * A textured, noisy RGB frame: smooth gradients plus stripes plus pixel noise,
 * so PNG neither compresses it to nothing nor stores it verbatim.
 */
export function syntheticFrame(width: number, height: number, seed: number): RawImage {
  const rand = mulberry32(seed);
  const data = new Uint8Array(width * height * 3);
  const fx = 2 + rand() * 6;
  const fy = 2 + rand() * 6;
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const base = 128 + 60 * Math.sin(((fx * x) / width) * Math.PI) * Math.cos(((fy * y) / height) * Math.PI);
      const stripe = ((x + y * 3) >> 3) & 1 ? 20 : -20;
      for (let c = 0; c < 3; c++) {
        const v = base + stripe + (c - 1) * 15 + (rand() - 0.5) * 40;
        data[(y * width + x) * 3 + c] = v < 0 ? 0 : v > 255 ? 255 : v;
      }
    }
  }
  return { data, width, height, channels: 3 };
}

export async function syntheticImages(width: number, height: number, count: number, seed = 1): Promise<BenchImages> {
  const raw = Array.from({ length: count }, (_, i) => syntheticFrame(width, height, seed + i));
  const encoded = await Promise.all(
    raw.map((r) =>
      sharp(r.data, { raw: { width, height, channels: 3 } })
        .png()
        .toBuffer(),
    ),
  );
  return {
    source: `synthetic ${width}x${height} RGB (${count} distinct frames; encoded as PNG)`,
    width,
    height,
    raw,
    encoded: encoded.map((b) => new Uint8Array(b.buffer, b.byteOffset, b.byteLength)),
    encodedBytes: Math.round(encoded.reduce((a, b) => a + b.length, 0) / count),
  };
}

/**
 * Images from a folder: their file bytes as the encoded inputs (read into memory
 * once), and their decoded RGB pixels as the raw frames. At most `limit` files.
 */
export async function folderImages(dir: string, limit: number): Promise<BenchImages> {
  const files = (await expandImagePaths([dir])).slice(0, limit);
  if (files.length === 0) throw new InvalidArgumentError('images', `no images found in ${dir}`);
  const encoded = await Promise.all(files.map(async (f) => new Uint8Array(await readFile(f))));
  const raw = await Promise.all(
    encoded.map(async (bytes) => {
      const { data, info } = await sharp(bytes).removeAlpha().toColourspace('srgb').raw().toBuffer({ resolveWithObject: true });
      return { data: new Uint8Array(data.buffer, data.byteOffset, data.byteLength), width: info.width, height: info.height, channels: 3 } satisfies RawImage;
    }),
  );
  return {
    source: `${files.length} files from ${dir}`,
    width: raw[0].width,
    height: raw[0].height,
    raw,
    encoded,
    encodedBytes: Math.round(encoded.reduce((a, b) => a + b.length, 0) / encoded.length),
  };
}

/** The i-th input of a kind, cycling through the set. */
export function pick(images: BenchImages, kind: InputKind, i: number): RawImage | Uint8Array {
  const list = kind === 'raw' ? images.raw : images.encoded;
  return list[i % list.length];
}
