/**
 * invad: reconstruction-free visual anomaly detection. Maps an image's backbone
 * features to a diffusion model's last latent by DDIM inversion and scores how
 * typical that latent is under N(0, I).
 *
 * This entry point is the runtime only (scoring a fitted bundle). Fitting is in
 * `invad/fit`, evaluation in `invad/eval` and the metrics in `invad/metrics`.
 */
export { Detector } from './runtime/detector';
export type { DetectorOptions, DetectorInfo, ScoreBatchOptions, ScoreOptions, ScoreResult, ScoreTimings } from './runtime/detector';
export type { DriftAlarmState, DriftCallback, DriftEvent, DriftFalseAlarm, DriftInfo, DriftQuantile, DriftReport } from './runtime/drift';
export { RemoteDetector } from './runtime/remote/remote-detector';
export type {
  RemoteDetectorInfo,
  RemoteDetectorOptions,
  RemoteScoreBatchOptions,
  RemoteScoreResult,
  RemoteScoreTimings,
} from './runtime/remote/remote-detector';
export type { ImageInput, RawImage } from './runtime/preprocess';
export type { ScoreComponents } from './runtime/scores';
export type { ExecutionProvider, ThreadSpinning } from './runtime/engine/protocol';
export {
  BindingLoadError,
  DisposedError,
  EngineBrokenError,
  InferenceError,
  InvadError,
  InvalidArgumentError,
  InvalidInputError,
  ModelBundleError,
  ModelMismatchError,
  ProviderError,
  RemoteError,
} from './util/errors';
export type { InvadErrorCode, RemoteErrorCode } from './util/errors';
export { loadBundle } from './runtime/bundle/load';
export type { LoadedBundle, LoadBundleOptions } from './runtime/bundle/load';
export { MANIFEST_VERSION, validateManifest } from './runtime/bundle/manifest';
export type { Manifest, CalibrationSpec, InputSpec, FeatureSpec, ScoreDefinition, AlphaMode, ResizeKernel } from './runtime/bundle/manifest';
export { alphasCumprod, inversionSteps, linearBetas, spaceTimesteps } from './runtime/schedule';
export type { InversionStep } from './runtime/schedule';
