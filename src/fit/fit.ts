/**
 * `fit`: builds a model bundle from a folder of normal images.
 *
 * backbone (graph surgery) -> split -> extract features -> optionally
 * standardize (baked into backbone.onnx) -> train the UNet (PyTorch child process) -> export and
 * parity check -> calibrate on the held-out normals -> bundle.
 *
 * Everything lands in a work folder next to the output first. The bundle is
 * renamed into place only when complete, so Ctrl-C or a crash never leaves a
 * half-written bundle. The work folder keeps the checkpoint for --resume.
 */
import { existsSync } from 'node:fs';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { BACKBONE_PRESETS, resolveBackboneModel } from './backbones';
import { loadBundle } from '../runtime/bundle/load';
import type { CalibrationSpec, Manifest, ScoreDefinition } from '../runtime/bundle/manifest';
import { DEFAULT_SCORE_DEFINITION, SCORE_DEFINITIONS, SCORES } from '../runtime/scores';
import { commitFolder, writeBundle } from './write-bundle';
import { calibrateBundle, DEFAULT_STEP_RANGE, fitBundleLatents } from './calibrate-bundle';
import { checkFolds } from './calibrate';
import { expandImagePaths } from '../util/image-files';
import type { ExecutionProvider } from '../runtime/engine/protocol';
import { AbortedError, InvalidArgumentError, TrainingError } from '../util/errors';
import {
  channelStats,
  type ExtractedFeatures,
  FeatureExtractor,
  type FeatureScalingRecord,
  featureScalingRecord,
  formatFeatureScaling,
  readFeatureScaling,
  sameFeatureScaling,
} from './features';
import { writeNpy } from '../util/npy';
import { buildFeatureBackbone, type TapInfo } from './onnx/backbone';
import { mulberry32 } from '../util/prng';
import { checkExportParity } from './trainer/parity';
import { runTrainer, type TrainerSummary, UNET_PRESETS, type UnetPreset, unetGridProblem } from './trainer/runner';
import { intInRange, numberInRange, oneOf } from '../util/validate';
import { MAX_SMOOTHING_SIGMA } from '../runtime/map-smoothing';

export interface FitOptions {
  /** folder (searched recursively) of normal images */
  normal: string;
  /** bundle folder to write */
  out: string;
  /** backbone preset name (`mobilenetv2-int8`, `efficientnet-b4`) */
  backbone: string;
  /**
   * the classifier ONNX to tap; default: the preset's model file (`modelFile`) in
   * $INVAD_MODELS_DIR, then in ./models (see resolveBackboneModel)
   */
  backboneModel?: string;
  /** tap tensor names, overriding the preset's */
  taps?: string[];
  /**
   * Feature grid (issue 17): every tap is resized to grid x grid in the backbone graph, e.g. 28 for
   * stride 8 at 224 px. Default: the coarsest tap's grid (14 x 14 for mobilenetv2-int8, 16 x 16
   * for efficientnet-b4). Recorded in the manifest (`features`, provenance `featureGrid`). 2..128,
   * and one the UNet preset can take (unetGridProblem).
   */
  grid?: number;
  /** UNet size preset (`tiny`, `small`, `medium`, `paper`); default `small` */
  unetPreset?: UnetPreset;
  /** @deprecated the older name of `unetPreset` */
  preset?: UnetPreset;
  epochs?: number;
  batchSize?: number;
  lr?: number;
  seed?: number;
  /** share of the images held out for validation and calibration; default 0.1 */
  valFraction?: number;
  /** default inversion steps S written to the bundle; default 3 */
  steps?: number;
  /**
   * What the UNet is trained on: `none` (the default, as the paper does) keeps
   * the backbone's raw features; `standardize` gives every channel mean 0 and
   * standard deviation `featureScale`, baked into the bundle's backbone.onnx.
   */
  featureNormalization?: FeatureNormalization;
  /** standard deviation of every standardized channel; default 1. Implies `standardize`. */
  featureScale?: number;
  /**
   * score definition written to the bundle; default `latent-gaussian` (the
   * most accurate on magnetic-tile, README), or `combined` when `latentSteps`
   * leaves out the default `steps`
   */
  score?: ScoreDefinition;
  /** target false-alarm rate on normals for the thresholds; default 0.01 */
  falseAlarmRate?: number;
  /**
   * Folds for the training normals' out-of-fold latent-Gaussian scores, pooled with the
   * held-out normals for the latent-Gaussian threshold (see calibrateBundle), or false for none;
   * default 5
   */
  outOfFold?: number | false;
  /** step counts S to fit latent statistics and calibrate for; default [2, 3, 4, 5] */
  latentSteps?: number[];
  /**
   * Map smoothing (issue 17): a Gaussian blur of sigma this many pixels at the model input on
   * every upsampled map, recorded in the manifest (`mapSmoothing`); the pixel thresholds are
   * calibrated on smoothed maps. 0 or absent: none. At most 64.
   */
  mapSmoothing?: number;
  /** continue training from the work folder's checkpoint */
  resume?: boolean;
  /** fail on an unreadable image instead of skipping it */
  strict?: boolean;
  /** replace an existing bundle at `out` (implied by `resume`) */
  overwrite?: boolean;
  /** work folder; default `<out>.work` */
  workDir?: string;
  /** Python with PyTorch; default $INVAD_PYTHON, then /usr/bin/python3, then python3 */
  python?: string;
  device?: 'auto' | 'cpu' | 'cuda';
  /** stop training after this many minutes (after the current epoch) */
  maxMinutes?: number;
  executionProviders?: ExecutionProvider[];
  onProgress?: (event: FitEvent) => void;
  signal?: AbortSignal;
}

