/**
 * Backbone presets for `invad fit` and `invad backbone`: which ONNX classifier,
 * which tensors to tap, at what input size, and the image normalization it
 * expects. `expectedFeatureShape` is what `buildFeatureBackbone` yields with
 * these taps (asserted by test/backbone.test.ts).
 *
 * A preset names its classifier's file name only. Without an explicit model path
 * (`--backbone-model` / `--model`), resolveBackboneModel looks for that file in
 * $INVAD_MODELS_DIR, then in ./models under the working directory (README,
 * "Backbone models").
 */
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { IMAGENET_MEAN, IMAGENET_STD } from './write-bundle';
import type { FeatureShape, Size2D } from './onnx/backbone';
import { InvalidArgumentError } from '../util/errors';

export interface BackbonePreset {
  description: string;
  /** Where the classifier comes from: an ONNX file on disk. */
  source: 'file';
  /** The classifier's file name, looked for in the models folders (modelSearchDirs) when no path is given. */
  modelFile: string;
  /** How to obtain the classifier when it is not there. */
  howToGet: string;
  /** Tensor names, fine to coarse. */
  taps: string[];
  /** The stride of each tap (inputSize / tap size), for documentation and checks. */
  tapStrides: number[];
  inputSize: Size2D;
  /** Per-channel RGB mean and std for pixels scaled to [0, 1] (the image preprocessing the classifier was trained with). */
  mean: [number, number, number];
  std: [number, number, number];
  expectedFeatureShape: FeatureShape;
}

export const BACKBONE_PRESETS: Readonly<Record<string, BackbonePreset>> = {
  'mobilenetv2-int8': {
    description:
      'MobileNetV2 (ONNX model zoo mobilenetv2-12-int8, uint8 QLinear ops), 224 px; block outputs at strides 4, 8, 16 ' +
      '(24, 32, 96 channels) -> 152 x 14 x 14. Small and fast on CPU.',
    source: 'file',
    modelFile: 'mobilenetv2-12-int8.onnx',
    howToGet: 'mobilenetv2-12-int8.onnx from the ONNX model zoo (validated/vision/classification/mobilenet/model)',
    // 339: last inverted-residual block at 56x56 (QLinearAdd, 24 ch); 365: last at 28x28 (32 ch);
    // 426: last at 14x14 before the stride-2 block to 7x7 (96 ch).
    taps: ['339', '365', '426'],
    tapStrides: [4, 8, 16],
    inputSize: { height: 224, width: 224 },
    mean: [...IMAGENET_MEAN],
    std: [...IMAGENET_STD],
    expectedFeatureShape: { channels: 152, height: 14, width: 14 },
  },
  'efficientnet-b4': {
    description:
      'EfficientNet-B4, the paper default (docs/method.md, "Features"), 256 px; stage outputs at strides 2, 4, 8, 16 ' +
      '(24, 32, 56, 160 channels) -> 272 x 16 x 16.',
    source: 'file',
    modelFile: 'efficientnet-b4.onnx',
    howToGet:
      'python3 train/export_efficientnet.py --weights imagenet --out models/efficientnet-b4.onnx ' + '(--weights random for an offline, untrained model)',
    // Graph outputs named by train/export_efficientnet.py.
    taps: ['tap_s2', 'tap_s4', 'tap_s8', 'tap_s16'],
    tapStrides: [2, 4, 8, 16],
    inputSize: { height: 256, width: 256 },
    mean: [...IMAGENET_MEAN],
    std: [...IMAGENET_STD],
    expectedFeatureShape: { channels: 272, height: 16, width: 16 },
  },
};

export function backbonePresetNames(): string[] {
  return Object.keys(BACKBONE_PRESETS);
}

/** The environment variable naming the folder where preset models are looked for first. */
export const MODELS_DIR_ENV = 'INVAD_MODELS_DIR';

/** Where a preset's model file is looked for, in order: $INVAD_MODELS_DIR (when set), then ./models. */
export function modelSearchDirs(env: NodeJS.ProcessEnv = process.env, cwd: string = process.cwd()): Array<{ label: string; dir: string }> {
  const dirs: Array<{ label: string; dir: string }> = [];
  const fromEnv = env[MODELS_DIR_ENV];
  if (fromEnv) dirs.push({ label: `$${MODELS_DIR_ENV}`, dir: resolve(cwd, fromEnv) });
  dirs.push({ label: './models', dir: resolve(cwd, 'models') });
  return dirs;
}

/**
 * The classifier to tap for `presetName`: `explicit` when given (it must exist),
 * else the preset's `modelFile` in the first of modelSearchDirs that has it.
 * @throws InvalidArgumentError ('backboneModel') naming every place it looked and how to get the model
 */
export function resolveBackboneModel(
  presetName: string,
  explicit?: string,
  where: { env?: NodeJS.ProcessEnv; cwd?: string; /** the option that passes a path, for the message */ flag?: string } = {},
): string {
  const preset = BACKBONE_PRESETS[presetName];
  if (!preset) throw new InvalidArgumentError('backbone', `unknown backbone preset "${presetName}"; presets are ${backbonePresetNames().join(', ')}`);
  if (explicit !== undefined) {
    if (!existsSync(explicit)) throw new InvalidArgumentError('backboneModel', `backbone model ${explicit} not found (get it: ${preset.howToGet})`);
    return explicit;
  }
  const env = where.env ?? process.env;
  const dirs = modelSearchDirs(env, where.cwd ?? process.cwd());
  for (const { dir } of dirs) {
    const candidate = join(dir, preset.modelFile);
    if (existsSync(candidate)) return candidate;
  }
  const looked = dirs.map(({ label, dir }) => `${join(dir, preset.modelFile)} (${label})`);
  if (!env[MODELS_DIR_ENV]) looked.push(`$${MODELS_DIR_ENV} is not set`);
  throw new InvalidArgumentError(
    'backboneModel',
    `no model file for backbone preset "${presetName}": looked for ${preset.modelFile} in ${looked.join('; ')}. ` +
      `Pass the classifier with ${where.flag ?? '--backbone-model'} <file>, or put ${preset.modelFile} in one of those folders (get it: ${preset.howToGet})`,
  );
}
