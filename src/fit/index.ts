/**
 * `invad/fit`: fitting a bundle from normal images (backbone, features, UNet
 * training through the Python trainer, calibration) and writing bundles.
 */
export { FEATURE_NORMALIZATIONS, fit } from './fit';
export type { FeatureNormalization, FitEvent, FitOptions, FitResult } from './fit';
export { writeBundle, writeCalibrationScores, writeManifest } from './write-bundle';
export type { BundleContents, ModelSource, WriteBundleOptions } from './write-bundle';
export { calibratePool, calibrateStep, calibrationSpec, compareSources, conformalWarnings, outOfFoldScores, poolsOutOfFold } from './calibrate';
export type { CalibrationPool, CalibrationRecord, NormalSample, OutOfFoldScores, PartComparison, SampleCounts, SourceComparison } from './calibrate';
export { calibrateBundle, compareBundleSources, fitBundleLatents } from './calibrate-bundle';
export type { BundleStepOptions, CalibrateBundleOptions, LabelledImages } from './calibrate-bundle';
export { BACKBONE_PRESETS, backbonePresetNames, MODELS_DIR_ENV, modelSearchDirs, resolveBackboneModel } from './backbones';
export type { BackbonePreset } from './backbones';
export { activationParams, activationRanges, optimizedNodeTypes, planQuantization, quantizeBundle, quantizeQdq } from './quantize';
export type { OptimizedNodeCount, QdqOptions, QuantizeBundleOptions, QuantizeResult, TensorRange } from './quantize';
