/**
 * Writes a bundle folder atomically: everything goes to a sibling temporary
 * folder first and is renamed into place at the end, so an interrupted write
 * never leaves a half-written bundle behind.
 */
import { copyFile, mkdtemp, rename, rm, stat, writeFile } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { InvalidArgumentError } from '../util/errors';
import { packageVersion } from '../util/package-info';
import { DEFAULT_SCHEDULE } from '../runtime/schedule';
import { DEFAULT_SCORE_DEFINITION } from '../runtime/scores';
import { sha256Bytes, sha256File } from '../runtime/bundle/hash';
import { MANIFEST_FILE } from '../runtime/bundle/load';
import { CALIBRATION_SCORES_FILE, type CalibrationScores, encodeCalibrationScores } from '../runtime/bundle/calibration-scores';
import {
  type CalibrationSpec,
  type FeatureSpec,
  type InputSpec,
  MANIFEST_FORMAT,
  MANIFEST_VERSION,
  type Manifest,
  type ModelFileSpec,
  type ScoreDefinition,
  placeholderCalibration,
  validateManifest,
} from '../runtime/bundle/manifest';

/** A model given either as bytes in memory or as a file to copy. */
export type ModelSource = { bytes: Uint8Array } | { path: string };

export interface BundleContents {
  input: Pick<InputSpec, 'width' | 'height'> & Partial<InputSpec>;
  features: FeatureSpec;
  defaultSteps?: number;
  score?: ScoreDefinition;
  calibration?: CalibrationSpec;
  backbone: ModelSource & { name: string; taps?: string[]; inputName?: string; outputName?: string };
  unet: ModelSource & { xName?: string; tName?: string; outputName?: string };
  training?: Record<string, unknown>;
}

export interface WriteBundleOptions {
  /** Replace an existing bundle at `dir`. Default false: an existing folder is an error. */
  overwrite?: boolean;
}

/** ImageNet statistics, the default pixel scaling for ImageNet backbones. */
export const IMAGENET_MEAN: [number, number, number] = [0.485, 0.456, 0.406];
export const IMAGENET_STD: [number, number, number] = [0.229, 0.224, 0.225];

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}

async function placeModel(src: ModelSource, dest: string): Promise<string> {
  if ('bytes' in src) {
    await writeFile(dest, src.bytes);
    return sha256Bytes(src.bytes);
  }
  await copyFile(src.path, dest);
  return sha256File(dest);
}

export function buildManifest(c: BundleContents, hashes: { backbone: string; unet: string }): Manifest {
  const manifest: Manifest = {
    format: MANIFEST_FORMAT,
    version: MANIFEST_VERSION,
    input: {
      width: c.input.width,
      height: c.input.height,
      mean: c.input.mean ?? IMAGENET_MEAN,
      std: c.input.std ?? IMAGENET_STD,
      alpha: c.input.alpha ?? 'drop',
      resizeKernel: c.input.resizeKernel ?? 'linear',
    },
    features: { ...c.features },
    schedule: { ...DEFAULT_SCHEDULE, defaultSteps: c.defaultSteps ?? 3 },
    // A new bundle has no latent statistics yet.
    score: { definition: c.score ?? DEFAULT_SCORE_DEFINITION.withoutLatent },
    calibration: c.calibration ?? placeholderCalibration(),
    models: {
      backbone: {
        file: 'backbone.onnx',
        sha256: hashes.backbone,
        inputName: c.backbone.inputName ?? 'image',
        outputName: c.backbone.outputName ?? 'features',
      },
      unet: {
        file: 'unet.onnx',
        sha256: hashes.unet,
        xName: c.unet.xName ?? 'x',
        tName: c.unet.tName ?? 't',
        outputName: c.unet.outputName ?? 'eps',
      },
    },
    provenance: {
      backbone: { name: c.backbone.name, taps: c.backbone.taps ?? [] },
      training: c.training ?? {},
      createdAt: new Date().toISOString(),
      createdBy: `invad ${packageVersion()}`,
    },
  };
  if (!validateManifest(manifest)) {
    const e = validateManifest.errors?.[0];
    throw new InvalidArgumentError(`contents${e?.instancePath.replace(/\//g, '.') ?? ''}`, `Invalid bundle contents: ${e?.instancePath} ${e?.message}`);
  }
  return manifest;
}

/** Moves a finished temporary folder into place, replacing `dir` only when allowed. */
export async function commitFolder(tmp: string, dir: string, overwrite: boolean): Promise<void> {
  if (!(await exists(dir))) {
    await rename(tmp, dir);
    return;
  }
  if (!overwrite) throw new InvalidArgumentError('dir', `Bundle folder ${dir} already exists; pass overwrite to replace it`);
  const old = `${tmp}.old`;
  await rename(dir, old);
  await rename(tmp, dir);
  await rm(old, { recursive: true, force: true });
}

export async function writeBundle(dir: string, contents: BundleContents, options: WriteBundleOptions = {}): Promise<Manifest> {
  const target = resolve(dir);
  if (!options.overwrite && (await exists(target))) {
    throw new InvalidArgumentError('dir', `Bundle folder ${target} already exists; pass overwrite to replace it`);
  }
  const tmp = await mkdtemp(join(dirname(target), `.${basename(target)}.tmp-`));
  try {
    const [backbone, unet] = await Promise.all([placeModel(contents.backbone, join(tmp, 'backbone.onnx')), placeModel(contents.unet, join(tmp, 'unet.onnx'))]);
    const manifest = buildManifest(contents, { backbone, unet });
    await writeFile(join(tmp, MANIFEST_FILE), JSON.stringify(manifest, null, 2) + '\n');
    await commitFolder(tmp, target, options.overwrite === true);
    return manifest;
  } catch (err) {
    await rm(tmp, { recursive: true, force: true });
    throw err;
  }
}

/** Rewrites only manifest.json of an existing bundle, atomically (write then rename). */
export async function writeManifest(dir: string, manifest: Manifest): Promise<void> {
  if (!validateManifest(manifest)) {
    const e = validateManifest.errors?.[0];
    throw new InvalidArgumentError('manifest', `Invalid manifest: ${e?.instancePath} ${e?.message}`);
  }
  const tmp = join(dir, `.${MANIFEST_FILE}.tmp-${process.pid}`);
  await writeFile(tmp, JSON.stringify(manifest, null, 2) + '\n');
  await rename(tmp, join(dir, MANIFEST_FILE));
}

/**
 * Writes calibration.json into an existing bundle, atomically (write then rename), and returns
 * the manifest's `calibration.scoresFile` entry. Write the manifest that names it afterwards.
 */
export async function writeCalibrationScores(dir: string, scores: CalibrationScores): Promise<ModelFileSpec> {
  const bytes = encodeCalibrationScores(scores);
  const tmp = join(dir, `.${CALIBRATION_SCORES_FILE}.tmp-${process.pid}`);
  await writeFile(tmp, bytes);
  await rename(tmp, join(dir, CALIBRATION_SCORES_FILE));
  return { file: CALIBRATION_SCORES_FILE, sha256: sha256Bytes(bytes) };
}
