/**
 * The table of score definitions (src/runtime/scores.ts): every entry on hand-worked numbers,
 * and proof that its consumers (manifest schema, calibration, Detector, eval, fit, CLI) read
 * from it, up to a definition added to the table at test time flowing through all of them.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  DEFAULT_SCORE_DEFINITION,
  imageScore,
  SCORE_DEFINITIONS,
  SCORES,
  type ScoreComponents,
  type ScoreDefinitionSpec,
  type ScoreNormalization,
  type ScorePart,
} from '../src/runtime/scores';
import { manifestSchema, validateManifest } from '../src/runtime/bundle/manifest';
import { buildManifest } from '../src/fit/write-bundle';
import { calibrateStep, calibrationSpec, type NormalSample } from '../src/fit/calibrate';
import { buildProgram } from '../src/tools/cli/main';
import { InvalidArgumentError } from '../src/util/errors';
import { tempDir, tinyContents, writeTinyBundle } from './helpers/bundles';
import { pngOf, randomRaw } from './helpers/images';

// Hand-worked: each part normalizes to an exact binary fraction, so sums are exact too.
const PARTS: Required<ScoreComponents> = { spatialRange: 3, nll: 110, latentGaussian: 7, featureGaussian: 6, patchcore: 2 };
const CAL: Required<ScoreNormalization> = {
  sp: { center: 1, scale: 2 }, // (3 - 1) / 2 = 1
  nll: { center: 100, scale: 4 }, // (110 - 100) / 4 = 2.5
  latentGaussian: { center: 5, scale: 0.5 }, // (7 - 5) / 0.5 = 4
  featureGaussian: { center: 4, scale: 4 }, // (6 - 4) / 4 = 0.5
  patchcore: { center: 1, scale: 0.25 }, // (2 - 1) / 0.25 = 4
};

describe('the table', () => {
  // What each entry must say, written out by hand: the spec the table is checked against.
  const expected: Record<string, { parts: ScorePart[]; map: string; needsLatent: boolean; score: number }> = {
    sp: { parts: ['spatialRange'], map: 'l2', needsLatent: false, score: 1 },
    nll: { parts: ['nll'], map: 'l2', needsLatent: false, score: 2.5 },
    combined: { parts: ['spatialRange', 'nll'], map: 'l2', needsLatent: false, score: 3.5 },
    'latent-gaussian': { parts: ['latentGaussian'], map: 'latentGaussian', needsLatent: true, score: 4 },
    'latent-gaussian-feature-map': { parts: ['latentGaussian'], map: 'featureGaussian', needsLatent: true, score: 4 },
    'latent-feature-fused': { parts: ['latentGaussian', 'featureGaussian'], map: 'fused', needsLatent: true, score: 4.5 },
    padim: { parts: ['featureGaussian'], map: 'featureGaussian', needsLatent: false, score: 0.5 },
    patchcore: { parts: ['patchcore'], map: 'patchcore', needsLatent: false, score: 4 },
  };

  test('has exactly these definitions, in this order', () => {
    expect(SCORE_DEFINITIONS).toEqual([
      'sp',
      'nll',
      'combined',
      'latent-gaussian',
      'latent-gaussian-feature-map',
      'latent-feature-fused',
      'padim',
      'patchcore',
    ]);
    expect(SCORE_DEFINITIONS).toEqual(Object.keys(SCORES));
    expect(Object.isFrozen(SCORE_DEFINITIONS)).toBe(true);
  });

  test.each(Object.entries(expected))('%s: parts, map, latent statistics and image score', (name, want) => {
    const spec: ScoreDefinitionSpec = SCORES[name as keyof typeof SCORES];
    expect(spec.parts).toEqual(want.parts);
    expect(spec.map).toBe(want.map);
    expect(spec.needsLatent).toBe(want.needsLatent);
    expect(spec.summary.length).toBeGreaterThan(0);
    expect(imageScore(name as keyof typeof SCORES, PARTS, CAL)).toBe(want.score);
  });

  test('combine works on normalized parts: sp + nll adds them, the single-part ones pass theirs on', () => {
    const n = { spatialRange: -1.25, nll: 0.5, latentGaussian: 9 };
    expect(SCORES.combined.combine(n)).toBe(-0.75);
    expect(SCORES.sp.combine(n)).toBe(-1.25);
    expect(SCORES.nll.combine(n)).toBe(0.5);
    expect(SCORES['latent-gaussian'].combine(n)).toBe(9);
  });

  test('each combine reads only the parts its entry lists', () => {
    for (const d of SCORE_DEFINITIONS) {
      const spec: ScoreDefinitionSpec = SCORES[d];
      // A part read but not listed would be undefined here, and the score NaN.
      const only = Object.fromEntries(spec.parts.map((p) => [p, 1.5])) as Record<ScorePart, number>;
      expect(Number.isFinite(spec.combine(only))).toBe(true);
    }
  });

  test('an entry needs latent statistics exactly when it uses the latent part or map', () => {
    for (const d of SCORE_DEFINITIONS) {
      const spec: ScoreDefinitionSpec = SCORES[d];
      expect([d, spec.needsLatent]).toEqual([d, spec.parts.includes('latentGaussian') || spec.map === 'latentGaussian']);
    }
  });

  test("fit's defaults: one that needs latent statistics and one that does not", () => {
    expect(SCORES[DEFAULT_SCORE_DEFINITION.withLatent].needsLatent).toBe(true);
    expect(SCORES[DEFAULT_SCORE_DEFINITION.withoutLatent].needsLatent).toBe(false);
  });
});

describe('imageScore', () => {
  test('an uncalibrated latent part (no normalization) is used as is', () => {
    const { latentGaussian: _, ...noLatentNorm } = CAL;
    expect(imageScore('latent-gaussian', PARTS, noLatentNorm)).toBe(7);
  });

  test('a definition whose latent part is missing is an InvalidArgumentError; the others do not need it', () => {
    const { latentGaussian: _, ...noLatent } = PARTS;
    expect(() => imageScore('latent-gaussian', noLatent, CAL)).toThrow(InvalidArgumentError);
    expect(() => imageScore('latent-gaussian', noLatent, CAL)).toThrow(
      expect.objectContaining({ argument: 'scoreDefinition', message: expect.stringMatching(/latent-gaussian score needs the bundle's latent statistics/) }),
    );
    expect(imageScore('combined', noLatent, CAL)).toBe(3.5);
  });
});

describe('consumers read the table', () => {
  test("the manifest schema's definitions and per-definition thresholds are the table's keys", () => {
    expect(manifestSchema.properties.score.properties.definition.enum).toEqual(SCORE_DEFINITIONS);
    const step = manifestSchema.properties.calibration.properties.bySteps.items.properties;
    expect(Object.keys(step.imageThresholds.properties)).toEqual(SCORE_DEFINITIONS);
    const manifest = buildManifest(tinyContents(), { backbone: 'a'.repeat(64), unet: 'b'.repeat(64) });
    for (const d of SCORE_DEFINITIONS) expect(validateManifest({ ...manifest, score: { definition: d } })).toBe(true);
    expect(validateManifest({ ...manifest, score: { definition: 'max' } })).toBe(false);
  });

  test('calibration: a threshold per definition, skipping those that need latent statistics when the normals lack them', () => {
    const normal = (i: number, latent: boolean): NormalSample => ({
      components: { spatialRange: 1 + i, nll: 50 + 2 * i, ...(latent ? { latentGaussian: 3 + i } : {}) },
      featureMaps: { l2: Float32Array.of(i, 2 * i), ...(latent ? { latentGaussian: Float32Array.of(10 * i, 20 * i) } : {}) },
    });
    const withLatent = calibrateStep(
      3,
      [0, 1, 2, 3].map((i) => normal(i, true)),
    );
    // Definitions on feature statistics are calibrated by invad baseline (test/baseline.test.ts).
    const onLatents = SCORE_DEFINITIONS.filter((d) => SCORES[d].features === undefined);
    expect(Object.keys(withLatent.imageThresholds)).toEqual(onLatents);
    const without = calibrateStep(
      3,
      [0, 1, 2, 3].map((i) => normal(i, false)),
    );
    expect(Object.keys(without.imageThresholds)).toEqual(onLatents.filter((d) => !SCORES[d].needsLatent));
    // The top-level pixel threshold is the one of the default definition's map.
    for (const d of onLatents) {
      const spec = calibrationSpec([withLatent], { steps: 3, definition: d, samples: 4, falseAlarmRate: 0.01 });
      expect(spec.pixelThreshold).toBe(withLatent.pixelThresholds[SCORES[d].map]);
      expect(spec.imageThreshold).toBe(withLatent.imageThresholds[d]);
    }
  });

  test('invad fit --score offers exactly the table keys, and its help describes each', () => {
    const fit = buildProgram().commands.find((c) => c.name() === 'fit')!;
    const option = fit.options.find((o) => o.long === '--score')!;
    expect(option.argChoices).toEqual(SCORE_DEFINITIONS);
    for (const d of SCORE_DEFINITIONS) expect(option.description).toContain(`${d}: ${SCORES[d].summary}`);
    expect(option.description).toContain(`default: ${DEFAULT_SCORE_DEFINITION.withLatent}`);
  });
});

/**
 * A definition added to the table only (in an isolated module registry, so nothing else sees
 * it) is accepted by the manifest, calibrated, scored by Detector and reported by eval. It uses
 * the l2 map with the latent part, a combination none of the real entries has.
 */
