/**
 * End to end: fit on a small synthetic set of textured "parts" with the real
 * MobileNetV2 backbone (../shared) and the tiny UNet preset, load the bundle,
 * and check that parts with a synthetic defect score above held-out normals.
 */
import { existsSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import sharp from 'sharp';
import { Detector } from '../src';
import { fit, type FitEvent } from '../src/fit';
import { mulberry32 } from '../src/onnx/synthetic';
import { hasShared, hasTorch, MOBILENET } from './helpers/requirements';
import { tempDir } from './helpers/bundles';

jest.setTimeout(10 * 60_000);

const SIZE = 128;
function part(seed: number, defect: boolean): Buffer {
  const rand = mulberry32(seed);
  const phase = rand() * 6.28;
  const px = Buffer.alloc(SIZE * SIZE);
  const cx = 30 + rand() * 68;
  const cy = 30 + rand() * 68;
  for (let y = 0; y < SIZE; y++)
    for (let x = 0; x < SIZE; x++) {
      let v = 140 + 25 * Math.sin((2 * Math.PI * (x + y)) / 24 + phase) + 20 * (rand() - 0.5);
      if (defect && (x - cx) ** 2 + (y - cy) ** 2 < 100) v = 20 + 10 * rand();
      px[y * SIZE + x] = Math.max(0, Math.min(255, Math.round(v)));
    }
  return px;
}

async function writeParts(dir: string, seeds: number[], defect: boolean): Promise<string[]> {
  mkdirSync(dir, { recursive: true });
  return Promise.all(
    seeds.map(async (s) => {
      const f = join(dir, `${defect ? 'defect' : 'good'}_${s}.png`);
      await sharp(part(s, defect), { raw: { width: SIZE, height: SIZE, channels: 1 } }).png().toFile(f);
      return f;
    }),
  );
}

const ready = hasShared() && hasTorch();
(ready ? test : test.skip)('fit builds a bundle that scores defects above normals', async () => {
  const tmp = tempDir('invad-fit-');
  try {
    const normalDir = join(tmp.dir, 'train', 'good');
    await writeParts(normalDir, Array.from({ length: 40 }, (_, i) => i), false);
    writeFileSync(join(normalDir, 'corrupt.png'), 'not an image');
    const events: FitEvent[] = [];
    const out = join(tmp.dir, 'model');
    const r = await fit({
      normal: normalDir,
      out,
      backbone: 'mobilenetv2-int8',
      backboneModel: MOBILENET,
      preset: 'tiny',
      epochs: 15,
      valFraction: 0.2,
      onProgress: (e) => events.push(e),
    });
    expect(r.training.epochs).toBe(15);
    expect(r.parityMaxAbsDiff).toBeLessThan(1e-4);
    expect(r.skipped.map((s) => s.file)).toEqual([join(normalDir, 'corrupt.png')]);
    expect(events.filter((e) => e.stage === 'epoch')).toHaveLength(15);
    expect(r.manifest.calibration.status).toBe('calibrated');
    expect(r.manifest.features).toEqual({ channels: 152, height: 14, width: 14 });
    // The bundle is complete and nothing half-written is left beside it.
    expect(readdirSync(tmp.dir).sort()).toEqual(['model', 'model.work', 'train']);
    expect(existsSync(join(out, 'manifest.json'))).toBe(true);

    const normals = await writeParts(join(tmp.dir, 'test', 'good'), [900, 901, 902, 903, 904, 905], false);
    const defects = await writeParts(join(tmp.dir, 'test', 'defect'), [900, 901, 902], true);
    const det = await Detector.load(out);
    try {
      const n = (await det.scoreBatch(normals)).map((x) => x.score);
      const d = (await det.scoreBatch(defects)).map((x) => x.score);
      console.log(`fit e2e: wall ${r.wallSeconds.toFixed(1)} s; normal scores ${n.map((v) => v.toFixed(2)).join(' ')}; defect scores ${d.map((v) => v.toFixed(2)).join(' ')}`);
      expect(Math.min(...d)).toBeGreaterThan(Math.max(...n));
    } finally {
      await det.dispose();
    }
  } finally {
    tmp.cleanup();
  }
});

(hasShared() ? test : test.skip)('bad input gets clear errors', async () => {
  const tmp = tempDir('invad-fit-');
  try {
    const empty = join(tmp.dir, 'empty');
    mkdirSync(empty);
    await expect(fit({ normal: empty, out: join(tmp.dir, 'm'), backbone: 'mobilenetv2-int8', backboneModel: MOBILENET })).rejects.toThrow(/no images found/);
    const few = join(tmp.dir, 'few');
    await writeParts(few, [1, 2, 3], false);
    await expect(fit({ normal: few, out: join(tmp.dir, 'm'), backbone: 'mobilenetv2-int8', backboneModel: MOBILENET })).rejects.toThrow(/too few images/);
    await expect(fit({ normal: few, out: join(tmp.dir, 'm'), backbone: 'nope' })).rejects.toMatchObject({ argument: 'backbone' });
  } finally {
    tmp.cleanup();
  }
});

(ready ? test : test.skip)('an aborted fit leaves no bundle behind', async () => {
  const tmp = tempDir('invad-fit-');
  try {
    const normalDir = join(tmp.dir, 'good');
    await writeParts(normalDir, Array.from({ length: 12 }, (_, i) => i), false);
    const controller = new AbortController();
    const out = join(tmp.dir, 'model');
    const run = fit({
      normal: normalDir,
      out,
      backbone: 'mobilenetv2-int8',
      backboneModel: MOBILENET,
      preset: 'tiny',
      epochs: 1000,
      valFraction: 0.2,
      signal: controller.signal,
      onProgress: (e) => {
        if (e.stage === 'epoch') controller.abort(); // mid-training, like Ctrl-C
      },
    });
    await expect(run).rejects.toMatchObject({ code: 'ERR_INVAD_ABORTED' });
    expect(existsSync(out)).toBe(false);
    // The checkpoint survives for --resume.
    expect(existsSync(join(`${out}.work`, 'train', 'checkpoint.pt'))).toBe(true);
  } finally {
    tmp.cleanup();
  }
});
