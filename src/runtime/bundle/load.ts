/**
 * Reads and checks a model bundle folder: the manifest against its schema, the
 * semantic rules the schema cannot say, each model file's presence and hash, and the
 * latent and feature statistics' hash, dtype, shape and values, and the calibration sample (calibration.json). The ONNX inputs and outputs are checked
 * later, when the sessions open (engine/model-check.ts), because that needs the runtime.
 */
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { InvalidArgumentError, ModelBundleError } from '../../util/errors';
import { fileKind } from '../../util/regular-file';
import { MAX_STEPS, maxSteps, scheduleProblem } from '../schedule';
import { sha256Bytes, sha256File } from './hash';
import { checkLatentArray } from './latent';
import { MAX_BLUR_SIGMA, sigmaAtInput } from '../map-smoothing';
import { type CalibrationScores, decodeCalibrationScores, MAX_CALIBRATION_SCORES_BYTES } from './calibration-scores';
import {
  CALIBRATION_LIMIT,
  type CalibrationSpec,
  type Manifest,
  MAX_FEATURE_VALUES,
  MAX_INPUT_SIDE,
  type PartNormalization,
  type ScoreDefinition,
  validateManifest,
} from './manifest';

export const MANIFEST_FILE = 'manifest.json';

export interface LoadedBundle {
  dir: string;
  manifest: Manifest;
  backbonePath: string;
  unetPath: string;
  /** calibration.json, checked, when the manifest names one (bundles calibrated before it have none) */
  calibrationScores?: CalibrationScores;
}

export interface LoadBundleOptions {
  /** Skip the sha256 check of the model files (it reads every byte). Default false. */
  skipHashCheck?: boolean;
}

