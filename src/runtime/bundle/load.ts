/**
 * Reads and checks a model bundle folder: the manifest against its schema, the
 * semantic rules the schema cannot say, and each model file's presence and hash.
 * The ONNX inputs and outputs are checked later, when the sessions open
 * (engine/model-check.ts), because that needs the runtime.
 */
import { readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { ModelBundleError } from '../../util/errors';
import { sha256File } from './hash';
import { type Manifest, validateManifest } from './manifest';

export const MANIFEST_FILE = 'manifest.json';

export interface LoadedBundle {
  dir: string;
  manifest: Manifest;
  backbonePath: string;
  unetPath: string;
}

export interface LoadBundleOptions {
  /** Skip the sha256 check of the model files (it reads every byte). Default false. */
  skipHashCheck?: boolean;
}

async function readManifest(dir: string): Promise<Manifest> {
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

/** Rules across fields, which JSON schema cannot express. */
function checkSemantics(m: Manifest): void {
  const fail = (field: string, msg: string): never => {
    throw new ModelBundleError(MANIFEST_FILE, field, `${MANIFEST_FILE}: ${field} ${msg}`);
  };
  if (m.schedule.betaEnd < m.schedule.betaStart) fail('/schedule/betaEnd', 'must be >= betaStart');
  if (m.schedule.defaultSteps > m.schedule.trainSteps) fail('/schedule/defaultSteps', 'must be <= trainSteps');
  if (m.features.height > m.input.height || m.features.width > m.input.width) {
    fail('/features', 'must not be larger than the input size');
  }
  if (m.models.backbone.file === m.models.unet.file) fail('/models/unet/file', 'must differ from the backbone file');
}

/** A bundle file must exist and, unless skipped, match its sha256. */
async function checkFile(dir: string, file: string, fileField: string, shaField: string, expectedSha: string, skipHash: boolean): Promise<string> {
  const path = join(dir, file);
  try {
    const s = await stat(path);
    if (!s.isFile()) throw new Error('not a regular file');
  } catch (cause) {
    throw new ModelBundleError(file, fileField, `file ${file} is missing from bundle ${dir}`, { cause });
  }
  if (!skipHash) {
    const actual = await sha256File(path);
    if (actual !== expectedSha) {
      throw new ModelBundleError(file, shaField, `file ${file} does not match the manifest: sha256 is ${actual}, manifest says ${expectedSha} (${shaField})`);
    }
  }
  return path;
}

const checkModelFile = (dir: string, file: string, field: string, sha: string, skip: boolean) =>
  checkFile(dir, file, `${field}/file`, `${field}/sha256`, sha, skip);

export async function loadBundle(dir: string, options: LoadBundleOptions = {}): Promise<LoadedBundle> {
  const manifest = await readManifest(dir);
  const skip = options.skipHashCheck === true;
  const [backbonePath, unetPath] = await Promise.all([
    checkModelFile(dir, manifest.models.backbone.file, '/models/backbone', manifest.models.backbone.sha256, skip),
    checkModelFile(dir, manifest.models.unet.file, '/models/unet', manifest.models.unet.sha256, skip),
    ...(manifest.latentGaussian ?? []).flatMap((g, i) => [
      checkFile(dir, g.meanFile, `/latentGaussian/${i}/meanFile`, `/latentGaussian/${i}/meanSha256`, g.meanSha256, skip),
      checkFile(dir, g.precisionFile, `/latentGaussian/${i}/precisionFile`, `/latentGaussian/${i}/precisionSha256`, g.precisionSha256, skip),
    ]),
  ]);
  return { dir, manifest, backbonePath, unetPath };
}
