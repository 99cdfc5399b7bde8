/** Type tests of `invad/fit`: fitting, calibration and writing bundles. */
import { expectTypeOf } from 'expect-type';
import type { CalibrationSpec, Manifest, ScoreComponents } from 'invad';
import {
  BACKBONE_PRESETS,
  FEATURE_NORMALIZATIONS,
  type BackbonePreset,
  type BundleContents,
  type FeatureNormalization,
  type FitEvent,
  type FitOptions,
  type FitResult,
  type NormalSample,
  backbonePresetNames,
  calibrateBundle,
  calibrateStep,
  calibrationSpec,
  fit,
  writeBundle,
} from 'invad/fit';

// fit() takes the normal images, the output folder and a backbone; the rest is optional.
const minimal: FitOptions = { normal: 'data/good', out: 'model', backbone: 'efficientnet-b4' };
expectTypeOf(fit(minimal)).resolves.toEqualTypeOf<FitResult>();
expectTypeOf<FitResult['manifest']>().toEqualTypeOf<Manifest>();
// @ts-expect-error the output folder is required
const noOut: FitOptions = { normal: 'data/good', backbone: 'efficientnet-b4' };
void noOut;
// @ts-expect-error epochs is a number
const badEpochs: FitOptions = { ...minimal, epochs: '10' };
void badEpochs;
// @ts-expect-error not a device
const badDevice: FitOptions = { ...minimal, device: 'tpu' };
void badDevice;
const withScore: FitOptions = { ...minimal, score: 'latent-gaussian', latentSteps: [2, 3], featureNormalization: 'none', signal: AbortSignal.timeout(1000) };
void withScore;

// Feature normalizations are a closed list, and the type follows the constant.
expectTypeOf(FEATURE_NORMALIZATIONS).toEqualTypeOf<readonly ['standardize', 'none']>();
expectTypeOf<FeatureNormalization>().toEqualTypeOf<'standardize' | 'none'>();

// Progress events are a union discriminated by `stage`.
expectTypeOf<FitOptions['onProgress']>().toEqualTypeOf<((event: FitEvent) => void) | undefined>();
const onProgress = (e: FitEvent): number | undefined => {
  if (e.stage === 'epoch') return e.loss;
  // @ts-expect-error only 'epoch' events carry a loss
  return e.loss;
};
void onProgress;

// Calibration.
declare const normals: NormalSample[];
expectTypeOf<NormalSample['components']>().toEqualTypeOf<ScoreComponents>();
const step = calibrateStep(3, normals, 0.01);
expectTypeOf(calibrationSpec([step], { steps: 3, definition: 'combined', samples: 100, falseAlarmRate: 0.01 })).toEqualTypeOf<CalibrationSpec>();
expectTypeOf(calibrateBundle('model', ['a.png'])).resolves.toEqualTypeOf<CalibrationSpec>();
// @ts-expect-error normals are samples, not paths
calibrateStep(3, ['a.png']);

// Writing a bundle.
declare const contents: BundleContents;
expectTypeOf(writeBundle('model', contents, { overwrite: true })).resolves.toEqualTypeOf<Manifest>();
// @ts-expect-error a model source is bytes or a path
const badSource: BundleContents['unet'] = { url: 'unet.onnx' };
void badSource;

// Backbone presets.
expectTypeOf(backbonePresetNames()).toEqualTypeOf<string[]>();
expectTypeOf(BACKBONE_PRESETS).toEqualTypeOf<Readonly<Record<string, BackbonePreset>>>();