/** The bundle's default inversion steps S when `steps` is not given. */
const DEFAULT_STEPS = 3;
const DEFAULT_UNET_PRESET: UnetPreset = 'small';

export const FEATURE_NORMALIZATIONS = ['standardize', 'none'] as const;
export type FeatureNormalization = (typeof FEATURE_NORMALIZATIONS)[number];

export type FitEvent =
  | { stage: 'backbone'; featureShape: { channels: number; height: number; width: number }; taps: TapInfo[] }
  | { stage: 'split'; train: number; val: number }
  | { stage: 'extract'; split: 'train' | 'val'; done: number; total: number }
  | { stage: 'skipped'; files: Array<{ file: string; error: string }> }
  | { stage: 'train-start'; params: number; device: string; epochs: number }
  | { stage: 'epoch'; epoch: number; epochs: number; loss: number; valLoss: number; lr: number; imagesPerS: number }
  | { stage: 'export'; parityMaxAbsDiff: number }
  | { stage: 'calibrate'; samples: number; calibration: CalibrationSpec }
  | { stage: 'log'; message: string };

export interface FitResult {
  out: string;
  manifest: Manifest;
  training: TrainerSummary;
  parityMaxAbsDiff: number;
  skipped: Array<{ file: string; error: string }>;
  wallSeconds: number;
}

/** Deterministic split: a seeded shuffle of the sorted file list. */
export function splitFiles(files: readonly string[], valFraction: number, seed: number): { train: string[]; val: string[] } {
  const order = [...files].sort();
  const rand = mulberry32(seed);
  for (let i = order.length - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    [order[i], order[j]] = [order[j], order[i]];
  }
  const nVal = Math.max(2, Math.round(order.length * valFraction));
  if (order.length - nVal < 4) {
    throw new InvalidArgumentError(
      'normal',
      `too few images for a validation split: ${order.length} found, need at least ${nVal + 4} (${nVal} held out at valFraction ${valFraction}, 4 to train on)`,
    );
  }
  return { val: order.slice(0, nVal).sort(), train: order.slice(nVal).sort() };
}

