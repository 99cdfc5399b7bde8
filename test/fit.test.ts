/**
 * End to end: fit on a small synthetic set of textured "parts" with the real
 * MobileNetV2 backbone (../shared) and the tiny UNet preset, load the bundle,
 * and check that parts with a synthetic defect score above held-out normals.
 */
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import sharp from 'sharp';
import { Detector } from '../src';
import type { Manifest } from '../src/runtime/bundle/manifest';
import { channelStats, FeatureExtractor } from '../src/fit/features';
import { fit, type FitEvent } from '../src/fit/fit';
import { type NpyArray, readNpy } from '../src/util/npy';
import { mulberry32 } from '../src/util/prng';
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
    expect(r.manifest.provenance.training.featureStandardization).toMatch(/^none/); // the default: raw features
    expect(r.manifest.score.definition).toBe('latent-gaussian'); // the default score
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
    const base = { normal: few, out: join(tmp.dir, 'm'), backbone: 'mobilenetv2-int8', backboneModel: MOBILENET };
    await expect(fit({ ...base, featureNormalization: 'raw' as never })).rejects.toMatchObject({ argument: 'featureNormalization' });
    await expect(fit({ ...base, featureScale: 0 })).rejects.toMatchObject({ argument: 'featureScale' });
    await expect(fit({ ...base, featureNormalization: 'none', featureScale: 0.5 })).rejects.toThrow(/cannot be combined/);
    await expect(fit({ ...base, score: 'latent-gaussian', steps: 7 })).rejects.toMatchObject({ argument: 'score' });
  } finally {
    tmp.cleanup();
  }
});

/** Max abs difference between the bundle backbone's features of one image and `expected`. */
async function maxDiffToBundleBackbone(bundle: string, m: Manifest, file: string, expected: Float32Array): Promise<number> {
  const fx = await FeatureExtractor.open(join(bundle, m.models.backbone.file), {
    input: m.input,
    features: m.features,
    inputName: m.models.backbone.inputName,
    outputName: m.models.backbone.outputName,
  });
  try {
    const got = (await fx.extract([file], { strict: true })).features;
    expect(got.length).toBe(expected.length);
    return got.reduce((mx, v, i) => Math.max(mx, Math.abs(v - expected[i])), 0);
  } finally {
    await fx.close();
  }
}

/** Per-channel standard deviations of an N x C x h x w array. */
function channelStds(a: NpyArray): number[] {
  const [n, c, h, w] = a.shape;
  const { std } = channelStats(a.data as Float32Array, [n, c, h, w]);
  return [...std];
}

(ready ? test : test.skip)('the UNet trains on features scaled as asked: standardized to featureScale, or raw', async () => {
  const tmp = tempDir('invad-fit-');
  try {
    const normalDir = join(tmp.dir, 'good');
    await writeParts(normalDir, Array.from({ length: 12 }, (_, i) => i), false);
    const common = { normal: normalDir, backbone: 'mobilenetv2-int8', backboneModel: MOBILENET, preset: 'tiny' as const, epochs: 1, valFraction: 0.2, latentSteps: [2] };
    const scaled = await fit({ ...common, out: join(tmp.dir, 'scaled'), featureScale: 0.5 });
    const stdScaled = channelStds(await readNpy(join(tmp.dir, 'scaled.work', 'train.npy')));
    for (const s of stdScaled) if (s > 1e-3) expect(s).toBeCloseTo(0.5, 3); // constant channels stay 0
    expect(scaled.manifest.provenance.training.featureStandardization).toMatch(/scaled to std 0.5/);

    const raw = await fit({ ...common, out: join(tmp.dir, 'raw'), featureNormalization: 'none' });
    const trainRaw = await readNpy(join(tmp.dir, 'raw.work', 'train.npy'));
    const extractedRaw = await readNpy(join(tmp.dir, 'scaled.work', 'train.npy'));
    const stdRaw = channelStds(trainRaw);
    // Raw ReLU6 features are not unit-scaled: their deviations differ from channel to channel.
    expect(Math.max(...stdRaw) / Math.min(...stdRaw.filter((s) => s > 1e-3))).toBeGreaterThan(1.5);
    expect(trainRaw.shape).toEqual(extractedRaw.shape);
    expect(raw.manifest.provenance.training.featureStandardization).toMatch(/^none/);
    // Resuming with other scaling would train on different data: refused before any work.
    await expect(fit({ ...common, out: join(tmp.dir, 'raw'), resume: true, featureScale: 0.5 })).rejects.toMatchObject({ argument: 'featureNormalization' });

    // Each bundle's backbone applies the same normalization its UNet trained on.
    for (const [r, work] of [[scaled, 'scaled.work'], [raw, 'raw.work']] as const) {
      const { train } = JSON.parse(readFileSync(join(tmp.dir, work, 'features.json'), 'utf8')) as { train: string[] };
      const npy = await readNpy(join(tmp.dir, work, 'train.npy'));
      expect(await maxDiffToBundleBackbone(r.out, r.manifest, train[0], npy.data.subarray(0, 152 * 14 * 14) as Float32Array)).toBeLessThan(1e-4);
    }
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
