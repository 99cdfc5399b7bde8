/**
 * A small synthetic object dataset with known ground truth (issue 17): grey discs ("parts",
 * jittered in position, radius and shade, on a noisy background) in the MVTec AD layout. Defects
 * are small and on the part's edge: a `notch` (a bite out of the rim) or a `burr` (a bright
 * blob sticking out of it); each has its exact mask.
 *
 *   node dist/tools/bench/synthetic-parts.js OUT [--size 224] [--train 60] [--good 20] [--defect 15] [--seed 1]
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import sharp from 'sharp';
import { mulberry32 } from '../../util/prng';

export interface SyntheticPartsOptions {
  size?: number;
  train?: number;
  good?: number;
  /** test images per defect type */
  defect?: number;
  seed?: number;
}

export const DEFECT_TYPES = ['notch', 'burr'] as const;

interface Part {
  cx: number;
  cy: number;
  r: number;
  shade: number;
}

function drawPart(size: number, rand: () => number): { rgb: Uint8Array; part: Part } {
  const part: Part = { cx: size * (0.45 + 0.1 * rand()), cy: size * (0.45 + 0.1 * rand()), r: size * (0.28 + 0.04 * rand()), shade: 150 + 40 * rand() };
  const rgb = new Uint8Array(size * size * 3);
  for (let y = 0; y < size; y++)
    for (let x = 0; x < size; x++) {
      const d = Math.hypot(x - part.cx, y - part.cy);
      // A soft rim, a centre hole, and mild noise everywhere.
      const inside = Math.min(1, Math.max(0, part.r - d + 0.5)) * (d > part.r * 0.25 ? 1 : 0.3);
      const v = 30 + inside * (part.shade - 30) + (rand() - 0.5) * 16;
      const o = (y * size + x) * 3;
      rgb[o] = Math.max(0, Math.min(255, v));
      rgb[o + 1] = Math.max(0, Math.min(255, v * 0.95));
      rgb[o + 2] = Math.max(0, Math.min(255, v * 0.9));
    }
  return { rgb, part };
}

/** Adds a defect on the rim; returns its mask (255 inside). */
function addDefect(rgb: Uint8Array, size: number, part: Part, kind: (typeof DEFECT_TYPES)[number], rand: () => number): Uint8Array {
  const mask = new Uint8Array(size * size);
  const angle = 2 * Math.PI * rand();
  const rad = size * (0.035 + 0.02 * rand());
  const ex = part.cx + Math.cos(angle) * part.r;
  const ey = part.cy + Math.sin(angle) * part.r;
  for (let y = 0; y < size; y++)
    for (let x = 0; x < size; x++) {
      if (Math.hypot(x - ex, y - ey) > rad) continue;
      const o = (y * size + x) * 3;
      const inPart = Math.hypot(x - part.cx, y - part.cy) <= part.r;
      if (kind === 'notch' && inPart) {
        mask[y * size + x] = 255;
        rgb[o] = rgb[o + 1] = rgb[o + 2] = 30;
      } else if (kind === 'burr' && !inPart) {
        mask[y * size + x] = 255;
        rgb[o] = Math.min(255, part.shade + 50);
        rgb[o + 1] = Math.min(255, part.shade + 45);
        rgb[o + 2] = Math.min(255, part.shade + 40);
      }
    }
  return mask;
}

async function png(path: string, data: Uint8Array, size: number, channels: 1 | 3): Promise<void> {
  await writeFile(
    path,
    await sharp(Buffer.from(data), { raw: { width: size, height: size, channels } })
      .png()
      .toBuffer(),
  );
}

/** Writes the dataset under `dir` (train/good, test/good, test/<defect>, ground_truth/<defect>). */
export async function writeSyntheticParts(dir: string, options: SyntheticPartsOptions = {}): Promise<void> {
  const size = options.size ?? 224;
  const rand = mulberry32(options.seed ?? 1);
  const counts = { train: options.train ?? 60, good: options.good ?? 20, defect: options.defect ?? 15 };
  await mkdir(join(dir, 'train', 'good'), { recursive: true });
  await mkdir(join(dir, 'test', 'good'), { recursive: true });
  for (let i = 0; i < counts.train; i++) await png(join(dir, 'train', 'good', `${String(i).padStart(3, '0')}.png`), drawPart(size, rand).rgb, size, 3);
  for (let i = 0; i < counts.good; i++) await png(join(dir, 'test', 'good', `${String(i).padStart(3, '0')}.png`), drawPart(size, rand).rgb, size, 3);
  for (const kind of DEFECT_TYPES) {
    await mkdir(join(dir, 'test', kind), { recursive: true });
    await mkdir(join(dir, 'ground_truth', kind), { recursive: true });
    for (let i = 0; i < counts.defect; i++) {
      const { rgb, part } = drawPart(size, rand);
      const mask = addDefect(rgb, size, part, kind, rand);
      const stem = String(i).padStart(3, '0');
      await png(join(dir, 'test', kind, `${stem}.png`), rgb, size, 3);
      await png(join(dir, 'ground_truth', kind, `${stem}_mask.png`), mask, size, 1);
    }
  }
}

if (require.main === module) {
  const [out, ...rest] = process.argv.slice(2);
  const opt = (name: string) => {
    const i = rest.indexOf(`--${name}`);
    return i >= 0 ? Number(rest[i + 1]) : undefined;
  };
  if (!out) {
    process.stderr.write('usage: node dist/tools/bench/synthetic-parts.js OUT [--size 224] [--train 60] [--good 20] [--defect 15] [--seed 1]\n');
    process.exit(2);
  }
  writeSyntheticParts(out, { size: opt('size'), train: opt('train'), good: opt('good'), defect: opt('defect'), seed: opt('seed') }).then(
    () => process.stdout.write(`wrote ${out}\n`),
    (err: unknown) => {
      process.stderr.write(`${String(err)}\n`);
      process.exit(1);
    },
  );
}
