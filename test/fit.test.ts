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
import { channelStats, FeatureExtractor, featureScalingRecord, readFeatureScaling } from '../src/fit/features';
import { fit, type FitEvent } from '../src/fit/fit';
import { fitCommand } from '../src/tools/cli/commands/fit';
import { exitFor } from '../src/tools/cli/exit';
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
      await sharp(part(s, defect), { raw: { width: SIZE, height: SIZE, channels: 1 } })
        .png()
        .toFile(f);
      return f;
    }),
  );
}

const ready = hasShared() && hasTorch();
(ready ? test : test.skip)('fit builds a bundle that scores defects above normals', async () => {
  const tmp = tempDir('invad-fit-');
  try {
    const normalDir = join(tmp.dir, 'train', 'good');
    await writeParts(
      normalDir,
      Array.from({ length: 40 }, (_, i) => i),
      false,
    );
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
    // Issue 14: conformal thresholds, and every readable normal calibrates, held out or out of fold.
    const cal = r.manifest.calibration;
    expect(cal).toMatchObject({ imageThresholdMethod: 'conformal', outOfFold: { folds: 5 }, scoresFile: { file: 'calibration.json' } });
    expect(cal.samples + cal.outOfFold!.samples).toBe(40);
    expect(cal.warnings).toEqual(expect.arrayContaining([expect.stringContaining('at least 99 normals')]));
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
      console.log(
        `fit e2e: wall ${r.wallSeconds.toFixed(1)} s; normal scores ${n.map((v) => v.toFixed(2)).join(' ')}; defect scores ${d.map((v) => v.toFixed(2)).join(' ')}`,
      );
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
    await writeParts(
      normalDir,
      Array.from({ length: 12 }, (_, i) => i),
      false,
    );
    const common = {
      normal: normalDir,
      backbone: 'mobilenetv2-int8',
      backboneModel: MOBILENET,
      preset: 'tiny' as const,
      epochs: 1,
      valFraction: 0.2,
      latentSteps: [2],
    };
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
    // The work folder records the scaling as a versioned record, which --resume compares.
    const scalingOf = (work: string) => (JSON.parse(readFileSync(join(tmp.dir, work, 'features.json'), 'utf8')) as { scaling: unknown }).scaling;
    expect(scalingOf('scaled.work')).toEqual({ version: 1, normalization: 'standardize', scale: 0.5 });
    expect(scalingOf('raw.work')).toEqual({ version: 1, normalization: 'none', scale: null });
    // Resuming with other scaling would train on different data: refused before any work.
    await expect(fit({ ...common, out: join(tmp.dir, 'raw'), resume: true, featureScale: 0.5 })).rejects.toMatchObject({ argument: 'featureNormalization' });

    // Each bundle's backbone applies the same normalization its UNet trained on.
    for (const [r, work] of [
      [scaled, 'scaled.work'],
      [raw, 'raw.work'],
    ] as const) {
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
    await writeParts(
      normalDir,
      Array.from({ length: 12 }, (_, i) => i),
      false,
    );
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

describe('the feature scaling record --resume compares', () => {
  test('a versioned record; the sentences older work folders hold map to it', () => {
    expect(featureScalingRecord('none', 0.5)).toEqual({ version: 1, normalization: 'none', scale: null });
    expect(featureScalingRecord('standardize')).toEqual({ version: 1, normalization: 'standardize', scale: 1 });
    expect(readFeatureScaling({ scaling: { version: 1, normalization: 'standardize', scale: 0.5 } })).toEqual(featureScalingRecord('standardize', 0.5));
    expect(readFeatureScaling({ scaling: { version: 1, normalization: 'none', scale: null }, normalization: 'ignored when a record is there' })).toEqual(
      featureScalingRecord('none'),
    );
    // Legacy: the sentence, or nothing at all (fit always standardized to std 1 then).
    expect(readFeatureScaling({ normalization: "none: the backbone's raw features" })).toEqual(featureScalingRecord('none'));
    expect(readFeatureScaling({ normalization: 'per-channel mean/std of the training features, baked into backbone.onnx' })).toEqual(
      featureScalingRecord('standardize', 1),
    );
    expect(readFeatureScaling({ normalization: 'per-channel mean/std of the training features scaled to std 0.25, baked into backbone.onnx' })).toEqual(
      featureScalingRecord('standardize', 0.25),
    );
    expect(readFeatureScaling({})).toEqual(featureScalingRecord('standardize', 1));
    // What this version cannot read is an Error to report, not a guess.
    expect(readFeatureScaling({ scaling: { version: 2, normalization: 'whiten' } })).toEqual(
      expect.objectContaining({ message: expect.stringMatching(/version 2, written by a newer invad/) }),
    );
    expect(readFeatureScaling({ scaling: { version: 1, normalization: 'standardize', scale: -1 } })).toBeInstanceOf(Error);
    expect(readFeatureScaling({ normalization: 'something else' })).toBeInstanceOf(Error);
  });

  // Needs ../shared (the real MobileNetV2) for the backbone, not PyTorch: an aborted signal stops
  // fit right after the resume check and the backbone surgery, before extraction and training.
  (hasShared() ? test : test.skip)('--resume accepts a work folder with matching scaling, old sentence or record, and refuses any other', async () => {
    const tmp = tempDir('invad-fit-');
    try {
      const normalDir = join(tmp.dir, 'good');
      await writeParts(
        normalDir,
        Array.from({ length: 8 }, (_, i) => i),
        false,
      );
      const out = join(tmp.dir, 'model');
      const work = `${out}.work`;
      mkdirSync(work, { recursive: true });
      const stopped = new AbortController();
      stopped.abort();
      const base = { normal: normalDir, out, backbone: 'mobilenetv2-int8', backboneModel: MOBILENET, resume: true, valFraction: 0.25, signal: stopped.signal };
      const writeSaved = (saved: object) => writeFileSync(join(work, 'features.json'), JSON.stringify({ shape: [152, 14, 14], ...saved }));
      const cases: Array<[object, Partial<Parameters<typeof fit>[0]>, 'ok' | 'refused']> = [
        [{ normalization: 'per-channel mean/std of the training features, baked into backbone.onnx' }, { featureNormalization: 'standardize' }, 'ok'],
        [{ normalization: 'per-channel mean/std of the training features, baked into backbone.onnx' }, {}, 'refused'], // the default is now raw features
        [{}, { featureScale: 1 }, 'ok'], // a folder from before featureNormalization existed
        [{ normalization: 'per-channel mean/std of the training features scaled to std 0.5, baked into backbone.onnx' }, { featureScale: 0.5 }, 'ok'],
        [{ normalization: 'per-channel mean/std of the training features scaled to std 0.5, baked into backbone.onnx' }, { featureScale: 2 }, 'refused'],
        [{ normalization: "none: the backbone's raw features" }, {}, 'ok'],
        [{ scaling: { version: 1, normalization: 'none', scale: null } }, { featureNormalization: 'none' }, 'ok'],
        [{ scaling: { version: 1, normalization: 'standardize', scale: 0.5 } }, { featureScale: 0.5 }, 'ok'],
        [{ scaling: { version: 1, normalization: 'standardize', scale: 0.5 } }, {}, 'refused'],
        [{ scaling: { version: 9, normalization: 'standardize', scale: 0.5 } }, { featureScale: 0.5 }, 'refused'],
      ];
      for (const [saved, options, expected] of cases) {
        writeSaved(saved);
        const run = fit({ ...base, ...options });
        if (expected === 'ok') await expect(run).rejects.toMatchObject({ code: 'ERR_INVAD_ABORTED' });
        else await expect(run).rejects.toMatchObject({ argument: 'featureNormalization', message: expect.stringMatching(/cannot --resume/) });
      }
    } finally {
      tmp.cleanup();
    }
  });
});

describe('invad fit options', () => {
  /** Runs `invad fit` with args until fit() itself fails (no model here), capturing stderr. */
  async function invadFit(args: string[]): Promise<{ stderr: string; error: unknown }> {
    let stderr = '';
    const err = jest.spyOn(process.stderr, 'write').mockImplementation((s: string | Uint8Array) => ((stderr += String(s)), true));
    const savedCode = process.exitCode;
    let error: unknown;
    try {
      await fitCommand().exitOverride().parseAsync(args, { from: 'user' });
    } catch (e) {
      error = e;
    } finally {
      process.exitCode = savedCode;
      err.mockRestore();
    }
    return { stderr, error };
  }

  test('--unet-preset and --backbone-preset; --preset is a deprecated alias; a missing model says where it looked', async () => {
    const tmp = tempDir('invad-fit-cli-');
    const saved = process.env.INVAD_MODELS_DIR;
    try {
      process.env.INVAD_MODELS_DIR = join(tmp.dir, 'no-models');
      const common = ['--normal', join(tmp.dir, 'good'), '--out', join(tmp.dir, 'model')];
      const where = (r: { stderr: string; error: unknown }) => `${r.stderr}${String((r.error as Error | undefined)?.message)}`;

      const current = await invadFit([...common, '--backbone-preset', 'mobilenetv2-int8', '--unet-preset', 'tiny']);
      expect(current.stderr).not.toContain('deprecated');
      expect(where(current)).toContain(`${join(tmp.dir, 'no-models', 'mobilenetv2-12-int8.onnx')} ($INVAD_MODELS_DIR)`);
      expect(where(current)).toContain('(./models)');
      expect(where(current)).toContain('--backbone-model <file>');

      const old = await invadFit([...common, '--backbone', 'mobilenetv2-int8', '--preset', 'tiny']);
      expect(old.stderr.split('\n').filter((l) => l.includes('deprecated'))).toEqual(['invad fit: warning: --preset is deprecated; use --unet-preset']);
      expect(where(old)).toContain('no model file for backbone preset "mobilenetv2-int8"');

      const both = await invadFit([...common, '-b', 'mobilenetv2-int8', '--unet-preset', 'small', '--preset', 'tiny']);
      expect(where(both)).toMatch(/disagree/);
      const none = await invadFit(common);
      expect(where(none)).toMatch(/--backbone-preset <name>' not specified/);
      // All three are usage or setup errors to the CLI (exit code 2), not internal ones.
      for (const r of [current, both, none]) expect(exitFor(r.error, true).code).toBe(2);

      const help = fitCommand().helpInformation();
      expect(help).toContain('--unet-preset');
      expect(help).toContain('--backbone-preset');
      expect(help).not.toMatch(/^\s+--preset/m);
    } finally {
      if (saved === undefined) delete process.env.INVAD_MODELS_DIR;
      else process.env.INVAD_MODELS_DIR = saved;
      tmp.cleanup();
    }
  });
});