describe('a definition added to the table only', () => {
  const NEW = 'sp-plus-latent';
  const spec: ScoreDefinitionSpec = {
    parts: ['spatialRange', 'latentGaussian'],
    map: 'l2',
    needsLatent: true,
    combine: (n) => n.spatialRange + 2 * n.latentGaussian,
    summary: 'norm(SP) + 2 norm(latent-Gaussian), for this test',
  };
  type Modules = {
    scores: typeof import('../src/runtime/scores');
    manifest: typeof import('../src/runtime/bundle/manifest');
    calibrateBundle: typeof import('../src/fit/calibrate-bundle');
    detector: typeof import('../src/runtime/detector');
    evaluate: typeof import('../src/eval/evaluate');
    cli: typeof import('../src/tools/cli/main');
  };
  let m: Modules;
  let tmp: ReturnType<typeof tempDir>;

  beforeAll(() => {
    tmp = tempDir('invad-scores-');
    jest.isolateModules(() => {
      jest.doMock('../src/runtime/scores', () => {
        const actual = jest.requireActual('../src/runtime/scores');
        // imageScore reads this same object, so the new entry is scored like the others.
        actual.SCORES[NEW] = spec;
        return { ...actual, SCORE_DEFINITIONS: Object.freeze(Object.keys(actual.SCORES)) };
      });
      // These must load inside this isolated registry, after doMock; a static import would
      // load them once, unmocked, outside it.
      /* eslint-disable @typescript-eslint/no-require-imports -- jest.isolateModules needs require() */
      m = {
        scores: require('../src/runtime/scores'),
        manifest: require('../src/runtime/bundle/manifest'),
        calibrateBundle: require('../src/fit/calibrate-bundle'),
        detector: require('../src/runtime/detector'),
        evaluate: require('../src/eval/evaluate'),
        cli: require('../src/tools/cli/main'),
      };
      /* eslint-enable @typescript-eslint/no-require-imports */
    });
    // The mock would otherwise outlive the isolated registry.
    jest.dontMock('../src/runtime/scores');
  });
  afterAll(() => tmp?.cleanup());

  test('the real table is untouched', () => {
    expect(SCORE_DEFINITIONS).not.toContain(NEW);
    expect(Object.keys(SCORES)).not.toContain(NEW);
    expect(m.scores.SCORE_DEFINITIONS).toContain(NEW);
  });

  test('the manifest schema and the CLI take it', () => {
    expect(m.manifest.manifestSchema.properties.score.properties.definition.enum).toContain(NEW);
    const fit = m.cli.buildProgram().commands.find((c) => c.name() === 'fit')!;
    expect(fit.options.find((o) => o.long === '--score')!.argChoices).toContain(NEW);
  });

  test('calibration, Detector and eval handle it end to end', async () => {
    const bundle = await writeTinyBundle(tmp.dir);
    const images = (dir: string, count: number, seed: number) => {
      mkdirSync(dir, { recursive: true });
      return Promise.all(
        Array.from({ length: count }, async (_, i) => {
          const file = join(dir, `${i}.png`);
          writeFileSync(file, await pngOf(randomRaw(32, 32, 3, seed + i)));
          return file;
        }),
      );
    };
    const train = await images(join(tmp.dir, 'train'), 12, 100);
    const held = await images(join(tmp.dir, 'held'), 6, 200);
    await m.calibrateBundle.fitBundleLatents(bundle, train, { steps: [3] });
    const cal = await m.calibrateBundle.calibrateBundle(bundle, held, { steps: [3] });
    expect(cal.bySteps![0].imageThresholds).toHaveProperty(NEW);

    // Its score is its combine over the parts the existing definitions normalize the same way.
    const load = (scoreDefinition: string) => m.detector.Detector.load(bundle, { scoreDefinition: scoreDefinition as never });
    const [added, sp, latent] = await Promise.all([load(NEW), load('sp'), load('latent-gaussian')]);
    try {
      const [r, bySp, byLatent] = await Promise.all([added.score(held[0]), sp.score(held[0]), latent.score(held[0])]);
      expect(r.components.latentGaussian).toBe(byLatent.components.latentGaussian);
      expect(r.score).toBe(bySp.score + 2 * byLatent.score);
      expect(r.threshold).toBe((cal.bySteps![0].imageThresholds as Record<string, number>)[NEW]);
      // Its map is the l2 one, though the latent part came along.
      expect(r.map).toEqual(bySp.map);
      expect(r.map).not.toEqual(byLatent.map);
    } finally {
      await Promise.all([added.dispose(), sp.dispose(), latent.dispose()]);
    }

    const dataset = join(tmp.dir, 'dataset');
    await images(join(dataset, 'test', 'good'), 2, 300);
    await images(join(dataset, 'test', 'noise'), 2, 400);
    // Random masks: pixel metrics need both classes, whatever they score.
    mkdirSync(join(dataset, 'ground_truth', 'noise'), { recursive: true });
    for (const i of [0, 1]) writeFileSync(join(dataset, 'ground_truth', 'noise', `${i}_mask.png`), await pngOf(randomRaw(32, 32, 1, 500 + i)));
    const report = await m.evaluate.evaluate({ dataset, model: bundle, latencySamples: 1 });
    expect(report.rows.filter((row) => row.subset === 'all').map((row) => row.scoreDefinition)).toEqual(
      // Without feature statistics (invad baseline), eval leaves their definitions out.
      m.scores.SCORE_DEFINITIONS.filter((d: keyof typeof SCORES) => m.scores.SCORES[d].features === undefined),
    );
  });
});
