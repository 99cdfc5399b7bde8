/**
 * `invad/fit`: fitting a bundle from normal images (backbone, features, UNet
 * training through the Python trainer, calibration) and writing bundles.
 */
export { FEATURE_NORMALIZATIONS, fit } from './fit';
export type { FeatureNormalization, FitEvent, FitOptions, FitResult } from './fit';
export { writeBundle, writeManifest } from './write-bundle';
export type { BundleContents, ModelSource, WriteBundleOptions } from './write-bundle';
export { calibrateStep, calibrationSpec } from './calibrate';
export type { NormalSample } from './calibrate';
export { calibrateBundle, fitBundleLatents } from './calibrate-bundle';
export type { BundleStepOptions, CalibrateBundleOptions, LabelledImages } from './calibrate-bundle';
export { BACKBONE_PRESETS, backbonePresetNames, MODELS_DIR_ENV, modelSearchDirs, resolveBackboneModel } from './backbones';
export type { BackbonePreset } from './backbones';