function checkOptions(o: FitOptions): void {
  if (typeof o.normal !== 'string' || !o.normal) throw new InvalidArgumentError('normal', 'Expected a folder of normal images for normal');
  if (typeof o.out !== 'string' || !o.out) throw new InvalidArgumentError('out', 'Expected an output folder for out');
  oneOf('backbone', o.backbone, Object.keys(BACKBONE_PRESETS));
  if (o.unetPreset !== undefined) oneOf('unetPreset', o.unetPreset, UNET_PRESETS);
  if (o.preset !== undefined) oneOf('preset', o.preset, UNET_PRESETS);
  if (o.unetPreset !== undefined && o.preset !== undefined && o.unetPreset !== o.preset) {
    throw new InvalidArgumentError('unetPreset', `unetPreset '${o.unetPreset}' and its deprecated alias preset '${o.preset}' disagree; pass unetPreset only`);
  }
  if (o.grid !== undefined) {
    intInRange('grid', o.grid, 2, 128);
    const problem = unetGridProblem(o.unetPreset ?? o.preset ?? DEFAULT_UNET_PRESET, o.grid, o.grid);
    if (problem !== undefined) throw new InvalidArgumentError('grid', problem);
  }
  if (o.epochs !== undefined) intInRange('epochs', o.epochs, 1, 100_000);
  if (o.batchSize !== undefined) intInRange('batchSize', o.batchSize, 1, 4096);
  if (o.valFraction !== undefined) numberInRange('valFraction', o.valFraction, 0.01, 0.5);
  if (o.steps !== undefined) intInRange('steps', o.steps, 1, 1000);
  if (o.falseAlarmRate !== undefined) numberInRange('falseAlarmRate', o.falseAlarmRate, 1e-6, 0.5);
  if (o.outOfFold !== undefined && o.outOfFold !== false) intInRange('outOfFold', o.outOfFold, 2, 100);
  if (o.mapSmoothing !== undefined) numberInRange('mapSmoothing', o.mapSmoothing, 0, MAX_SMOOTHING_SIGMA);
  const latentSteps = o.latentSteps ?? DEFAULT_STEP_RANGE;
  const steps = o.steps ?? DEFAULT_STEPS;
  // Checked before indexing the table: JS callers can pass any string.
  const score = o.score === undefined ? undefined : oneOf('score', o.score, SCORE_DEFINITIONS);
  if (score !== undefined && SCORES[score].needsLatent && !latentSteps.includes(steps)) {
    throw new InvalidArgumentError(
      'score',
      `score '${score}' needs latent statistics for the default steps ${steps}; add it to latentSteps (${latentSteps.join(', ')})`,
    );
  }
  if (o.featureNormalization !== undefined) oneOf('featureNormalization', o.featureNormalization, FEATURE_NORMALIZATIONS);
  if (o.featureScale !== undefined) {
    numberInRange('featureScale', o.featureScale, 1e-3, 1e3);
    if (o.featureNormalization === 'none') {
      throw new InvalidArgumentError('featureScale', "featureScale applies to standardized features; it cannot be combined with featureNormalization 'none'");
    }
  }
}

async function extractSplit(extractor: FeatureExtractor, files: string[], split: 'train' | 'val', o: FitOptions): Promise<ExtractedFeatures> {
  const r = await extractor.extract(files, {
    strict: o.strict,
    onProgress: (done, total) => o.onProgress?.({ stage: 'extract', split, done, total }),
  });
  if (r.skipped.length) o.onProgress?.({ stage: 'skipped', files: r.skipped });
  return r;
}

/** Standardizes features in place with the training statistics (the same math the backbone graph now does). */
function standardize(f: ExtractedFeatures, mean: Float32Array, std: Float32Array): void {
  const [n, c, h, w] = f.shape;
  const plane = h * w;
  for (let i = 0; i < n; i++)
    for (let ch = 0; ch < c; ch++) {
      const base = (i * c + ch) * plane;
      for (let p = 0; p < plane; p++) f.features[base + p] = (f.features[base + p] - mean[ch]) / std[ch];
    }
}

/** `none` unless standardization or a feature scale was asked for. */
function resolvedNormalization(o: FitOptions): FeatureNormalization {
  return o.featureNormalization ?? (o.featureScale === undefined ? 'none' : 'standardize');
}

/**
 * The per-channel (x - mean) / std the backbone graph will apply, from the training
 * features; std is divided by featureScale so channels end with that deviation.
 * Undefined for featureNormalization 'none'.
 */
function featureNormalizationFor(trainF: ExtractedFeatures, o: FitOptions): { mean: Float32Array; std: Float32Array } | undefined {
  if (resolvedNormalization(o) === 'none') return undefined;
  const { mean, std } = channelStats(trainF.features, trainF.shape);
  const scale = o.featureScale ?? 1;
  return { mean, std: std.map((s) => Math.max(s, 1e-6) / scale) };
}

/** The human-readable line the bundle's provenance records (featureStandardization); never compared. */
function describeNormalization(o: FitOptions): string {
  if (resolvedNormalization(o) === 'none') return "none: the backbone's raw features";
  const scale = o.featureScale ?? 1;
  return `per-channel mean/std of the training features${scale === 1 ? '' : ` scaled to std ${scale}`}, baked into backbone.onnx`;
}

/** The scaling record `fit` writes to the work folder and --resume compares. */
function scalingFor(o: FitOptions): FeatureScalingRecord {
  return featureScalingRecord(resolvedNormalization(o), o.featureScale ?? 1);
}

/**
 * --resume continues a checkpoint; the features it trained on must be scaled the
 * same way, or training would silently go on with different data. The work
 * folder's features.json holds a versioned record (older folders a sentence,
 * which readFeatureScaling maps to the record).
 */