async function readManifest(dir: string): Promise<Manifest> {
  // stat never opens the path: reading a FIFO named manifest.json would block forever.
  const st = await stat(join(dir, MANIFEST_FILE)).catch(() => undefined);
  if (st && !st.isFile())
    throw new ModelBundleError(MANIFEST_FILE, undefined, `${MANIFEST_FILE} in bundle ${dir} is not a regular file (it is ${fileKind(st)})`);
  let text: string;
  try {
    text = await readFile(join(dir, MANIFEST_FILE), 'utf8');
  } catch (cause) {
    const code = (cause as NodeJS.ErrnoException).code;
    const why = code === 'ENOENT' ? 'is missing' : `cannot be read (${code ?? String(cause)})`;
    throw new ModelBundleError(MANIFEST_FILE, undefined, `${MANIFEST_FILE} ${why} in bundle ${dir}`, { cause });
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (cause) {
    throw new ModelBundleError(MANIFEST_FILE, undefined, `${MANIFEST_FILE} in ${dir} is not valid JSON: ${(cause as Error).message}`, { cause });
  }
  if (!validateManifest(json)) {
    const first = validateManifest.errors?.[0];
    const field = first?.instancePath || '/';
    const all = (validateManifest.errors ?? []).map((e) => `${e.instancePath || '/'} ${e.message ?? ''}`).join('; ');
    throw new ModelBundleError(MANIFEST_FILE, field, `${MANIFEST_FILE} in ${dir} is invalid: ${all}`);
  }
  checkSemantics(json);
  return json;
}

type Fail = (field: string, msg: string) => never;

/**
 * Rules across fields, which JSON schema cannot express. Each one, broken, used to let a bundle
 * load and then fail every score() or score NaN (issue 12), so they are checked here, once.
 */
function checkSemantics(m: Manifest): void {
  const fail: Fail = (field, msg) => {
    throw new ModelBundleError(MANIFEST_FILE, field, `${MANIFEST_FILE}: ${field} ${msg}`);
  };
  const { schedule, input, features: f } = m;
  if (schedule.betaEnd < schedule.betaStart) fail('/schedule/betaEnd', 'must be >= betaStart');
  const problem = scheduleProblem(schedule);
  if (problem !== null) fail('/schedule', `cannot be inverted: ${problem}`);
  const stepRule = `at most min(trainSteps, ${MAX_STEPS}) = ${maxSteps(schedule.trainSteps)} (S is the number of UNet calls per image; both engines cap it)`;
  if (schedule.defaultSteps > maxSteps(schedule.trainSteps)) fail('/schedule/defaultSteps', `is ${schedule.defaultSteps}; it must be ${stepRule}`);
  for (const side of ['width', 'height'] as const) {
    if (input[side] > MAX_INPUT_SIDE) fail(`/input/${side}`, `is ${input[side]}; the largest model input invad allocates is ${MAX_INPUT_SIDE} pixels a side`);
  }
  if (f.height > input.height || f.width > input.width) {
    fail('/features', 'must not be larger than the input size');
  }
  const featureValues = f.channels * f.height * f.width;
  if (featureValues > MAX_FEATURE_VALUES) {
    fail('/features', `holds ${featureValues} values per image (channels x height x width); at most ${MAX_FEATURE_VALUES} can be allocated`);
  }
  if (m.models.backbone.file === m.models.unet.file) fail('/models/unet/file', 'must differ from the backbone file');
  const scoresFile = m.calibration.scoresFile?.file;
  if (scoresFile !== undefined && [MANIFEST_FILE, m.models.backbone.file, m.models.unet.file].includes(scoresFile)) {
    fail('/calibration/scoresFile/file', `is ${scoresFile}; it must differ from the manifest and the model files`);
  }
  checkCalibration(m.calibration, fail);
  if (m.mapSmoothing) {
    const sigma = sigmaAtInput(m.mapSmoothing, input);
    if (!(sigma <= MAX_BLUR_SIGMA))
      fail(
        '/mapSmoothing/atInputSize',
        `makes sigma ${sigma} px at the ${input.width} x ${input.height} model input (sigmaPx x the input's shorter side / atInputSize); it must be at most ${MAX_BLUR_SIGMA}`,
      );
  }
  const seen = new Set<number>();
  (m.latentGaussian ?? []).forEach((g, i) => {
    if (g.steps > maxSteps(schedule.trainSteps)) fail(`/latentGaussian/${i}/steps`, `is ${g.steps}; it must be ${stepRule}`);
    if (seen.has(g.steps)) fail(`/latentGaussian/${i}/steps`, `repeats S = ${g.steps}; each S may have one entry`);
    seen.add(g.steps);
  });
}

/** Normalizations and thresholds within CALIBRATION_LIMIT, so that every score is finite. */
function checkCalibration(cal: CalibrationSpec, fail: Fail): void {
  const limit = CALIBRATION_LIMIT;
  const normalization = (path: string, n: PartNormalization | undefined) => {
    if (n === undefined) return;
    if (!(Math.abs(n.center) <= limit)) fail(`${path}/center`, `is ${n.center}; a center must lie within +-${limit} so that scores stay finite`);
    if (!(n.scale >= 1 / limit && n.scale <= limit))
      fail(`${path}/scale`, `is ${n.scale}; a scale must lie between ${1 / limit} and ${limit} so that scores stay finite`);
  };
  const threshold = (path: string, v: number | null | undefined) => {
    if (v !== null && v !== undefined && !(Math.abs(v) <= limit)) fail(path, `is ${v}; a threshold must be null or lie within +-${limit}`);
  };
  const parts = ['sp', 'nll', 'latentGaussian'] as const;
  for (const part of parts) normalization(`/calibration/${part}`, cal[part]);
  threshold('/calibration/imageThreshold', cal.imageThreshold);
  threshold('/calibration/pixelThreshold', cal.pixelThreshold);
  const seen = new Set<number>();
  (cal.bySteps ?? []).forEach((entry, i) => {
    const at = `/calibration/bySteps/${i}`;
    if (seen.has(entry.steps)) fail(`${at}/steps`, `repeats S = ${entry.steps}; each S may have one entry`);
    seen.add(entry.steps);
    for (const part of parts) normalization(`${at}/${part}`, entry[part]);
    for (const [key, v] of Object.entries(entry.imageThresholds)) threshold(`${at}/imageThresholds/${key}`, v);
    for (const [key, v] of Object.entries(entry.pixelThresholds)) threshold(`${at}/pixelThresholds/${key}`, v);
  });
}

/**
 * Checks that a detector's score definition can run at its S: the latent-gaussian score needs
 * the bundle's latent statistics for that S, or every score() would fail. Detector.load calls
 * this; loadBundle does not, because fit writes a latent-gaussian manifest before it fits the
 * statistics.
 *
 * @param options - the detector's `scoreDefinition` and `steps` options, when given
 * @throws ModelBundleError when the bundle's own defaults disagree
 * @throws InvalidArgumentError (`options.steps` or `options.scoreDefinition`) when an option does
 */
export function checkScoreSetup(m: Manifest, options: { scoreDefinition?: ScoreDefinition; steps?: number } = {}): void {
  const definition = options.scoreDefinition ?? m.score.definition;
  const steps = options.steps ?? m.schedule.defaultSteps;
  const have = (m.latentGaussian ?? []).map((g) => g.steps);
  if (definition !== 'latent-gaussian' || have.includes(steps)) return;
  const available = have.length > 0 ? `only for S = ${have.join(', ')}` : 'for no S';
  if (options.steps !== undefined) {
    throw new InvalidArgumentError(
      'options.steps',
      `options.steps is ${steps}, but the latent-gaussian score needs latent statistics for that S and the bundle has them ${available}`,
    );
  }
  if (options.scoreDefinition !== undefined) {
    throw new InvalidArgumentError(
      'options.scoreDefinition',
      `the latent-gaussian score needs latent statistics for the default S = ${steps}, and the bundle has them ${available}`,
    );
  }
  throw new ModelBundleError(
    MANIFEST_FILE,
    '/schedule/defaultSteps',
    `${MANIFEST_FILE}: score.definition is latent-gaussian, which needs latent statistics for the default S = ${steps} (/schedule/defaultSteps), but the bundle has them ${available}; choose another S or score definition in the options, or fit the statistics for S = ${steps}`,
  );
}

/** The path of a bundle file that exists as a regular file (never opened here: a FIFO would block). */
async function regularFile(dir: string, file: string, field: string): Promise<{ path: string; size: number }> {
  const path = join(dir, file);
  let s;
  try {
    s = await stat(path);
  } catch (cause) {
    throw new ModelBundleError(file, field, `file ${file} is missing from bundle ${dir}`, { cause });
  }
  if (!s.isFile()) throw new ModelBundleError(file, field, `file ${file} in bundle ${dir} is not a regular file`);
  return { path, size: s.size };
}

function compareSha(file: string, shaField: string, actual: string, expected: string): void {
  if (actual !== expected) {
    throw new ModelBundleError(file, shaField, `file ${file} does not match the manifest: sha256 is ${actual}, manifest says ${expected} (${shaField})`);
  }
}

/** A model file must exist, be non-empty and, unless skipped, match its sha256. Its ONNX is checked when a session opens. */
async function checkModelFile(dir: string, file: string, field: string, expectedSha: string, skipHash: boolean): Promise<string> {
  const { path, size } = await regularFile(dir, file, `${field}/file`);
  if (size === 0) throw new ModelBundleError(file, `${field}/file`, `model file ${file} in bundle ${dir} is empty`);
  if (!skipHash) compareSha(file, `${field}/sha256`, await sha256File(path), expectedSha);
  return path;
}

/**
 * A latent-statistics file must match its sha256 (unless skipped) and hold float32 values of
 * the shape the features imply, all finite; it is small enough to read whole, once for both.
 */
async function checkLatentFile(
  dir: string,
  file: string,
  field: string,
  shaField: string,
  expectedSha: string,
  skipHash: boolean,
  shape: readonly number[],
  what?: string,
): Promise<void> {
  const { path } = await regularFile(dir, file, field);
  const bytes = await readFile(path);
  if (!skipHash) compareSha(file, shaField, sha256Bytes(bytes), expectedSha);
  checkLatentArray(bytes, file, field, shape, what);
}

/**
 * The feature-statistics files (issue 17: feature_mean.npy, feature_precision.npy,
 * patchcore_bank.npy), checked as the latent statistics are: sha256, float32, the shape the
 * features (and the bank's `patches`) imply, all finite.
 */
function checkFeatureStatistics(dir: string, m: Manifest, skip: boolean): Array<Promise<void>> {
  const f = m.featureStatistics;
  if (!f) return [];
  const { channels: c, height, width } = m.features;
  const what = 'feature statistics file';
  const at = '/featureStatistics';
  const checks: Array<Promise<void>> = [];
  if (f.gaussian) {
    const g = f.gaussian;
    checks.push(
      checkLatentFile(dir, g.meanFile, `${at}/gaussian/meanFile`, `${at}/gaussian/meanSha256`, g.meanSha256, skip, [height * width, c], what),
      checkLatentFile(
        dir,
        g.precisionFile,
        `${at}/gaussian/precisionFile`,
        `${at}/gaussian/precisionSha256`,
        g.precisionSha256,
        skip,
        [height * width, c, c],
        what,
      ),
    );
  }
  if (f.memoryBank) {
    const b = f.memoryBank;
    checks.push(checkLatentFile(dir, b.file, `${at}/memoryBank/file`, `${at}/memoryBank/sha256`, b.sha256, skip, [b.patches, c], what));
  }
  return checks;
}

/** calibration.json: its sha256 (unless skipped), size, JSON and schema; the parsed sample. */
async function checkCalibrationScoresFile(dir: string, file: string, expectedSha: string, skipHash: boolean): Promise<CalibrationScores> {
  const field = '/calibration/scoresFile';
  const { path, size } = await regularFile(dir, file, `${field}/file`);
  if (size > MAX_CALIBRATION_SCORES_BYTES)
    throw new ModelBundleError(
      file,
      `${field}/file`,
      `calibration sample ${file} in bundle ${dir} is ${size} bytes, over the ${MAX_CALIBRATION_SCORES_BYTES}-byte limit`,
    );
  const bytes = await readFile(path);
  if (!skipHash) compareSha(file, `${field}/sha256`, sha256Bytes(bytes), expectedSha);
  return decodeCalibrationScores(bytes, file, `${field}/file`);
}

/**
 * Reads and checks a bundle folder: the manifest, every file it names and the rules across its
 * fields. A bundle that passes can score; what is left to check needs ONNX Runtime and happens
 * when the sessions open (the models' inputs and outputs, and whether ORT can load them at all).
 *
 * @throws ModelBundleError naming the file at fault and, where there is one, the manifest field
 */
export async function loadBundle(dir: string, options: LoadBundleOptions = {}): Promise<LoadedBundle> {
  const manifest = await readManifest(dir);
  const skip = options.skipHashCheck === true;
  const { channels: c, height, width } = manifest.features;
  const positions = height * width;
  const models = Promise.all([
    checkModelFile(dir, manifest.models.backbone.file, '/models/backbone', manifest.models.backbone.sha256, skip),
    checkModelFile(dir, manifest.models.unet.file, '/models/unet', manifest.models.unet.sha256, skip),
  ]);
  const latents = Promise.all(
    (manifest.latentGaussian ?? []).flatMap((g, i) => [
      checkLatentFile(dir, g.meanFile, `/latentGaussian/${i}/meanFile`, `/latentGaussian/${i}/meanSha256`, g.meanSha256, skip, [positions, c]),
      checkLatentFile(dir, g.precisionFile, `/latentGaussian/${i}/precisionFile`, `/latentGaussian/${i}/precisionSha256`, g.precisionSha256, skip, [
        positions,
        c,
        c,
      ]),
    ]),
  );
  const features = Promise.all(checkFeatureStatistics(dir, manifest, skip));
  const scoresSpec = manifest.calibration.scoresFile;
  const scores = scoresSpec ? checkCalibrationScoresFile(dir, scoresSpec.file, scoresSpec.sha256, skip) : Promise.resolve(undefined);
  const [[backbonePath, unetPath], , calibrationScores] = await Promise.all([models, latents, scores, features]);
  return { dir, manifest, backbonePath, unetPath, ...(calibrationScores ? { calibrationScores } : {}) };
}
