/** Fixtures the targets share: a tiny bundle, seed images of every format, and special paths. */
import { execFileSync } from 'node:child_process';
import { mkdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import sharp from 'sharp';
import { writeBundle } from '../src/fit/write-bundle';
import { convBackbone, linearUnet } from '../src/fit/onnx/synthetic';
import { writeLatentGaussian } from '../src/runtime/bundle/latent';
import { MANIFEST_FILE } from '../src/runtime/bundle/load';
import type { Manifest } from '../src/runtime/bundle/manifest';
import { Rng } from './rng';

/** The tiny bundle: 32 x 32 input, 6 x 4 x 4 features, a linear UNet (eps = 0.7 x + 1e-4 t). */
export const TINY = { input: 32, stride: 8, channels: 6, side: 4 } as const;

export interface TinyBundleOptions {
  /** add latent-Gaussian statistics for S = 2 and 3, a calibration per S, and score by them */
  latent?: boolean;
}

/** Writes the tiny bundle to `dir` (which must not exist) and returns `dir`. */
export async function writeTinyBundle(dir: string, options: TinyBundleOptions = {}): Promise<string> {
  const { input, stride, channels, side } = TINY;
  const manifest = await writeBundle(dir, {
    input: { width: input, height: input, resizeKernel: 'linear' },
    features: { channels, height: side, width: side },
    defaultSteps: 3,
    backbone: { bytes: convBackbone({ height: input, width: input, channels, stride, seed: 7 }), name: 'fuzz-conv', taps: ['conv'] },
    unet: { bytes: linearUnet({ channels, height: side, width: side, k: 0.7, m: 1e-4 }) },
    training: { synthetic: true },
  });
  if (!options.latent) return dir;
  const positions = side * side;
  const precision = new Float32Array(positions * channels * channels);
  for (let p = 0; p < positions; p++) for (let c = 0; c < channels; c++) precision[(p * channels + c) * channels + c] = 1;
  const g = { channels, positions, mean: new Float32Array(positions * channels), precision };
  const specs = [];
  for (const steps of [2, 3]) specs.push(await writeLatentGaussian(dir, steps, g, 16, { amount: 0.01, relativeTo: 'mean-variance' }));
  const norm = { center: 1, scale: 2 };
  const m: Manifest = {
    ...manifest,
    score: { definition: 'latent-gaussian' },
    latentGaussian: specs,
    calibration: {
      status: 'calibrated',
      method: 'fuzz fixture',
      sp: norm,
      nll: norm,
      latentGaussian: norm,
      imageThreshold: 3,
      pixelThreshold: 1,
      samples: 16,
      falseAlarmRate: 0.01,
      bySteps: [2, 3].map((steps) => ({
        steps,
        sp: norm,
        nll: norm,
        latentGaussian: norm,
        imageThresholds: { sp: 3, nll: 3, combined: 3, 'latent-gaussian': 3 },
        pixelThresholds: { l2: 1, latentGaussian: 1 },
      })),
    },
  };
  writeFileSync(join(dir, MANIFEST_FILE), JSON.stringify(m, null, 2) + '\n');
  return dir;
}

export const IMAGE_FORMATS = ['png', 'jpeg', 'tiff', 'webp', 'gif'] as const;
export type ImageFormat = (typeof IMAGE_FORMATS)[number];
export const EXTENSION: Record<ImageFormat, string> = { png: '.png', jpeg: '.jpg', tiff: '.tif', webp: '.webp', gif: '.gif' };

export interface SeedImage {
  format: ImageFormat;
  width: number;
  height: number;
  channels: 1 | 3 | 4;
  bytes: Buffer;
}

/** Small valid images of each format, sizes and channel counts: the mutation seeds. */
export async function seedImages(): Promise<SeedImage[]> {
  const rng = new Rng(1, 'seed-images');
  const shapes: Array<[number, number, 1 | 3 | 4]> = [
    [1, 1, 3],
    [3, 2, 1],
    [17, 9, 4],
    [32, 32, 3],
    [48, 40, 3],
  ];
  const out: SeedImage[] = [];
  for (const [width, height, channels] of shapes) {
    const raw = rng.bytes(width * height * channels);
    for (const format of IMAGE_FORMATS) {
      const img = sharp(raw, { raw: { width, height, channels } });
      const bytes = await (
        format === 'png'
          ? img.png()
          : format === 'jpeg'
            ? img.jpeg({ quality: 80 })
            : format === 'tiff'
              ? img.tiff()
              : format === 'webp'
                ? img.webp()
                : img.gif()
      ).toBuffer();
      out.push({ format, width, height, channels, bytes });
    }
  }
  return out;
}

/** Makes a FIFO (named pipe); false where mkfifo is unavailable. */
export function makeFifo(path: string): boolean {
  try {
    execFileSync('mkfifo', [path], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/**
 * Paths that are not plain image files: a FIFO (opening it blocks until a writer comes), a
 * folder, a missing file, a NUL byte, devices, a symlink loop, names too long.
 */
export function specialPaths(dir: string, image: string): Array<{ name: string; path: string }> {
  mkdirSync(dir, { recursive: true });
  const list: Array<{ name: string; path: string }> = [];
  const fifo = join(dir, 'fifo.png');
  if (makeFifo(fifo)) list.push({ name: 'fifo', path: fifo });
  mkdirSync(join(dir, 'folder.png'), { recursive: true });
  list.push({ name: 'folder', path: join(dir, 'folder.png') });
  list.push({ name: 'missing', path: join(dir, 'missing.png') });
  list.push({ name: 'nul-byte', path: `${image}\u0000/x.jpg` });
  list.push({ name: 'nul-only', path: '\u0000' });
  list.push({ name: 'empty-string', path: '' });
  list.push({ name: 'dev-null', path: '/dev/null' });
  list.push({ name: 'dev-zero', path: '/dev/zero' });
  list.push({ name: 'dev-urandom', path: '/dev/urandom' });
  list.push({ name: 'trailing-slash', path: `${image}/` });
  list.push({ name: 'too-long', path: join(dir, 'x'.repeat(5000) + '.png') });
  const loop = join(dir, 'loop.png');
  try {
    symlinkSync(loop, loop);
    list.push({ name: 'symlink-loop', path: loop });
  } catch {
    // no symlinks here
  }
  const toFifo = join(dir, 'to-fifo.png');
  if (list.some((p) => p.name === 'fifo')) {
    try {
      symlinkSync(fifo, toFifo);
      list.push({ name: 'symlink-to-fifo', path: toFifo });
    } catch {
      // no symlinks here
    }
  }
  return list;
}