async function checkResumeNormalization(work: string, o: FitOptions): Promise<void> {
  let saved: { scaling?: unknown; normalization?: unknown };
  try {
    saved = JSON.parse(await readFile(join(work, 'features.json'), 'utf8')) as typeof saved;
  } catch {
    return; // nothing extracted yet: the run starts from scratch anyway
  }
  const previous = readFeatureScaling(saved);
  if (previous instanceof Error) {
    throw new InvalidArgumentError('featureNormalization', `cannot --resume from ${work}: ${previous.message}; start without --resume`);
  }
  const requested = scalingFor(o);
  if (!sameFeatureScaling(previous, requested)) {
    throw new InvalidArgumentError(
      'featureNormalization',
      `cannot --resume: the work folder's checkpoint trained on features with normalization ${formatFeatureScaling(previous)}, not ${formatFeatureScaling(requested)}; pass the matching --feature-normalization / --feature-scale, or start without --resume`,
    );
  }
}

export async function fit(options: FitOptions): Promise<FitResult> {
  checkOptions(options);
  const t0 = performance.now();
  const o = { ...options };
  const out = resolve(o.out);
  const work = resolve(o.workDir ?? `${out}.work`);
  const emit = (e: FitEvent) => o.onProgress?.(e);
  const aborted = () => {
    if (o.signal?.aborted) throw new AbortedError('fit');
  };
  if (existsSync(out) && !(o.overwrite || o.resume)) {
    throw new InvalidArgumentError('out', `${out} already exists; pass overwrite (--overwrite) to replace it, or resume (--resume)`);
  }
  const preset = BACKBONE_PRESETS[o.backbone];
  const modelPath = resolveBackboneModel(o.backbone, o.backboneModel);
  const unetPreset = o.unetPreset ?? o.preset ?? DEFAULT_UNET_PRESET;

  const files = await expandImagePaths([o.normal]);
  if (files.length === 0) throw new InvalidArgumentError('normal', `no images found in ${o.normal}`);
  const split = splitFiles(files, o.valFraction ?? 0.1, o.seed ?? 0);
  emit({ stage: 'split', train: split.train.length, val: split.val.length });
  await mkdir(work, { recursive: true });
  if (o.resume) await checkResumeNormalization(work, o);

  // 1. Backbone without standardization, to extract the raw features.
  const classifier = await readFile(modelPath);
  const taps = o.taps ?? preset.taps;
  const grid = o.grid === undefined ? undefined : { height: o.grid, width: o.grid };
  const raw = await buildFeatureBackbone(classifier, { taps, inputSize: preset.inputSize, grid });
  emit({ stage: 'backbone', featureShape: raw.featureShape, taps: raw.taps });
  // The default grid (the coarsest tap's) is known only now: refused before extraction, not by the trainer.
  const gridProblem = unetGridProblem(unetPreset, raw.featureShape.height, raw.featureShape.width);
  if (gridProblem !== undefined) throw new InvalidArgumentError('grid', gridProblem);
  const rawPath = join(work, 'backbone-raw.onnx');
  await writeFile(rawPath, raw.bytes);
  const input = { width: preset.inputSize.width, height: preset.inputSize.height, mean: preset.mean, std: preset.std };
  aborted();

  // 2. Features of both splits, through the same path Detector uses.
  const extractor = await FeatureExtractor.open(
    rawPath,
    { input, features: raw.featureShape, inputName: raw.inputName, outputName: raw.outputName },
    o.executionProviders,
  );
  let trainF: ExtractedFeatures;
  let valF: ExtractedFeatures;
  try {
    trainF = await extractSplit(extractor, split.train, 'train', o);
    aborted();
    valF = await extractSplit(extractor, split.val, 'val', o);
  } finally {
    await extractor.close();
  }
  if (trainF.files.length < 4 || valF.files.length < 2) {
    throw new InvalidArgumentError('normal', `too few readable images: ${trainF.files.length} to train on and ${valF.files.length} held out`);
  }
  // Before training, not after it: a fold count the training images cannot fill fails now.
  if (typeof o.outOfFold === 'number') checkFolds(o.outOfFold, trainF.files.length);

  // 3. Standardize with training statistics (unless asked not to), and bake the same into the bundle's backbone.
  const normalization = featureNormalizationFor(trainF, o);
  if (normalization) {
    standardize(trainF, normalization.mean, normalization.std);
    standardize(valF, normalization.mean, normalization.std);
  }
  // Raw features need no second graph surgery: the extraction backbone is the bundle's.
  const final = normalization ? await buildFeatureBackbone(classifier, { taps, inputSize: preset.inputSize, grid, normalization }) : raw;
  await writeNpy(join(work, 'train.npy'), trainF.features, trainF.shape);
  await writeNpy(join(work, 'val.npy'), valF.features, valF.shape);
  await writeFile(
    join(work, 'features.json'),
    JSON.stringify(
      {
        shape: trainF.shape.slice(1),
        train: trainF.files,
        val: valF.files,
        skipped: [...trainF.skipped, ...valF.skipped],
        scaling: scalingFor(o),
        normalization: describeNormalization(o),
        mean: normalization ? [...normalization.mean] : null,
        std: normalization ? [...normalization.std] : null,
      },
      null,
      1,
    ),
  );
  aborted();

  // 4. Train in PyTorch, then check the exported UNet in onnxruntime-node against PyTorch.
  const trainDir = join(work, 'train');
  const training = await runTrainer({
    python: o.python,
    trainNpy: join(work, 'train.npy'),
    valNpy: join(work, 'val.npy'),
    workDir: trainDir,
    preset: unetPreset,
    epochs: o.epochs,
    batchSize: o.batchSize,
    lr: o.lr,
    seed: o.seed ?? 0,
    resume: o.resume === true,
    device: o.device,
    maxMinutes: o.maxMinutes,
    signal: o.signal,
    onEvent: (e) => {
      if (e.event === 'start') emit({ stage: 'train-start', params: e.params, device: e.device, epochs: e.epochs });
      else if (e.event === 'epoch')
        emit({ stage: 'epoch', epoch: e.epoch, epochs: e.epochs, loss: e.loss, valLoss: e.val_loss, lr: e.lr, imagesPerS: e.images_per_s });
    },
    onLog: (message) => emit({ stage: 'log', message }),
  });
  const unetPath = join(trainDir, 'unet.onnx');
  const parity = await checkExportParity(unetPath, trainDir);
  emit({ stage: 'export', parityMaxAbsDiff: parity });
  if (!(parity < 1e-4)) throw new TrainingError(`exported UNet differs from PyTorch by ${parity} (max abs), over the 1e-4 limit`);
  aborted();

  // 5. Bundle into a staging folder, calibrate on the held-out normals, then move into place.
  const staging = join(work, 'staging');
  const stepRange = o.latentSteps ?? DEFAULT_STEP_RANGE;
  const defaultSteps = o.steps ?? DEFAULT_STEPS;
  await rm(staging, { recursive: true, force: true });
  await writeBundle(staging, {
    input,
    features: final.featureShape,
    defaultSteps,
    score: o.score ?? DEFAULT_SCORE_DEFINITION[stepRange.includes(defaultSteps) ? 'withLatent' : 'withoutLatent'],
    backbone: { bytes: final.bytes, name: o.backbone, taps: final.taps.map((t) => t.name), inputName: final.inputName, outputName: final.outputName },
    unet: { path: unetPath },
    training: {
      preset: unetPreset,
      backboneModel: modelPath,
      taps: final.taps,
      featureGrid: {
        height: final.featureShape.height,
        width: final.featureShape.width,
        chosenBy: o.grid === undefined ? 'the coarsest tap' : 'the grid option',
      },
      featureStandardization: describeNormalization(o),
      images: { train: trainF.files.length, val: valF.files.length, skipped: trainF.skipped.length + valF.skipped.length },
      seed: o.seed ?? 0,
      valFraction: o.valFraction ?? 0.1,
      summary: training,
      exportParityMaxAbsDiff: parity,
    },
  });
  const log = (message: string) => emit({ stage: 'log', message });
  await fitBundleLatents(staging, trainF.files, { steps: stepRange, executionProviders: o.executionProviders, onProgress: log });
  aborted();
  const calibration = await calibrateBundle(staging, valF.files, {
    steps: stepRange,
    falseAlarmRate: o.falseAlarmRate,
    // The latent statistics were fitted on these: each gets an out-of-fold score too.
    training: trainF.files,
    outOfFold: o.outOfFold,
    ...(o.mapSmoothing !== undefined ? { mapSmoothing: o.mapSmoothing } : {}),
    executionProviders: o.executionProviders,
    onProgress: log,
  });
  emit({ stage: 'calibrate', samples: valF.files.length, calibration });
  aborted();
  await mkdir(dirname(out), { recursive: true });
  await commitFolder(staging, out, true);
  const manifest = (await loadBundle(out)).manifest;
  return {
    out,
    manifest,
    training,
    parityMaxAbsDiff: parity,
    skipped: [...trainF.skipped, ...valF.skipped],
    wallSeconds: (performance.now() - t0) / 1000,
  };
}
