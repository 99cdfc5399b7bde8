/**
 * `invad baseline padim|patchcore` (issue 17): the methods a user would otherwise pick, on the
 * same backbone taps, split and evaluation code as invad, stored in a bundle of the same format
 * so that the same Detector deploys them.
 *
 * - PaDiM: a per-position Gaussian of the clean features x_0 of the training normals, on the
 *   bundle's feature grid (the `padim` score definition, and the feature map of invad's
 *   `latent-gaussian-feature-map` and `latent-feature-fused`);
 * - PatchCore: 3x3 average pooling of x_0, a memory bank of every training patch reduced by a
 *   greedy k-center coreset (1% by default, chosen on a random projection to 128 dimensions), the
 *   nearest-neighbour distance per patch, bilinear to the image, max for the image score.
 *
 * From an invad bundle (`bundle`), the output is a copy of it with the statistics added, so one
 * bundle scores both methods and `invad eval` reports them side by side. From a backbone preset
 * (`backbone`), the bundle holds the backbone and a placeholder UNet (eps = 0) that the baseline
 * definitions never call: the manifest format requires one.
 */
import { cp, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { Detector, type ScoreResult } from '../../runtime/detector';
import { loadBundle } from '../../runtime/bundle/load';
import type { CalibrationSpec, Manifest, PartNormalization, ScoreDefinition, StepCalibration } from '../../runtime/bundle/manifest';
import { sha256Bytes } from '../../runtime/bundle/hash';
import { calibrationAt } from '../../runtime/calibration';
import { DEFAULT_REGULARIZATION, fitLatentGaussian, type Regularization } from '../../runtime/latent-gaussian';
import { fusedMap } from '../../runtime/feature-statistics';
import { hasParts, imageScore, SCORES, type ScoreComponents } from '../../runtime/scores';
import type { ExecutionProvider } from '../../runtime/engine/protocol';
import { InvalidArgumentError } from '../../util/errors';
import { expandImagePaths } from '../../util/image-files';
import { encodeNpy } from '../../util/npy';
import { conformalThreshold } from '../../util/stats';
import { FeatureExtractor } from '../features';
import { splitFiles } from '../fit';
import { quantileOfMaps, robustNormalization } from '../calibrate';
import { buildFeatureBackbone } from '../onnx/backbone';
import { linearUnet } from '../onnx/synthetic';
import { BACKBONE_PRESETS, resolveBackboneModel } from '../backbones';
import { commitFolder, writeBundle, writeManifest } from '../write-bundle';
import { fitMemoryBank } from './coreset';

export { fitMemoryBank, greedyCoreset, pooledPatches, randomProjection } from './coreset';

export const BASELINES = ['padim', 'patchcore'] as const;
export type BaselineKind = (typeof BASELINES)[number];

export interface BaselineOptions {
  /** which statistics to fit; both may share one bundle */
  kinds: BaselineKind[];
  /** folder (searched recursively) of normal images */
  normal: string;
  /** bundle folder to write */
  out: string;
  /** an invad bundle whose backbone to use; the output is a copy of it with the statistics added */
  bundle?: string;
  /** a backbone preset name, when there is no invad bundle */
  backbone?: string;
  /** the classifier ONNX of the preset (default: resolveBackboneModel) */
  backboneModel?: string;
  /** tap tensor names, overriding the preset's */
  taps?: string[];
  /** share held out for calibration; default 0.1, as fit (same seed, same split) */
  valFraction?: number;
  seed?: number;
  /** PatchCore coreset share; default 0.01 */
  coreset?: number;
  /** PatchCore random projection dimensions; default 128 */
  projectionDims?: number;
  /** PaDiM's covariance regularization; default invad's latent one (0.01 x mean variance) */
  regularization?: Regularization;
  falseAlarmRate?: number;
  overwrite?: boolean;
  executionProviders?: ExecutionProvider[];
  onProgress?: (message: string) => void;
}

export interface BaselineResult {
  out: string;
  manifest: Manifest;
  train: number;
  val: number;
  /** fit time of the statistics alone, seconds */
  fitSeconds: number;
}

const IDENTITY: PartNormalization = { center: 0, scale: 1 };

/** Copies an invad bundle, or writes a backbone-only one with the placeholder UNet, at `out`. */
async function prepareBundle(o: BaselineOptions, out: string): Promise<void> {
  if (o.bundle) {
    await loadBundle(o.bundle);
    const tmp = await mkdtemp(join(dirname(out), `.${basename(out)}.tmp-`));
    try {
      await cp(resolve(o.bundle), tmp, { recursive: true });
      await commitFolder(tmp, out, o.overwrite === true);
    } catch (err) {
      await rm(tmp, { recursive: true, force: true });
      throw err;
    }
    return;
  }
  if (!o.backbone) throw new InvalidArgumentError('backbone', 'give an invad bundle (--bundle) or a backbone preset (--backbone)');
  const preset = BACKBONE_PRESETS[o.backbone];
  if (!preset) throw new InvalidArgumentError('backbone', `unknown backbone preset ${o.backbone}`);
  const classifier = await readFile(resolveBackboneModel(o.backbone, o.backboneModel));
  const taps = o.taps ?? preset.taps;
  const raw = await buildFeatureBackbone(classifier, { taps, inputSize: preset.inputSize });
  const [, c, h, w] = [0, raw.featureShape.channels, raw.featureShape.height, raw.featureShape.width];
  await writeBundle(
    out,
    {
      input: { width: preset.inputSize.width, height: preset.inputSize.height, mean: preset.mean, std: preset.std },
      features: { channels: c, height: h, width: w },
      score: o.kinds[0],
      backbone: { bytes: raw.bytes, name: o.backbone, taps, inputName: raw.inputName, outputName: raw.outputName },
      // The manifest requires a UNet; the baseline definitions never call it.
      unet: { bytes: linearUnet({ channels: c, height: h, width: w, k: 0, m: 0 }) },
      training: { baseline: o.kinds, placeholderUnet: true },
    },
    { overwrite: o.overwrite === true },
  );
}

/** Fits the baseline statistics, writes them into the bundle and calibrates them on the held-out normals. */
export async function fitBaseline(o: BaselineOptions): Promise<BaselineResult> {
  const say = o.onProgress ?? (() => undefined);
  if (o.kinds.length === 0 || o.kinds.some((k) => !BASELINES.includes(k))) throw new InvalidArgumentError('kinds', `choose from ${BASELINES.join(', ')}`);
  const out = resolve(o.out);
  const files = await expandImagePaths([o.normal]);
  if (files.length === 0) throw new InvalidArgumentError('normal', `no images found in ${o.normal}`);
  const split = splitFiles(files, o.valFraction ?? 0.1, o.seed ?? 0);
  say(`${split.train.length} training normals, ${split.val.length} held out for calibration`);
  await prepareBundle(o, out);
  const bundle = await loadBundle(out);
  const m = bundle.manifest;
  const f = m.features;

  const extractor = await FeatureExtractor.open(
    bundle.backbonePath,
    { input: m.input, features: f, inputName: m.models.backbone.inputName, outputName: m.models.backbone.outputName },
    o.executionProviders,
  );
  let train;
  try {
    train = await extractor.extract(split.train);
  } finally {
    await extractor.close();
  }
  const n = train.files.length;
  if (n < 2) throw new InvalidArgumentError('normal', `fitting needs at least 2 readable training images, got ${n}`);
  const t0 = performance.now();
  const stats: NonNullable<Manifest['featureStatistics']> = {};
  if (o.kinds.includes('padim')) {
    const reg = o.regularization ?? DEFAULT_REGULARIZATION;
    say(`PaDiM: a Gaussian per position of ${f.height} x ${f.width}, ${f.channels} channels, from ${n} images`);
    const g = fitLatentGaussian(train.features, n, f.channels, f.height * f.width, reg);
    const mean = encodeNpy(g.mean, [g.positions, g.channels]);
    const precision = encodeNpy(g.precision, [g.positions, g.channels, g.channels]);
    await Promise.all([writeFile(join(out, 'feature_mean.npy'), mean), writeFile(join(out, 'feature_precision.npy'), precision)]);
    stats.gaussian = {
      meanFile: 'feature_mean.npy',
      meanSha256: sha256Bytes(mean),
      precisionFile: 'feature_precision.npy',
      precisionSha256: sha256Bytes(precision),
      samples: n,
      regularization: reg.amount,
      regularizationRelativeTo: reg.relativeTo,
    };
  }
  if (o.kinds.includes('patchcore')) {
    const bank = fitMemoryBank(train.features, n, f.channels, f.height, f.width, { fraction: o.coreset, projectionDims: o.projectionDims, seed: o.seed ?? 0 });
    say(`PatchCore: ${bank.patches} of ${bank.sourcePatches} pooled patches (greedy k-center on ${bank.projectionDims} dims)`);
    const bytes = encodeNpy(bank.bank, [bank.patches, f.channels]);
    await writeFile(join(out, 'patchcore_bank.npy'), bytes);
    stats.memoryBank = {
      file: 'patchcore_bank.npy',
      sha256: sha256Bytes(bytes),
      patches: bank.patches,
      sourcePatches: bank.sourcePatches,
      projectionDims: bank.projectionDims,
      pooling: bank.pooling,
    };
  }
  const fitSeconds = (performance.now() - t0) / 1000;
  const placeholder = !o.bundle;
  const withStats: Manifest = {
    ...m,
    featureStatistics: { ...m.featureStatistics, ...stats },
    provenance: {
      ...m.provenance,
      training: { ...m.provenance.training, baseline: { kinds: o.kinds, train: n, val: split.val.length, coreset: o.coreset ?? 0.01, seed: o.seed ?? 0 } },
    },
  };
  await writeManifest(out, withStats);
  const calibration = await calibrateBaseline(out, withStats, split.val, o, placeholder, say);
  const manifest = { ...withStats, calibration };
  await writeManifest(out, manifest);
  return { out, manifest, train: n, val: split.val.length, fitSeconds };
}

/** Scores the held-out normals and adds the new parts' normalizations and thresholds to the calibration. */
async function calibrateBaseline(
  dir: string,
  m: Manifest,
  val: readonly string[],
  o: BaselineOptions,
  placeholder: boolean,
  say: (m: string) => void,
): Promise<CalibrationSpec> {
  const far = o.falseAlarmRate ?? m.calibration.falseAlarmRate ?? 0.01;
  const steps = m.schedule.defaultSteps;
  const hasLatent = !placeholder && (m.latentGaussian ?? []).some((g) => g.steps === steps);
  // One run gives every part: allMaps on an invad bundle, a backbone-only run per baseline otherwise.
  const runs: Array<{ definition: ScoreDefinition; allMaps: boolean }> = placeholder
    ? o.kinds.map((k) => ({ definition: k, allMaps: false }))
    : [{ definition: hasLatent ? 'latent-gaussian' : 'combined', allMaps: true }];
  const results: ScoreResult[][] = [];
  for (const run of runs) {
    const det = await Detector.load(dir, { scoreDefinition: run.definition, executionProviders: o.executionProviders, driftWindow: 0 } as Parameters<
      typeof Detector.load
    >[1]);
    try {
      const r = await det.scoreBatch([...val], { allMaps: run.allMaps, errors: 'collect' });
      results.push(r.filter((x): x is ScoreResult => !(x instanceof Error)));
    } finally {
      await det.dispose();
    }
  }
  const count = Math.min(...results.map((r) => r.length));
  if (count < 2) throw new InvalidArgumentError('normal', `calibration needs at least 2 readable held-out normals, got ${count}`);
  say(`calibrating on ${count} held-out normals`);
  const components: ScoreComponents[] = Array.from({ length: count }, (_, i) => Object.assign({}, ...results.map((r) => r[i].components)) as ScoreComponents);
  const mapsOf = (key: 'featureGaussian' | 'patchcore' | 'latentGaussian') =>
    results.flatMap((r) => r.slice(0, count).flatMap((x) => (x.featureMaps[key] ? [x.featureMaps[key]] : [])));
  const cal = m.calibration;
  const parts: Pick<StepCalibration, 'featureGaussian' | 'patchcore'> = {};
  const pixels: Pick<StepCalibration['pixelThresholds'], 'featureGaussian' | 'patchcore'> = {};
  if (m.featureStatistics?.gaussian) {
    parts.featureGaussian = robustNormalization(components.map((c) => c.featureGaussian!));
    pixels.featureGaussian = quantileOfMaps(mapsOf('featureGaussian'), 1 - far);
  }
  if (m.featureStatistics?.memoryBank) {
    parts.patchcore = robustNormalization(components.map((c) => c.patchcore!));
    pixels.patchcore = quantileOfMaps(mapsOf('patchcore'), 1 - far);
  }
  const newDefinitions = (Object.keys(SCORES) as ScoreDefinition[]).filter((d) => SCORES[d].features !== undefined);
  const entryAt = (entry: StepCalibration, isDefault: boolean): StepCalibration => {
    const e: StepCalibration = { ...entry, ...parts, imageThresholds: { ...entry.imageThresholds }, pixelThresholds: { ...entry.pixelThresholds, ...pixels } };
    for (const d of newDefinitions) {
      // The latent definitions need latent scores at this S: the default S only.
      if (SCORES[d].needsLatent && !isDefault) continue;
      if (!components.every((c) => hasParts(d, c))) continue;
      e.imageThresholds[d] = conformalThreshold(
        components.map((c) => imageScore(d, c, e)),
        far,
      ).threshold;
    }
    if (isDefault && e.latentGaussian && e.featureGaussian && hasLatent) {
      const latentMaps = mapsOf('latentGaussian');
      const featureMaps = mapsOf('featureGaussian');
      e.pixelThresholds.fused = quantileOfMaps(
        latentMaps.map((l, i) => fusedMap(l, featureMaps[i], { latent: e.latentGaussian!, feature: e.featureGaussian! })),
        1 - far,
      );
    }
    return e;
  };
  if (placeholder || cal.status !== 'calibrated') {
    const base: StepCalibration = { steps, sp: IDENTITY, nll: IDENTITY, imageThresholds: {}, pixelThresholds: { l2: 0 } };
    const entry = entryAt(calibrationAt(cal, steps) ?? base, true);
    const definition = m.score.definition;
    return {
      status: 'calibrated',
      method:
        'invad baseline: robust z-score (median, 1.4826*MAD) of each feature-statistics part on held-out normals; split-conformal image thresholds; pixel thresholds at the (1 - falseAlarmRate) quantile of normal map values',
      sp: entry.sp,
      nll: entry.nll,
      ...parts,
      imageThreshold: entry.imageThresholds[definition] ?? null,
      pixelThreshold: entry.pixelThresholds[SCORES[definition].map] ?? null,
      samples: count,
      falseAlarmRate: far,
      imageThresholdMethod: 'conformal',
      warnings: placeholder ? ['the bundle has no trained UNet (a placeholder, eps = 0): only the padim and patchcore definitions are meaningful'] : [],
      bySteps: [entry],
    };
  }
  const bySteps = (cal.bySteps ?? []).map((e) => entryAt(e, e.steps === steps));
  return { ...cal, ...parts, bySteps };
}
